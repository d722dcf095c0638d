"""River 0.26: the card features with River's time-based rolling statistics, per card.

``utils.TimeRolling`` wraps any statistic with ``update``/``revert`` and keeps the events of the
last ``period`` (it drops ``t_i <= t - period`` when a newer event arrives: the window
``(t - W, t]`` of docs/semantics.md). River has revertible ``Mean``, ``Sum`` and ``Var``, so
counts, the 1h sum and the 7d mean and std come from River. It has no time-based min, max,
distinct count, "time since the previous event" or "last value before t" (``RollingMin`` and
friends are windows of the last N events), so those come from the plain-Python helper
``handagg.extremes_and_before`` over a 7-day deque, as a River user would have to write them.

Differences from evenflow's semantics, bridged here as a user would:
- ``stats.Var`` returns 0.0 when n < 2; evenflow's ``std`` is null there (the script maps it).
- ``Sum``/``Mean``/``Var`` add and subtract (``revert``) floats, so they drift from an exact
  sum; evenflow recomputes with ``math.fsum`` and a two-pass variance.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from typing import Any

from handagg import NAMES, derived, extremes_and_before, push
from peercommon import SAMPLE_EVERY, args, finish, load_events
from river import stats, utils

EPOCH = dt.datetime(1970, 1, 1)      # naive UTC: TimeRolling starts from a naive datetime(1, 1, 1)


class Card:
    __slots__ = ("c1d", "c1h", "c10m", "hand", "s1h", "v7d")

    def __init__(self) -> None:
        self.c10m = utils.TimeRolling(stats.Mean, period=dt.timedelta(minutes=10))
        self.c1h = utils.TimeRolling(stats.Mean, period=dt.timedelta(hours=1))
        self.s1h = utils.TimeRolling(stats.Sum, period=dt.timedelta(hours=1))
        self.c1d = utils.TimeRolling(stats.Mean, period=dt.timedelta(days=1))
        self.v7d = utils.TimeRolling(stats.Var, period=dt.timedelta(days=7))
        self.hand: Any = None


def features(card: Card, ev: tuple[Any, ...], when: dt.datetime) -> dict[str, Any]:
    x = ev[3]
    card.c10m.update(x, t=when)
    card.c1h.update(x, t=when)
    card.s1h.update(x, t=when)
    card.c1d.update(x, t=when)
    card.v7d.update(x, t=when)
    card.hand = push(card.hand, ev)
    var = card.v7d.obj
    n7 = var.mean.n
    out = {"count_10m": int(card.c10m.obj.n), "count_1h": int(card.c1h.obj.n),
           "count_1d": int(card.c1d.obj.n), "sum_amount_1h": card.s1h.obj.get(),
           "mean_amount_7d": var.mean.get(), "std_amount_7d": math.sqrt(max(var.get(), 0.0)) if n7 >= 2 else None,
           **extremes_and_before(card.hand, ev)}
    derived(out, ev)
    return out


def main() -> None:
    a = args()
    events = load_events(a.folder)
    times = [EPOCH + dt.timedelta(microseconds=ev[2]) for ev in events]   # River wants datetimes
    cards: dict[str, Card] = {}
    out = []
    c0, t0 = time.process_time(), time.perf_counter()
    for ev, when in zip(events, times, strict=True):
        card = cards.get(ev[1])
        if card is None:
            card = cards[ev[1]] = Card()
        out.append(features(card, ev, when))
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    sample = {ev[0]: tuple(f[n] for n in NAMES) for ev, f in zip(events, out, strict=True)
              if ev[0] % SAMPLE_EVERY == 0}
    finish(a.folder, "river", a.result_file, events=len(events), seconds=seconds, cpu_seconds=cpu,
           sample=sample)


if __name__ == "__main__":
    main()
