"""The stream benchmark's plumbing: replay order, and the hand-written baseline the peers share
(``benchmarks/stream/handagg.py``) computing exactly evenflow's card features.

If the baseline drifted from the engine, the benchmark's agreement rates would blame the peers
for our own mistake; this pins it on a small dirty fraud stream, every event compared.
"""

from __future__ import annotations

import json
import math
import pickle
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks" / "stream"))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "examples" / "fraud"))

import evenflow_worker as worker  # noqa: E402
import handagg  # noqa: E402
import stream_engine  # noqa: E402
from generate import generate  # noqa: E402


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("stream_bench")
    generate(folder / "data", n_transactions=3000, n_cards=60, seed=11, days=10)
    shutil.copy(ROOT / "examples/fraud/pipeline.yaml", folder / "pipeline.yaml")
    stream_engine.write_replay(folder / "data" / "transactions.csv", folder / "replay.pkl")
    from evenflow.batch.engine import BatchEngine
    from evenflow.core.pipeline import Pipeline
    p = Pipeline.load(folder / "pipeline.yaml")
    arts = BatchEngine(p).prepare(p.feature_set("card")).artifacts
    (folder / "artifacts.json").write_text(json.dumps(arts, default=str))
    return folder


def test_replay_is_in_event_time_order_with_row_numbers(replay: Path) -> None:
    data = pickle.loads((replay / "replay.pkl").read_bytes())
    assert sorted(data["seq"]) == list(range(3000))          # every row once, none lost
    from datetime import datetime
    times = [datetime.fromisoformat(t).timestamp() for t in data["ts"]
             if t and _aware(t)]
    assert times == sorted(times)
    assert all(isinstance(a, float) or a is None or isinstance(a, str) for a in data["amount"])


def _aware(text: str) -> bool:
    from datetime import datetime
    try:
        return datetime.fromisoformat(text).tzinfo is not None
    except ValueError:
        return False


def test_hand_baseline_equals_engine_on_every_event(replay: Path) -> None:
    result = worker.run(replay, "batch", 100, None, 1, 0, 0)
    assert result["rows"] + result["quarantined"] + result["duplicates"] == 3000
    assert result["quarantined"] > 0 and result["duplicates"] > 0      # the stream is dirty
    ours = pickle.loads((replay / "sample_evenflow_batch.pkl").read_bytes())
    assert len(ours) == result["rows"]
    states: dict[str, handagg.CardState] = {}
    hand = {}
    for ev in _events(replay):
        states[ev[1]], feats = handagg.step(states.get(ev[1]), ev)
        hand[ev[0]] = tuple(feats[n] for n in handagg.NAMES)
    assert hand.keys() == ours.keys()
    bad = [(s, n, a, b) for s in ours for n, a, b in zip(handagg.NAMES, ours[s], hand[s], strict=True)
           if not _same(a, b)]
    assert bad == []
    # The windows are not trivial: some events see others in every window.
    counts = [v[handagg.NAMES.index("count_1h")] for v in ours.values()]
    assert max(counts) > 1


def test_engine_micro_batch_and_one_at_a_time_agree(replay: Path) -> None:
    worker.run(replay, "batch", 250, None, 1, 0, 0)
    batch = pickle.loads((replay / "sample_evenflow_batch.pkl").read_bytes())
    r = worker.run(replay, "one", 250, None, 1, 1000, 2000)
    assert r["events"] == 2000 and r["latency_us"]["p50"] > 0
    one = pickle.loads((replay / "sample_evenflow_one.pkl").read_bytes())
    assert one == batch


def _events(folder: Path) -> list[tuple]:
    c = pickle.loads((folder / "clean.pkl").read_bytes())
    return list(zip(c["seq"], c["card"], c["t"], c["amount"], c["merchant"], c["lat"], c["lon"],
                    strict=True))


def _same(a: object, b: object) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=1e-12)  # type: ignore[arg-type]
    return a == b


def test_hand_baseline_equals_engine_at_window_edges_and_ties(replay: Path) -> None:
    """Events exactly W apart (outside the window), equal times (inside right-closed windows,
    outside the left-closed ones), null lat/lon and a gap longer than every window."""
    from datetime import UTC, datetime, timedelta

    base = datetime(2026, 3, 2, 12, tzinfo=UTC)
    offsets = [timedelta(0), timedelta(minutes=10), timedelta(minutes=10), timedelta(hours=1),
               timedelta(hours=1, minutes=10), timedelta(days=1), timedelta(days=1, hours=1),
               timedelta(days=8), timedelta(days=8)]
    recs = [{"transaction_id": f"t{i:09d}", "card_id": "c1", "merchant_id": f"m{i % 3}",
             "amount": float(10 + i), "ts": (base + off).isoformat(),
             "lat": None if i == 4 else 50.0 + i, "lon": 1.0 + i, "channel": "pos", "mcc": "5411"}
            for i, off in enumerate(offsets)]
    eng = worker.engine(replay, "batch")
    rows = eng.process(recs).outputs["card"]
    assert len(rows) == len(recs)
    state = None
    for i, row in enumerate(rows):
        t = int((base + offsets[i]).timestamp()) * 1_000_000
        state, feats = handagg.step(state, (i, "c1", t, row["amount"], row["merchant_id"],
                                            row["lat"], row["lon"]))
        assert [_same(row[n], feats[n]) for n in handagg.NAMES] == [True] * len(handagg.NAMES), \
            (i, {n: (row[n], feats[n]) for n in handagg.NAMES if not _same(row[n], feats[n])})
    assert rows[3]["count_1h"] == 3 and rows[2]["count_10m"] == 2     # t - 1h, t - 10m excluded
    assert rows[2]["since_last_before"] == 600.0                      # the tie is not "before"
