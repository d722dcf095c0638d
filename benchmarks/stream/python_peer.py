"""Hand-written baseline: the features in a plain Python loop over a dict of card states."""

from __future__ import annotations

import time

from handagg import NAMES, step
from peercommon import SAMPLE_EVERY, args, finish, load_events


def main() -> None:
    a = args()
    events = load_events(a.folder)
    states: dict[str, object] = {}
    out = []
    c0, t0 = time.process_time(), time.perf_counter()
    for ev in events:
        states[ev[1]], feats = step(states.get(ev[1]), ev)  # type: ignore[arg-type]
        out.append(feats)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    sample = {ev[0]: tuple(f[n] for n in NAMES) for ev, f in zip(events, out, strict=True)
              if ev[0] % SAMPLE_EVERY == 0}
    finish(a.folder, "python", a.result_file, events=len(events), seconds=seconds,
           cpu_seconds=cpu, sample=sample)


if __name__ == "__main__":
    main()
