"""Per-entity window state and the evaluation of aggregates over it, as of any (t, a).

An entity's state holds the events still inside some window, sorted by ``(event_time, seq)``
in parallel lists, so a window is a slice found by bisection. Evaluating an aggregate recomputes
it over the slice (``math.fsum`` and two-pass variance, as in ``docs/semantics.md`` §11) instead
of adding and removing values, so nothing drifts however long the stream runs.

Events that leave every bounded window are *retired*: unbounded (``window=None``) aggregates
keep exact running accumulators for them (integer and rational sums, min, max, first, last,
the distinct set), so memory stays bounded by the longest window.

>>> from evenflow.core.features import count, mean, since_last
>>> aggs = [count(window="1h"), mean("x", window="1h"), since_last()]
>>> s = KeyState.empty(["x"])
>>> H = 3_600_000_000
>>> for seq, (t, x) in enumerate([(0, 1.0), (H // 2, 3.0), (H, None)]):
...     s.add(t, seq, t, (x,))
>>> evaluate(s, compile_aggregates(aggs, ["x"]), H, H)
[2, 3.0, 1800.0]
>>> s.evict(horizon=H // 2, retire=retire_plan(compile_aggregates(aggs, ["x"])))  # the event at 0 retires
>>> evaluate(s, compile_aggregates(aggs, ["x"]), 2 * H, 2 * H)
[0, None, 3600.0]
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from evenflow.core.features import Aggregate

_US = 1_000_000


@dataclass(frozen=True, slots=True)
class RetirePlan:
    """What retired events must still feed: the unbounded aggregates' columns (``columns``), and
    those of them that need exact sums (``moments``: sum, mean, var, std)."""

    columns: tuple[int, ...]
    moments: frozenset[int]


@dataclass(slots=True)
class Retired:
    """Exact accumulators over retired events, for unbounded aggregates."""

    events: int = 0
    latest: int | None = None                     # largest event_time
    nonnull: list[int] = field(default_factory=list)
    total: list[Any] = field(default_factory=list)    # int or Fraction per column (exact)
    squares: list[Any] = field(default_factory=list)  # Fraction per column (exact)
    low: list[Any] = field(default_factory=list)
    high: list[Any] = field(default_factory=list)
    first: list[Any] = field(default_factory=list)    # (event_time, seq, value) or None
    last: list[Any] = field(default_factory=list)
    seen: list[set[Any]] = field(default_factory=list)

    @classmethod
    def empty(cls, width: int) -> Retired:
        return cls(0, None, [0] * width, [0] * width, [Fraction(0)] * width, [None] * width,
                   [None] * width, [None] * width, [None] * width, [set() for _ in range(width)])

    def add(self, t: int, seq: int, values: Sequence[Any], plan: RetirePlan) -> None:
        self.events += 1
        self.latest = t if self.latest is None else max(self.latest, t)
        for i in plan.columns:
            v = values[i]
            if v is None:
                continue
            self.nonnull[i] += 1
            if i in plan.moments and isinstance(v, (int, float)) and not isinstance(v, bool):
                exact = v if isinstance(v, int) else Fraction(v)
                self.total[i] = self.total[i] + exact
                self.squares[i] = self.squares[i] + Fraction(exact) ** 2
            self.low[i] = v if self.low[i] is None or v < self.low[i] else self.low[i]
            self.high[i] = v if self.high[i] is None or v > self.high[i] else self.high[i]
            order = (t, seq)
            if self.first[i] is None or order < tuple(self.first[i][:2]):
                self.first[i] = (t, seq, v)
            if self.last[i] is None or order > tuple(self.last[i][:2]):
                self.last[i] = (t, seq, v)
            self.seen[i].add(v)


@dataclass(slots=True)
class KeyState:
    """One entity's events inside the windows, sorted by ``(event_time, seq)``."""

    times: list[int]
    seqs: list[int]
    avail: list[int]
    columns: list[list[Any]]          # one list per value column, parallel to ``times``
    late_known: int = 0               # events with available_time > event_time
    retired: Retired | None = None

    @classmethod
    def empty(cls, columns: Sequence[str]) -> KeyState:
        return cls([], [], [], [[] for _ in columns])

    def add(self, t: int, seq: int, a: int, values: Sequence[Any]) -> None:
        """Insert an event in ``(event_time, seq)`` order (out-of-order arrivals included)."""
        times = self.times
        if not times or t > times[-1] or (t == times[-1] and seq > self.seqs[-1]):
            times.append(t)
            self.seqs.append(seq)
            self.avail.append(a)
            for col, v in zip(self.columns, values, strict=True):
                col.append(v)
        else:
            i = bisect_right(times, t)
            while i > 0 and times[i - 1] == t and self.seqs[i - 1] > seq:
                i -= 1
            times.insert(i, t)
            self.seqs.insert(i, seq)
            self.avail.insert(i, a)
            for col, v in zip(self.columns, values, strict=True):
                col.insert(i, v)
        if a > t:
            self.late_known += 1

    def remove(self, seq: int) -> bool:
        """Drop the event with arrival number ``seq`` (a deduplicated record); whether it was here."""
        try:
            i = self.seqs.index(seq)
        except ValueError:
            return False
        if self.avail[i] > self.times[i]:
            self.late_known -= 1
        for lst in (self.times, self.seqs, self.avail, *self.columns):
            del lst[i]
        return True

    def evict(self, horizon: int, *, retire: RetirePlan | None) -> None:
        """Retire events with ``event_time < horizon`` that were known before ``horizon``.

        The engine passes the oldest time any future query can ask about minus the longest
        window, so no bounded window can see them again; strictly before it, so that a
        ``closed="left"`` query at exactly ``horizon`` still excludes events at ``horizon``.
        """
        times = self.times
        if not times or times[0] >= horizon:
            return
        n = bisect_left(times, horizon)
        # Every event is known at its event time unless some became available later.
        gone: Sequence[int] = range(n) if not self.late_known else \
            [i for i in range(n) if self.avail[i] < horizon]
        if not gone:
            return
        if retire is not None:
            if self.retired is None:
                self.retired = Retired.empty(len(self.columns))
            r = self.retired
            if retire.columns:
                for i in gone:
                    r.add(times[i], self.seqs[i], [c[i] for c in self.columns], retire)
            else:       # only counts and the latest time are kept
                r.events += len(gone)
                newest = times[gone[-1]]
                r.latest = newest if r.latest is None else max(r.latest, newest)
        if len(gone) == n:
            for lst in (self.times, self.seqs, self.avail, *self.columns):
                del lst[:n]
            return
        stay = [i for i in range(n) if self.avail[i] >= horizon]
        for lst in (self.times, self.seqs, self.avail, *self.columns):
            lst[:n] = [lst[i] for i in stay]

    @property
    def is_empty(self) -> bool:
        return not self.times and self.retired is None

    # -- serialization (the online store keeps one blob per entity) ----------------------------
    def to_wire(self) -> list[Any]:
        r = self.retired
        retired = None if r is None else [
            r.events, r.latest, r.nonnull, [_num_out(x) for x in r.total],
            [_num_out(x) for x in r.squares], r.low, r.high,
            [None if f is None else list(f) for f in r.first],
            [None if f is None else list(f) for f in r.last], [sorted(s, key=repr) for s in r.seen]]
        return [self.times, self.seqs, self.avail, self.columns, self.late_known, retired]

    def to_blob(self) -> bytes:
        """The state as the online store keeps it (msgpack of :meth:`to_wire`)."""
        import msgpack

        return msgpack.packb(self.to_wire(), use_bin_type=True)  # type: ignore[no-any-return]

    @classmethod
    def from_blob(cls, blob: bytes) -> KeyState:
        """A state read back from the online store."""
        import msgpack

        return cls.from_wire(msgpack.unpackb(blob, raw=False, strict_map_key=False))

    @classmethod
    def from_wire(cls, data: list[Any]) -> KeyState:
        times, seqs, avail, columns, late_known, retired = data
        state = cls(list(times), list(seqs), list(avail), [list(c) for c in columns], late_known)
        if retired is not None:
            events, latest, nonnull, total, squares, low, high, first, last, seen = retired
            state.retired = Retired(events, latest, list(nonnull), [_num_in(x) for x in total],
                                    [_num_in(x) for x in squares], list(low), list(high),
                                    [None if f is None else tuple(f) for f in first],
                                    [None if f is None else tuple(f) for f in last],
                                    [set(s) for s in seen])
        return state


