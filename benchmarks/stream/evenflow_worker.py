"""evenflow's side of the stream benchmark, run in a child process by ``benchmarks/stream_engine.py``.

Modes (``--mode``):

``batch``     the card feature set of ``examples/fraud/pipeline.yaml`` (dedup, impute, clip, 12
              aggregates, 3 row expressions) over the raw replay in micro-batches; throughput.
              Also writes the cleaned events the peers read (``clean.pkl``).
``one``       the same, one record per ``process_one`` call; per-event latency; the changed
              states are committed every ``--batch`` events, as the runner does.
``one1``      the same, committing after every event.
``features``  the same aggregates and expressions without the steps, over the cleaned, typed
              events the peers get: the like-for-like configuration.
``vector``    ``batch`` through the vectorized path, ``StreamEngine.process_batch``, in
              micro-batches of ``--batch`` (the driver passes ``--vector-batch``); the latency
              reported is each micro-batch's, the time its first event waits for its features.
``vector_features``  ``features`` through ``process_batch``.
``profile``   cProfile, then per-stage timers (validation, steps, state update, evaluation,
              derived features) patched around the engine's functions from the outside.

Only the engine calls are timed: building each record dict happens outside the clock.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pickle
import pstats
import sys
import time
from array import array
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from handagg import NAMES

import evenflow as ef
from evenflow.core.pipeline import Pipeline
from evenflow.stream.engine import StreamEngine
from evenflow.stream.store import MemoryStore
from evenflow.stream.validate import to_micros

FIELDS = ["transaction_id", "card_id", "merchant_id", "amount", "ts", "lat", "lon", "channel", "mcc"]


def raw_records(folder: Path, limit: int | None) -> tuple[list[int], list[list[Any]]]:
    """The replay, sorted by (event time, row number): row numbers and one list per field."""
    with open(folder / "replay.pkl", "rb") as fh:
        data = pickle.load(fh)
    n = len(data["seq"]) if limit is None else min(limit, len(data["seq"]))
    return data["seq"][:n], [data[f][:n] for f in FIELDS]


def clean_records(folder: Path) -> tuple[list[int], list[dict[str, Any]]]:
    with open(folder / "clean.pkl", "rb") as fh:
        c = pickle.load(fh)
    recs = [{"card_id": card, "merchant_id": m, "amount": a,
             "ts": datetime.fromtimestamp(t / 1e6, UTC), "lat": la, "lon": lo}
            for card, t, a, m, la, lo in zip(c["card"], c["t"], c["amount"], c["merchant"],
                                              c["lat"], c["lon"], strict=True)]
    return c["seq"], recs


def engine(folder: Path, mode: str) -> StreamEngine:
    pipeline = Pipeline.load(folder / "pipeline.yaml")
    if mode not in ("features", "vector_features"):
        artifacts = json.loads((folder / "artifacts.json").read_text())
        return StreamEngine(pipeline, ["card"], artifacts=artifacts, lateness="0s", emit="arrival")
    card = pipeline.feature_set("card")
    schema = ef.Schema(card_id=ef.String(nullable=False), merchant_id=ef.String(), amount=ef.Float(),
                       ts=ef.Timestamp(), lat=ef.Float(), lon=ef.Float())
    src = ef.source.frame([], name="transactions", key="card_id", event_time="ts", schema=schema)
    fs = ef.FeatureSet("card", source=src, features=list(card.features))
    return StreamEngine(ef.Pipeline(name="fraud_features", sources={"transactions": src},
                                    feature_sets=[fs]), lateness="0s", emit="arrival")


class Collector:
    """Keeps the features of sampled events and, in batch mode, the cleaned events."""

    def __init__(self, sample_every: int, keep_clean: bool) -> None:
        self.every = sample_every
        self.sample: dict[int, tuple[Any, ...]] = {}
        self.clean: dict[str, list[Any]] | None = \
            {k: [] for k in ("seq", "card", "t", "amount", "merchant", "lat", "lon")} if keep_clean else None
        self.rows = self.quarantined = self.duplicates = 0

    def add_table(self, res: Any) -> None:
        """A ``process_batch`` result: sample the Arrow table's rows without converting the rest."""
        import numpy as np
        table = res.outputs["card"]
        self.rows += table.num_rows
        self.quarantined += len(res.quarantined)
        self.duplicates += len(res.duplicates)
        seqs = table.column("__seq").to_numpy()
        picked = table.take(np.flatnonzero(seqs % self.every == 0))
        for row in picked.to_pylist():
            self.sample[row["__seq"]] = tuple(row[n] for n in NAMES)

    def add(self, res: Any) -> None:
        rows = res.outputs["card"]
        self.rows += len(rows)
        self.quarantined += len(res.quarantined)
        self.duplicates += len(res.duplicates)
        for row in rows:
            seq = row["__seq"]
            if seq % self.every == 0:
                self.sample[seq] = tuple(row[n] for n in NAMES)
            if self.clean is not None:
                c = self.clean
                c["seq"].append(seq)
                c["card"].append(row["card_id"])
                c["t"].append(to_micros(row["ts"]))
                c["amount"].append(row["amount"])
                c["merchant"].append(row["merchant_id"])
                c["lat"].append(row["lat"])
                c["lon"].append(row["lon"])


