"""Benchmark 2: online feature reads over HTTP at a fixed rate, evenflow against Feast.

  .venv/bin/python benchmarks/serve_read.py [--entities 10000] [--rate 500] [--seconds 30]

Same run, same machine, one server at a time, each in its own process:

- ``evenflow serve`` with the memory store (reads evaluate the engine's window state as of the
  read time) and with the Redis store (reads ``MGET`` the entity's state from Redis, then evaluate);
- Feast 0.67's Python feature server (``feast serve``, its own virtualenv ``benchmarks/.venvs/feast``,
  ``make bench-serve`` creates it) with its Redis and its SQLite online store, holding the same
  feature values, computed by evenflow at load time and written with ``write_to_online_store``.

Before timing, the values of a sample of keys are read from every server and compared. The load
generator (``benchmarks/serve/loadgen.py``) runs in a separate process: open loop, a fixed
schedule of single-key reads at ``--rate`` requests/s, the same seeded key sequence for every
server, latency measured from each request's scheduled send time. Results go to
``benchmarks/results/serve_read.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FEAST_VENV = HERE / ".venvs" / "feast"
FEATURES = ["count_1h", "count_1d", "sum_amount_1h", "min_amount_1h", "max_amount_1d",
            "mean_amount_1d", "std_amount_1d", "distinct_merchant_1d"]
PIPELINE = """\
name: serve_bench
sources:
  tx:
    format: ndjson
    path: events.ndjson
    key: card
    event_time: ts
    schema:
      card: {type: string, nullable: false}
      merchant: {type: string}
      amount: {type: float, ge: 0}
      ts: {type: timestamp}
feature_sets:
  - name: card
    source: tx
    features:
      - {agg: count, window: 1h}
      - {agg: count, window: 1d}
      - {agg: sum, column: amount, window: 1h}
      - {agg: min, column: amount, window: 1h}
      - {agg: max, column: amount, window: 1d}
      - {agg: mean, column: amount, window: 1d}
      - {agg: std, column: amount, window: 1d}
      - {agg: distinct, column: merchant, window: 1d}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.args!r}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"server did not answer at {url}")