def _num_out(x: Any) -> Any:
    if isinstance(x, Fraction):
        return ["q", str(x.numerator), str(x.denominator)]
    return ["i", str(x)]


def _num_in(x: list[str]) -> Any:
    return Fraction(int(x[1]), int(x[2])) if x[0] == "q" else int(x[1])


@dataclass(frozen=True, slots=True)
class CompiledAggregate:
    """An aggregate with its column resolved to an index into the state's value columns."""

    agg: str
    col: int                 # -1 for count() and since_last
    window: int | None
    right: bool
    name: str


def retire_plan(plan: AggregatePlan) -> RetirePlan | None:
    """``None`` when no aggregate is unbounded: retired events can then be forgotten."""
    unbounded = [g for g in plan.aggs if g.window is None]
    if not unbounded:
        return None
    return RetirePlan(tuple(sorted({g.col for g in unbounded if g.col >= 0})),
                      frozenset(g.col for g in unbounded
                                if g.agg in ("sum", "mean", "var", "std") and g.col >= 0))


@dataclass(frozen=True, slots=True)
class AggregatePlan:
    """Compiled aggregates, grouped by window so each group bisects and slices once."""

    aggs: tuple[CompiledAggregate, ...]
    groups: tuple[tuple[int | None, bool, tuple[int, ...]], ...]   # (window, right, positions)
    empty: tuple[Any, ...]
    fast: Any = None       # generated evaluation for the common case, see ``_generate``


