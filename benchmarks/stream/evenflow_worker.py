"""evenflow's side of the stream benchmark, run in a child process by ``benchmarks/stream_engine.py``.

Modes (``--mode``):

``batch``     the card feature set of ``examples/fraud/pipeline.yaml`` (dedup, impute, clip, 12
              aggregates, 3 row expressions) over the raw replay in micro-batches; throughput.
              Also writes the cleaned events the peers read (``clean.pkl``).
``one``       the same, one record per ``process_one`` call; per-event latency.
``features``  the same aggregates and expressions without the steps, over the cleaned, typed
              events the peers get: the like-for-like configuration.
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
    if mode != "features":
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


def run(folder: Path, mode: str, batch: int, limit: int | None, sample_every: int) -> dict[str, Any]:
    eng = engine(folder, mode)
    col = Collector(sample_every, keep_clean=(mode == "batch"))
    if mode == "features":
        seqs, recs = clean_records(folder)
        make = recs.__getitem__
    else:
        seqs, cols = raw_records(folder, limit)
        make = lambda i: dict(zip(FIELDS, [c[i] for c in cols], strict=True))  # noqa: E731
    n = len(seqs)
    clock, cpu = time.perf_counter_ns, time.process_time
    lat = array("q")
    busy = 0
    cpu_used = 0.0
    if mode == "one":
        for i in range(n):
            rec = make(i)
            c0 = cpu()
            t0 = clock()
            res = eng.process([rec], seqs=[seqs[i]])   # process_one with the file's row number
            t1 = clock()
            cpu_used += cpu() - c0
            lat.append(t1 - t0)
            col.add(res)
        busy = sum(lat)
    else:
        for start in range(0, n, batch):
            recs_b = [make(i) for i in range(start, min(n, start + batch))]
            c0 = cpu()
            t0 = clock()
            res = eng.process(recs_b, seqs=seqs[start:start + batch])
            busy += clock() - t0
            cpu_used += cpu() - c0
            col.add(res)
    out: dict[str, Any] = {"mode": mode, "events": n, "batch": 1 if mode == "one" else batch,
                           "seconds": busy / 1e9, "cpu_seconds": cpu_used,
                           "events_per_s": n / (busy / 1e9), "rows": col.rows,
                           "quarantined": col.quarantined, "duplicates": col.duplicates,
                           "entities": len(eng.sets["card"].states)}
    if mode == "one":
        srt = sorted(lat)
        out["latency_us"] = {q: srt[min(len(srt) - 1, int(len(srt) * p))] / 1e3 for q, p in
                             (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999))}
        out["latency_us"]["max"] = srt[-1] / 1e3
        out["latency_us"]["mean"] = busy / n / 1e3
    with open(folder / f"sample_evenflow_{mode}.pkl", "wb") as fh:
        pickle.dump(col.sample, fh, protocol=5)
    if col.clean is not None:
        with open(folder / "clean.pkl", "wb") as fh:
            pickle.dump(col.clean, fh, protocol=5)
    return out


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
    prof.disable()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(25)
    eng = engine(folder, "batch")
    timers = StageTimers(eng)
    t0 = time.perf_counter_ns()
    for s in range(0, len(recs), batch):
        eng.process(recs[s:s + batch], seqs=seqs[s:s + batch])
    total = time.perf_counter_ns() - t0
    timers.restore()
    return {"mode": "profile", "events": len(recs), "cprofile_top": buf.getvalue(),
            "stages": timers.report(total)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--folder", required=True)
    ap.add_argument("--mode", choices=["batch", "one", "features", "profile"], required=True)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--sample-every", type=int, default=10)
    ap.add_argument("--result-file", required=True)
    a = ap.parse_args()
    folder = Path(a.folder)
    if a.mode == "profile":
        result = profile(folder, a.batch, a.limit or 100_000)
    else:
        result = run(folder, a.mode, a.batch, a.limit, a.sample_every)
    from common import write_result
    write_result(a.result_file, result)


if __name__ == "__main__":
    main()
