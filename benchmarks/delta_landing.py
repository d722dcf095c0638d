"""Benchmark: exactly-once Delta landing from a Redis Stream at a 1-second commit interval.

N fraud-like events (JSON, ~170 bytes each) are pre-loaded into a Redis Stream, once per
variant (each variant reads its own copy). Every variant loops: collect events for one commit
interval (reads of up to 10k entries), then commit; rows/s = N / wall time from the first read
to the last commit. Variants, run in the same process one after the other:

- ``baseline``   — hand-written: ``XREAD`` (no consumer group) → ``write_deltalake`` append of
  (payload, offset, ingest_time) per batch; no application transaction, no acknowledgement.
  Not exactly-once: a crash between the append and the next read re-lands or loses a batch.
- ``landing``    — evenflow's exactly-once landing alone: ``RedisStreamSource`` (consumer group)
  → ``BronzeSink.append`` (Delta app transaction + offset in the commit metadata) → ``XACK``.
- ``runner``     — the whole ``Runner``: landing plus the stream engine (8 windowed features
  of the fraud card set, dedup), the (empty) quarantine commit and the Redis online-store
  ``MULTI``/``EXEC`` with the changed states and the engine meta.

    python benchmarks/delta_landing.py --events 200000 --interval 1s

Prints a markdown table; writes benchmarks/results/delta_landing.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import redis
from deltalake import DeltaTable, write_deltalake

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evenflow.core.pipeline import Pipeline  # noqa: E402
from evenflow.core.timeutil import parse_duration  # noqa: E402
from evenflow.stream.runner import Runner  # noqa: E402
from evenflow.stream.sink import BronzeSink  # noqa: E402
from evenflow.stream.sources import RedisStreamSource  # noqa: E402
from evenflow.stream.store import RedisStore  # noqa: E402

URL = "redis://127.0.0.1:6379/0"
READ_CHUNK = 10_000

# The fraud example's card feature set (examples/fraud/pipeline.yaml) without its fitted steps
# (impute, clip), which need a training build's artifacts.
PIPELINE = """
name: bench
sources:
  transactions:
    format: ndjson
    path: unused.ndjson
    key: card_id
    event_time: ts
    schema:
      transaction_id: {type: string, nullable: false, unique: true}
      card_id: {type: string, nullable: false}
      merchant_id: {type: string, nullable: false}
      amount: {type: float, ge: 0}
      ts: {type: timestamp}
      lat: {type: float, ge: -90, le: 90}
      lon: {type: float, ge: -180, le: 180}
feature_sets:
  - name: card
    source: transactions
    steps:
      - {kind: dedup, key: [transaction_id], keep: first}
    features:
      - {agg: count, window: 10m}
      - {agg: count, window: 1h}
      - {agg: count, window: 1d}
      - {agg: sum, column: amount, window: 1h}
      - {agg: min, column: amount, window: 1h}
      - {agg: max, column: amount, window: 1d}
      - {agg: mean, column: amount, window: 7d}
      - {agg: std, column: amount, window: 7d}
      - {agg: distinct, column: merchant_id, window: 1d}
      - {agg: since_last, closed: left}