def compile_aggregates(aggs: Sequence[Aggregate], columns: Sequence[str]) -> AggregatePlan:
    index = {c: i for i, c in enumerate(columns)}
    compiled = tuple(CompiledAggregate(a.agg, index[a.column] if a.column else -1, a.window_us,
                                       a.closed == "right", a.name) for a in aggs)
    groups: dict[tuple[int | None, bool], list[int]] = {}
    for pos, g in enumerate(compiled):
        groups.setdefault((g.window, g.right), []).append(pos)
    plan = AggregatePlan(compiled, tuple((w, r, tuple(p)) for (w, r), p in groups.items()),
                         tuple(_empty(g.agg) for g in compiled))
    object.__setattr__(plan, "fast", _generate(plan))
    return plan


def evaluate(state: KeyState | None, plan: AggregatePlan, t: int, a: int) -> list[Any]:
    """Every aggregate of one entity at valid time ``t`` as known at ``a`` (semantics §3)."""
    if state is None:
        return list(plan.empty)
    times = state.times
    # Every held event is known by ``a`` unless some became available after its event time.
    filter_known = a < t or (state.late_known > 0 and a < max(state.avail, default=a))
    if not filter_known:
        return plan.fast(state, t)  # type: ignore[no-any-return]
    out: list[Any] = [None] * len(plan.aggs)
    aggs = plan.aggs
    for window, right, positions in plan.groups:
        hi = bisect_right(times, t) if right else bisect_left(times, t)
        lo = 0 if window is None else bisect_right(times, t - window, 0, hi)
        idx: Sequence[int] = range(lo, hi)
        if filter_known:
            avail = state.avail
            idx = [i for i in idx if avail[i] <= a]
        retired = state.retired if window is None else None
        cache: dict[int, list[Any]] = {}
        for pos in positions:
            g = aggs[pos]
            values = None
            if g.col >= 0 and g.agg not in ("first", "last"):
                values = cache.get(g.col)
                if values is None:
                    column = state.columns[g.col]
                    raw = column[lo:hi] if type(idx) is range else [column[i] for i in idx]
                    values = cache[g.col] = [v for v in raw if v is not None]
            out[pos] = _aggregate(g, state, idx, lo, hi, t, retired, values)
    return out