def run(folder: Path, mode: str, batch: int, limit: int | None, sample_every: int,
        warmup: int, one_events: int) -> dict[str, Any]:
    """Replay through the engine as the runner drives it: ``process`` a micro-batch, then commit
    the changed entity states to a :class:`MemoryStore` (``dirty_states``).

    The engine meta blob (dedup and unique memory) is left out of each commit and measured on its
    own: it grows with every record ever seen (see the doc). ``one`` mode warms the state with
    ``warmup`` events in micro-batches, then times ``one_events`` single-record calls, committing
    every ``batch`` events outside the per-event clock.
    """
    eng = engine(folder, mode)
    store = MemoryStore()
    col = Collector(sample_every, keep_clean=(mode == "batch"))
    if mode in ("features", "vector_features"):
        seqs, recs = clean_records(folder)
        make = recs.__getitem__
    else:
        seqs, cols = raw_records(folder, limit)
        make = lambda i: dict(zip(FIELDS, [c[i] for c in cols], strict=True))  # noqa: E731
    n = len(seqs)
    clock, cpu, tcpu = time.perf_counter_ns, time.process_time, time.thread_time_ns
    busy = store_ns = 0
    cpu_used = store_cpu = 0.0
    commits = 0

    def commit() -> None:
        nonlocal store_ns, store_cpu, commits
        c0, t0 = cpu(), clock()
        store.commit(eng.dirty_states(), meta=b"", checkpoint=commits)
        store_ns += clock() - t0
        store_cpu += cpu() - c0
        commits += 1

    if mode.startswith("vector"):
        return run_vector(eng, make, seqs, batch, col, commit, folder, mode)
    one_at_a_time = mode.startswith("one")
    commit_every = 1 if mode == "one1" else batch
    first_one = min(n, warmup) if one_at_a_time else n
    for start in range(0, first_one, batch):
        recs_b = [make(i) for i in range(start, min(first_one, start + batch))]
        c0, t0 = cpu(), clock()
        res = eng.process(recs_b, seqs=seqs[start:start + len(recs_b)])
        busy += clock() - t0
        cpu_used += cpu() - c0
        col.add(res)
        commit()
    out: dict[str, Any] = {"mode": mode, "batch": batch}
    if one_at_a_time:
        lat, lat_cpu = array("q"), array("q")
        stop = min(n, first_one + one_events)
        busy, cpu_used, store_ns, store_cpu = 0, 0.0, 0, 0.0
        for i in range(first_one, stop):
            rec = make(i)
            c0, t0 = tcpu(), clock()
            res = eng.process([rec], seqs=[seqs[i]])   # process_one, keeping the file's row number
            t1, c1 = clock(), tcpu()
            lat.append(t1 - t0)
            lat_cpu.append(c1 - c0)
            col.add(res)
            if (i - first_one) % commit_every == commit_every - 1:
                commit()
        busy, cpu_used, n = sum(lat), sum(lat_cpu) / 1e9, stop - first_one
        out["warmup_events"] = first_one
        out["commit_every"] = commit_every
        out["latency_us"] = percentiles(lat)
        out["cpu_latency_us"] = percentiles(lat_cpu)
    out.update({"events": n, "seconds": busy / 1e9, "cpu_seconds": cpu_used,
                "events_per_s": n / (busy / 1e9), "store_seconds": store_ns / 1e9,
                "store_cpu_seconds": store_cpu,
                "events_per_s_with_store": n / ((busy + store_ns) / 1e9),
                "rows": col.rows, "quarantined": col.quarantined, "duplicates": col.duplicates,
                "entities": len(eng.sets["card"].states), "commits": commits})
    c0, t0 = cpu(), clock()
    meta = eng.meta()
    out["meta"] = {"bytes": len(meta), "seconds": (clock() - t0) / 1e9, "cpu_seconds": cpu() - c0,
                   "records_seen": eng.counts["records"]}
    with open(folder / f"sample_evenflow_{mode}.pkl", "wb") as fh:
        pickle.dump(col.sample, fh, protocol=5)
    if col.clean is not None:
        with open(folder / "clean.pkl", "wb") as fh:
            pickle.dump(col.clean, fh, protocol=5)
    return out


