"""Window aggregates for every event of a micro-batch over its entity's state, and the state update.

Each feature set gathers its touched entities' window states and the batch's events into one
array per column (state rows first, then the entity's batch events in arrival order), computes
each aggregate for every batch event with searches, prefix counts, ``bincount`` sums and
``reduceat`` extremes, then appends the batch to the states in place and evicts what left every
window. Anything it cannot decide exactly raises :class:`Fallback`; :func:`per_event` is then the
per-record code, event by event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa

from evenflow.stream.state import KeyState, Retired, evaluate
from evenflow.stream.vector.columns import Col, Fallback, objects

if TYPE_CHECKING:
    from evenflow.stream.engine import FeatureSetStream


@dataclass
class Gathered:
    """Each touched entity's window state followed by its batch events, in one set of arrays."""

    times: np.ndarray
    seg_start: np.ndarray          # per batch event (entity-sorted): its entity's first row
    pos: np.ndarray                # per batch event: its row
    columns: list[Col]
    retired: list[Any]             # per entity: its Retired accumulators or None
    entity_of: np.ndarray          # per batch event: entity number
    cache: dict[Any, Any] = field(default_factory=dict)


def gather(fs: FeatureSetStream, entities: list[tuple[Any, ...]], codes: np.ndarray,
            t_sorted: np.ndarray, seq_sorted: np.ndarray, a_sorted: np.ndarray,
            batch_cols: list[Col]) -> Gathered:
    k = len(entities)
    nb = np.bincount(codes, minlength=k)
    held = [fs.states.get(e) for e in entities]
    # One pass over the states: each one's lists are read while they are in cache.
    lows = -(2**62)
    sizes: list[int] = []
    last_times: list[int] = []
    last_seqs: list[int] = []
    retired: list[Retired | None] = []
    held_times: list[int] = []
    held_cols: list[list[Any]] = [[] for _ in batch_cols]
    add_times, adders = held_times.extend, [c.extend for c in held_cols]
    for st in held:
        if st is None:
            sizes.append(0)
            last_times.append(lows)
            last_seqs.append(lows)
            retired.append(None)
            continue
        if st.late_known:
            raise Fallback
        retired.append(st.retired)
        own = st.times
        sizes.append(len(own))
        if own:
            last_times.append(own[-1])
            last_seqs.append(st.seqs[-1])
            add_times(own)
            for add, col in zip(adders, st.columns, strict=True):
                add(col)
        else:
            last_times.append(lows)
            last_seqs.append(lows)
    ns = np.array(sizes, np.int64)
    last_t = np.array(last_times, np.int64)
    last_s = np.array(last_seqs, np.int64)
    # Each entity's batch events must come after its state, in (event_time, seq) order.
    starts = np.cumsum(nb) - nb
    prev_t = np.empty_like(t_sorted)
    prev_s = np.empty_like(seq_sorted)
    prev_t[1:], prev_s[1:] = t_sorted[:-1], seq_sorted[:-1]
    prev_t[starts], prev_s[starts] = last_t, last_s
    if not ((t_sorted > prev_t) | ((t_sorted == prev_t) & (seq_sorted > prev_s))).all():
        raise Fallback
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

    times = combined(held_times, t_sorted)
    columns = [_merge(lst, bcol, s_pos, b_pos, total)
               for lst, bcol in zip(held_cols, batch_cols, strict=True)]
    g = Gathered(times, np.repeat(base, nb), b_pos, columns, retired, codes)
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
        data[s_pos] = objects(state)
        data[b_pos] = objects(batch.values())
        return Col("obj", data)
    for part in (batch, held):
        if kind == "float" and part is not None and np.isnan(part.data[~part.nulls()]).any():
            raise Fallback     # NaN orders and counts differently in NumPy and in Python
    arr = np.zeros(total, {"float": np.float64, "bool": bool}.get(kind, np.int64))
    null = np.ones(total, bool)
    if held is not None:
        arr[s_pos], null[s_pos] = held.data, held.nulls()
    arr[b_pos], null[b_pos] = batch.data, batch.nulls()
    return Col(kind, arr, null)


def _bounds(g: Gathered, window: int | None, right: bool) -> tuple[np.ndarray, np.ndarray]:
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


def _search(g: Gathered, values: np.ndarray, side: Literal["left", "right"]) -> np.ndarray:
    """``bisect`` of each batch event's value among its own entity's times."""
    keys, seg, low, span = _segment_keys(g)
    mine = seg[g.pos]
    query = mine * span + np.clip(values - low, 0, span - 1)
    return np.searchsorted(keys, query, side=side)  # type: ignore[call-overload,no-any-return]


def _segment_keys(g: Gathered) -> tuple[np.ndarray, np.ndarray, int, int]:
    """One sorted key per gathered row: (entity, time), for bisection within an entity."""
    if "segkey" not in g.cache:
        seg = np.zeros(len(g.times), np.int64)
        starts = np.unique(g.seg_start)
        seg[starts[1:]] = 1
        seg = np.cumsum(seg)
        low = int(g.times.min()) - 1
        span = int(g.times.max()) - low + 2
        if (int(seg[-1]) + 1) * span >= 2**62:
            raise Fallback
        g.cache["segkey"] = (seg * span + (g.times - low), seg, low, span)
    return g.cache["segkey"]  # type: ignore[no-any-return]


def _expand(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every row of every window, and which window it belongs to."""
    lengths = hi - lo
    total = int(lengths.sum())
    owner = np.repeat(np.arange(len(lo)), lengths)
    rows = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths) + np.repeat(lo, lengths)
    return rows, owner


def _aggregate(g: Gathered, agg: Any, lo: np.ndarray, hi: np.ndarray) -> Col:
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
        raise Fallback
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
        raise Fallback
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


def _codes(g: Gathered, c: int) -> np.ndarray:
    key = ("codes", c)
    if key not in g.cache:
        col = g.columns[c]
        if col.kind == "obj":
            try:      # text: Arrow's hash table (nulls are never looked up)
                codes = pa.array(col.data, pa.string()).dictionary_encode().indices
                g.cache[key] = np.asarray(codes.fill_null(0), np.int64)
            except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeEncodeError):
                index: dict[Any, int] = {}
                g.cache[key] = np.fromiter((index.setdefault(v, len(index)) for v in col.data),
                                           np.int64, len(col.data))
        else:
            g.cache[key] = np.unique(col.data, return_inverse=True)[1].astype(np.int64)
    return g.cache[key]  # type: ignore[no-any-return]



def evaluate_all(fs: FeatureSetStream, g: Gathered, order: np.ndarray) -> list[Col]:
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    out: list[Col] = [None] * len(fs.aggs.aggs)  # type: ignore[list-item]
    for window, right, positions in fs.aggs.groups:
        lo, hi = _bounds(g, window, right)
        for p in positions:
            out[p] = _aggregate(g, fs.aggs.aggs[p], lo, hi).take(inverse)
    return out


def append_states(fs: FeatureSetStream, g: Gathered, entities: list[tuple[Any, ...]],
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


def per_event(fs: FeatureSetStream, entities: list[tuple[Any, ...]], t: np.ndarray, seq: np.ndarray,
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