def _variance(values: list[Any]) -> Any:
    n = len(values)
    if n < 2:
        return None
    mean = math.fsum(values) / n
    return math.fsum([(v - mean) ** 2 for v in values]) / (n - 1)


def _std(values: list[Any]) -> Any:
    variance = _variance(values)
    return None if variance is None else math.sqrt(variance)


def _sum(values: list[Any]) -> Any:
    if not values:
        return 0
    if all(type(v) is int for v in values):
        return sum(values)
    return math.fsum(values)


def _generate(plan: AggregatePlan) -> Any:
    """Straight-line Python for ``evaluate`` when every held event is known at ``a``.

    The same arithmetic as ``_aggregate`` (which it calls for unbounded windows, whose retired
    accumulators it does not inline); it only removes the per-aggregate dispatch, which
    dominates when windows hold a few events. The engine's parity tests cover both paths.
    """
    lines = ["def fast(state, t):", "    times = state.times", "    cols = state.columns",
             "    hr = bisect_right(times, t)", "    hl = bisect_left(times, t)"]
    for gi, (window, right, positions) in enumerate(plan.groups):
        hi = "hr" if right else "hl"
        lo = f"lo{gi}"
        if window is None:
            lines += [f"    {lo} = 0", f"    rng{gi} = range(0, {hi})"]
        else:
            lines.append(f"    {lo} = bisect_right(times, t - {window}, 0, {hi})")
        needed = sorted({plan.aggs[p].col for p in positions
                         if plan.aggs[p].col >= 0 and plan.aggs[p].agg not in ("first", "last")})
        for c in needed:
            lines.append(f"    v{gi}_{c} = [v for v in cols[{c}][{lo}:{hi}] if v is not None]")
        for p in positions:
            g = plan.aggs[p]
            v = f"v{gi}_{g.col}"
            if window is None and g.agg == "since_last":
                # _aggregate's since_last: the latest live event, or a later retired one
                lines += [f"    latest = times[{hi} - 1] if {hi} else None", "    r = state.retired",
                          "    if r is not None and r.latest is not None:",
                          "        latest = r.latest if latest is None else max(latest, r.latest)",
                          f"    o{p} = None if latest is None else (t - latest) / {_US}"]
                continue
            if window is None:
                vals = v if g.col >= 0 and g.agg not in ("first", "last") else "None"
                code = f"_aggregate(aggs[{p}], state, rng{gi}, 0, {hi}, t, state.retired, {vals})"
            elif g.agg == "count":
                code = f"{hi} - {lo}" if g.col < 0 else f"len({v})"
            elif g.agg == "since_last":
                code = f"(t - times[{hi} - 1]) / {_US} if {hi} > {lo} else None"
            elif g.agg in ("first", "last"):
                # the first (last) non-null value of the slice, as _first_last finds it
                span = f"range({lo}, {hi})" if g.agg == "first" else f"range({hi} - 1, {lo} - 1, -1)"
                lines += [f"    o{p} = None", f"    c = cols[{g.col}]", f"    for i in {span}:",
                          "        if c[i] is not None:", f"            o{p} = c[i]", "            break"]
                continue
            else:
                code = {"sum": f"_sum({v})", "distinct": f"len(set({v}))",
                        "min": f"min({v}) if {v} else None", "max": f"max({v}) if {v} else None",
                        "mean": f"fsum({v}) / len({v}) if {v} else None",
                        "var": f"_variance({v})", "std": f"_std({v})"}[g.agg]
            lines.append(f"    o{p} = {code}")
    lines.append("    return [" + ", ".join(f"o{p}" for p in range(len(plan.aggs))) + "]")
    scope = {"bisect_right": bisect_right, "bisect_left": bisect_left, "fsum": math.fsum,
             "_sum": _sum, "_variance": _variance, "_std": _std, "_first_last": _first_last,
             "_aggregate": _aggregate, "aggs": plan.aggs}
    exec(compile("\n".join(lines), "<evenflow aggregate plan>", "exec"), scope)
    return scope["fast"]


