"""Where the Arrow lookup path's time goes: CPU and wall time of each step, best of 5.

Runs in the project venv on a data directory made by make_data.py (drive.py caches them):

  .venv/bin/python benchmarks/feast_pit/lookup_steps.py /tmp/feast_pit_data/uniform_1Mx1M_s1

Prints one markdown table row per step: name | CPU | wall.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa

import evenflow as ef
from evenflow.batch import lookup as L
from evenflow.batch.retrieval import _events_arrow, features_at
from evenflow.io.parquet_arrow import clean_parquet

best: dict[str, tuple[float, float]] = {}


def step(name: str, f: Callable[[], Any]) -> Any:
    w, c = time.perf_counter(), time.process_time()
    out = f()
    w, c = time.perf_counter() - w, time.process_time() - c
    if name not in best or c < best[name][1]:
        best[name] = (w, c)
    return out


def once(entities: ef.Source, features: ef.Source, fv: ef.FeatureSet) -> None:
    q, e = step("metadata: clean_parquet x2", lambda: (clean_parquet(entities), clean_parquet(features)))
    rows = step("read query rows", lambda: q.read(list(q.schema.fields)))
    ev = step("read events", lambda: _events_arrow(fv, ["card_id"], e))
    ev_code, _, pt_code, pt_ok, n = step("number the keys (dictionary_encode, index_in)",
                                         lambda: L._entities([ev.column("__k0")], [rows.column("card_id")]))
    t, s = ev.column("__t").to_numpy(), ev.column("__s").to_numpy()
    pt_t = rows.column("event_timestamp").cast(pa.int64()).to_numpy()
    idx = step("sort the events (AsOfIndex.build)", lambda: L.AsOfIndex.build(ev_code, t, s, entities=n))
    m = step("probe: sort the points, binary search", lambda: idx.match(pt_code, pt_t, closed="right"))
    last, found = m.last(), m.found & pt_ok
    step("gather four columns", lambda: [L._gather(ev.column(f"__v{i}"), last, found) for i in range(4)])
    out = step("whole call: features_at", lambda: features_at(entities, [fv]))
    step("to_pandas", lambda: out.to_pandas())


def main() -> None:
    d = sys.argv[1]
    features = ef.source.parquet(os.path.join(d, "features.parquet"), name="features", key="card_id",
                                 event_time="event_timestamp")
    entities = ef.source.parquet(os.path.join(d, "entities.parquet"), name="entities", key="card_id",
                                 event_time="event_timestamp")
    fv = ef.FeatureSet("fv", source=features, features=[ef.last(f"f{i}", name=f"f{i}") for i in range(1, 5)])
    pa.table({"k": ["a"], "t": pa.array([0], pa.timestamp("us", tz="UTC"))}).to_pandas()
    for _ in range(5):
        once(entities, features, fv)
    for name, (w, c) in best.items():
        print(f"| {name} | {c * 1000:.0f} ms | {w * 1000:.0f} ms |")


if __name__ == "__main__":
    main()
