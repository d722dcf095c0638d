"""Run one Feast point-in-time join (get_historical_features) and time it.

Runs in the Feast venv (/work/main/benchmarks/.venvs/feast/bin/python).

  feast_run.py DATA_DIR --store file|duckdb [--out result.parquet] [--repo-dir DIR]

Builds a throw-away Feast repo (local registry, sqlite online store that is
never used, offline store `file` (= Dask) or `duckdb`), applies an Entity
card_id + FeatureView(f1..f4, ttl 3650 d) over DATA_DIR/features.parquet via the
Python SDK, then times ONLY

    store.get_historical_features(entity_df=<entities.parquet as pandas>,
                                  features=[...]).to_df()

Prints one JSON line: {"store", "seconds", "cpu_seconds", "peak_rss_mb", "rows_in", "rows_out", ...}.
peak_rss_mb is ru_maxrss of this process (whole run, includes imports/apply);
query_peak_rss_mb is the max RSS sampled (psutil, 50 ms) during the timed call;
rss_before_mb is the RSS right before the call.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from datetime import timedelta


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


class Sampler(threading.Thread):
    def __init__(self, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = 0.0
        self._stop_ev = threading.Event()

    def run(self) -> None:
        import psutil

        p = psutil.Process()
        while not self._stop_ev.is_set():
            try:
                self.peak = max(self.peak, p.memory_info().rss / 2**20)
            except Exception:
                pass
            self._stop_ev.wait(self.interval)

    def stop(self) -> float:
        self._stop_ev.set()
        self.join()
        return self.peak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data_dir")
    ap.add_argument("--store", choices=["file", "duckdb"], required=True)
    ap.add_argument("--out", help="result parquet (default DATA_DIR/feast_<store>.parquet)")
    ap.add_argument("--repo-dir", help="keep the Feast repo here instead of a temp dir")
    args = ap.parse_args()

    data_dir = os.path.abspath(args.data_dir)
    out = args.out or os.path.join(data_dir, f"feast_{args.store}.parquet")
    feat_path = os.path.join(data_dir, "features.parquet")
    ent_path = os.path.join(data_dir, "entities.parquet")

    t_import = time.time()
    import pyarrow.parquet as pq
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64

    import_s = time.time() - t_import

    repo = args.repo_dir or tempfile.mkdtemp(prefix=f"feast_repo_{args.store}_")
    os.makedirs(repo, exist_ok=True)
    os.makedirs(os.path.join(repo, "data"), exist_ok=True)
    with open(os.path.join(repo, "feature_store.yaml"), "w") as fh:
        fh.write(
            "project: pit_bench\n"
            "provider: local\n"
            f"registry: {os.path.join(repo, 'data', 'registry.db')}\n"
            "online_store:\n"
            "  type: sqlite\n"
            f"  path: {os.path.join(repo, 'data', 'online.db')}\n"
            "offline_store:\n"
            f"  type: {args.store}\n"
            "entity_key_serialization_version: 3\n"
        )

    t_apply = time.time()
    store = FeatureStore(repo_path=repo)
    card = Entity(name="card", join_keys=["card_id"], value_type=ValueType.STRING)
    source = FileSource(name="card_features_src", path=feat_path, timestamp_field="event_timestamp")
    fv = FeatureView(
        name="card_features",
        entities=[card],
        ttl=timedelta(days=3650),
        schema=[Field(name=f"f{i}", dtype=Float64) for i in range(1, 5)],
        source=source,
        online=False,
    )
    store.apply([card, fv])
    apply_s = time.time() - t_apply

    entity_df = pq.read_table(ent_path).to_pandas()
    rows_in = len(entity_df)
    features = [f"card_features:f{i}" for i in range(1, 5)]

    rss_before = rss_mb()
    sampler = Sampler()
    sampler.start()
    t0 = time.perf_counter()
    c0 = time.process_time()  # CPU of every thread of this process
    df = store.get_historical_features(entity_df=entity_df, features=features).to_df()
    seconds = time.perf_counter() - t0
    cpu_seconds = time.process_time() - c0
    q_peak = sampler.stop()

    ru_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    cols = ["card_id", "event_timestamp", "label_id"] + [f"f{i}" for i in range(1, 5)]
    df[cols].to_parquet(out, index=False)
    if not args.repo_dir:
        shutil.rmtree(repo, ignore_errors=True)

    print(
        json.dumps(
            {
                "store": args.store,
                "seconds": round(seconds, 3), "cpu_seconds": round(cpu_seconds, 3),
                "peak_rss_mb": round(ru_peak_mb, 1),
                "query_peak_rss_mb": round(max(q_peak, rss_before), 1),
                "rss_before_mb": round(rss_before, 1),
                "rows_in": rows_in,
                "rows_out": len(df),
                "apply_seconds": round(apply_s, 2),
                "import_seconds": round(import_s, 2),
                "feast_version": __import__("feast").__version__,
                "out": out,
            }
        )
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
