"""ELT: bronze → silver → gold in increments equals one batch run over everything.

Events land in a real bronze Delta table (``BronzeSink``) in three increments; ``transform``
runs after each. Gold must equal the batch engine's features over all events (windows reach back
into earlier increments), a second run must write nothing, every record must be accounted for
(silver + quarantine + duplicates = landed), and a crash between writes must not double-process.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from deltalake import DeltaTable

import evenflow as ef
from evenflow.batch.engine import BatchEngine
from evenflow.stream.parity import same
from evenflow.stream.sink import BronzeSink, RawEvent
from evenflow.stream.transform import Layout, transform

BASE = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
SCHEMA = ef.Schema(txn=ef.String(nullable=False), card=ef.String(nullable=False), ts=ef.Timestamp(),
                   amount=ef.Float(ge=0), merchant=ef.String())


def _records(n: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        t = BASE + dt.timedelta(minutes=5 * i + rnd.randint(0, 4))   # landed roughly in time order
        rec = {"txn": f"t{i}", "card": f"c{rnd.randint(1, 6)}", "ts": t.isoformat(),
               "amount": None if rnd.random() < 0.1 else rnd.randint(0, 800) / 4,
               "merchant": rnd.choice(["m1", "m2", "m3"])}
        out.append(json.dumps(rec))
    out[20] = out[20].replace('"amount": ', '"amount": -')          # out_of_range (or -null: wrong_type)
    out[41] = "not json"
    out[77] = out[12]                                                 # a duplicate of an earlier increment
    out[150] = out[149]                                               # a duplicate within one
    return out


def _bounded(path: Path) -> ef.Pipeline:
    """Bounded windows only, no Dedup: a run reads only the silver history within 3 hours."""
    src = ef.source.ndjson(str(path), name="tx", key="card", event_time="ts", schema=SCHEMA)
    card = ef.FeatureSet("card", source=src, features=[
        ef.count(window="1h"), ef.sum("amount", window="3h"), ef.last("merchant", window="2h", closed="left"),
        ef.since_last(window="3h", closed="left")])
    return ef.Pipeline(name="p", feature_sets=[card])


def _pipeline(lake: Path, path: Path) -> ef.Pipeline:
    src = ef.source.ndjson(str(path), name="tx", key="card", event_time="ts", schema=SCHEMA)
    card = ef.FeatureSet("card", source=src, steps=[ef.Dedup(key=["txn"])],
                         features=[ef.count(window="1h"), ef.sum("amount", window="3h"), ef.mean("amount"),
                                   ef.since_last(closed="left"), ef.distinct("merchant", window="1d"),
                                   ef.derive("share", "amount / (sum_amount_3h + 1)")])
    merchant = ef.FeatureSet("merchant", source=src, key=["merchant"], steps=[ef.Dedup(key=["txn"])],
                             features=[ef.count(window="30m", closed="left"), ef.max("amount", window="2h")])
    return ef.Pipeline(name="p", feature_sets=[card, merchant], output=ef.Output(directory=str(lake)))


def _versions(layout: Layout) -> dict[str, int]:
    paths = [layout.silver, layout.quarantine, layout.duplicates, layout.gold / "card", layout.gold / "merchant"]
    return {str(p): DeltaTable(str(p)).version() for p in paths}


def _assert_equals_one_batch_run(p: ef.Pipeline, layout: Layout, lines: list[str]) -> None:
    """Gold equals the batch engine over every line; silver + quarantine account for every line."""
    eng = BatchEngine(p)
    try:
        for fs in p.feature_sets:
            ev = eng.prepare(fs)
            want = eng.con.sql(eng.features_sql(ev)).to_arrow_table().to_pylist()
            gold = DeltaTable(str(layout.gold / fs.name)).to_pyarrow_table().to_pylist()
            assert len(gold) == len(want) == ev.rows_out
            key = lambda r: (r["txn"],)                               # noqa: E731
            gold_by, want_by = {key(r): r for r in gold}, {key(r): r for r in want}
            assert gold_by.keys() == want_by.keys()
            bad = [(k, f, gold_by[k][f], want_by[k][f]) for k in want_by for f in fs.feature_names
                   if not same(gold_by[k][f], want_by[k][f])]
            assert not bad, bad[:5]
        counts = eng.quarantine_counts()
    finally:
        eng.close()
    quarantine = DeltaTable(str(layout.quarantine)).to_pyarrow_table()
    assert sorted(quarantine.column("reason").to_pylist()) == sorted(
        r for r, n in counts.items() for _ in range(n))
    silver = DeltaTable(str(layout.silver)).to_pyarrow_table()
    assert silver.num_rows + quarantine.num_rows == len(lines)
    dups = DeltaTable(str(layout.duplicates)).to_pyarrow_table().to_pylist()
    assert sorted((d["feature_set"], d["bronze_version"]) for d in dups) == \
        [("card", 1), ("card", 1), ("merchant", 1), ("merchant", 1)]   # bronze versions 0, 1, 2


def test_three_increments_equal_one_batch_run(tmp_path):
    lines = _records(240, seed=1)
    all_file = tmp_path / "all.ndjson"
    all_file.write_text("\n".join(lines) + "\n")
    p = _pipeline(tmp_path / "out", all_file)
    layout = Layout.under(tmp_path / "lake")
    sink = BronzeSink(str(layout.bronze), "runner-1")
    for batch, (lo, hi) in enumerate([(0, 60), (60, 170), (170, 240)], start=1):
        sink.append([RawEvent(x, "s", str(i)) for i, x in enumerate(lines[lo:hi], lo)], batch=batch,
                    offset=str(hi - 1))
        stats = transform(p, layout=layout)
        assert stats.records == hi - lo
        assert stats.silver + stats.quarantined == hi - lo
        before = _versions(layout)
        assert transform(p, layout=layout).bronze_version is None     # idempotent
        assert _versions(layout) == before

    _assert_equals_one_batch_run(p, layout, lines)


def test_a_crash_between_writes_is_finished_not_repeated(tmp_path, monkeypatch):
    lines = _records(160, seed=3)[:120]
    p = _pipeline(tmp_path / "out", tmp_path / "unused.ndjson")
    layout = Layout.under(tmp_path / "lake")
    sink = BronzeSink(str(layout.bronze), "runner-1")
    sink.append([RawEvent(x, "s", str(i)) for i, x in enumerate(lines[:60])], batch=1, offset="59")
    transform(p, layout=layout)
    sink.append([RawEvent(x, "s", str(i)) for i, x in enumerate(lines[60:], 60)], batch=2, offset="119")

    import evenflow.stream.transform as T

    real, calls = T._write, []

    def crash_on_gold(path, table, version):                          # the process dies mid-run
        if "gold" in str(path):
            raise KeyboardInterrupt("killed")
        calls.append(path)
        return real(path, table, version)

    monkeypatch.setattr(T, "_write", crash_on_gold)
    with pytest.raises(KeyboardInterrupt):
        transform(p, layout=layout)
    monkeypatch.setattr(T, "_write", real)
    silver_rows = DeltaTable(str(layout.silver)).to_pyarrow_table().num_rows
    stats = transform(p, layout=layout)                               # restart: finishes gold only
    assert stats.bronze_version is not None and stats.gold["card"] > 0
    assert DeltaTable(str(layout.silver)).to_pyarrow_table().num_rows == silver_rows
    gold = DeltaTable(str(layout.gold / "card")).to_pyarrow_table().column("txn").to_pylist()
    assert len(gold) == len(set(gold))
    assert transform(p, layout=layout).bronze_version is None


def test_bounded_windows_reach_back_into_the_previous_increment(tmp_path):
    lines = _records(200, seed=7)
    all_file = tmp_path / "all.ndjson"
    all_file.write_text("\n".join(lines) + "\n")
    p = _bounded(all_file)
    layout = Layout.under(tmp_path / "lake")
    sink = BronzeSink(str(layout.bronze), "runner-1")
    for batch, (lo, hi) in enumerate([(0, 90), (90, 200)], start=1):
        sink.append([RawEvent(x, "s", str(i)) for i, x in enumerate(lines[lo:hi], lo)], batch=batch,
                    offset=str(hi - 1))
        transform(p, layout=layout)
    eng = BatchEngine(p)
    try:
        ev = eng.prepare(p.feature_sets[0])
        rows = eng.con.sql(eng.features_sql(ev)).to_arrow_table().to_pylist()
    finally:
        eng.close()
    gold_rows = DeltaTable(str(layout.gold / "card")).to_pyarrow_table().to_pylist()
    assert len(gold_rows) == len(rows) == 198           # no row twice; exact duplicate lines are events here
    # an exact duplicate line has the same features as its twin (a tie), so keying by txn is enough
    want = {r["txn"]: r for r in rows}
    gold = {r["txn"]: r for r in gold_rows}
    assert gold.keys() == want.keys()
    bad = [(k, f) for k in want for f in p.feature_sets[0].feature_names if not same(gold[k][f], want[k][f])]
    assert not bad, bad[:5]


def test_follow_processes_each_new_bronze_version_until_interrupted(tmp_path):
    """``evenflow transform --follow`` in a real process: increments landed while it runs are
    picked up on its own, and Ctrl-C stops it cleanly with the same result as three runs."""
    lines = _records(240, seed=1)
    all_file = tmp_path / "all.ndjson"
    all_file.write_text("\n".join(lines) + "\n")
    p = _pipeline(tmp_path / "out", all_file)
    pipeline_file = tmp_path / "pipeline.yaml"
    pipeline_file.write_text(p.to_yaml())
    bronze = tmp_path / "bronze"
    layout = Layout.under(p.output.lakehouse_path(), bronze)
    sink = BronzeSink(str(bronze), "runner-1")
    sink.append([RawEvent(x, "s", str(i)) for i, x in enumerate(lines[:60])], batch=1, offset="59")
    log = tmp_path / "follow.log"
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "evenflow.cli", "transform", str(pipeline_file),
                                 "--bronze", str(bronze), "--follow", "--interval", "200ms"],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        def accounted() -> int:
            if not (layout.silver.exists() and layout.quarantine.exists()):
                return 0
            return sum(DeltaTable(str(t)).to_pyarrow_table().num_rows
                       for t in (layout.silver, layout.quarantine))

        def wait_for(n: int) -> None:
            deadline = time.monotonic() + 120
            while accounted() < n:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)

        wait_for(60)
        for batch, (lo, hi) in enumerate([(60, 170), (170, 240)], start=2):
            sink.append([RawEvent(x, "s", str(i)) for i, x in enumerate(lines[lo:hi], lo)], batch=batch,
                        offset=str(hi - 1))
            wait_for(hi)
        deadline = time.monotonic() + 60            # an idle round after the last version
        while not log.read_text().rstrip().endswith("nothing new in bronze"):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert [f"bronze version {v}:" in text for v in (0, 1, 2)] == [True] * 3, text
    assert "Traceback" not in text
    _assert_equals_one_batch_run(p, layout, lines)