"""


def events(n: int, cards: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    t = datetime(2026, 3, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        t += timedelta(microseconds=int(rng.expovariate(1 / 2_000_000)))
        out.append(json.dumps({
            "transaction_id": f"t{i}", "card_id": f"c{rng.randrange(cards)}",
            "merchant_id": f"m{rng.randrange(5000)}", "amount": round(rng.lognormvariate(3, 1), 2),
            "ts": t.isoformat().replace("+00:00", "Z"), "lat": round(rng.uniform(38, 60), 4),
            "lon": round(rng.uniform(-9, 25), 4)}))
    return out


def preload(r: redis.Redis, stream: str, payloads: list[str]) -> None:
    for i in range(0, len(payloads), 10_000):
        pipe = r.pipeline(transaction=False)
        for p in payloads[i:i + 10_000]:
            pipe.xadd(stream, {"data": p})
        pipe.execute()


def baseline(r: redis.Redis, stream: str, path: str, n: int, interval: float) -> dict[str, Any]:
    last, done, commits = "0", 0, []
    start = time.perf_counter()
    while done < n:
        payloads: list[str] = []
        offsets: list[str] = []
        deadline = time.monotonic() + interval
        while time.monotonic() < deadline:
            resp = r.xread({stream: last}, count=READ_CHUNK, block=100)
            if not resp:
                if done + len(payloads) >= n:
                    break
                continue
            for eid, fields in resp[0][1]:
                offsets.append(eid.decode())
                payloads.append(fields[b"data"].decode())
            last = offsets[-1]
        if not payloads:
            continue
        began = time.perf_counter()
        now = time.time_ns() // 1000
        write_deltalake(path, pa.table({
            "payload": pa.array(payloads, pa.string()), "offset": pa.array(offsets, pa.string()),
            "ingest_time": pa.array([now] * len(payloads), pa.timestamp("us", tz="UTC"))}),
            mode="append")
        commits.append(time.perf_counter() - began)
        done += len(payloads)
    wall = time.perf_counter() - start
    assert DeltaTable(path).to_pyarrow_table().num_rows == n
    return {"rows": n, "seconds": wall, "batches": len(commits), "commit_s": commits}


def landing(stream: str, path: str, n: int, interval: float) -> dict[str, Any]:
    src = RedisStreamSource(URL, stream, "bench", "c1")
    sink = BronzeSink(path, "bench-landing")
    batch, done, commits = 0, 0, []
    start = time.perf_counter()
    while done < n:
        got = []
        deadline = time.monotonic() + interval
        while time.monotonic() < deadline:
            chunk = src.read(READ_CHUNK, 100)
            got.extend(chunk)
            if not chunk and done + len(got) >= n:
                break
        if not got:
            continue
        began = time.perf_counter()
        batch += 1
        sink.append(got, batch=batch, offset=got[-1].offset)
        src.ack([e.offset for e in got])
        commits.append(time.perf_counter() - began)
        done += len(got)
    wall = time.perf_counter() - start
    assert sink.read().num_rows == n and src.pending() == 0
    src.close()
    return {"rows": n, "seconds": wall, "batches": len(commits), "commit_s": commits}


def runner(stream: str, lake: str, n: int, interval: str, pipeline: Pipeline) -> dict[str, Any]:
    prefix = f"bench:landing:{uuid.uuid4().hex[:8]}"
    store = RedisStore(URL, prefix)
    src = RedisStreamSource(URL, stream, "bench", "c1")
    run = Runner(pipeline, "card", src, store, lake, commit_interval=interval,
                 max_batch=10_000_000, app_id="bench-runner")
    start = time.perf_counter()
    stats = run.run(idle_exit_s=0.3)
    wall = time.perf_counter() - start - 0.3          # the idle wait at the end is not work
    assert stats.events == n and stats.outputs == n, stats
    assert run.bronze.read().num_rows == n and src.pending() == 0
    size = store.size()
    store.clear()
    src.close()
    return {"rows": n, "seconds": wall, "batches": stats.batches, "commit_s": stats.commit_seconds,
            "entities": size, "stage_seconds": stats.seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--cards", type=int, default=20_000)
    ap.add_argument("--interval", default="1s")
    ap.add_argument("--variants", default="baseline,landing,runner")
    args = ap.parse_args()
    interval = parse_duration(args.interval) / 1e6
    r = redis.Redis.from_url(URL)
    payloads = events(args.events, args.cards)
    (tmp := Path(tempfile.mkdtemp(prefix="bench-landing-")))
    (tmp / "p.yaml").write_text(PIPELINE)
    pipeline = Pipeline.load(tmp / "p.yaml")
    results: dict[str, Any] = {}
    for variant in args.variants.split(","):
        stream = f"bench:landing:{variant}:{uuid.uuid4().hex[:8]}"
        preload(r, stream, payloads)
        try:
            if variant == "baseline":
                res = baseline(r, stream, str(tmp / "baseline"), args.events, interval)
            elif variant == "landing":
                res = landing(stream, str(tmp / "landing"), args.events, interval)
            else:
                res = runner(stream, str(tmp / "lake"), args.events, args.interval, pipeline)
        finally:
            r.delete(stream)
        res["rows_per_s"] = res["rows"] / res["seconds"]
        commits = sorted(res.pop("commit_s"))
        res["commit_p50_ms"] = 1000 * statistics.median(commits)
        res["commit_max_ms"] = 1000 * commits[-1]
        results[variant] = res
        print(f"{variant}: {res['rows_per_s']:,.0f} rows/s, {res['batches']} batches, "
              f"commit p50 {res['commit_p50_ms']:.0f} ms", file=sys.stderr)
    base = results.get("baseline", {}).get("rows_per_s")
    print(f"\n{args.events:,} events, {args.cards:,} cards, commit interval {args.interval}\n")
    print("| variant | rows/s | vs baseline | batches | commit p50 / max (ms) |")
    print("|---|---|---|---|---|")
    for name, res in results.items():
        ratio = f"{res['rows_per_s'] / base:.2f}×" if base else "—"
        print(f"| {name} | {res['rows_per_s']:,.0f} | {ratio} | {res['batches']} | "
              f"{res['commit_p50_ms']:.0f} / {res['commit_max_ms']:.0f} |")
    if "runner" in results:
        stages = results["runner"]["stage_seconds"]
        print("\nrunner, seconds per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))
    out = ROOT / "benchmarks" / "results" / "delta_landing.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"events": args.events, "cards": args.cards, "interval": args.interval,
                               "machine": platform.platform(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
