"""The fraud card features, hand-written in plain Python (standard library only).

Shared by the peer scripts: Bytewax runs :func:`step` inside ``stateful_map`` (Bytewax ships no
aggregations, so a user writes them), River uses the parts River has no time-based operator for,
and the plain-Python baseline runs it in a bare loop. It follows ``docs/semantics.md`` as a user
of these libraries would write it: one deque of the card's last 7 days, scanned from the newest
event, exact sums with ``math.fsum`` and a two-pass variance (the same formulas as evenflow, so
values can agree to the last bit).

Events arrive in event-time order per card (the benchmark replays the file sorted), so a window
``(t - W, t]`` is a suffix of the deque. ``closed="left"`` features skip events at exactly ``t``.

>>> s = None
>>> s, f = step(s, (0, "c1", 0, 10.0, "m1", 50.0, 1.0))
>>> f["count_10m"], f["since_last_before"], f["std_amount_7d"]
(1, None, None)
>>> s, f = step(s, (1, "c1", 60_000_000, 20.0, "m2", 50.0, 2.0))
>>> f["count_10m"], f["sum_amount_1h"], f["distinct_merchant_id_1d"], f["since_last_before"]
(2, 30.0, 2, 60.0)
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

MIN = 60_000_000
HOUR = 60 * MIN
DAY = 24 * HOUR
WEEK = 7 * DAY

#: Output columns, in evenflow's order (derived features last).
NAMES = ["count_10m", "count_1h", "count_1d", "sum_amount_1h", "min_amount_1h", "max_amount_1d",
         "mean_amount_7d", "std_amount_7d", "distinct_merchant_id_1d", "since_last_before",
         "last_lat_7d_before", "last_lon_7d_before", "hour", "amount_vs_mean_7d", "km_from_last"]

#: One event: (seq, card, event time in µs, amount, merchant, lat, lon).
Event = tuple[int, str, int, Any, Any, Any, Any]


class CardState:
    """A card's events of the last 7 days, plus the newest event time that left the deque."""

    __slots__ = ("events", "evicted_latest")

    def __init__(self) -> None:
        self.events: deque[Event] = deque()
        self.evicted_latest: int | None = None


def step(state: CardState | None, ev: Event) -> tuple[CardState, dict[str, Any]]:
    """Add ``ev`` to its card's state and return the features at it (``stateful_map`` shape)."""
    if state is None:
        state = CardState()
    events = state.events
    events.append(ev)
    t = ev[2]
    low = t - WEEK
    while events[0][2] <= low:                 # left the longest window: remember since_last only
        state.evicted_latest = events.popleft()[2]
    return state, features(state, ev)


def features(state: CardState, ev: Event) -> dict[str, Any]:
    """Every card feature at ``ev``, the newest event of ``state``."""
    t = ev[2]
    c10m = c1h = c1d = 0
    amounts_1h: list[float] = []
    amounts_1d: list[float] = []
    amounts_7d: list[float] = []
    merchants: set[Any] = set()
    since = lat = lon = None
    for e in reversed(state.events):           # newest first; all are inside 7 days
        te = e[2]
        age = t - te
        a = e[3]
        if a is not None:
            amounts_7d.append(a)
        if age < DAY:
            c1d += 1
            if a is not None:
                amounts_1d.append(a)
            if e[4] is not None:
                merchants.add(e[4])
            if age < HOUR:
                c1h += 1
                if a is not None:
                    amounts_1h.append(a)
                if age < 10 * MIN:
                    c10m += 1
        if te < t:                             # closed="left" features
            if since is None:
                since = te
            if lat is None and e[5] is not None:
                lat = e[5]
            if lon is None and e[6] is not None:
                lon = e[6]
    if since is None:
        since = state.evicted_latest
    n = len(amounts_7d)
    mean = math.fsum(amounts_7d) / n if n else None
    std = None
    if n >= 2 and mean is not None:
        std = math.sqrt(math.fsum([(v - mean) ** 2 for v in amounts_7d]) / (n - 1))
    out = {
        "count_10m": c10m, "count_1h": c1h, "count_1d": c1d,
        "sum_amount_1h": math.fsum(amounts_1h) if amounts_1h else 0,
        "min_amount_1h": min(amounts_1h) if amounts_1h else None,
        "max_amount_1d": max(amounts_1d) if amounts_1d else None,
        "mean_amount_7d": mean, "std_amount_7d": std,
        "distinct_merchant_id_1d": len(merchants),
        "since_last_before": None if since is None else (t - since) / 1e6,
        "last_lat_7d_before": lat, "last_lon_7d_before": lon,
    }
    derived(out, ev)
    return out


def derived(out: dict[str, Any], ev: Event) -> None:
    """The pipeline's row expressions (hour, amount_vs_mean_7d, km_from_last), in place."""
    t, amount, lat, lon = ev[2], ev[3], ev[5], ev[6]
    out["hour"] = (t // HOUR) % 24
    mean = out["mean_amount_7d"]
    out["amount_vs_mean_7d"] = None if amount is None or mean is None else amount / (mean + 1)
    plat, plon = out["last_lat_7d_before"], out["last_lon_7d_before"]
    if None in (lat, lon, plat, plon):
        out["km_from_last"] = None
    else:
        out["km_from_last"] = 111 * math.sqrt((lat - plat) * (lat - plat) + (lon - plon) * (lon - plon))


def extremes_and_before(state: CardState, ev: Event) -> dict[str, Any]:
    """The features River has no time-based operator for: min over 1h, max over 1d, distinct
    merchants over 1d, since_last and last lat/lon before the event (same scan as above)."""
    t = ev[2]
    low_1h: float | None = None
    high_1d: float | None = None
    merchants: set[Any] = set()
    since = lat = lon = None
    for e in reversed(state.events):
        te = e[2]
        age = t - te
        a = e[3]
        if age < DAY:
            if a is not None:
                high_1d = a if high_1d is None or a > high_1d else high_1d
                if age < HOUR:
                    low_1h = a if low_1h is None or a < low_1h else low_1h
            if e[4] is not None:
                merchants.add(e[4])
        if te < t:
            if since is None:
                since = te
            if lat is None and e[5] is not None:
                lat = e[5]
            if lon is None and e[6] is not None:
                lon = e[6]
            if age >= DAY and lat is not None and lon is not None:
                break                          # nothing older can change any of these
    if since is None:
        since = state.evicted_latest
    return {"min_amount_1h": low_1h, "max_amount_1d": high_1d,
            "distinct_merchant_id_1d": len(merchants),
            "since_last_before": None if since is None else (t - since) / 1e6,
            "last_lat_7d_before": lat, "last_lon_7d_before": lon}


def push(state: CardState | None, ev: Event) -> CardState:
    """Append ``ev`` and drop what left the 7-day window (the state part of :func:`step`)."""
    if state is None:
        state = CardState()
    events = state.events
    events.append(ev)
    low = ev[2] - WEEK
    while events[0][2] <= low:
        state.evicted_latest = events.popleft()[2]
    return state
