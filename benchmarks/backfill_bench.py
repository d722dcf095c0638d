"""Cold start: vectorized ``backfill`` against replaying the history event by event.

Both load a fresh stream engine's state for the fraud example's two feature sets (card and
merchant; dedup, impute, clip, 12 windowed aggregates) from the same CSV history:

* **replay**: the records read from the file (DuckDB, in event-time order) and fed through
  ``StreamEngine.process`` in micro-batches of 5,000 — what a runner would do without backfill;
* **backfill**: ``evenflow.stream.backfill.backfill`` (DuckDB validation and steps, states built
  from grouped SQL).

Both use the same fitted artifacts (fitted once, outside the timings). After each run, reads of
200 random cards at the end of the history must agree between the two engines, so the speed-up
is for the same state. Usage::

    .venv/bin/python benchmarks/backfill_bench.py --n 200000
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evenflow.batch.engine import BatchEngine  # noqa: E402
from evenflow.core.pipeline import Pipeline  # noqa: E402
from evenflow.stream.backfill import backfill  # noqa: E402
from evenflow.stream.engine import StreamEngine  # noqa: E402
from evenflow.stream.parity import raw_records, replay_order, same, with_data  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200_000, help="transactions in the history")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="evenflow-backfill-bench-"))
    subprocess.run([sys.executable, str(ROOT / "examples/fraud/generate.py"), "--out", str(work),
                    "--n", str(args.n), "--seed", "11"], check=True, capture_output=True)
    data = work / "transactions.csv"
    p = with_data(Pipeline.load(ROOT / "examples/fraud/pipeline.yaml"), data)
    names = [fs.name for fs in p.feature_sets]
    fit = BatchEngine(p)
    artifacts: dict = {}
    for fs in p.feature_sets:
        artifacts.update(fit.prepare(fs).artifacts)
    fit.close()

    results = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        replayed = StreamEngine(p, names, artifacts=artifacts)
        reader = BatchEngine(p)
        loaded = reader.load_source("transactions")
        for recs, seqs, _times in raw_records(reader.con, replay_order(loaded.raw, loaded.table, "ts"), 5000):
            replayed.process(recs, seqs=seqs)
        reader.close()
        replay_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        filled = StreamEngine(p, names, artifacts=artifacts)
        stats = backfill(filled, data)
        backfill_s = time.perf_counter() - t0
        results.append((replay_s, backfill_s))

    # the same state: reads at the end of the history agree
    rnd = random.Random(0)
    cards = sorted(filled.sets["card"].states, key=repr)
    at = filled.max_time
    bad = 0
    for card in rnd.sample(cards, min(200, len(cards))):
        a, b = replayed.read("card", card, at=at), filled.read("card", card, at=at)
        bad += sum(not same(a[k], b[k]) for k in a)
    replay_s = min(r[0] for r in results)
    backfill_s = min(r[1] for r in results)
    out = {"n": args.n, "events": stats.events, "entities": stats.entities,
           "replay_seconds": round(replay_s, 2), "backfill_seconds": round(backfill_s, 2),
           "speedup": round(replay_s / backfill_s, 2), "read_mismatches": bad}
    print(json.dumps(out, indent=2))
    results_dir = ROOT / "benchmarks/results"
    results_dir.mkdir(exist_ok=True)
    (results_dir / "backfill.json").write_text(json.dumps(out, indent=2) + "\n")
    if bad:
        sys.exit(1)


if __name__ == "__main__":
    main()
