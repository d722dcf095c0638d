"""Run evenflow's point-in-time retrieval on the same files as feast_run.py and time it.

Runs in the project venv. Times ``features_at(...)`` from the Parquet files to a pandas frame
(the same end point as Feast's ``get_historical_features(...).to_df()``): every entity row
comes back, with the latest feature row at or before its time.

  evenflow_run.py DATA_DIR [--out result.parquet] [--memory-limit 2GB]

Prints one JSON line: {"store": "evenflow", "seconds", "cpu_seconds", "peak_rss_mb", "rows_in", "rows_out", ...}.
``peak_rss_mb`` is the whole process's ``ru_maxrss`` (it includes writing ``--out`` after the
clock); ``call_peak_rss_mb`` is the same counter read as the clock stops.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import threading
import time

import pandas  # noqa: F401 - imported before the clock, as Feast's process has it loaded
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

import evenflow as ef
from evenflow.batch.retrieval import features_at


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data_dir")
    ap.add_argument("--out")
    ap.add_argument("--memory-limit", default="2GB")
    args = ap.parse_args()
    d = args.data_dir
    features = ef.source.parquet(os.path.join(d, "features.parquet"), name="features",
                                 key="card_id", event_time="event_timestamp")
    entities = ef.source.parquet(os.path.join(d, "entities.parquet"), name="entities",
                                 key="card_id", event_time="event_timestamp")
    fv = ef.FeatureSet("fv", source=features, features=[ef.last(f"f{i}", name=f"f{i}") for i in range(1, 5)])
    # Feast's process converts its entity rows from Arrow to pandas before its clock starts
    # (feast_run.py). The first conversion in a process loads pyarrow.pandas_compat and sets up
    # pandas' dtypes (about 3 ms); do it here too, on a one-row table of the same column types,
    # so that neither clock holds that warm-up.
    pa.table({"k": ["a"], "t": pa.array([0], pa.timestamp("us", tz="UTC")), "i": [1], "f": [0.5]}).to_pandas()
    peak = [psutil.Process().memory_info().rss]
    stop = threading.Event()

    def sample() -> None:
        proc = psutil.Process()
        while not stop.wait(0.05):
            peak[0] = max(peak[0], proc.memory_info().rss)

    before = psutil.Process().memory_info().rss
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    c0 = time.process_time()  # CPU of every thread of this process
    table = features_at(entities, [fv], memory_limit=args.memory_limit)
    frame = table.to_pandas()
    seconds = time.perf_counter() - t0
    cpu_seconds = time.process_time() - c0
    call_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the output is written
    stop.set()
    sampler.join()
    if args.out:
        out = table.rename_columns([c.removeprefix("fv__") for c in table.column_names])
        pq.write_table(out, args.out)
    print(json.dumps({
        "store": "evenflow", "seconds": round(seconds, 3), "cpu_seconds": round(cpu_seconds, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "call_peak_rss_mb": round(call_peak, 1),
        "query_peak_rss_mb": round(max(peak[0], before) / 2**20, 1),
        "rss_before_mb": round(before / 2**20, 1),
        "rows_in": pq.ParquetFile(os.path.join(d, "entities.parquet")).metadata.num_rows,
        "rows_out": len(frame),
        "rows_without_history": json.loads(table.schema.metadata[b"rows_without_history"])["fv"],
        "arrow_version": pa.__version__,
        # after the call: anonymous memory, and file-backed pages (library code mapped from the
        # page cache, whose count depends on how the files sit in the cache, not on this run)
        **_rss_parts(),
    }), flush=True)


def _rss_parts() -> dict[str, float]:
    parts = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("RssAnon:", "RssFile:")):
                key, value = line.split(":")
                parts[f"{key.lower().replace('rss', 'rss_')}_mb"] = round(int(value.split()[0]) / 1024, 1)
    return parts


if __name__ == "__main__":
    main()
