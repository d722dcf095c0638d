"""The stream engine's vectorized micro-batch path: :meth:`StreamEngine.process_batch`.

Same definitions, same state, same records out as :meth:`StreamEngine.process` with
``emit="arrival"``, but each stage runs over the whole micro-batch with NumPy instead of record
by record in Python:

- **Validation** types each field as a column. A value that is not of the plain JSON type (a
  number for a float, text in the strict ISO 8601 form for a timestamp, ...) or that breaks a
  rule sends its record through the per-record validator, so reasons, fields and typed values
  are exactly those of ``process``.
- **Lateness** is a running maximum over the batch.
- **Steps** run in their declared order: dedup and ``unique`` with the same memory as
  ``process``; ``Impute`` and ``Clip`` as column operations; any other fitted step record by
  record with its ``transform_one``.
- **Aggregates** are computed for every event at once over its entity's window state plus the
  batch's earlier events of that entity (``docs/semantics.md`` §13): counts, first and last
  exactly; sums, means and variances with a sequential sum per window rather than ``fsum``, so
  they agree with ``process`` within the tolerance of ``docs/semantics.md`` §11, not
  bit for bit.
- **Row expressions** are evaluated on columns, with SQL null semantics.

The output of each feature set is a ``pyarrow.Table`` with one row per kept event, in arrival
order. The engine's state (entity windows, dedup and unique memory, watermark) is the same
object ``process`` updates, so the two can be mixed freely, and checkpoints, reads and the
online store work unchanged.

What the fast path does not cover falls back, exactly, to the per-record code:
- the whole batch, when the engine uses ``emit="final"``, ``ttl``, ``remember``, a stateful
  step (``Impute(..., "last")``) or ``Dedup(keep="last")``;
- the aggregates of one feature set for one batch, when an entity's events arrive out of
  ``(event_time, seq)`` order, when events become available after their event time, when a
  float column holds NaN, or when an unbounded aggregate other than ``count`` and
  ``since_last`` must combine retired events.
"""

from __future__ import annotations

import ast
import gc
import itertools
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa

from evenflow.core.expr import _compile
from evenflow.core.steps import Clip, Dedup, Impute, RecordRejected
from evenflow.stream.state import KeyState, Retired, evaluate
from evenflow.stream.validate import to_micros

if TYPE_CHECKING:
    from evenflow.stream.engine import FeatureSetStream, StreamEngine, StreamResult

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TS = pa.timestamp("us", tz="UTC")
_BIG = 2**53


class _Fallback(Exception):
    """The fast path does not apply; the caller takes the exact per-record path."""


# -- columns ------------------------------------------------------------------------------------
@dataclass
class Col:
    """One column of a micro-batch: ``kind`` is float, int, bool, ts (µs), or obj (Python values).

    Numeric and ts columns hold a NumPy array and a null mask; obj columns a Python list.
    """

    kind: str
    data: Any
    null: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.kind == "obj" and not isinstance(self.data, np.ndarray):
            self.data = _objects(self.data)

    @classmethod
    def of_values(cls, values: list[Any]) -> Col:
        """A column from Python values (None = null), typed when every value has one type."""
        kinds = set(map(type, values)) - {type(None)}
        if kinds == {float} or kinds == {float, int}:
            data = np.array(values, np.float64)          # None becomes NaN
            nan = np.isnan(data)
            null = np.zeros(len(values), bool)
            if nan.any():
                where = np.flatnonzero(nan)
                null[where] = [values[i] is None for i in where.tolist()]
                data[null] = 0.0
            return cls("float", data, null)
        null = np.fromiter((v is None for v in values), bool, len(values))
        if kinds == {int} and all(-_BIG < v < _BIG for v in values if v is not None):
            return cls("int", np.array([0 if v is None else v for v in values], np.int64), null)
        if kinds == {bool}:
            return cls("bool", np.array([False if v is None else v for v in values], bool), null)
        if kinds == {datetime}:
            return cls("ts", np.array([0 if v is None else to_micros(v) for v in values], np.int64),
                       null)
        return cls("obj", list(values))

    def take(self, idx: np.ndarray) -> Col:
        if self.kind == "obj":
            return Col("obj", self.data[idx])
        assert self.null is not None
        return Col(self.kind, self.data[idx], self.null[idx])

    def values(self) -> list[Any]:
        """Python values, None for nulls (timestamps as aware datetimes)."""
        if self.kind == "obj":
            return self.data.tolist()  # type: ignore[no-any-return]
        assert self.null is not None
        if self.kind == "ts":
            out: list[Any] = [_EPOCH + timedelta(microseconds=m) for m in self.data.tolist()]
        else:
            out = self.data.tolist()
        for i in np.flatnonzero(self.null).tolist():
            out[i] = None
        return out

    def nulls(self) -> np.ndarray:
        if self.null is not None:
            return self.null
        return _is_none(self.data)

    def arrow(self) -> pa.Array:
        if self.kind == "obj":
            if set(map(type, self.data)) <= {str, type(None)}:
                return pa.array(self.data, type=pa.string())
            return pa.array(self.data)
        mask = self.null if self.null is not None and self.null.any() else None
        if self.kind == "ts":
            return pa.array(self.data, type=_TS, mask=mask)
        return pa.array(self.data, mask=mask)


def _is_none(objects: np.ndarray) -> np.ndarray:
    """Which elements of an object array are None."""
    return np.asarray(objects == None)  # noqa: E711 - elementwise, not an identity test


def _objects(values: Any) -> np.ndarray:
    """A 1-d object array of ``values`` (tuples stay elements, not rows)."""
    return np.fromiter(values, object, len(values))


def _set_value(col: Col, i: int, value: Any) -> None:
    """Overwrite row ``i`` with a typed Python value (from the per-record validator)."""
    if col.kind == "obj":
        col.data[i] = value
        return
    assert col.null is not None
    if value is None:
        col.null[i] = True
        return
    col.null[i] = False
    col.data[i] = to_micros(value) if col.kind == "ts" else value