def _empty(agg: str) -> Any:
    return 0 if agg in ("count", "distinct", "sum") else None


def _aggregate(g: CompiledAggregate, state: KeyState, idx: Sequence[int], lo: int, hi: int,
               t: int, retired: Retired | None, values: list[Any] | None) -> Any:
    agg = g.agg
    if agg == "since_last":
        latest = state.times[idx[-1]] if idx else None
        if retired is not None and retired.latest is not None:
            latest = retired.latest if latest is None else max(latest, retired.latest)
        return None if latest is None else (t - latest) / _US
    if g.col < 0:                                  # count()
        return len(idx) + (retired.events if retired else 0)
    if agg in ("first", "last"):
        return _first_last(agg, state, idx, lo, hi, g.col, retired)
    assert values is not None
    if agg == "count":
        return len(values) + (retired.nonnull[g.col] if retired else 0)
    if agg == "distinct":
        if retired:
            return len(retired.seen[g.col].union(values))
        return len(set(values))
    if agg in ("min", "max"):
        pick = min if agg == "min" else max
        if retired is not None:
            edge = retired.low[g.col] if agg == "min" else retired.high[g.col]
            if edge is not None:
                values = [*values, edge]
        return pick(values) if values else None
    n = len(values) + (retired.nonnull[g.col] if retired else 0)
    if g.window is None:
        # Unbounded: always the exact path, so the value does not depend on which events
        # happen to be retired yet (that depends on micro-batch boundaries).
        return _exact_moment(agg, values, retired, g.col, n)
    if agg == "sum":
        return _sum(values)
    if agg == "mean":
        return math.fsum(values) / n if n else None
    return _variance(values) if agg == "var" else _std(values)


def _first_last(agg: str, state: KeyState, idx: Sequence[int], lo: int, hi: int, col: int,
                retired: Retired | None) -> Any:
    column = state.columns[col]
    order = idx if agg == "first" else reversed(idx)
    found = None
    for i in order:
        if column[i] is not None:
            found = (state.times[i], state.seqs[i], column[i])
            break
    if retired is not None:
        edge = retired.first[col] if agg == "first" else retired.last[col]
        if edge is not None and (found is None or
                                 (agg == "first" and tuple(edge[:2]) < found[:2]) or
                                 (agg == "last" and tuple(edge[:2]) > found[:2])):
            found = edge
    return None if found is None else found[2]


def _exact_moment(agg: str, values: list[Any], retired: Retired | None, col: int, n: int) -> Any:
    """sum/mean/var/std over retired accumulators plus live values, computed exactly and
    rounded once."""
    total_r = retired.total[col] if retired is not None else 0
    if agg == "sum" and type(total_r) is int and all(type(v) is int for v in values):
        return total_r + sum(values)
    total = Fraction(total_r) + sum((Fraction(v) for v in values), Fraction(0))
    if agg == "sum":
        return float(total)
    if n == 0:
        return None
    mean = total / n
    if agg == "mean":
        return float(mean)
    if n < 2:
        return None
    squares = (retired.squares[col] if retired is not None else 0) + \
        sum((Fraction(v) ** 2 for v in values), Fraction(0))
    variance = (squares - total * mean) / (n - 1)
    return float(variance) if agg == "var" else math.sqrt(variance.numerator / variance.denominator)