def percentiles(ns: array) -> dict[str, float]:
    srt = sorted(ns)
    out = {q: srt[min(len(srt) - 1, int(len(srt) * p))] / 1e3 for q, p in
           (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999))}
    out["max"] = srt[-1] / 1e3
    out["mean"] = sum(srt) / len(srt) / 1e3
    return out


def run_vector(eng: StreamEngine, make: Any, seqs: list[int], batch: int, col: Collector,
               commit: Any, folder: Path, mode: str) -> dict[str, Any]:
    """Micro-batches through ``process_batch``; each batch's wall and CPU time is its latency."""
    n = len(seqs)
    lat, lat_cpu = array("q"), array("q")
    paths: dict[str, int] = {}
    store_cpu = 0.0
    for start in range(0, n, batch):
        recs_b = [make(i) for i in range(start, min(n, start + batch))]
        c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
        res = eng.process_batch(recs_b, seqs=seqs[start:start + len(recs_b)])
        lat.append(time.perf_counter_ns() - t0)
        lat_cpu.append(time.thread_time_ns() - c0)
        path = "per-record" if not res.fast else res.aggregates["card"]
        paths[path] = paths.get(path, 0) + 1
        col.add_table(res)
        c1 = time.process_time()
        commit()
        store_cpu += time.process_time() - c1
    with open(folder / f"sample_evenflow_{mode}.pkl", "wb") as fh:
        pickle.dump(col.sample, fh, protocol=5)
    busy, cpu_used = sum(lat) / 1e9, sum(lat_cpu) / 1e9
    return {"mode": mode, "batch": batch, "events": n, "seconds": busy, "cpu_seconds": cpu_used,
            "events_per_s": n / busy, "store_cpu_seconds": store_cpu, "paths": paths,
            "batch_latency_ms": {k: v / 1000 for k, v in percentiles(lat).items()},
            "batch_cpu_ms": {k: v / 1000 for k, v in percentiles(lat_cpu).items()},
            "rows": col.rows, "quarantined": col.quarantined, "duplicates": col.duplicates,
            "entities": len(eng.sets["card"].states)}


def profile(folder: Path, batch: int, limit: int) -> dict[str, Any]:
    """cProfile's top functions, then the per-stage split with timers around engine functions."""
    from stages import StageTimers

    seqs, cols = raw_records(folder, limit)
    recs = [dict(zip(FIELDS, [c[i] for c in cols], strict=True)) for i in range(len(seqs))]
    eng = engine(folder, "batch")
    prof = cProfile.Profile()
    prof.enable()
    for s in range(0, len(recs), batch):
        eng.process(recs[s:s + batch], seqs=seqs[s:s + batch])
        eng.dirty_states()
    prof.disable()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(25)
    eng = engine(folder, "batch")
    timers = StageTimers(eng)
    t0 = time.perf_counter_ns()
    for s in range(0, len(recs), batch):
        eng.process(recs[s:s + batch], seqs=seqs[s:s + batch])
        eng.dirty_states()
    total = time.perf_counter_ns() - t0
    timers.restore()
    return {"mode": "profile", "events": len(recs), "cprofile_top": buf.getvalue(),
            "stages": timers.report(total)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--folder", required=True)
    ap.add_argument("--mode", choices=["batch", "one", "one1", "features", "vector", "vector_features",
                                       "profile"], required=True)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--sample-every", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=0, help="one mode: events in micro-batches first")
    ap.add_argument("--one-events", type=int, default=100_000, help="one mode: single-record calls")
    ap.add_argument("--result-file", required=True)
    a = ap.parse_args()
    folder = Path(a.folder)
    if a.mode == "profile":
        result = profile(folder, a.batch, a.limit or 30_000)
    else:
        result = run(folder, a.mode, a.batch, a.limit, a.sample_every, a.warmup, a.one_events)
    from common import write_result
    write_result(a.result_file, result)


if __name__ == "__main__":
    main()
