"""Sources and sinks of the stream: real Delta tables, the real Redis server, the runner in-process."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from evenflow.core.pipeline import Pipeline
from evenflow.stream.sink import BronzeSink, QuarantineSink, RawEvent
from evenflow.stream.sources import FileReplaySource, RedisStreamSource, stream_id_key
from evenflow.stream.store import MemoryStore

redis = pytest.importorskip("redis")
URL = "redis://127.0.0.1:6379/0"

PIPELINE = """
name: iotest
sources:
  tx:
    format: ndjson
    path: unused.ndjson
    key: card_id
    event_time: ts
    schema:
      transaction_id: {type: string, nullable: false}
      card_id: {type: string, nullable: false}
      amount: {type: float, ge: 0}
      ts: {type: timestamp}
feature_sets:
  - name: card
    source: tx
    steps:
      - {kind: dedup, key: [transaction_id], keep: first}
    features:
      - {agg: count, window: 1h}
      - {agg: sum, column: amount, window: 1h}
"""


@pytest.fixture
def r():
    client = redis.Redis.from_url(URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail("Redis is not running at 127.0.0.1:6379 (make services)")
    yield client
    client.close()


@pytest.fixture
def stream(r):
    name = f"test:io:{uuid.uuid4().hex[:10]}"
    yield name
    r.delete(name)


def _rec(i: int, card: str = "c1", minute: int | None = None, amount: object = 10.0) -> str:
    m = i if minute is None else minute
    return json.dumps({"transaction_id": f"t{i}", "card_id": card, "amount": amount,
                       "ts": f"2026-03-01T10:{m:02d}:00Z"})


# -- bronze and quarantine sinks -----------------------------------------------------------------
def test_bronze_commits_batch_and_offset_once(tmp_path):
    sink = BronzeSink(tmp_path / "bronze", "app-a")
    events = [RawEvent(_rec(i), "s", f"1-{i}") for i in range(3)]
    assert sink.append(events, batch=1, offset="1-2") == 0
    assert sink.append(events, batch=1, offset="1-2") is None      # the replayed batch is refused
    assert sink.append(events[:1], batch=2, offset="1-9") == 1
    assert sink.committed() == (2, "1-9")
    table = sink.read()
    assert table.num_rows == 4
    assert table.column("batch").to_pylist() == [1, 1, 1, 2]
    assert [e.payload for e in sink.batch_events(1)] == [e.payload for e in events]
    assert table.schema.field("ingest_time").type.tz == "UTC"


def test_two_app_ids_share_a_bronze_table(tmp_path):
    a, b = BronzeSink(tmp_path / "bronze", "a"), BronzeSink(tmp_path / "bronze", "b")
    a.append([RawEvent("x", "s", "1")], batch=1, offset="1")
    b.append([RawEvent("y", "s", "7")], batch=1, offset="7")
    a.append([RawEvent("z", "s", "2")], batch=2, offset="2")
    assert a.committed() == (2, "2") and b.committed() == (1, "7")
    assert [e.payload for e in b.batch_events(1)] == ["y"]
    assert [e.payload for e in a.batch_events(1)] == ["x"]


def test_quarantine_sink_commits_empty_batches(tmp_path):
    q = QuarantineSink(tmp_path / "q", "app")
    q.append([], batch=1)
    q.append([{"payload": "{}", "reason": "missing_field", "field": "ts", "step": "schema",
               "detail": "ts is absent", "seq": 4, "offset": 12}], batch=2)
    assert q.committed_batch() == 2
    assert q.append([{"payload": "again"}], batch=2) is None
    rows = q.read().to_pylist()
    assert len(rows) == 1 and rows[0]["offset"] == "12" and rows[0]["reason"] == "missing_field"


# -- Redis Streams source ------------------------------------------------------------------------
def test_redis_source_rereads_pending_after_a_crash_then_new(r, stream):
    ids = [r.xadd(stream, {"data": _rec(i)}).decode() for i in range(5)]
    first = RedisStreamSource(URL, stream, "g", "worker")
    got = first.read(3, 0)
    assert [e.offset for e in got] == ids[:3]
    first.close()                                # "crashes": nothing acknowledged
    second = RedisStreamSource(URL, stream, "g", "worker")   # same consumer: BUSYGROUP tolerated
    again = second.read(10, 0)
    assert [e.offset for e in again] == ids[:3]  # own pending entries first
    assert [e.offset for e in second.read(10, 0)] == ids[3:]
    assert second.pending() == 5
    second.ack(ids)
    assert second.pending() == 0
    assert second.read(10, 10) == []


def test_redis_source_claims_entries_of_a_dead_consumer(r, stream):
    ids = [r.xadd(stream, {"data": _rec(i)}).decode() for i in range(4)]
    RedisStreamSource(URL, stream, "g", "dead").read(2, 0)
    live = RedisStreamSource(URL, stream, "g", "live", claim_idle_ms=0)
    claimed = live.read(10, 0)
    assert [e.offset for e in claimed] == ids[:2]
    assert [e.offset for e in live.read(10, 0)] == ids[2:]
    info = {c["name"].decode(): c["pending"] for c in r.xinfo_consumers(stream, "g")}
    assert info == {"dead": 0, "live": 4}


def test_redis_source_flat_entries_and_trimmed_pending(r, stream):
    r.xadd(stream, {"card_id": "c1", "amount": "5"})
    gone = r.xadd(stream, {"data": _rec(1)}).decode()
    src = RedisStreamSource(URL, stream, "g", "w")
    flat, _ = src.read(10, 0)
    assert json.loads(flat.payload) == {"card_id": "c1", "amount": "5"}
    assert src.decode(flat) == (flat.payload, None)
    r.xdel(stream, gone)                          # trimmed while pending
    src2 = RedisStreamSource(URL, stream, "g", "w")
    pending = src2.read(10, 0)
    assert pending[1].offset == gone and pending[1].payload == ""
    record, bad = src2.decode(pending[1])
    assert record is None and bad["reason"] == "malformed_record" and gone in bad["detail"]
    assert stream_id_key(pending[0].offset) < stream_id_key(gone)


# -- file replay ---------------------------------------------------------------------------------
def test_file_replay_csv_offsets_and_malformed_lines(tmp_path):
    path = tmp_path / "ev.csv"
    path.write_text("transaction_id,card_id,amount,ts\n"
                    "t1,c1,5,2026-03-01T10:00:00Z\n"
                    "\n"
                    "t2,c1,oops,extra,2026-03-01T10:01:00Z\n"
                    "t3,c2,,2026-03-01T10:02:00Z\n")
    src = FileReplaySource(path)
    events = src.read(2, 0)
    assert [e.offset for e in events] == ["2", "4"] and not src.exhausted
    events += src.read(10, 0)
    assert src.exhausted and [e.offset for e in events] == ["2", "4", "5"]
    decoded = [src.decode(e) for e in events]
    assert decoded[0][0] == {"transaction_id": "t1", "card_id": "c1", "amount": "5",
                             "ts": "2026-03-01T10:00:00Z"}
    assert decoded[1][0] is None and decoded[1][1]["reason"] == "malformed_record"
    assert "5 fields, the header has 4" in decoded[1][1]["detail"]
    assert decoded[2][0]["amount"] is None


# -- the runner in-process ----------------------------------------------------------------------
def _pipeline(tmp_path: Path) -> Pipeline:
    (tmp_path / "p.yaml").write_text(PIPELINE)
    return Pipeline.load(tmp_path / "p.yaml")


def test_runner_file_replay_lands_everything_and_restarts_from_bronze(tmp_path):
    from evenflow.stream.runner import Runner

    lines = [_rec(i, card=f"c{i % 3}") for i in range(30)]
    lines[7] = "{not json"
    lines[11] = _rec(11, amount="abc")
    lines[12] = _rec(3, card="c0", minute=12)       # t3 sent again: dedup drops it
    path = tmp_path / "ev.ndjson"
    path.write_text("\n".join(lines) + "\n")
    pipeline, lake = _pipeline(tmp_path), tmp_path / "lake"

    store = MemoryStore()
    runner = Runner(pipeline, "card", FileReplaySource(path), store, lake, max_batch=8)
    stats = runner.run()
    assert stats.events == 30 and stats.batches == 4
    assert stats.events == stats.outputs + stats.quarantined + stats.duplicates
    assert (stats.quarantined, stats.duplicates) == (2, 1)
    bronze = runner.bronze.read()
    assert bronze.column("offset").to_pylist() == [str(i) for i in range(1, 31)]
    assert bronze.column("payload").to_pylist() == lines
    quarantine = {row["offset"]: row for row in runner.quarantine.read().to_pylist()}
    assert quarantine["8"]["reason"] == "malformed_record" and quarantine["8"]["payload"] == "{not json"
    assert quarantine["12"]["reason"] == "wrong_type" and quarantine["12"]["field"] == "amount"
    dups = runner.duplicates.read().to_pylist()
    assert [(d["offset"], d["payload"], d["kept"]) for d in dups] == [("13", lines[12], 3)]
    at = "2026-03-01T10:40:00Z"
    want = runner.engine.read_many("card", ["c0", "c1", "c2"], at=at)

    # A new process with an empty memory store: it rebuilds the state from bronze, lands nothing
    # again, and skips every line of the file as already committed.
    again = Runner(pipeline, "card", FileReplaySource(path), MemoryStore(), lake, max_batch=8)
    stats2 = again.run()
    assert (stats2.replayed_batches, stats2.skipped, stats2.batches) == (4, 30, 0)
    assert again.bronze.read().num_rows == 30 and again.quarantine.read().num_rows == 2
    assert again.duplicates.read().num_rows == 1
    assert again.engine.read_many("card", ["c0", "c1", "c2"], at=at) == want
    assert want[0]["count_1h"] == 9          # c0: t0, t3, ..., t27 minus the duplicate


def test_runner_on_a_redis_stream_acks_after_commit(r, stream, tmp_path):
    from evenflow.stream.runner import Runner

    for i in range(25):
        r.xadd(stream, {"data": _rec(i)})
    src = RedisStreamSource(URL, stream, "g", "w")
    seen_pending: list[int] = []
    runner = Runner(_pipeline(tmp_path), "card", src, MemoryStore(), tmp_path / "lake",
                    max_batch=10, commit_interval="200ms",
                    on_batch=lambda n, res: seen_pending.append(src.pending()))
    stats = runner.run(idle_exit_s=0.3)
    # 10 + 10 + 5, or more batches when a slow machine lets the 200 ms interval run out first
    assert stats.events == 25 and stats.batches >= 3
    assert seen_pending == [0] * stats.batches   # each batch acknowledged once committed
    assert runner.bronze.committed().batch == stats.batches
    assert runner.store.checkpoint() == stats.batches


def test_evenflow_consume_command(tmp_path):
    from typer.testing import CliRunner

    from evenflow.cli import app

    (tmp_path / "p.yaml").write_text(PIPELINE)
    path = tmp_path / "ev.ndjson"
    path.write_text("\n".join([_rec(0), _rec(1), "oops"]) + "\n")
    args = ["consume", str(tmp_path / "p.yaml"), "--feature-set", "card", "--file", str(path),
            "--store", "memory", "--lakehouse", str(tmp_path / "lake")]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["events"], summary["outputs"], summary["quarantined"]) == (3, 2, 1)
    bad = CliRunner().invoke(app, [*args[:4], "--file", str(tmp_path / "missing.ndjson")])
    assert bad.exit_code == 2 and "file not found" in bad.output
    down = CliRunner().invoke(app, [*args[:4], "--redis-stream", "s", "--redis-url",
                                    "redis://127.0.0.1:1/0", "--lakehouse", str(tmp_path / "l2")])
    assert down.exit_code == 2 and "cannot reach Redis" in down.output
