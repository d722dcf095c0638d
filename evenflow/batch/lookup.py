"""The lookup plan: a feature table's latest (or earliest) values as of each query point.

When every aggregate of a feature set is ``last`` or ``first`` without a window, and every
event is known at its event time (no ``available_time``, no knowledge time before its
observation time), the value at a query point is one event row: the latest (earliest) non-null
one of the entity by ``(event_time, seq)`` at or before ``t`` (before ``t`` for
``closed="left"``). Nothing needs aggregating. The events are sorted once by
(entity, time, arrival) and each query point finds its row with a binary search; the values are
then gathered by row number. Same values as the SQL plans (docs/semantics.md, section 3); the
tests compare them.

Entities are numbered through the events' key dictionary, times shifted to start at 1, and both
packed in one int64 per row: ``entity * span + time``. When that would overflow, times are
replaced by their rank among the event times, which orders the same.

>>> import numpy as np
>>> idx = AsOfIndex.build(np.array([0, 0, 1]), np.array([10, 20, 10]), np.array([0, 1, 2]), entities=2)
>>> m = idx.match(np.array([0, 0, 1, 1]), np.array([15, 20, 9, 99]), closed="right")
>>> [int(r) if f else None for r, f in zip(m.last(), m.found)]
[0, 1, None, 2]
>>> m = idx.match(np.array([0]), np.array([20]), closed="left")
>>> int(m.last()[0]), int(m.first()[0]), bool(m.found[0])
(0, 0, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from evenflow.core.features import FeatureSet
from evenflow.core.sqltext import ident as q

if TYPE_CHECKING:
    from evenflow.batch.engine import PreparedEvents

Closed = Literal["right", "left"]
_INT64_MAX = np.iinfo(np.int64).max


def lookup_capable(fs: FeatureSet, available_time: str | None) -> bool:
    """Whether the lookup plan answers ``fs``: first/last over all history, no row expressions."""
    aggs = fs.aggregates
    return (available_time is None and not fs.derived and bool(aggs)
            and all(a.agg in ("first", "last") and a.window_us is None and a.column for a in aggs))


def _ranked(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of ``t`` in order, and each value's rank among them (from 1).

    One sort; ``np.unique`` with ``return_inverse`` is several times slower here.
    """
    by_time = np.argsort(t)
    ordered = t[by_time]
    new = np.empty(len(t), dtype=bool)
    new[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    rank = np.empty(len(t), dtype=np.int64)
    rank[by_time] = np.cumsum(new)
    return ordered[new], rank


@dataclass(frozen=True)
class AsOfIndex:
    """Event rows sorted by (entity, time, arrival), searchable by (entity, time).

    ``order[i]`` is the row number of the i-th row in that order; ``packed`` is its sorted
    ``entity * span + time`` key. Equal keys (same entity and time) are ordered by arrival, so
    the last of them is the latest arrival.
    """

    order: np.ndarray
    packed: np.ndarray
    span: int
    t_min: int
    ranks: np.ndarray | None  # the distinct event times, when times are ranked
    starts: np.ndarray  # sorted position of each entity's first row; the row count at the end

    @classmethod
    def build(cls, entity: np.ndarray, t: np.ndarray, seq: np.ndarray, *, entities: int) -> AsOfIndex:
        """Index rows by entity number ``entity``, time ``t`` and arrival ``seq``.

        Entity numbers, of the rows and of every query point, are in ``range(entities)``.
        """
        n_entities = max(entities, 1)
        t_min = int(t.min()) if len(t) else 0
        span = (int(t.max()) - t_min + 2) if len(t) else 2
        ranks = None
        if n_entities * span > _INT64_MAX:
            ranks, local = _ranked(t)
            span = len(ranks) + 1
        else:
            local = t - t_min + 1
        keys = np.asarray(entity, dtype=np.int64) * span + local
        order = np.argsort(keys)  # not stable, but much faster than a stable sort
        packed = keys[order]
        if len(packed) > 1 and bool((packed[1:] == packed[:-1]).any()):
            # ties (one entity, one time): order them by arrival
            order = np.lexsort((seq, keys))
            packed = keys[order]
        starts = np.searchsorted(packed, np.arange(n_entities + 1, dtype=np.int64) * span, side="left")
        return cls(order, packed, span, t_min, ranks, starts)

    def _point_keys(self, entity: np.ndarray, t: np.ndarray, closed: Closed) -> np.ndarray:
        """Packed keys of query points: an event qualifies iff its packed key is <= this."""
        if self.ranks is not None:
            # the number of distinct event times at or before (before) t; probed in sorted order
            by_time = np.argsort(t)
            local = np.empty(len(t), dtype=np.int64)
            local[by_time] = np.searchsorted(self.ranks, t[by_time], side="right" if closed == "right" else "left")
        else:
            # local times in [0, span - 1], clipped first so that far-off times cannot overflow
            t_max = self.t_min + self.span - 2
            if closed == "right":  # event qualifies iff t_event - t_min + 1 <= t - t_min + 1
                local = np.clip(t, self.t_min - 1, t_max) - self.t_min + 1
            else:  # ... iff t_event - t_min + 1 <= t - t_min
                local = np.clip(t, self.t_min, t_max + 1) - self.t_min
        return entity * self.span + local

    def match(self, entity: np.ndarray, t: np.ndarray, *, closed: Closed) -> Match:
        """Where each query point (entity number, time) falls among the sorted rows."""
        n = len(self.packed)
        entity = np.asarray(entity, dtype=np.int64)
        if not n:
            empty = np.zeros(len(t), dtype=np.int64)
            return Match(self.order, empty, empty)
        keys = self._point_keys(entity, t, closed)
        # probing in sorted order walks the rows forward: far fewer cache misses than random probes
        probe = np.argsort(keys)
        stop = np.empty(len(keys), dtype=np.int64)
        stop[probe] = np.searchsorted(self.packed, keys[probe], side="right")
        start = self.starts[entity]
        return Match(self.order, start, stop)

    def has(self, entity: np.ndarray) -> np.ndarray:
        """Whether each entity number has a row at all."""
        entity = np.asarray(entity, dtype=np.int64)
        return self.starts[entity + 1] > self.starts[entity]


@dataclass(frozen=True)
class Match:
    """Query points against an index: the sorted positions ``start:stop`` of their qualifying rows.

    The qualifying rows of a point are its entity's rows from the earliest up to the latest at
    or before its time, so the earliest row qualifies exactly when any does.
    """

    order: np.ndarray
    start: np.ndarray
    stop: np.ndarray

    @property
    def found(self) -> np.ndarray:
        return self.stop > self.start

    def last(self) -> np.ndarray:
        """Row number of the latest qualifying row (meaningful where ``found``)."""
        if not len(self.order):
            return np.zeros(len(self.stop), dtype=np.int64)
        return self.order[np.maximum(self.stop - 1, 0)]

    def first(self) -> np.ndarray:
        """Row number of the earliest row of the entity (meaningful where ``found``)."""
        if not len(self.order):
            return np.zeros(len(self.start), dtype=np.int64)
        return self.order[np.minimum(self.start, len(self.order) - 1)]


class _Rows:
    """Some event rows (all, or a column's non-null ones), indexed, probed by the query points.

    Probes are shared by the aggregates that need the same ones (four ``last`` of one table
    search once).
    """

    def __init__(self, rows: np.ndarray | None, index: AsOfIndex, entity: np.ndarray, t: np.ndarray
                 ) -> None:
        self.rows, self.index, self.entity, self.t = rows, index, entity, t
        self._matches: dict[str, Match] = {}
        self._picked: dict[tuple[str, str], np.ndarray] = {}

    def match(self, closed: Closed) -> Match:
        if closed not in self._matches:
            self._matches[closed] = self.index.match(self.entity, self.t, closed=closed)
        return self._matches[closed]

    def pick(self, agg: str, closed: Closed) -> tuple[np.ndarray, np.ndarray]:
        """Event row numbers of ``agg`` (first or last) per query point, and where there is one."""
        match = self.match(closed)
        if (agg, closed) not in self._picked:
            pos = match.last() if agg == "last" else match.first()
            self._picked[agg, closed] = pos if self.rows is None or not len(self.rows) else self.rows[pos]
        return self._picked[agg, closed], match.found


def _entities(event_keys: list[pa.ChunkedArray], point_keys: list[pa.ChunkedArray]
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int] | None:
    """Entity numbers of events and of query points, which of them have one, and how many numbers.

    Numbers come from the events' key dictionary, so equal keys get equal numbers. A null key
    part matches nothing (SQL equality). None when a key column's type differs between the two
    sides, or is a float: the SQL plans then decide how to compare them.
    """
    n_events = len(event_keys[0])
    n_points = len(point_keys[0])
    ev_code = np.zeros(n_events, dtype=np.int64)
    pt_code = np.zeros(n_points, dtype=np.int64)
    ev_ok = np.ones(n_events, dtype=bool)
    pt_ok = np.ones(n_points, dtype=bool)
    size = 1
    for ev_key, pt_key in zip(event_keys, point_keys, strict=True):
        if ev_key.type != pt_key.type or pa.types.is_floating(ev_key.type):
            return None  # float keys: SQL equality (0.0 = -0.0) is not Arrow's hashing
        encoded = pc.dictionary_encode(ev_key).combine_chunks()
        n = max(len(encoded.dictionary), 1)
        ev_part = encoded.indices
        pt_part = pc.index_in(pt_key, value_set=encoded.dictionary)
        if isinstance(pt_part, pa.ChunkedArray):
            pt_part = pt_part.combine_chunks()
        if size * n > 2**62:  # renumber the combined keys densely before adding a part
            distinct, ev_code = np.unique(ev_code, return_inverse=True)
            pos = np.minimum(np.searchsorted(distinct, pt_code), max(len(distinct) - 1, 0))
            pt_ok &= distinct[pos] == pt_code if len(distinct) else False
            pt_code, size = pos, max(len(distinct), 1)
        ev_ok &= _valid(ev_part)
        pt_ok &= _valid(pt_part)
        ev_code = ev_code * n + _filled(ev_part)
        pt_code = pt_code * n + _filled(pt_part)
        size *= n
    if size > n_events + 1:  # combined keys: number the ones that occur, densely
        distinct, ev_code = np.unique(ev_code, return_inverse=True)
        pos = np.minimum(np.searchsorted(distinct, pt_code), max(len(distinct) - 1, 0))
        pt_ok &= distinct[pos] == pt_code if len(distinct) else False
        pt_code, size = pos, max(len(distinct), 1)
    return ev_code, ev_ok, np.where(pt_ok, pt_code, 0), pt_ok, size


def _valid(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Where ``values`` is not null, as a NumPy bool array."""
    if not values.null_count:
        return np.ones(len(values), dtype=bool)
    return values.is_valid().to_numpy(zero_copy_only=False)


def _filled(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Integer ``values`` as int64, 0 where null (read from the buffers: no compute kernel)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not values.null_count:
        return values.to_numpy().astype(np.int64, copy=False)
    raw = np.frombuffer(values.buffers()[1], dtype=values.type.to_pandas_dtype(),
                        count=len(values) + values.offset)[values.offset:]
    return np.where(_valid(values), raw, 0).astype(np.int64, copy=False)


def _gather(column: pa.ChunkedArray, rows: np.ndarray, found: np.ndarray) -> pa.Array | pa.ChunkedArray:
    """``column[rows]``, null where not ``found``."""
    typ = column.type
    if not found.any():
        return pa.nulls(len(found), type=typ)
    if (pa.types.is_floating(typ) or pa.types.is_integer(typ)) and column.null_count == 0:
        values = np.ascontiguousarray(column.to_numpy()[rows])
        missing = len(found) - int(np.count_nonzero(found))
        validity = pa.py_buffer(np.packbits(found, bitorder="little")) if missing else None
        return pa.Array.from_buffers(typ, len(found), [validity, pa.py_buffer(values)], null_count=missing)
    return column.take(pa.array(rows, mask=~found))


def events_table(con: duckdb.DuckDBPyConnection, ev: PreparedEvents) -> pa.Table:
    """The prepared events as :func:`lookup_features` reads them, from DuckDB.

    Columns ``__k0..`` (the key), ``__t`` (event time, microseconds), ``__s`` (arrival) and
    ``__v0..`` (the aggregated columns, sorted by name; see :func:`value_columns`).
    """
    select = [f"{q(k)} AS __k{i}" for i, k in enumerate(ev.key)]
    select += [f"epoch_us({q(ev.event_time)}) AS __t", "__seq AS __s"]
    select += [f"{q(c)} AS __v{i}" for i, c in enumerate(value_columns(ev.feature_set))]
    return con.sql(f"SELECT {', '.join(select)} FROM {q(ev.table)}").to_arrow_table()


def value_columns(fs: FeatureSet) -> list[str]:
    """The columns the aggregates of ``fs`` read, in the order of ``events_table``'s ``__v``."""
    return sorted({a.column for a in fs.aggregates if a.column})


def lookup_features(fs: FeatureSet, key: list[str], events: pa.Table, points: pa.Table
                    ) -> tuple[dict[str, pa.Array | pa.ChunkedArray], int] | None:
    """Features of ``fs`` (keyed by ``key``) from ``events`` (as :func:`events_table` gives
    them) at ``points`` (columns ``key`` and ``__t``, microseconds).

    Returns each aggregate's column (one value per query point) and the number of query
    points whose entity had no event at or before their time; None when the key types of the
    two sides differ.
    """
    columns = value_columns(fs)
    numbered = _entities([events.column(f"__k{i}") for i in range(len(key))],
                         [points.column(k) for k in key])
    if numbered is None:
        return None
    ev_code, ev_ok, pt_code, pt_ok, entities = numbered
    ev_t = events.column("__t").to_numpy()
    ev_s = events.column("__s").to_numpy()
    pt_time = points.column("__t")
    timed = _valid(pt_time)
    pt_t = _filled(pt_time)
    probe = pt_ok & timed

    def rows_where(keep: np.ndarray) -> _Rows:
        if keep.all():  # every row: no copies
            return _Rows(None, AsOfIndex.build(ev_code, ev_t, ev_s, entities=entities), pt_code, pt_t)
        rows = np.flatnonzero(keep)
        return _Rows(rows, AsOfIndex.build(ev_code[rows], ev_t[rows], ev_s[rows], entities=entities),
                     pt_code, pt_t)

    every = rows_where(ev_ok)
    by_column: dict[str, _Rows] = {}
    out: dict[str, pa.Array | pa.ChunkedArray] = {}
    for a in fs.aggregates:
        column = a.column or ""
        values = events.column(f"__v{columns.index(column)}")
        if column not in by_column:  # last/first skip nulls: a column with nulls gets its own index
            by_column[column] = rows_where(ev_ok & _valid(values)) \
                if values.null_count else every
        rows, found = by_column[column].pick(a.agg, a.closed)
        out[a.name] = _gather(values, rows, found & probe)
    # as the SQL plans count them: rows whose entity has no event, or none at or before a known time
    seen = every.match("right").found
    without = int(np.count_nonzero(~pt_ok)) + int(np.count_nonzero(probe & ~seen))
    untimed = np.flatnonzero(pt_ok & ~timed)
    if len(untimed):
        without += int(np.count_nonzero(~every.index.has(pt_code[untimed])))
    return out, without
