"""Bytewax 0.21.1: a dataflow keyed by card computing the features in ``stateful_map``.

Bytewax is the dataflow runtime (partitioning by key, state per key, batching, recovery hooks);
it ships no aggregations, so the mapper is the plain-Python ``handagg.step``: the same code the
hand-written baseline runs in a bare loop. The difference between the two is Bytewax's own cost.
Its windowing operators (``bytewax.operators.windowing``) emit one result per window when the
window closes, not a trailing-window value at every event, so they do not fit this workload.

Run in-process with ``bytewax.testing.run_main`` (one worker), input from ``TestingSource`` in
batches of 1000 (evenflow's micro-batch size), output collected by ``TestingSink``.
"""

from __future__ import annotations

import time
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main
from handagg import NAMES, step
from peercommon import SAMPLE_EVERY, args, finish, load_events


def mapper(state: Any, ev: tuple[Any, ...]) -> tuple[Any, tuple[int, dict[str, Any]]]:
    state, feats = step(state, ev)
    return state, (ev[0], feats)


def main() -> None:
    a = args()
    events = load_events(a.folder)
    out: list[tuple[str, tuple[int, dict[str, Any]]]] = []
    flow = Dataflow("fraud_card_features")
    inp = op.input("events", flow, TestingSource(events, batch_size=1000))
    keyed = op.key_on("by_card", inp, lambda ev: ev[1])
    feats = op.stateful_map("features", keyed, mapper)
    op.output("out", feats, TestingSink(out))
    c0, t0 = time.process_time(), time.perf_counter()
    run_main(flow)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    sample = {seq: tuple(f[n] for n in NAMES) for _, (seq, f) in out if seq % SAMPLE_EVERY == 0}
    finish(a.folder, "bytewax", a.result_file, events=len(events), seconds=seconds, cpu_seconds=cpu,
           sample=sample, outputs=len(out))


if __name__ == "__main__":
    main()