def events(n_entities: int, per_entity: int, seed: int) -> list[dict[str, Any]]:
    """Events in the last 30 minutes (so no window changes during the run), in time order."""
    rng = random.Random(seed)
    now = time.time()
    out: list[dict[str, Any]] = []
    for i in range(n_entities):
        for _ in range(rng.randint(1, 2 * per_entity - 1)):
            t = now - rng.uniform(60, 1800)
            out.append({"card": f"c{i}", "merchant": f"m{rng.randrange(50)}",
                        "amount": round(rng.lognormvariate(3, 1), 2),
                        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"})
    out.sort(key=lambda e: e["ts"])
    return out


def ingest(url: str, rows: list[dict[str, Any]]) -> None:
    with httpx.Client(timeout=120) as c:
        for i in range(0, len(rows), 5000):
            body = "\n".join(json.dumps(r) for r in rows[i:i + 5000])
            r = c.post(f"{url}/v1/events", content=body, headers={"Content-Type": "application/x-ndjson"})
            if r.status_code != 200:
                raise SystemExit(f"ingest failed: {r.status_code} {r.text[:300]}")


def read_evenflow(url: str, keys: list[str], at: str | None = None) -> dict[str, dict[str, Any]]:
    out = {}
    with httpx.Client(timeout=120) as c:
        for i in range(0, len(keys), 1000):
            r = c.post(f"{url}/v1/features", json={"feature_set": "card", "keys": keys[i:i + 1000], "at": at})
            for row in r.json()["results"]:
                out[row["key"]["card"]] = row["features"]
    return out


def read_feast(url: str, keys: list[str]) -> dict[str, dict[str, Any]]:
    r = httpx.post(f"{url}/get-online-features", timeout=60,
                   json={"features": [f"card:{f}" for f in FEATURES], "entities": {"card": keys}})
    data = r.json()
    names = data["metadata"]["feature_names"]
    cols = {name: res["values"] for name, res in zip(names, data["results"], strict=True)}
    return {k: {f: cols[f][i] for f in FEATURES} for i, k in enumerate(cols["card"])}


def same(a: Any, b: Any) -> bool:
    def blank(x: Any) -> bool:
        return x is None or (isinstance(x, float) and math.isnan(x))
    if blank(a) or blank(b):
        return blank(a) and blank(b)
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entities", type=int, default=10_000)
    ap.add_argument("--events-per-entity", type=int, default=10)
    ap.add_argument("--rate", type=float, default=500)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--warmup", type=float, default=3)
    ap.add_argument("--targets", default="evenflow-memory,evenflow-redis,feast-redis,feast-sqlite")
    ap.add_argument("--redis-db", type=int, default=11, help="an empty Redis DB for Feast")
    ap.add_argument("--out", default=str(HERE / "results" / "serve_read.json"))
    args = ap.parse_args()
    targets = args.targets.split(",")
    work = Path(tempfile.mkdtemp(prefix="serve_read_"))
    (work / "pipeline.yaml").write_text(PIPELINE)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    urls: dict[str, str] = {}
    prefix = f"evenflow:bench:{uuid.uuid4().hex[:8]}"
    import redis

    feast_redis = redis.Redis(host="127.0.0.1", port=6379, db=args.redis_db)
    if any(t == "feast-redis" for t in targets) and feast_redis.dbsize():
        raise SystemExit(f"Redis DB {args.redis_db} is not empty; pass --redis-db of an empty one")
    try:
        rows = events(args.entities, args.events_per_entity, seed=7)
        keys = [f"c{i}" for i in range(args.entities)]
        print(f"{len(rows):,} events over {args.entities:,} cards", file=sys.stderr)
        evenflow = str(Path(sys.executable).parent / "evenflow")
        for t in [t for t in targets if t.startswith("evenflow")] or ["evenflow-memory"]:
            port = free_port()
            cmd = [evenflow, "serve", str(work / "pipeline.yaml"), "--port", str(port),
                   "--lakehouse", str(work / f"lake-{t}"), "--lateness", "1h"]
            if t == "evenflow-redis":
                cmd += ["--redis", "redis://127.0.0.1:6379/0", "--redis-prefix", prefix]
            procs[t] = subprocess.Popen(cmd)
            urls[t] = f"http://127.0.0.1:{port}"
            wait_http(f"{urls[t]}/health", procs[t])
            started = time.perf_counter()
            ingest(urls[t], rows)
            print(f"{t}: ingested in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        # The values every server must serve: evenflow's, computed now (no window changes for
        # the next ~29 minutes, the events being 1 to 30 minutes old).
        first = next(iter(urls))
        reference = read_evenflow(urls[first], keys)
        import pandas as pd

        frame = pd.DataFrame([{"card": k, **reference[k]} for k in keys])
        frame["event_timestamp"] = pd.Timestamp.now(tz="UTC")
        frame.to_parquet(work / "values.parquet")
        for t in [t for t in targets if t.startswith("feast")]:
            repo = work / t
            out = subprocess.run([str(FEAST_VENV / "bin" / "python"), str(HERE / "serve" / "feast_setup.py"),
                                  str(repo), str(work / "values.parquet"), "--online", t.split("-")[1],
                                  "--redis-db", str(args.redis_db)], capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"feast setup failed:\n{out.stderr[-3000:]}")
            print(f"{t}: {out.stdout.strip()[:200]}", file=sys.stderr)
            port = free_port()
            procs[t] = subprocess.Popen([str(FEAST_VENV / "bin" / "feast"), "-c", str(repo), "serve",
                                         "-h", "127.0.0.1", "-p", str(port), "--no-access-log",
                                         "--max-requests", "0"], cwd=repo)
            urls[t] = f"http://127.0.0.1:{port}"
            wait_http(f"{urls[t]}/health", procs[t])
        # Same values everywhere, checked on a sample of keys before any timing.
        sample = random.Random(3).sample(keys, min(300, len(keys)))
        for t in targets:
            got = read_evenflow(urls[t], sample) if t.startswith("evenflow") else read_feast(urls[t], sample)
            bad = [(k, f) for k in sample for f in FEATURES if not same(got[k][f], reference[k][f])]
            if bad:
                raise SystemExit(f"{t} serves other values: {bad[:5]}")
        (work / "keys.json").write_text(json.dumps({"keys": keys, "features": FEATURES}))
        results = []
        for t in targets:
            out = subprocess.run([sys.executable, str(HERE / "serve" / "loadgen.py"), "--kind", t.split("-")[0],
                                  "--port", urls[t].rsplit(":", 1)[1], "--keys", str(work / "keys.json"),
                                  "--rate", str(args.rate), "--seconds", str(args.seconds),
                                  "--warmup", str(args.warmup)], capture_output=True, text=True, check=True)
            res = {"target": t, **json.loads(out.stdout)}
            results.append(res)
            print(f"{t:16s} p50 {res['p50_ms']:.2f} ms  p99 {res['p99_ms']:.2f} ms  "
                  f"max {res['max_ms']:.1f} ms  errors {res['errors']}  rps {res['achieved_rps']}",
                  file=sys.stderr)
        by = {r["target"]: r for r in results}
        ratios = {f"{f}/{e}": round(by[f]["p99_ms"] / by[e]["p99_ms"], 2)
                  for e in by if e.startswith("evenflow") for f in by if f.startswith("feast")}
        report = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "entities": args.entities,
                  "events": len(rows), "rate": args.rate, "seconds": args.seconds,
                  "load_average": os.getloadavg(), "results": results, "p99_ratio_feast_over_evenflow": ratios}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
        print(json.dumps(ratios), file=sys.stderr)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        client = redis.Redis(host="127.0.0.1", port=6379, db=0)
        names = list(client.scan_iter(match=f"{prefix}:*", count=5000))
        for i in range(0, len(names), 5000):
            client.delete(*names[i:i + 5000])
        if "feast-redis" in targets:
            feast_redis.flushdb()    # checked empty before the run: only Feast's keys are in it


if __name__ == "__main__":
    main()
