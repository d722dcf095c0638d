"""Build a Feast repo serving the same feature values as evenflow (runs in the Feast venv).

  feast_setup.py REPO_DIR VALUES.parquet --online redis|sqlite [--redis-db N]

VALUES.parquet has one row per card: ``card``, the feature columns and ``event_timestamp``
(the time the values were computed). They become a FeatureView ``card`` (entity ``card``),
applied with the Python SDK and written to Feast's online store with
``write_to_online_store``; then a few keys are read back with ``get_online_features`` to check.
Prints one JSON line. Start the server afterwards with ``feast -c REPO_DIR serve``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import timedelta


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("repo_dir")
    ap.add_argument("values")
    ap.add_argument("--online", choices=["redis", "sqlite"], required=True)
    ap.add_argument("--redis-db", type=int, default=11)
    args = ap.parse_args()
    repo = os.path.abspath(args.repo_dir)
    os.makedirs(os.path.join(repo, "data"), exist_ok=True)
    if args.online == "redis":
        online = (f"online_store:\n  type: redis\n"
                  f"  connection_string: \"127.0.0.1:6379,db={args.redis_db}\"\n")
    else:
        online = f"online_store:\n  type: sqlite\n  path: {repo}/data/online.db\n"
    with open(os.path.join(repo, "feature_store.yaml"), "w") as f:
        f.write(f"project: evenflow_bench\nregistry: {repo}/data/registry.db\nprovider: local\n"
                f"{online}entity_key_serialization_version: 3\n")

    import pandas as pd
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, Int64

    df = pd.read_parquet(args.values)
    features = [c for c in df.columns if c not in ("card", "event_timestamp")]
    card = Entity(name="card", join_keys=["card"], value_type=ValueType.STRING)
    source = FileSource(path=os.path.abspath(args.values), timestamp_field="event_timestamp")
    view = FeatureView(name="card", entities=[card], ttl=timedelta(days=3650), online=True,
                       schema=[Field(name=c, dtype=Int64 if str(df[c].dtype).startswith("int")
                                     else Float64) for c in features],
                       source=source)
    store = FeatureStore(repo_path=repo)
    started = time.perf_counter()
    store.apply([card, view])
    store.write_to_online_store("card", df)
    took = time.perf_counter() - started
    sample = df["card"].head(3).tolist()
    got = store.get_online_features(features=[f"card:{c}" for c in features],
                                    entity_rows=[{"card": k} for k in sample]).to_dict()
    print(json.dumps({"rows": len(df), "features": features, "write_seconds": round(took, 2),
                      "sample": {k: [got[k][i] for i in range(len(sample))] for k in features}},
                     default=str))


if __name__ == "__main__":
    main()
