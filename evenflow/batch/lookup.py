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
>>> idx = AsOfIndex.build(np.array([0, 0, 1]), np.array([10, 20, 10]), np.array([0, 1, 2]))
>>> rows, found = idx.last(np.array([0, 0, 1, 1]), np.array([15, 20, 9, 99]), closed="right")
>>> [int(r) if f else None for r, f in zip(rows, found)]
[0, 1, None, 2]
>>> rows, found = idx.last(np.array([0]), np.array([20]), closed="left")
>>> int(rows[0]), bool(found[0])
(0, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from evenflow.core.features import FeatureSet
from evenflow.quality.validate import q

if TYPE_CHECKING:
    from evenflow.batch.engine import PreparedEvents

Closed = Literal["right", "left"]
_INT64_MAX = np.iinfo(np.int64).max


def lookup_capable(fs: FeatureSet, available_time: str | None) -> bool:
    """Whether the lookup plan answers ``fs``: first/last over all history, no row expressions."""
    aggs = fs.aggregates
    return (available_time is None and not fs.derived and bool(aggs)
            and all(a.agg in ("first", "last") and a.window_us is None and a.column for a in aggs))


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

    @classmethod
    def build(cls, entity: np.ndarray, t: np.ndarray, seq: np.ndarray) -> AsOfIndex:
        """Index rows with non-negative entity numbers ``entity``, times ``t`` and arrivals ``seq``."""
        n_entities = int(entity.max()) + 1 if len(entity) else 1
        t_min = int(t.min()) if len(t) else 0
        span = (int(t.max()) - t_min + 2) if len(t) else 2
        ranks = None
        if n_entities * span > _INT64_MAX:
            ranks = np.unique(t)
            span = len(ranks) + 1
            local = np.searchsorted(ranks, t) + 1
        else:
            local = t - t_min + 1
        keys = entity.astype(np.int64) * span + local
        order = np.argsort(keys)  # not stable, but much faster than a stable sort
        packed = keys[order]
        if len(packed) > 1 and bool((packed[1:] == packed[:-1]).any()):
            # ties (one entity, one time): order them by arrival
            order = np.lexsort((seq, keys))
            packed = keys[order]
        return cls(order, packed, span, t_min, ranks)

    def _point_keys(self, entity: np.ndarray, t: np.ndarray, closed: Closed) -> np.ndarray:
        """Packed keys of query points: an event qualifies iff its packed key is <= this."""
        if self.ranks is not None:
            local = np.searchsorted(self.ranks, t, side="right" if closed == "right" else "left")
        else:
            # local times in [0, span - 1], clipped first so that far-off times cannot overflow
            t_max = self.t_min + self.span - 2
            if closed == "right":  # event qualifies iff t_event - t_min + 1 <= t - t_min + 1
                local = np.clip(t, self.t_min - 1, t_max) - self.t_min + 1
            else:  # ... iff t_event - t_min + 1 <= t - t_min
                local = np.clip(t, self.t_min, t_max + 1) - self.t_min
        return entity.astype(np.int64) * self.span + local

    def last(self, entity: np.ndarray, t: np.ndarray, *, closed: Closed
             ) -> tuple[np.ndarray, np.ndarray]:
        """Row of the latest qualifying event per query point, and whether there is one."""
        if not len(self.packed):
            return np.zeros(len(t), dtype=np.int64), np.zeros(len(t), dtype=bool)
        keys = self._point_keys(entity, t, closed)
        # sorted probes walk the sorted keys forward: far fewer cache misses than random ones
        probe = np.argsort(keys)
        pos = np.empty(len(keys), dtype=np.int64)
        pos[probe] = np.searchsorted(self.packed, keys[probe], side="right")
        pos -= 1
        safe = np.maximum(pos, 0)
        found = (pos >= 0) & (self.packed[safe] >= entity.astype(np.int64) * self.span)
        return self.order[safe], found

    def has(self, entity: np.ndarray) -> np.ndarray:
        """Whether each entity number has a row at all."""
        if not len(self.packed):
            return np.zeros(len(entity), dtype=bool)
        start = np.searchsorted(self.packed, entity.astype(np.int64) * self.span, side="left")
        safe = np.minimum(start, len(self.packed) - 1)
        return (start < len(self.packed)) & (self.packed[safe] < (entity.astype(np.int64) + 1) * self.span)

    def first(self, entity: np.ndarray, t: np.ndarray, *, closed: Closed
              ) -> tuple[np.ndarray, np.ndarray]:
        """Row of the earliest event of the entity per query point, if it qualifies."""
        if not len(self.packed):
            return np.zeros(len(t), dtype=np.int64), np.zeros(len(t), dtype=bool)
        keys = self._point_keys(entity, t, closed)
        start = np.searchsorted(self.packed, entity.astype(np.int64) * self.span, side="left")
        safe = np.minimum(start, len(self.packed) - 1)
        found = (start < len(self.packed)) & (self.packed[safe] <= keys)
        return self.order[safe], found


def _entities(event_keys: list[pa.ChunkedArray], point_keys: list[pa.ChunkedArray]
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Entity numbers of events and of query points, and which of them have one.

    Numbers come from the events' key dictionary, so equal keys get equal numbers. A null key
    part matches nothing (SQL equality). None when a key column's type differs between the two
    sides: the SQL plans then decide how to compare them.
    """
    n_events = len(event_keys[0])
    n_points = len(point_keys[0])
    ev_code = np.zeros(n_events, dtype=np.int64)
    pt_code = np.zeros(n_points, dtype=np.int64)
    ev_ok = np.ones(n_events, dtype=bool)
    pt_ok = np.ones(n_points, dtype=bool)
    size = 1
    for ev_key, pt_key in zip(event_keys, point_keys, strict=True):
        if ev_key.type != pt_key.type:
            return None
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
        ev_ok &= ev_part.is_valid().to_numpy(zero_copy_only=False)
        pt_ok &= pt_part.is_valid().to_numpy(zero_copy_only=False)
        ev_code = ev_code * n + ev_part.fill_null(0).to_numpy().astype(np.int64)
        pt_code = pt_code * n + pt_part.fill_null(0).to_numpy().astype(np.int64)
        size *= n
    return ev_code, ev_ok, np.where(pt_ok, pt_code, 0), pt_ok


def _gather(column: pa.ChunkedArray, rows: np.ndarray, found: np.ndarray) -> pa.Array | pa.ChunkedArray:
    """``column[rows]``, null where not ``found``."""
    typ = column.type
    if not found.any():
        return pa.nulls(len(found), type=typ)
    if (pa.types.is_floating(typ) or pa.types.is_integer(typ)) and column.null_count == 0:
        values = column.to_numpy()
        return pa.array(values[rows], mask=~found, type=typ)
    return column.take(pa.array(rows, mask=~found))


def lookup_features(con: duckdb.DuckDBPyConnection, ev: PreparedEvents, points: pa.Table
                    ) -> tuple[dict[str, pa.Array | pa.ChunkedArray], int] | None:
    """Features of ``ev`` at ``points`` (its key columns and ``__t``, microseconds, in order).

    Returns each aggregate's column (one value per query point) and the number of query
    points whose entity had no event at or before their time; None when the key types of the
    two sides differ.
    """
    fs = ev.feature_set
    columns = sorted({a.column for a in fs.aggregates if a.column})
    select = [f"{q(k)} AS __k{i}" for i, k in enumerate(ev.key)]
    select += [f"epoch_us({q(ev.event_time)}) AS __t", "__seq AS __s"]
    select += [f"{q(c)} AS __v{i}" for i, c in enumerate(columns)]
    events = con.sql(f"SELECT {', '.join(select)} FROM {q(ev.table)}").to_arrow_table()
    entities = _entities([events.column(f"__k{i}") for i in range(len(ev.key))],
                         [points.column(k) for k in ev.key])
    if entities is None:
        return None
    ev_code, ev_ok, pt_code, pt_ok = entities
    ev_t = events.column("__t").to_numpy()
    ev_s = events.column("__s").to_numpy()
    pt_time = points.column("__t")
    timed = pt_time.is_valid().to_numpy(zero_copy_only=False)
    pt_t = pt_time.fill_null(0).to_numpy()
    probe = pt_ok & timed

    def index_of(rows: np.ndarray) -> AsOfIndex:
        return AsOfIndex.build(ev_code[rows], ev_t[rows], ev_s[rows])

    keyed = np.flatnonzero(ev_ok)
    every = index_of(keyed)
    out: dict[str, pa.Array | pa.ChunkedArray] = {}
    by_column: dict[str, tuple[np.ndarray, AsOfIndex]] = {}
    for a in fs.aggregates:
        col = columns.index(a.column or "")
        values = events.column(f"__v{col}")
        if a.column not in by_column:
            if values.null_count:
                rows = np.flatnonzero(ev_ok & values.is_valid().to_numpy(zero_copy_only=False))
                by_column[a.column or ""] = (rows, index_of(rows))
            else:
                by_column[a.column or ""] = (keyed, every)
        rows, index = by_column[a.column or ""]
        search = index.last if a.agg == "last" else index.first
        pos, found = search(pt_code, pt_t, closed=a.closed)
        found &= probe
        out[a.name] = _gather(values, rows[pos] if len(rows) else pos, found)
    # as the SQL plans count it: no event of the entity, or none at or before a known time
    _, seen = every.last(pt_code, pt_t, closed="right")
    known_entity = every.has(pt_code) & pt_ok
    without = int(np.count_nonzero(~known_entity | (timed & ~(seen & probe))))
    return out, without