# -- validation ---------------------------------------------------------------------------------
def _days_from_civil(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    y = y - (m <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * np.where(m > 2, m - 3, m + 9) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


_DIGITS = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
_MONTH_DAYS = np.array([0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


def parse_timestamps(values: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """``YYYY-MM-DD[T ]HH:MM:SS[.fff|.ffffff](Z|±HH:MM)`` text as UTC µs, and which parsed.

    Anything else (another form, a naive value, a datetime object) is left to the per-record
    parser: the second array is False there.
    """
    n = len(values)
    width = 32
    lens = np.fromiter((len(v) if type(v) is str else 0 for v in values), np.int64, n)
    ok = (lens >= 20) & (lens <= width)
    try:
        raw = np.array([v if type(v) is str and len(v) <= width else "" for v in values], f"S{width}")
    except UnicodeEncodeError:
        return np.zeros(n, np.int64), np.zeros(n, bool)
    m = raw.view(np.uint8).reshape(n, width).astype(np.int16)
    digit = m - 48
    ok &= ((digit[:, _DIGITS] >= 0) & (digit[:, _DIGITS] <= 9)).all(axis=1)
    ok &= (m[:, 4] == 45) & (m[:, 7] == 45) & ((m[:, 10] == 84) | (m[:, 10] == 32))
    ok &= (m[:, 13] == 58) & (m[:, 16] == 58)
    # fraction: none, 3 or 6 digits
    frac_len = np.zeros(n, np.int64)
    dot = m[:, 19] == 46
    for k in (3, 6):
        digits_ok = ((digit[:, 20:20 + k] >= 0) & (digit[:, 20:20 + k] <= 9)).all(axis=1)
        after = m[:, 20 + k]
        is_k = dot & digits_ok & ((after == 90) | (after == 43) | (after == 45))
        frac_len = np.where(is_k & (frac_len == 0), k, frac_len)
    ok &= ~dot | (frac_len > 0)
    zone = 19 + np.where(frac_len > 0, frac_len + 1, 0)
    rows = np.arange(n)
    zc = m[rows, zone]
    zulu = zc == 90
    offset = (zc == 43) | (zc == 45)
    last = width - 1
    at = [np.minimum(zone + j, last) for j in range(6)]
    off_ok = offset & (m[rows, at[3]] == 58)
    for j in (1, 2, 4, 5):
        dj = digit[rows, at[j]]
        off_ok &= (dj >= 0) & (dj <= 9)
    ok &= np.where(zulu, lens == zone + 1, off_ok & (lens == zone + 6))
    num = digit.clip(0, 9)

    def number(*cols: int | np.ndarray) -> np.ndarray:
        out = np.zeros(n, np.int64)
        for c in cols:
            out = out * 10 + (num[:, c] if isinstance(c, int) else num[rows, c])
        return out

    year, month, day = number(0, 1, 2, 3), number(5, 6), number(8, 9)
    hour, minute, second = number(11, 12), number(14, 15), number(17, 18)
    frac = np.where(frac_len == 3, number(20, 21, 22) * 1000,
                    np.where(frac_len == 6, number(20, 21, 22, 23, 24, 25), 0))
    oh, om = number(at[1], at[2]), number(at[4], at[5])
    sign = np.where(zc == 45, -1, 1)
    off = np.where(offset, sign * (oh * 3600 + om * 60), 0)
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    mdays = _MONTH_DAYS[month.clip(0, 12)] - ((month == 2) & ~leap)
    ok &= (year >= 2) & (year <= 9998) & (month >= 1) & (month <= 12) & (day >= 1) & (day <= mdays)
    ok &= (hour <= 23) & (minute <= 59) & (second <= 59) & (oh <= 23) & (om <= 59)
    days = _days_from_civil(year, month.clip(1, 12), day)
    micros = (days * 86400 + hour * 3600 + minute * 60 + second - off) * 1_000_000 + frac
    return micros, ok


def _transpose(records: list[dict[str, Any]], fields: list[Any]) -> list[Sequence[Any]]:
    """One sequence of raw values per field (None where a record lacks the field)."""
    names = [f[0] for f in fields]
    if not records or not names:
        return [[None] * len(records) for _ in names]
    try:
        rows = list(map(operator.itemgetter(*names), records))
    except KeyError:
        return [[r.get(name) for r in records] for name in names]
    return [rows] if len(names) == 1 else list(zip(*rows, strict=True))


def validate(engine: StreamEngine, records: list[dict[str, Any]]) -> tuple[dict[str, Col], np.ndarray,
                                                                             dict[int, tuple[str, str, str]]]:
    """Typed columns, which records are valid, and the failure of each invalid one."""
    n = len(records)
    schema = engine.validator.schema
    suspect = np.zeros(n, bool)
    cols: dict[str, Col] = {}
    fields = engine.validator._fields
    for (name, kind, nullable, _convert, _checks), raw in zip(fields, _transpose(records, fields),
                                                             strict=True):
        spec = schema.fields[name]
        objects = _objects(raw)
        null = _is_none(objects)
        if not nullable:
            suspect |= null
        types = set(map(type, raw))
        if kind == "float":
            if types <= {float, int, type(None)}:
                data = np.array([0.0 if v is None else v for v in raw], np.float64) \
                    if null.any() else np.array(raw, np.float64)
                bad = np.zeros(n, bool)
            else:
                bad = np.fromiter((v is not None and type(v) is not float and type(v) is not int
                                   for v in raw), bool, n)
                data = np.array([v if type(v) is float or type(v) is int else 0.0 for v in raw],
                                np.float64)
            bad |= np.isnan(data)
            col = Col("float", data, null)
        elif kind == "int":
            fine = [type(v) is int and -_BIG < v < _BIG for v in raw]
            bad = ~np.fromiter(fine, bool, n) & ~null
            col = Col("int", np.array([v if f else 0 for v, f in zip(raw, fine, strict=True)],
                                      np.int64), null)
        elif kind == "bool":
            bad = np.fromiter((v is not None and type(v) is not bool for v in raw), bool, n)
            col = Col("bool", np.array([v is True for v in raw], bool), null)
        elif kind == "timestamp":
            micros, parsed = parse_timestamps(raw)
            if datetime in types:        # aware datetimes from an in-process producer
                for i in [i for i, v in enumerate(raw) if type(v) is datetime and v.tzinfo]:
                    micros[i], parsed[i] = to_micros(raw[i]), True
            bad = ~parsed & ~null
            col = Col("ts", micros, null)
        else:
            bad = np.fromiter((v is not None and type(v) is not str for v in raw), bool, n) \
                if types - {str, type(None)} else np.zeros(n, bool)
            col = Col("obj", objects)
        if kind in ("float", "int"):
            values = col.data
            for op, test in (("ge", np.less), ("gt", np.less_equal), ("le", np.greater),
                             ("lt", np.greater_equal)):
                bound = getattr(spec, op, None)
                if bound is not None:
                    bad |= test(values, bound) & ~null
        if spec.allowed:
            allowed = set(spec.allowed)
            atoms = (str, int, float, bool)
            bad |= np.fromiter((v is not None and (type(v) not in atoms or v not in allowed)
                                for v in raw), bool, n)
        regex = getattr(spec, "regex", None)
        if regex:
            fullmatch = re.compile(regex).fullmatch
            bad |= np.fromiter((type(v) is str and fullmatch(v) is None for v in raw), bool, n)
        suspect |= bad
        cols[name] = col
    failures: dict[int, tuple[str, str, str]] = {}
    valid = np.ones(n, bool)
    for i in np.flatnonzero(suspect).tolist():
        typed, failure = engine.validator.check(records[i])
        if typed is None:
            assert failure is not None
            failures[i] = failure
            valid[i] = False
            continue
        for name, value in typed.items():
            _set_value(cols[name], i, value)
    return cols, valid, failures


# -- aggregates ---------------------------------------------------------------------------------
@dataclass
class _Gathered:
    """Each touched entity's window state followed by its batch events, in one set of arrays."""

    times: np.ndarray
    seg_start: np.ndarray          # per batch event (entity-sorted): its entity's first row
    pos: np.ndarray                # per batch event: its row
    columns: list[Col]
    retired: list[Any]             # per entity: its Retired accumulators or None
    entity_of: np.ndarray          # per batch event: entity number
    cache: dict[Any, Any] = field(default_factory=dict)


def _gather(fs: FeatureSetStream, entities: list[tuple[Any, ...]], codes: np.ndarray,
            t_sorted: np.ndarray, seq_sorted: np.ndarray, a_sorted: np.ndarray,
            batch_cols: list[Col]) -> _Gathered:
    k = len(entities)
    nb = np.bincount(codes, minlength=k)
    held = [fs.states.get(e) for e in entities]
    empty = KeyState.empty(fs.columns)
    states = [empty if st is None else st for st in held]
    if any(st.late_known for st in states):
        raise _Fallback
    chain = itertools.chain.from_iterable
    ns = np.fromiter((len(st.times) for st in states), np.int64, k)
    last_t = np.fromiter((st.times[-1] if st.times else -(2**62) for st in states), np.int64, k)
    last_s = np.fromiter((st.seqs[-1] if st.seqs else -(2**62) for st in states), np.int64, k)
    # Each entity's batch events must come after its state, in (event_time, seq) order.
    starts = np.cumsum(nb) - nb
    prev_t = np.empty_like(t_sorted)
    prev_s = np.empty_like(seq_sorted)
    prev_t[1:], prev_s[1:] = t_sorted[:-1], seq_sorted[:-1]
    prev_t[starts], prev_s[starts] = last_t, last_s
    if not ((t_sorted > prev_t) | ((t_sorted == prev_t) & (seq_sorted > prev_s))).all():
        raise _Fallback
    tot = ns + nb
    base = np.cumsum(tot) - tot
    n_state, n_batch = int(ns.sum()), len(codes)
    s_pos = np.repeat(base, ns) + (np.arange(n_state) - np.repeat(np.cumsum(ns) - ns, ns))
    b_pos = np.repeat(base + ns, nb) + (np.arange(n_batch) - np.repeat(starts, nb))
    total = n_state + n_batch

    def combined(held_values: Any, batch: np.ndarray) -> np.ndarray:
        out = np.empty(total, np.int64)
        out[s_pos] = np.fromiter(held_values, np.int64, n_state)
        out[b_pos] = batch
        return out

    times = combined(chain(st.times for st in states), t_sorted)
    columns = [_merge(list(chain(st.columns[c] for st in states)), bcol, s_pos, b_pos, total)
               for c, bcol in enumerate(batch_cols)]
    g = _Gathered(times, np.repeat(base, nb), b_pos, columns, [st.retired for st in states], codes)
    batch_lists = [t_sorted.tolist(), seq_sorted.tolist(), a_sorted.tolist(),
                   *(col.values() for col in batch_cols)]
    g.cache["state"] = (held, ns, nb, batch_lists)
    return g


def _merge(state: list[Any], batch: Col, s_pos: np.ndarray, b_pos: np.ndarray, total: int) -> Col:
    """One value column over the gathered rows: the states' Python values and the batch's."""
    held = Col.of_values(state) if state else None
    if held is not None and held.kind == "obj" and all(v is None for v in state):
        held = None
    kinds = {batch.kind} if held is None else {batch.kind, held.kind}
    kind = kinds.pop() if len(kinds) == 1 else ("float" if kinds <= {"int", "float"} else "obj")
    if kind == "obj":
        data = np.empty(total, object)
        data[s_pos] = _objects(state)
        data[b_pos] = _objects(batch.values())
        return Col("obj", data)
    for part in (batch, held):
        if kind == "float" and part is not None and np.isnan(part.data[~part.nulls()]).any():
            raise _Fallback     # NaN orders and counts differently in NumPy and in Python
    arr = np.zeros(total, {"float": np.float64, "bool": bool}.get(kind, np.int64))
    null = np.ones(total, bool)
    if held is not None:
        arr[s_pos], null[s_pos] = held.data, held.nulls()
    arr[b_pos], null[b_pos] = batch.data, batch.nulls()
    return Col(kind, arr, null)


def _bounds(g: _Gathered, window: int | None, right: bool) -> tuple[np.ndarray, np.ndarray]:
    """``[lo, hi)`` rows of each batch event's window: its entity's events arrived so far."""
    key = ("bounds", window, right)
    if key in g.cache:
        return g.cache[key]  # type: ignore[no-any-return]
    times, pos = g.times, g.pos
    t = times[pos]
    hi = pos + 1 if right else _search(g, t, "left")
    lo = g.seg_start if window is None else np.minimum(_search(g, t - window, "right"), hi)
    g.cache[key] = (lo, hi)
    return lo, hi


def _search(g: _Gathered, values: np.ndarray, side: Literal["left", "right"]) -> np.ndarray:
    """``bisect`` of each batch event's value among its own entity's times."""
    keys, seg, low, span = _segment_keys(g)
    mine = seg[g.pos]
    query = mine * span + np.clip(values - low, 0, span - 1)
    return np.searchsorted(keys, query, side=side)  # type: ignore[call-overload,no-any-return]


def _segment_keys(g: _Gathered) -> tuple[np.ndarray, np.ndarray, int, int]:
    """One sorted key per gathered row: (entity, time), for bisection within an entity."""
    if "segkey" not in g.cache:
        seg = np.zeros(len(g.times), np.int64)
        starts = np.unique(g.seg_start)
        seg[starts[1:]] = 1
        seg = np.cumsum(seg)
        low = int(g.times.min()) - 1
        span = int(g.times.max()) - low + 2
        if (int(seg[-1]) + 1) * span >= 2**62:
            raise _Fallback
        g.cache["segkey"] = (seg * span + (g.times - low), seg, low, span)
    return g.cache["segkey"]  # type: ignore[no-any-return]


def _expand(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every row of every window, and which window it belongs to."""
    lengths = hi - lo
    total = int(lengths.sum())
    owner = np.repeat(np.arange(len(lo)), lengths)
    rows = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths) + np.repeat(lo, lengths)
    return rows, owner


def _aggregate(g: _Gathered, agg: Any, lo: np.ndarray, hi: np.ndarray) -> Col:
    """One aggregate for every batch event, as in ``evenflow.stream.state.evaluate``."""
    n = len(lo)
    kind = agg.agg
    retired = [r for r in g.retired if r is not None] if agg.window is None else []
    if kind == "count" and agg.col < 0:
        out = hi - lo
        if retired:
            out = out + np.array([0 if r is None else r.events for r in g.retired])[g.entity_of]
        return Col("int", out.astype(np.int64), np.zeros(n, bool))
    if kind == "since_last":
        times = g.times
        has = hi > lo
        latest = np.where(has, times[np.maximum(hi - 1, 0)], -(2**62))
        if retired:
            edge = np.array([-(2**62) if r is None or r.latest is None else r.latest
                             for r in g.retired])[g.entity_of]
            latest = np.maximum(latest, edge)
            has = latest > -(2**62)
        return Col("float", (times[g.pos] - latest) / 1e6, ~has)
    col = g.columns[agg.col]
    null = col.nulls()
    if kind == "count":
        ok = np.concatenate([[0], np.cumsum(~null)])
        out = ok[hi] - ok[lo]
        if retired:
            out = out + np.array([0 if r is None else r.nonnull[agg.col] for r in g.retired])[g.entity_of]
        return Col("int", out.astype(np.int64), np.zeros(n, bool))
    if retired or (agg.window is None and kind in ("sum", "mean", "var", "std", "distinct")):
        # Exact rational moments and retired sets are the per-record path's job.
        raise _Fallback
    if kind in ("first", "last"):
        rows = np.arange(len(null))
        if kind == "last":
            seen = np.maximum.accumulate(np.where(null, -1, rows))
            at = seen[np.maximum(hi - 1, 0)]
            found = (hi > lo) & (at >= lo)
        else:
            nxt = np.minimum.accumulate(np.where(null, len(null), rows)[::-1])[::-1]
            nxt = np.append(nxt, len(null))
            at = nxt[lo]
            found = (hi > lo) & (at < hi)
        at = np.where(found, at, 0)
        return _pick(col, at, ~found)
    rows, owner = _expand(lo, hi)
    keep = ~null[rows]
    rows, owner = rows[keep], owner[keep]
    count = np.bincount(owner, minlength=n)
    empty = count == 0
    if kind == "distinct":
        codes = _codes(g, agg.col)
        pairs = np.unique(owner * (int(codes.max(initial=0)) + 1) + codes[rows])
        return Col("int", np.bincount(pairs // (int(codes.max(initial=0)) + 1), minlength=n)
                   .astype(np.int64), np.zeros(n, bool))
    if col.kind == "obj":
        raise _Fallback
    values = col.data[rows]
    if kind in ("min", "max"):
        if len(values) == 0:
            return Col(col.kind, np.zeros(n, col.data.dtype), np.ones(n, bool))
        starts = np.flatnonzero(~empty)
        firsts = np.cumsum(count) - count
        ufunc = np.minimum if kind == "min" else np.maximum
        out = np.zeros(n, col.data.dtype)
        out[starts] = ufunc.reduceat(values, firsts[starts])
        return Col(col.kind, out, empty)
    if kind == "sum":
        if col.kind == "int":
            total = np.zeros(n, np.int64)
            np.add.at(total, owner, values)
            return Col("int", total, np.zeros(n, bool))
        sums = np.bincount(owner, weights=values, minlength=n)
        if empty.any():                                   # an empty sum is the integer 0
            return Col("obj", [0 if e else s for e, s in zip(empty.tolist(), sums.tolist(), strict=True)])
        return Col("float", sums, np.zeros(n, bool))
    sums = np.bincount(owner, weights=values.astype(np.float64), minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / count
        if kind == "mean":
            return Col("float", mean, empty)
        dev = values - mean[owner]
        var = np.bincount(owner, weights=dev * dev, minlength=n) / (count - 1)
    few = count < 2
    return Col("float", var if kind == "var" else np.sqrt(np.where(few, 0.0, var)), few)


def _pick(col: Col, at: np.ndarray, null: np.ndarray) -> Col:
    if col.kind == "obj":
        picked = col.data[at]
        picked[null] = None
        return Col("obj", picked)
    return Col(col.kind, col.data[at], null | col.nulls()[at])


def _codes(g: _Gathered, c: int) -> np.ndarray:
    key = ("codes", c)
    if key not in g.cache:
        col = g.columns[c]
        if col.kind == "obj":
            try:      # text: Arrow's hash table (nulls are never looked up)
                codes = pa.array(col.data, pa.string()).dictionary_encode().indices
                g.cache[key] = np.asarray(codes.fill_null(0), np.int64)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                index: dict[Any, int] = {}
                g.cache[key] = np.fromiter((index.setdefault(v, len(index)) for v in col.data),
                                           np.int64, len(col.data))
        else:
            g.cache[key] = np.unique(col.data, return_inverse=True)[1].astype(np.int64)
    return g.cache[key]  # type: ignore[no-any-return]


# -- row expressions ----------------------------------------------------------------------------
class _Unsupported(Exception):
    pass


def _const(value: Any, n: int) -> Col:
    if value is None:
        return Col("float", np.zeros(n), np.ones(n, bool))
    if isinstance(value, bool):
        return Col("bool", np.full(n, value), np.zeros(n, bool))
    if isinstance(value, int) and -_BIG < value < _BIG:
        return Col("int", np.full(n, value, np.int64), np.zeros(n, bool))
    if isinstance(value, float):
        return Col("float", np.full(n, value), np.zeros(n, bool))
    return Col("obj", [value] * n)


def _numeric(c: Col) -> bool:
    return c.kind in ("int", "float")


def _evaluate(node: ast.expr, env: dict[str, Col], n: int) -> Col:
    """``Expr`` semantics (``evenflow/core/expr.py``) over columns; ``_Unsupported`` otherwise."""
    with np.errstate(all="ignore"):
        return _eval(node, env, n)


def _eval(node: ast.expr, env: dict[str, Col], n: int) -> Col:
    match node:
        case ast.Name(id=name):
            if name not in env:
                return _const(None, n)
            return env[name]
        case ast.Constant(value=value):
            return _const(value, n)
        case ast.BinOp(left=left, op=op, right=right):
            a, b = _eval(left, env, n), _eval(right, env, n)
            if not (_numeric(a) and _numeric(b)):
                raise _Unsupported
            null = a.nulls() | b.nulls()
            if isinstance(op, ast.Div):
                zero = b.data == 0
                return Col("float", a.data / np.where(zero, 1, b.data), null | zero)
            fn = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply}[type(op)]
            kind = "int" if a.kind == b.kind == "int" else "float"
            if kind == "int" and (np.abs(a.data).max(initial=0) >= 2**31 or
                                  np.abs(b.data).max(initial=0) >= 2**31):
                raise _Unsupported
            return Col(kind, fn(a.data, b.data), null)
        case ast.UnaryOp(op=ast.USub(), operand=operand):
            v = _eval(operand, env, n)
            if not _numeric(v):
                raise _Unsupported
            return Col(v.kind, -v.data, v.nulls())
        case ast.UnaryOp(op=ast.Not(), operand=operand):
            v = _eval(operand, env, n)
            if v.kind != "bool":
                raise _Unsupported
            return Col("bool", ~v.data, v.nulls())
        case ast.Compare(left=left, ops=[op], comparators=[right]):
            a, b = _eval(left, env, n), _eval(right, env, n)
            same = (_numeric(a) and _numeric(b)) or (a.kind == b.kind and a.kind in ("ts", "bool"))
            if not same:
                raise _Unsupported
            fn = {ast.Lt: np.less, ast.LtE: np.less_equal, ast.Gt: np.greater,
                  ast.GtE: np.greater_equal, ast.Eq: np.equal, ast.NotEq: np.not_equal}[type(op)]
            return Col("bool", fn(a.data, b.data), a.nulls() | b.nulls())
        case ast.BoolOp(op=op, values=values):
            parts = [_eval(v, env, n) for v in values]
            if any(p.kind == "obj" or p.kind == "ts" for p in parts):
                raise _Unsupported
            decisive = not isinstance(op, ast.And)
            hit = np.zeros(n, bool)
            unknown = np.zeros(n, bool)
            for p in parts:
                truth = p.data.astype(bool)
                hit |= ~p.nulls() & (truth == decisive)
                unknown |= p.nulls()
            return Col("bool", np.where(hit, decisive, not decisive), ~hit & unknown)
        case ast.Call(func=ast.Name(id="coalesce"), args=args):
            parts = [_eval(a, env, n) for a in args]
            kinds = {p.kind for p in parts}
            if not (len(kinds) == 1 and "obj" not in kinds) and not kinds <= {"int", "float"}:
                raise _Unsupported
            kind = kinds.pop() if len(kinds) == 1 else "float"
            data = parts[-1].data.astype(np.float64) if kind == "float" else parts[-1].data.copy()
            null = parts[-1].nulls().copy()
            for p in reversed(parts[:-1]):
                here = ~p.nulls()
                data = np.where(here, p.data, data)
                null = np.where(here, False, null)
            return Col(kind, data, null)
        case ast.Call(func=ast.Name(id=name), args=[arg]):
            v = _eval(arg, env, n)
            null = v.nulls()
            if name == "hour":
                if v.kind == "ts":
                    return Col("int", (v.data // 3_600_000_000) % 24, null)
                if v.kind == "int":
                    return Col("int", v.data, null)
                raise _Unsupported
            if name == "epoch_seconds" and v.kind == "ts":
                return Col("float", v.data / 1e6, null)
            if not _numeric(v):
                raise _Unsupported
            if name == "abs":
                return Col(v.kind, np.abs(v.data), null)
            if name == "float":
                return Col("float", v.data.astype(np.float64), null)
            x = v.data.astype(np.float64)
            if name == "sqrt":
                return Col("float", np.sqrt(np.where(x >= 0, x, 0.0)), null | ~(x >= 0))
            if name == "log1p":
                return Col("float", np.log1p(np.where(x > -1, x, 0.0)), null | ~(x > -1))
    raise _Unsupported


# -- the micro-batch ----------------------------------------------------------------------------
@dataclass
class BatchResult:
    """What one call to :meth:`StreamEngine.process_batch` produced.

    ``outputs`` holds one ``pyarrow.Table`` per feature set (one row per kept event, arrival
    order, the columns of ``process``'s rows); ``quarantined`` and ``duplicates`` are the same
    entries ``process`` gives.
    """

    outputs: dict[str, pa.Table]
    quarantined: list[dict[str, Any]]
    duplicates: list[dict[str, Any]]
    records: int
    fast: bool = True      # False when the whole batch took the per-record path
    #: per feature set: "vectorized", or "per-event" when its aggregates were evaluated event by
    #: event (out-of-order entity, late-known events, NaN, retired moments)
    aggregates: dict[str, str] = field(default_factory=dict)

    def rows(self, feature_set: str) -> list[dict[str, Any]]:
        """One feature set's output as ``process`` gives it: a list of dicts."""
        return self.outputs[feature_set].to_pylist()  # type: ignore[no-any-return]


def whole_batch_fallback(engine: StreamEngine) -> str | None:
    """Why the engine's configuration needs the per-record path for every batch, or None."""
    if engine.emit != "arrival":
        return "emit='final'"
    if engine.ttl is not None or engine.remember is not None:
        return "ttl= or remember="
    for fs in engine.sets.values():
        for step, _art in fs.steps:
            if isinstance(step, Dedup) and step.keep != "first":
                return "Dedup(keep='last')"
            if getattr(step, "stateful", False):
                return f"the stateful step {step.id}"
    return None


def _table(columns: dict[str, Col]) -> pa.Table:
    return pa.table({name: col.arrow() for name, col in columns.items()})


def _rows_table(rows: list[dict[str, Any]]) -> pa.Table:
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    return _table({name: Col.of_values([r.get(name) for r in rows]) for name in names})


def from_result(result: StreamResult) -> BatchResult:
    return BatchResult({name: _rows_table(rows) for name, rows in result.outputs.items()},
                       result.quarantined, result.duplicates, result.records, fast=False)


def process_batch(engine: StreamEngine, records: Sequence[dict[str, Any] | str | bytes],
                  seqs: Sequence[int] | None) -> BatchResult:
    """See :meth:`StreamEngine.process_batch`.

    The cyclic garbage collector is paused for the batch: the batch creates no reference
    cycles (reference counting frees all of it), and without the pause Python runs a
    collection every few hundred allocations, each scanning the young objects and, every
    hundredth time, the whole window state and dedup memory. At the end, one collection of the
    young generation scans what the batch allocated, once.
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        return _process_batch(engine, records, seqs)
    finally:
        if paused:
            gc.enable()
            gc.collect(0)      # the batch's young objects, once, here rather than later


def _process_batch(engine: StreamEngine, records: Sequence[dict[str, Any] | str | bytes],
                   seqs: Sequence[int] | None) -> BatchResult:
    import json

    from evenflow.stream.engine import payload_text

    n = len(records)
    seq_list = list(range(engine.seq, engine.seq + n)) if seqs is None else list(seqs)
    if len(seq_list) != n:
        raise ValueError(f"process_batch: {n} records but {len(seq_list)} seqs")
    if whole_batch_fallback(engine) is not None or n == 0:
        return from_result(engine.process(records, seqs=seq_list))
    quarantined: list[dict[str, Any]] = []
    duplicates: list[dict[str, Any]] = []
    failures: dict[int, tuple[str, str | None, str, str]] = {}
    payloads: list[Any] = list(records)
    dicts: list[dict[str, Any]] = []
    for i, record in enumerate(records):
        if isinstance(record, (str, bytes)):
            text = record.decode("utf-8", "replace") if isinstance(record, bytes) else record
            payloads[i] = text
            try:
                record = json.loads(text)
            except ValueError as exc:
                failures[i] = ("malformed_record", None, "read", f"not JSON: {exc}")
                record = {}
            else:
                if not isinstance(record, dict):
                    failures[i] = ("malformed_record", None, "read", "not a JSON object")
                    record = {}
        dicts.append(record)
    seq_arr = np.array(seq_list, np.int64)
    cols, valid, bad = validate(engine, dicts)
    for i in failures:
        valid[i] = False
    for i, (why, where, detail) in bad.items():
        if i not in failures:
            failures[i] = (why, where, "schema", detail)
    src = engine.source
    t = cols[src.event_time].data  # type: ignore[index]
    avail = src.available_time
    if avail:
        a_col = cols[avail]
        a = np.where(a_col.nulls(), t, a_col.data)
    else:
        a = t
    # Lateness: the watermark before each record is the running maximum of earlier valid times.
    start = -(2**63) if engine.max_time is None else engine.max_time
    running = np.maximum.accumulate(np.where(valid, t, -(2**63)))
    before = np.concatenate([[start], np.maximum(running[:-1], start)]) if n else running
    seen_any = before > -(2**63)
    late = valid & seen_any & (t < before - engine.lateness)
    for i in np.flatnonzero(late).tolist():
        w = int(before[i]) - engine.lateness
        failures[i] = ("late", src.event_time, "watermark",
                       f"event_time is {(w - int(t[i])) / 1e6:g} s behind the watermark")
    alive = valid & ~late
    counted = valid & ~late       # records that move the watermark
    top = engine.max_time
    if counted.any():
        latest = int(t[counted].max())
        top = latest if top is None else max(top, latest)
    watermark = None if top is None else top - engine.lateness
    outputs: dict[str, pa.Table] = {}
    paths: dict[str, str] = {}
    for name, fs in engine.sets.items():
        kept, fs_cols = _steps(fs, cols, alive, seq_arr, t, payloads, failures, duplicates)
        alive &= ~np.isin(np.arange(n), list(failures))
        horizon = None if watermark is None else watermark - max(fs.longest, 1)
        outputs[name], paths[name] = _features(fs, fs_cols, kept, seq_arr, t, a, horizon)
    # Quarantine entries in arrival order, like process.
    for i in sorted(failures):
        reason, fld, step_id, detail = failures[i]
        quarantined.append({"seq": seq_list[i], "payload": payload_text(payloads[i]), "reason": reason,
                            "field": fld, "step": step_id, "detail": detail})
    engine.counts["records"] += n
    engine.counts["quarantined"] += len(quarantined)
    engine.seq = max(engine.seq, max(seq_list) + 1)
    engine.max_time = top
    duplicates.sort(key=lambda d: d["_at"])
    for d in duplicates:
        del d["_at"]
    result = BatchResult(outputs, quarantined, duplicates, n, aggregates=paths)
    if engine.watermark is not None:
        for fs in engine.sets.values():
            fs.evict(engine.watermark)
    return result


def _steps(fs: FeatureSetStream, cols: dict[str, Col], alive: np.ndarray, seqs: np.ndarray,
           t: np.ndarray, payloads: list[Any], failures: dict[int, Any],
           duplicates: list[dict[str, Any]]) -> tuple[np.ndarray, dict[str, Col]]:
    """Run the feature set's steps and unique checks; the rows it keeps and their columns."""
    from evenflow.stream.engine import payload_text

    idx = np.flatnonzero(alive)
    cur = dict(cols) if len(idx) == len(alive) else {name: col.take(idx) for name, col in cols.items()}
    keep = np.ones(len(idx), bool)
    seq_l = seqs[idx].tolist()
    t_l = t[idx].tolist()
    for step, artifact in fs.steps:
        live = np.flatnonzero(keep)
        if isinstance(step, Dedup):
            if len(live) == 0:
                continue
            names = step.key or list(cur)
            values = [cur[c].values() if c in cur else [None] * len(keep) for c in names]
            keys = list(zip(*values, strict=True))
            codes, uniq = _entity_codes([cur[k] for k in fs.key], len(keep))
            ents = list(map(uniq.__getitem__, codes.tolist()))     # one tuple per entity
            memory = fs.seen.setdefault(step.id, {})
            new = _first_seen(memory, keys, live)
            fresh = np.flatnonzero(new)
            new_keys, new_seqs, new_ts, new_ents = _pick_all(fresh, keys, seq_l, t_l, ents)
            memory.update(zip(new_keys, zip(new_seqs, new_ts, new_ents, strict=True), strict=True))
            _remember_all(fs, "d", step.id, new_keys, new_ts)
            for j in np.flatnonzero(~new & keep).tolist():
                keep[j] = False
                duplicates.append({"feature_set": fs.fs.name, "seq": seq_l[j],
                                   "kept": memory[keys[j]][0], "step": step.id,
                                   "payload": payload_text(payloads[idx[j]]), "_at": int(idx[j])})
            continue
        assert artifact is not None
        col = cur.get(step.column)
        if isinstance(step, Impute) and not step.indicator and col is not None and \
                col.kind == "float" and type(artifact["value"]) is float:
            assert col.null is not None
            data = np.where(col.null, float(artifact["value"]), col.data)
            cur[step.column] = Col("float", data, np.zeros(len(data), bool))
            continue
        if isinstance(step, Clip) and col is not None and col.kind == "float":
            assert col.null is not None
            data = col.data
            if artifact["lower"] is not None:
                data = np.maximum(data, float(artifact["lower"]))
            if artifact["upper"] is not None:
                data = np.minimum(data, float(artifact["upper"]))
            cur[step.column] = Col("float", data, col.null)
            continue
        # Any other fitted step: its one-record form, record by record.
        names = list(cur)
        columns = [cur[c].values() for c in names]
        rows: list[dict[str, Any] | None] = [None] * len(keep)
        for j in live.tolist():
            rec = {c: columns[k][j] for k, c in enumerate(names)}
            try:
                rows[j] = step.transform_one(rec, artifact)
            except RecordRejected as exc:
                keep[j] = False
                failures[int(idx[j])] = (exc.reason, exc.field, exc.step, exc.message)
        out_names: dict[str, None] = dict.fromkeys(names)
        for row in rows:
            if row is not None:
                out_names.update(dict.fromkeys(row))
        cur = {c: Col.of_values([None if r is None else r.get(c) for r in rows]) for c in out_names}
    for name in fs.unique:
        memory = fs.unique_seen[name]
        values = cur[name].values()
        checked = keep & ~cur[name].nulls()
        new = _first_seen(memory, values, np.flatnonzero(checked))
        new_values, new_seqs, new_ts = _pick_all(np.flatnonzero(new), values, seq_l, t_l)
        memory.update(zip(new_values, zip(new_seqs, new_ts, strict=True), strict=True))
        _remember_all(fs, "u", name, new_values, new_ts)
        for j in np.flatnonzero(checked & ~new).tolist():
            first = memory[values[j]]
            if first[0] == seq_l[j]:      # this very record, seen before a restart
                _remember_all(fs, "u", name, [values[j]], [t_l[j]])
                continue
            keep[j] = False
            failures[int(idx[j])] = ("not_unique", name, "schema.unique",
                                     f"{name}={values[j]} already seen at record {first[0]}")
    # A record quarantined by a later unique field stays in the earlier fields' memory, as in
    # process; it is not kept.
    sel = np.flatnonzero(keep)
    if len(sel) == len(keep):
        return idx, cur
    return idx[sel], {name: col.take(sel) for name, col in cur.items()}


def _pick_all(rows: np.ndarray, *lists: list[Any]) -> list[list[Any]]:
    """``[lst[j] for j in rows]`` for each list (the lists themselves when rows is all of them)."""
    if lists and len(rows) == len(lists[0]):
        return list(lists)
    picked = rows.tolist()
    return [[lst[j] for j in picked] for lst in lists]


def _entity_codes(keys: list[Col], n: int) -> tuple[np.ndarray, list[tuple[Any, ...]]]:
    """Each record's entity number (in order of first appearance) and the entity keys."""
    if len(keys) == 1 and keys[0].kind == "obj" and n:
        try:    # one text key: Arrow's hash table, one tuple per entity rather than per record
            encoded = pa.array(keys[0].data, pa.string()).dictionary_encode()
            if encoded.null_count == 0:
                return (np.asarray(encoded.indices, np.int64),
                        [(v,) for v in encoded.dictionary.to_pylist()])
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
    index: dict[tuple[Any, ...], int] = {}
    rows = zip(*[k.values() for k in keys], strict=True)
    codes = np.fromiter((index.setdefault(e, len(index)) for e in rows), np.int64, n)
    return codes, list(index)


def _first_seen(memory: dict[Any, Any], keys: list[Any], live: np.ndarray) -> np.ndarray:
    """Which ``live`` positions hold a key seen neither in ``memory`` nor earlier in the batch."""
    new = np.zeros(len(keys), bool)
    if len(live) == 0:
        return new
    lookup = keys if len(live) == len(keys) else [keys[j] for j in live.tolist()]
    m = len(lookup)
    known = np.array(list(map(memory.__contains__, lookup)), bool)
    # Each key's first position: later positions are overwritten by earlier ones.
    first_at = dict(zip(reversed(lookup), range(m - 1, -1, -1), strict=True))
    first = np.zeros(m, bool)
    first[np.fromiter(first_at.values(), np.int64, len(first_at))] = True
    new[live] = first & ~known
    return new


def _remember_all(fs: FeatureSetStream, kind: str, name: str, keys: list[Any], times: list[int]) -> None:
    """``FeatureSetStream._remember`` for many keys at once (arrival order)."""
    fs._dirty(kind, name).update(keys)
    if fs.forgets:
        fs.memory_order.extend((t, kind, name, k) for t, k in zip(times, keys, strict=True))


def _features(fs: FeatureSetStream, cols: dict[str, Col], kept: np.ndarray, seqs: np.ndarray,
              t_all: np.ndarray, a_all: np.ndarray, horizon: int | None) -> tuple[pa.Table, str]:
    n = len(kept)
    t = t_all[kept]
    a = a_all[kept]
    seq = seqs[kept]
    codes, entities = _entity_codes([cols[k] for k in fs.key], n)
    order = np.argsort(codes, kind="stable")
    value_cols = [cols[c] if c in cols else _const(None, n) for c in fs.columns]
    agg_cols: list[Col] | None = None
    if n and (a == t).all():
        try:
            g = _gather(fs, entities, codes[order], t[order], seq[order], a[order],
                        [c.take(order) for c in value_cols])
            agg_cols = _evaluate_all(fs, g, order)
        except _Fallback:
            agg_cols = None
    path = "vectorized"
    if agg_cols is not None:
        _append_states(fs, g, entities, horizon)
    else:
        path = "per-event"
        agg_cols = _per_event(fs, [entities[c] for c in codes.tolist()], t, seq, a, value_cols)
    out = dict(cols)
    for name, col in zip(fs.names, agg_cols, strict=True):
        out[name] = col
    if fs.derived:
        env = dict(out)
        derived: dict[str, Col] = {}
        for d in fs.fs.derived:
            try:
                derived[d.name] = _evaluate(d.parsed.tree, env, n)
            except _Unsupported:
                fn = _compile(d.parsed.tree)
                names = list(env)
                columns = [env[c].values() for c in names]
                derived[d.name] = Col.of_values(
                    [fn(dict(zip(names, row, strict=True))) for row in zip(*columns, strict=True)])
        out.update(derived)
    out["__seq"] = Col("int", seq, np.zeros(n, bool))
    return _table(out), path


def _evaluate_all(fs: FeatureSetStream, g: _Gathered, order: np.ndarray) -> list[Col]:
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    out: list[Col] = [None] * len(fs.aggs.aggs)  # type: ignore[list-item]
    for window, right, positions in fs.aggs.groups:
        lo, hi = _bounds(g, window, right)
        for p in positions:
            out[p] = _aggregate(g, fs.aggs.aggs[p], lo, hi).take(inverse)
    return out


def _append_states(fs: FeatureSetStream, g: _Gathered, entities: list[tuple[Any, ...]],
                   horizon: int | None) -> None:
    """Append the batch's events to their entities' states and evict what left every window,
    as ``FeatureSetStream.evict`` would: in place, so no list is allocated per entity."""
    held, ns, nb, batch_lists = g.cache["state"]
    k = len(entities)
    retire = fs.retire
    inline = horizon is not None and (retire is None or not retire.columns)
    if horizon is not None and inline:
        keys, _seg, low, span = _segment_keys(g)
        base = np.cumsum(ns + nb) - (ns + nb)
        cut = np.searchsorted(keys, np.arange(k) * span + np.clip(horizon - low, 0, span - 1),
                              side="left") - base
    else:
        cut = np.zeros(k, np.int64)
    drop = np.minimum(cut, ns).tolist()
    b_end = np.cumsum(nb)
    b_from = (b_end - nb + np.maximum(cut - ns, 0)).tolist()
    b_end_l = b_end.tolist()
    states = fs.states
    width = len(fs.columns)
    for entity, state, d, b0, b1 in zip(entities, held, drop, b_from, b_end_l, strict=True):
        if state is None:
            state = states[entity] = KeyState(batch_lists[0][b0:b1], batch_lists[1][b0:b1],
                                              batch_lists[2][b0:b1],
                                              [lst[b0:b1] for lst in batch_lists[3:]])
            continue
        cols = state.columns
        if d:
            del state.times[:d], state.seqs[:d], state.avail[:d]
            for c in range(width):
                del cols[c][:d]
        if b0 < b1:
            state.times += batch_lists[0][b0:b1]
            state.seqs += batch_lists[1][b0:b1]
            state.avail += batch_lists[2][b0:b1]
            for c in range(width):
                cols[c] += batch_lists[3 + c][b0:b1]
    if inline and retire is not None:
        base = np.cumsum(ns + nb) - (ns + nb)
        newest = g.times[np.maximum(base + cut - 1, 0)].tolist()
        for i in np.flatnonzero(cut).tolist():
            state = states[entities[i]]
            r = state.retired
            if r is None:
                r = state.retired = Retired.empty(width)
            r.events += int(cut[i])
            r.latest = newest[i] if r.latest is None else max(r.latest, newest[i])
    fs.dirty.update(entities)
    if not inline:
        fs.touched.update(entities)     # evicted at the end of the batch, as process does
    elif retire is None:
        for i in np.flatnonzero(ns + nb - cut == 0).tolist():
            del states[entities[i]]


def _values_at(col: Col, rows: np.ndarray) -> list[Any]:
    if col.kind == "obj":
        return col.data[rows].tolist()  # type: ignore[no-any-return]
    return col.take(np.flatnonzero(rows)).values()


def _per_event(fs: FeatureSetStream, entities: list[tuple[Any, ...]], t: np.ndarray, seq: np.ndarray,
               a: np.ndarray, value_cols: list[Col]) -> list[Col]:
    """The per-record path's state update and evaluation, event by event in arrival order."""
    vals = [c.values() for c in value_cols]
    rows: list[list[Any]] = []
    for j, (entity, tj, sj, aj) in enumerate(zip(entities, t.tolist(), seq.tolist(), a.tolist(),
                                                  strict=True)):
        state = fs.states.get(entity)
        if state is None:
            state = fs.states[entity] = KeyState.empty(fs.columns)
        state.add(tj, sj, aj, [v[j] for v in vals])
        fs.dirty.add(entity)
        fs.touched.add(entity)
        rows.append(evaluate(state, fs.aggs, tj, aj))
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in fs.names]
    return [Col.of_values(list(c)) for c in columns]


__all__ = ["BatchResult", "Col", "parse_timestamps", "process_batch", "validate",
           "whole_batch_fallback"]
