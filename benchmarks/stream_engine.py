"""Stream engine in-process: evenflow's StreamEngine against River and Bytewax on the fraud features.

The card feature set of ``examples/fraud/pipeline.yaml`` (dedup, impute, clip; counts over
10m/1h/1d, sum/min over 1h, max over 1d, mean/std over 7d, distinct merchants over 1d,
since_last, last lat/lon; three row expressions) over the events of
``examples/fraud/generate.py``, replayed in event-time order (ties by row number).

Each implementation runs in its own child process, one after another:

- ``evenflow:batch``     raw records (JSON values, dirty rows included) in micro-batches of 1000;
- ``evenflow:one``       the same, one record per call: per-event latency p50/p99 (changed
  states committed to the memory store every 1000 events; ``evenflow:one1``: after each);
- ``evenflow:features``  no steps, the cleaned typed events the peers get (like for like);
- ``evenflow:vector``    the full pipeline through the vectorized path (``process_batch``) in
  micro-batches of ``--vector-batch`` (default 100,000): throughput and per-batch latency;
- ``evenflow:vector_features``  the like-for-like configuration through ``process_batch``;
- ``python``             a hand-written plain-Python loop (``benchmarks/stream/handagg.py``);
- ``river``              River's ``TimeRolling`` stats per card (``benchmarks/.venvs/river``);
- ``bytewax``            a Bytewax 0.21.1 dataflow keyed by card with ``stateful_map``, run by
  ``bytewax.testing.run_main`` (``benchmarks/.venvs/bytewax``).

The peers read the events evenflow kept after cleaning (``clean.pkl``, written by the batch
run), so they skip validation, dedup and the fitted steps. Every implementation's features at
a sample of events (every 10th row number) are compared with evenflow's batch run.

    .venv/bin/python benchmarks/stream_engine.py            # 1M events
    .venv/bin/python benchmarks/stream_engine.py --quick    # 100k events
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH / "stream"))
from handagg import NAMES  # noqa: E402

VENVS = BENCH / ".venvs"
PEERS = {"python": (ROOT / ".venv/bin/python", BENCH / "stream/python_peer.py"),
         "river": (VENVS / "river/bin/python", BENCH / "stream/river_peer.py"),
         "bytewax": (VENVS / "bytewax/bin/python", BENCH / "stream/bytewax_peer.py")}
FIELDS = ["transaction_id", "card_id", "merchant_id", "amount", "ts", "lat", "lon", "channel", "mcc"]


def prepare(n: int, seed: int) -> Path:
    """Generate the events once into ``benchmarks/data/stream_fraud_<n>`` and sort the replay."""
    folder = BENCH / "data" / f"stream_fraud_{n}"
    csv = folder / "data" / "transactions.csv"
    if not csv.exists():
        subprocess.run([sys.executable, str(ROOT / "examples/fraud/generate.py"), "--out",
                        str(csv.parent), "--n", str(n), "--seed", str(seed)], check=True)
    shutil.copy(ROOT / "examples/fraud/pipeline.yaml", folder / "pipeline.yaml")
    if not (folder / "replay.pkl").exists():
        write_replay(csv, folder / "replay.pkl")
    if not (folder / "artifacts.json").exists():
        # The fitted impute median and clip quantiles, as a training set build would ship them.
        from evenflow.batch.engine import BatchEngine
        from evenflow.core.pipeline import Pipeline
        pipeline = Pipeline.load(folder / "pipeline.yaml")
        arts = BatchEngine(pipeline).prepare(pipeline.feature_set("card")).artifacts
        (folder / "artifacts.json").write_text(json.dumps(arts, default=str))
    return folder


def write_replay(csv: Path, out: Path) -> None:
    """Rows as JSON values (numbers as floats, text as text, empty as null), event-time order.

    Unparseable or naive timestamps (quarantined by the engine) keep the previous row's time as
    their sort position, so they arrive where the file has them.
    """
    import polars as pl
    df = pl.read_csv(csv, infer_schema=False)
    cols: dict[str, list[Any]] = {f: df[f].to_list() for f in FIELDS}
    for f in ("amount", "lat", "lon"):
        values = cols[f]
        for i, v in enumerate(values):
            if v is not None:
                try:
                    values[i] = float(v)
                except ValueError:
                    pass                     # stays text: the engine quarantines it as wrong_type
    keys, last = [], 0.0
    for ts in cols["ts"]:
        try:
            d = datetime.fromisoformat(ts)
            if d.tzinfo is not None:
                last = d.timestamp()
        except (TypeError, ValueError):
            pass
        keys.append(last)
    order = sorted(range(len(keys)), key=lambda i: (keys[i], i))
    data = {"seq": order, **{f: [cols[f][i] for i in order] for f in FIELDS}}
    with open(out, "wb") as fh:
        pickle.dump(data, fh, protocol=5)


def child(python: Path, script: Path, args: list[str], timeout: float) -> dict[str, Any]:
    fd, path = tempfile.mkstemp(prefix="stream-bench-", suffix=".json")
    os.close(fd)
    t0 = time.perf_counter()
    try:
        subprocess.run([str(python), str(script), *args, "--result-file", path], check=True,
                       timeout=timeout, cwd=ROOT)
        with open(path) as fh:
            result: dict[str, Any] = json.load(fh)
    finally:
        os.unlink(path)
    result["wall_seconds"] = time.perf_counter() - t0
    return result


def close(a: Any, b: Any, rel: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=1e-9 * rel)
    return bool(a == b)


def compare(ours: dict[int, tuple[Any, ...]], theirs: dict[int, tuple[Any, ...]]) -> dict[str, Any]:
    """Agreement on the sampled events: rows where every feature agrees, at rel 1e-9 and 1e-6."""
    common = sorted(set(ours) & set(theirs))
    out: dict[str, Any] = {"sampled": len(ours), "compared": len(common),
                           "missing": len(set(ours) - set(theirs))}
    for rel in (1e-9, 1e-6):
        bad = {n: 0 for n in NAMES}
        rows_ok = 0
        for s in common:
            ok = True
            for n, a, b in zip(NAMES, ours[s], theirs[s], strict=True):
                if not close(a, b, rel):
                    bad[n] += 1
                    ok = False
            rows_ok += ok
        out[f"rows_agree_{rel:g}"] = rows_ok / max(1, len(common))
        out[f"mismatches_{rel:g}"] = {n: c for n, c in bad.items() if c}
    examples = []
    for s in common:
        for n, a, b in zip(NAMES, ours[s], theirs[s], strict=True):
            if not close(a, b, 1e-9) and len(examples) < 6:
                examples.append({"seq": s, "feature": n, "evenflow": a, "peer": b})
    out["examples"] = examples
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="100k events instead of 1M")
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--impls", default="evenflow:batch,evenflow:one,evenflow:one1,evenflow:features,"
                    "evenflow:vector,evenflow:vector_features,python,river,bytewax")
    ap.add_argument("--vector-batch", type=int, default=100_000,
                    help="micro-batch size of the evenflow:vector modes")
    ap.add_argument("--one-events", type=int, default=50_000,
                    help="single-record calls timed for latency, after min(n/2, 200k) events of warm-up")
    ap.add_argument("--profile", action="store_true", help="also cProfile and per-stage timers (30k)")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--out", default=str(BENCH / "results" / "stream_engine.json"))
    a = ap.parse_args(argv)
    n = 100_000 if a.quick else a.events
    folder = prepare(n, a.seed)
    worker = BENCH / "stream/evenflow_worker.py"
    results: dict[str, Any] = {"events": n, "batch": a.batch, "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                                     capture_output=True, text=True).stdout.strip(),
                               "runs": {}, "agreement": {}}
    impls = a.impls.split(",")
    if "evenflow:batch" in impls:          # it writes clean.pkl, which the others read
        impls.remove("evenflow:batch")
        impls.insert(0, "evenflow:batch")
    elif not (folder / "clean.pkl").exists():
        impls.insert(0, "evenflow:batch")
    for impl in impls:
        print(f"--- {impl}", flush=True)
        if impl.startswith("evenflow:"):
            mode = impl.split(":")[1]
            warm = min(n // 2, 200_000)
            extra = ["--warmup", str(warm), "--one-events", str(min(n - warm, a.one_events))] \
                if mode.startswith("one") else []
            size = a.vector_batch if mode.startswith("vector") else a.batch
            r = child(ROOT / ".venv/bin/python", worker, ["--folder", str(folder), "--mode", mode,
                                                          "--batch", str(size), *extra], a.timeout)
        else:
            python, script = PEERS[impl]
            if not python.exists():
                results["runs"][impl] = {"error": f"{python} missing: run make bench-stream-venvs"}
                continue
            try:
                r = child(python, script, ["--folder", str(folder)], a.timeout)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                results["runs"][impl] = {"error": f"failed: {exc}"}
                continue
        results["runs"][impl] = r
        print(json.dumps({k: v for k, v in r.items() if k != "cprofile_top"}, default=str), flush=True)
    if a.profile:
        r = child(ROOT / ".venv/bin/python", worker, ["--folder", str(folder), "--mode", "profile",
                                                      "--batch", str(a.batch), "--limit", "30000"], a.timeout)
        results["profile"] = r
        print(r["cprofile_top"])
        for row in r["stages"]:
            print(f"  {row['stage']:<62} {row['seconds']:8.3f} s {row['share']:6.1%}")
    with open(folder / "sample_evenflow_batch.pkl", "rb") as fh:
        ours = pickle.load(fh)
    base = results["runs"].get("evenflow:batch", {}).get("events_per_s")
    ef_batch = results["runs"].get("evenflow:batch", {})
    base_cpu = ef_batch["events"] / ef_batch["cpu_seconds"] if base else None
    for impl, r in results["runs"].items():
        name = impl.replace(":", "_")
        sample = folder / f"sample_{name}.pkl"
        if impl != "evenflow:batch" and sample.exists() and "error" not in r:
            with open(sample, "rb") as fh:
                results["agreement"][impl] = compare(ours, pickle.load(fh))
        if r.get("cpu_seconds"):
            r["events_per_cpu_s"] = r["events"] / r["cpu_seconds"]
        if base and r.get("events_per_s"):
            r["ratio_to_evenflow_batch"] = r["events_per_s"] / base
            r["cpu_ratio_to_evenflow_batch"] = r["events_per_cpu_s"] / base_cpu
    feats = results["runs"].get("evenflow:features", {})
    vfeats = results["runs"].get("evenflow:vector_features", {})
    for impl in ("python", "river", "bytewax"):
        r = results["runs"].get(impl, {})
        if feats.get("events_per_s") and r.get("events_per_s"):
            r["ratio_to_evenflow_features"] = r["events_per_s"] / feats["events_per_s"]
            r["cpu_ratio_to_evenflow_features"] = r["events_per_cpu_s"] / feats["events_per_cpu_s"]
        if vfeats.get("events_per_s") and r.get("events_per_s"):
            r["cpu_ratio_to_evenflow_vector_features"] = r["events_per_cpu_s"] / vfeats["events_per_cpu_s"]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    with open(a.out, "w") as fh:
        json.dump(results, fh, indent=1, default=str)
    summary(results)


def summary(results: dict[str, Any]) -> None:
    print(f"\n{results['events']:,} events, micro-batches of {results['batch']}, git {results['git']}")
    print("ratios: peer events/s over evenflow's, by wall time and (cpu:) by CPU time")
    print(f"{'impl':<20}{'events/s':>10}{'ev/cpu-s':>10}{'cpu s':>8}{'wall s':>8}"
          f"{'x ef:batch':>11}{'cpu:':>6}{'x ef:feat':>10}{'cpu:':>6}")
    for impl, r in results["runs"].items():
        if "error" in r:
            print(f"{impl:<20} {r['error']}")
            continue
        nan = float("nan")
        print(f"{impl:<20}{r['events_per_s']:>10,.0f}{r['events_per_cpu_s']:>10,.0f}{r['cpu_seconds']:>8.1f}"
              f"{r['seconds']:>8.1f}{r.get('ratio_to_evenflow_batch', nan):>11.2f}"
              f"{r.get('cpu_ratio_to_evenflow_batch', nan):>6.2f}{r.get('ratio_to_evenflow_features', nan):>10.2f}"
              f"{r.get('cpu_ratio_to_evenflow_features', nan):>6.2f}")
    for mode in ("vector", "vector_features"):
        r = results["runs"].get(f"evenflow:{mode}", {})
        if "batch_latency_ms" in r:
            print(f"evenflow:{mode} micro-batches of {r['batch']:,}: latency ms "
                  + ", ".join(f"{k} {v:.1f}" for k, v in r["batch_latency_ms"].items())
                  + "; CPU ms " + ", ".join(f"{k} {v:.1f}" for k, v in r["batch_cpu_ms"].items())
                  + f"; aggregate paths {r['paths']}")
    for impl in ("python", "river", "bytewax"):
        r = results["runs"].get(impl, {})
        if "cpu_ratio_to_evenflow_vector_features" in r:
            print(f"{impl} ev/cpu-s over evenflow:vector_features': "
                  f"{r['cpu_ratio_to_evenflow_vector_features']:.2f}")
    for mode in ("one", "one1"):
        r = results["runs"].get(f"evenflow:{mode}", {})
        for kind in ("latency_us", "cpu_latency_us"):
            if kind in r:
                print(f"evenflow:{mode} per-event {kind} (commit every {r['commit_every']}): "
                      + ", ".join(f"{k} {v:.1f}" for k, v in r[kind].items()))
    for impl, ag in results["agreement"].items():
        print(f"agreement {impl}: {ag['compared']:,} sampled events, rows agreeing "
              f"{ag['rows_agree_1e-09']:.4%} at rel 1e-9, {ag['rows_agree_1e-06']:.4%} at 1e-6; "
              f"mismatches at 1e-9: {ag['mismatches_1e-09']}")


if __name__ == "__main__":
    main()
