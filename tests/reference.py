"""A slow, obviously-correct reference for window aggregations, written from docs/semantics.md.

Property tests compare both engines against this module. It favours plainness over speed: every
query filters all of the entity's events in a loop and computes the aggregate directly.

Times are integer microseconds since the epoch. An event is a dict with ``event_time``,
``available_time`` (defaults to ``event_time`` when absent), ``seq`` (arrival order; defaults to
the event's position in the list) and value columns. ``None`` is null; nothing else is (a NaN is
a value, and outside the contract).

>>> H = 3_600_000_000                                   # one hour in microseconds
>>> ev = [
...     {"event_time": 9 * H,  "available_time": 9 * H,  "seq": 0, "amount": 10.0},
...     {"event_time": 10 * H, "available_time": 10 * H, "seq": 1, "amount": None},
...     {"event_time": 10 * H, "available_time": 11 * H, "seq": 2, "amount": 30.0},
... ]
>>> evaluate("count", None, H, "right", ev, t=10 * H, a=10 * H)   # 9h is outside (9h, 10h]
1
>>> evaluate("count", None, H, "right", ev, t=10 * H, a=11 * H)   # seq 2 now known
2
>>> evaluate("count", "amount", H, "right", ev, t=10 * H, a=11 * H)
1
>>> evaluate("sum", "amount", None, "right", ev, t=10 * H, a=11 * H)
40.0
>>> evaluate("var", "amount", None, "right", ev, t=10 * H, a=11 * H)
200.0
>>> evaluate("last", "amount", None, "right", ev, t=10 * H, a=11 * H)
30.0
>>> evaluate("since_last", None, None, "left", ev, t=10 * H, a=11 * H)   # last event before 10h
3600.0
>>> evaluate("mean", "amount", H, "left", ev, t=10 * H, a=11 * H) is None   # empty window
True
>>> evaluate("sum", "amount", H, "left", ev, t=10 * H, a=11 * H)
0
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

AGGREGATIONS = ("count", "sum", "mean", "min", "max", "std", "var", "first", "last",
                "distinct", "since_last")
#: Column-less: count() counts events, since_last looks at event times only.
TAKES_NO_COLUMN = {"since_last"}
NEEDS_COLUMN = {"sum", "mean", "min", "max", "std", "var", "first", "last", "distinct"}

#: Relative float tolerance between engines (docs/semantics.md, "Float tolerance").
REL_TOL = 1e-9
ABS_TOL = 1e-12


def qualifies(event: Mapping[str, Any], window_us: int | None, closed: str, t: int, a: int) -> bool:
    """Whether ``event`` is inside the window at valid time ``t`` as known at ``a``.

    >>> qualifies({"event_time": 5}, 10, "right", t=5, a=5)
    True
    >>> qualifies({"event_time": 5}, 10, "left", t=5, a=5)
    False
    >>> qualifies({"event_time": -5}, 10, "right", t=5, a=5)    # t - W is excluded
    False
    >>> qualifies({"event_time": 1, "available_time": 6}, None, "right", t=5, a=5)
    False
    """
    event_time = event["event_time"]
    available_time = event.get("available_time", event_time)
    if available_time > a:
        return False
    if closed == "right":
        if not event_time <= t:
            return False
    elif closed == "left":
        if not event_time < t:
            return False
    else:
        raise ValueError(f"closed must be 'right' or 'left', not {closed!r}")
    return window_us is None or t - window_us < event_time


def _order(event: Mapping[str, Any], position: int) -> tuple[int, int]:
    """Event order: by event time, ties by arrival order."""
    return (event["event_time"], event.get("seq", position))


def evaluate(agg: str, column: str | None, window_us: int | None, closed: str,
             events: list[dict], t: int, a: int) -> object:
    """The aggregate ``agg(column)`` over one entity's ``events`` at valid time ``t`` known at ``a``.

    The caller pre-filters ``events`` by entity key. Returns an int for counts, a float for
    mean/std/var/since_last, the column's own values for min/max/first/last, and ``None`` for
    null.

    >>> ev = [{"event_time": 1, "seq": 0, "x": 3}, {"event_time": 1, "seq": 1, "x": 5},
    ...       {"event_time": 2, "seq": 2, "x": None}]
    >>> [evaluate(g, "x", None, "right", ev, t=2, a=2) for g in ("first", "last", "min", "max")]
    [3, 5, 3, 5]
    >>> evaluate("sum", "x", None, "right", ev, t=2, a=2), evaluate("mean", "x", None, "right", ev, t=2, a=2)
    (8, 4.0)
    >>> evaluate("std", "x", None, "right", ev, t=2, a=2)        # sample std of 3, 5
    1.4142135623730951
    >>> evaluate("std", "x", None, "right", ev[:1], t=2, a=2) is None   # fewer than 2 values
    True
    >>> evaluate("distinct", "x", None, "right", ev, t=0, a=2)   # empty window
    0
    """
    if agg not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {agg!r}")
    if agg in NEEDS_COLUMN and column is None:
        raise ValueError(f"{agg} needs a column")
    if agg in TAKES_NO_COLUMN and column is not None:
        raise ValueError(f"{agg} takes no column")

    # The qualifying events, each with its arrival order for tie-breaking.
    chosen: list[tuple[tuple[int, int], dict]] = []
    for position, event in enumerate(events):
        if qualifies(event, window_us, closed, t, a):
            chosen.append((_order(event, position), event))

    if agg == "count":
        if column is None:
            return len(chosen)
        n = 0
        for _, event in chosen:
            if event.get(column) is not None:
                n += 1
        return n

    if agg == "since_last":
        if not chosen:
            return None
        latest = max(event["event_time"] for _, event in chosen)
        return (t - latest) / 1_000_000

    # Every other aggregation skips nulls; keep (order, value) pairs of non-null values.
    assert column is not None
    pairs = [(order, event[column]) for order, event in chosen if event.get(column) is not None]
    values = [value for _, value in pairs]
    n = len(values)

    if agg == "distinct":
        return len(set(values))
    if agg == "sum":
        if n == 0:
            return 0
        if all(isinstance(v, int) for v in values):
            return sum(values)          # exact for integer columns
        return math.fsum(values)
    if n == 0:
        return None
    if agg == "min":
        return min(values)
    if agg == "max":
        return max(values)
    if agg == "first":
        return min(pairs, key=lambda p: p[0])[1]
    if agg == "last":
        return max(pairs, key=lambda p: p[0])[1]
    mean = math.fsum(values) / n
    if agg == "mean":
        return mean
    if n < 2:
        return None                     # std and var are sample statistics
    variance = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    if agg == "var":
        return variance
    return math.sqrt(variance)          # agg == "std"


def features_at(aggregates: Iterable[Any], events_by_key: Mapping[Any, Sequence[dict]],
                points: Iterable[Mapping[str, Any]]) -> list[dict]:
    """Evaluate each aggregate at each point; one dict (feature name -> value) per point.

    ``aggregates`` have attributes ``agg``, ``column``, ``window_us``, ``closed`` and ``name``
    (``evenflow.core.features.Aggregate`` fits). A point is ``{"key": k, "t": t, "a": a}``; ``a``
    defaults to ``t``. A key with no events gets empty-window values.

    >>> from types import SimpleNamespace as A
    >>> aggs = [A(agg="count", column=None, window_us=10, closed="right", name="n"),
    ...         A(agg="since_last", column=None, window_us=None, closed="left", name="gap")]
    >>> events = {"c1": [{"event_time": 100, "seq": 0}, {"event_time": 105, "seq": 1}]}
    >>> features_at(aggs, events, [{"key": "c1", "t": 105, "a": 105}, {"key": "c2", "t": 105}])
    [{'n': 2, 'gap': 5e-06}, {'n': 0, 'gap': None}]
    """
    aggregates = list(aggregates)
    rows = []
    for point in points:
        t = point["t"]
        a = point.get("a", t)
        events = list(events_by_key.get(point["key"], ()))
        rows.append({g.name: evaluate(g.agg, g.column, g.window_us, g.closed, events, t, a)
                     for g in aggregates})
    return rows


def points_at_events(events_by_key: Mapping[Any, Sequence[dict]]) -> list[dict]:
    """The stream engine's query points: one per event, t = event_time, a = available_time.

    Points come in arrival order (``seq``, else list position) within each key.

    >>> points_at_events({"c1": [{"event_time": 7, "available_time": 9, "seq": 0}]})
    [{'key': 'c1', 't': 7, 'a': 9, 'seq': 0}]
    """
    points = []
    for key, events in events_by_key.items():
        ordered = sorted(enumerate(events), key=lambda p: p[1].get("seq", p[0]))
        for position, event in ordered:
            points.append({"key": key, "t": event["event_time"],
                           "a": event.get("available_time", event["event_time"]),
                           "seq": event.get("seq", position)})
    return points


def same(x: Any, y: Any) -> bool:
    """Engine values agree: both null, or equal, or floats within the contract's tolerance.

    >>> same(None, None), same(0.1 + 0.2, 0.3), same(1.0, 1.001), same(None, 0)
    (True, True, False, False)
    """
    if x is None or y is None:
        return x is None and y is None
    if isinstance(x, (int, float)) and isinstance(y, (int, float)) \
            and not isinstance(x, bool) and not isinstance(y, bool):
        return math.isclose(x, y, rel_tol=REL_TOL, abs_tol=ABS_TOL)
    return bool(x == y)
