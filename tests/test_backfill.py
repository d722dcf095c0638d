"""Cold start: backfill the first half of a dataset, stream the second half, compare with batch.

The batch engine computes the features at every event over the whole dataset; the stream engine
is loaded with :func:`evenflow.stream.backfill.backfill` from the events up to the middle, then
processes the rest (in event-time order, file row numbers as ``seqs``). Every feature value of
the second half, and online reads at times after the end, must agree (docs/semantics.md §11);
so must a backfill from the runner's bronze Delta table and one written to real Redis.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
import uuid
from pathlib import Path

import pytest

import evenflow as ef
from evenflow.batch.engine import BatchEngine
from evenflow.stream.backfill import backfill
from evenflow.stream.engine import StreamEngine
from evenflow.stream.parity import same

BASE = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
FEATURES = [ef.count(window="1h"), ef.sum("amount", window="2h"), ef.std("amount", window="3h"),
            ef.count(), ef.sum("amount"), ef.mean("amount"), ef.var("amount"), ef.min("amount"),
            ef.max("qty"), ef.sum("qty"), ef.first("amount"), ef.last("merchant"),
            ef.distinct("merchant"), ef.since_last(closed="left"), ef.count(closed="left"),
            ef.last("amount", window="30m", closed="left")]
SCHEMA = ef.Schema(txn=ef.String(unique=True), card=ef.String(nullable=False), ts=ef.Timestamp(),
                   avail=ef.Timestamp(), amount=ef.Float(ge=0), qty=ef.Int(), merchant=ef.String())


def _rows(n: int, seed: int) -> list[dict]:
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        t = BASE + dt.timedelta(minutes=rnd.randint(0, 3 * 24 * 60) // 5 * 5)
        rows.append({"txn": f"t{i}", "card": f"c{rnd.randint(1, 12)}", "ts": t.isoformat(),
                     "avail": (t + dt.timedelta(minutes=rnd.choice([0, 0, 0, 10, 90]))).isoformat(),
                     "amount": None if rnd.random() < 0.1 else rnd.randint(0, 4000) / 8,
                     "qty": None if rnd.random() < 0.1 else rnd.randint(-3, 9),
                     "merchant": rnd.choice(["m1", "m2", "m3", None])})
    rows += [dict(rows[3]), dict(rows[10], txn="t10b"), {**rows[5], "txn": "bad", "amount": -1}]
    return rows


def _pipeline(path: Path) -> ef.Pipeline:
    src = ef.source.ndjson(str(path), name="tx", key="card", event_time="ts", available_time="avail",
                           schema=SCHEMA)
    fs = ef.FeatureSet("card", source=src, steps=[ef.Dedup(key=["card", "ts", "amount"]),
                                                  ef.Impute("qty", strategy="median")],
                       features=FEATURES)
    return ef.Pipeline(name="p", feature_sets=[fs])


def _batch(p: ef.Pipeline) -> tuple[dict[int, dict], dict]:
    eng = BatchEngine(p)
    try:
        ev = eng.prepare(p.feature_sets[0])
        rows = eng.con.sql(eng.features_sql(ev)).to_arrow_table().to_pylist()
        seqs = [r[0] for r in eng.con.sql(f"SELECT __seq FROM {ev.table} ORDER BY __seq").fetchall()]
        return dict(zip(seqs, rows, strict=True)), ev.artifacts
    finally:
        eng.close()


def _stream_rest(eng: StreamEngine, rows: list[dict], cut: dt.datetime) -> dict[int, dict]:
    order = sorted((i for i, r in enumerate(rows) if dt.datetime.fromisoformat(r["ts"]) > cut),
                   key=lambda i: (rows[i]["ts"], i))
    out: dict[int, dict] = {}
    for lo in range(0, len(order), 37):          # micro-batches
        chunk = order[lo:lo + 37]
        res = eng.process([rows[i] for i in chunk], seqs=chunk)
        out.update({r["__seq"]: r for r in res.outputs["card"]})
    out.update({r["__seq"]: r for r in eng.flush().outputs["card"]})
    return out


def _compare(p: ef.Pipeline, eng: StreamEngine, rows: list[dict], cut: dt.datetime,
             batch: dict[int, dict]) -> None:
    got = _stream_rest(eng, rows, cut)
    want = {s: r for s, r in batch.items() if dt.datetime.fromisoformat(rows[s]["ts"]) > cut}
    assert len(want) > 100 and sorted(got) == sorted(want)
    names = p.feature_sets[0].feature_names
    bad = [(s, f, got[s][f], want[s][f]) for s in want for f in names if not same(got[s][f], want[s][f])]
    assert not bad, bad[:10]
    # reads hours after the end: every kept event is known then
    end = max(dt.datetime.fromisoformat(r["ts"]) for r in rows)
    for card in {r["card"] for r in rows}:
        read = eng.read("card", card, at=end + dt.timedelta(hours=4))
        _check_totals(read, [r for r in batch.values() if r["card"] == card])


def _check_totals(read: dict, kept: list[dict]) -> None:
    """A read after every event of one entity against its kept events (the batch engine's)."""
    amounts = [r["amount"] for r in kept if r["amount"] is not None]
    mean = math.fsum(amounts) / len(amounts)
    assert read["count"] == len(kept) and read["count_1h"] == 0
    assert same(read["sum_amount"], math.fsum(amounts))
    assert same(read["var_amount"], math.fsum((a - mean) ** 2 for a in amounts) / (len(amounts) - 1))
    assert read["distinct_merchant"] == len({r["merchant"] for r in kept if r["merchant"] is not None})


@pytest.mark.parametrize("lateness", ["0s", "30m"])
def test_backfill_first_half_then_stream_matches_batch(tmp_path, lateness):
    rows = _rows(1200, seed=5)
    path = tmp_path / "events.ndjson"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    p = _pipeline(path)
    batch, artifacts = _batch(p)
    cut = BASE + dt.timedelta(hours=36)
    eng = StreamEngine(p, "card", artifacts=artifacts, lateness=lateness, emit="final")
    stats = backfill(eng, path, until=cut.isoformat())
    assert stats.events == sum(1 for r in rows if dt.datetime.fromisoformat(r["ts"]) <= cut) - 1  # -1: bad
    assert stats.retired > 0 and stats.live > 0 and stats.entities == 12
    assert eng.watermark == int(max(dt.datetime.fromisoformat(r["ts"]) for r in rows
                                    if dt.datetime.fromisoformat(r["ts"]) <= cut).timestamp() * 1e6) - \
        (0 if lateness == "0s" else 30 * 60 * 1_000_000)
    _compare(p, eng, rows, cut, batch)


def test_backfill_remembers_dedup_keys_and_unique_values(tmp_path):
    rows = _rows(200, seed=2)
    path = tmp_path / "events.ndjson"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    p = _pipeline(path)
    _, artifacts = _batch(p)
    eng = StreamEngine(p, "card", artifacts=artifacts, lateness="7d", emit="final")
    backfill(eng, path)
    again = eng.process([rows[0], {**rows[1], "card": "c99", "txn": rows[1]["txn"], "ts": rows[1]["ts"]}])
    assert [d["seq"] for d in again.duplicates] == [eng.seq - 2]              # same (card, ts, amount)
    assert [(q["reason"], q["field"]) for q in again.quarantined] == [("not_unique", "txn")]


def test_backfill_from_bronze_delta_and_into_redis(tmp_path):
    redis = pytest.importorskip("redis")
    from evenflow.stream.sink import BronzeSink, RawEvent
    from evenflow.stream.store import OnlineReader, RedisStore

    rows = _rows(400, seed=9)
    sink = BronzeSink(str(tmp_path / "bronze"), "bf-test")
    events = [RawEvent(json.dumps(r), "file", str(i)) for i, r in enumerate(rows)]
    sink.append(events[:250], batch=1, offset="249")
    sink.append(events[250:], batch=2, offset=str(len(rows) - 1))
    path = tmp_path / "events.ndjson"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    p = _pipeline(path)
    batch, artifacts = _batch(p)
    eng = StreamEngine(p, "card", artifacts=artifacts, emit="final")
    stats = backfill(eng, tmp_path / "bronze")
    assert stats.events == len(rows) - 1
    prefix = f"evenflow-test-{uuid.uuid4().hex[:8]}"
    store = RedisStore("redis://127.0.0.1:6379/0", prefix=prefix)
    try:
        store.commit(eng.dirty_states(), meta=eng.meta(), checkpoint=0)
        reader = OnlineReader(p, "card", store, artifacts=artifacts)
        end = max(dt.datetime.fromisoformat(r["ts"]) for r in rows) + dt.timedelta(hours=2)
        for card in sorted({r["card"] for r in rows}):
            _check_totals(reader.read(card, at=end.isoformat()),
                          [r for r in batch.values() if r["card"] == card])
    finally:
        store.clear()
        redis.Redis.from_url("redis://127.0.0.1:6379/0").close()


def test_backfill_command_fills_an_empty_redis_store_and_refuses_a_full_one(tmp_path):
    """``evenflow backfill`` end to end: fit, load, write to real Redis; a second run is refused."""
    redis = pytest.importorskip("redis")
    from typer.testing import CliRunner

    from evenflow.cli import app as cli
    from evenflow.stream.store import OnlineReader, RedisStore

    rows = _rows(300, seed=4)
    path = tmp_path / "events.ndjson"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    p = _pipeline(path)
    pipeline_file = tmp_path / "pipeline.yaml"
    pipeline_file.write_text(p.to_yaml())
    batch, artifacts = _batch(p)
    prefix = f"evenflow-test-{uuid.uuid4().hex[:8]}"
    url = "redis://127.0.0.1:6379/0"
    args = ["backfill", str(pipeline_file), "--redis", url, "--prefix", prefix]
    store = RedisStore(url, prefix=prefix)
    try:
        out = CliRunner().invoke(cli, args)
        assert out.exit_code == 0, out.output
        assert f"backfilled {len(rows) - 1:,} events" in " ".join(out.output.split())   # 1 bad
        assert store.checkpoint() == 0
        reader = OnlineReader(p, "card", store, artifacts=artifacts)
        end = max(dt.datetime.fromisoformat(r["ts"]) for r in rows) + dt.timedelta(hours=4)
        for card in sorted({r["card"] for r in rows}):
            _check_totals(reader.read(card, at=end.isoformat()),
                          [r for r in batch.values() if r["card"] == card])
        again = CliRunner().invoke(cli, args)
        assert again.exit_code != 0
        assert "already holds a checkpoint" in " ".join(again.output.split())
        assert "another --prefix" in " ".join(again.output.split())
    finally:
        store.clear()
        redis.Redis.from_url(url).close()
