"""The HTTP service over real HTTP: a uvicorn server on 127.0.0.1, httpx requests, real Delta
tables, real Redis; values checked against a stream engine fed the same records in-process."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from deltalake import DeltaTable
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import evenflow as ef
from evenflow.errors import EvenflowError
from evenflow.stream.engine import StreamEngine
from evenflow.stream.service import Service, create_app

PIPELINE = """\
name: shop
sources:
  tx:
    format: ndjson
    path: events.ndjson
    key: card
    event_time: ts
    schema:
      transaction_id: {type: string, nullable: false}
      card: {type: string, nullable: false}
      merchant: {type: string, nullable: false}
      amount: {type: float, ge: 0}
      qty: {type: int}
      ts: {type: timestamp}
feature_sets:
  - name: card
    source: tx
    steps:
      - {kind: dedup, key: [transaction_id], keep: first}
    features:
      - {agg: count, window: 1h}
      - {agg: sum, column: amount, window: 1h}
      - {agg: mean, column: amount, window: 1d}
      - {agg: distinct, column: merchant, window: 1d}
      - {name: big, expr: "sum_amount_1h > 100"}
  - name: card_merchant
    source: tx
    key: [card, merchant]
    features:
      - {agg: count, window: 1d}
      - {agg: max, column: amount, window: 1d}
"""
MAX_BODY = 64 * 1024
NDJSON = {"Content-Type": "application/x-ndjson"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def event(card: str, minute: int, amount: float = 10.0, merchant: str = "m1",
          tid: str | None = None) -> dict[str, Any]:
    """One valid event; events share one clock so the watermark only moves forward."""
    return {"transaction_id": tid or f"t-{uuid.uuid4().hex[:10]}", "card": card,
            "merchant": merchant, "amount": amount, "qty": 1,
            "ts": f"2026-03-01T{10 + minute // 60:02d}:{minute % 60:02d}:00Z"}


class ThreadServer:
    """A real uvicorn server for an app, in a thread of the test process."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def pipeline_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("svc") / "pipeline.yaml"
    path.write_text(PIPELINE)
    return path


@pytest.fixture(scope="module")
def served(pipeline_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One server for the module; each test uses its own card ids. ``reference`` is an engine
    fed every record the server got, in the same order."""
    lake = tmp_path_factory.mktemp("lake")
    pipeline = ef.Pipeline.load(pipeline_file)
    app = create_app(pipeline, lakehouse=lake, commit_interval=0.05, max_body_bytes=MAX_BODY)
    with ThreadServer(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as client:
        yield {"client": client, "service": app.state.service, "lake": lake, "url": srv.url,
               "reference": StreamEngine(pipeline)}


def quarantine_rows(lake: Path) -> list[dict[str, Any]]:
    return DeltaTable(str(lake / "quarantine" / "tx")).to_pyarrow_table().to_pylist()


def bronze_rows(lake: Path) -> list[dict[str, Any]]:
    return DeltaTable(str(lake / "bronze" / "tx")).to_pyarrow_table().to_pylist()


def send(s: dict[str, Any], records: list[Any], **kw: Any) -> httpx.Response:
    """POST records as a JSON array; the reference engine sees the same records."""
    r = s["client"].post("/v1/events", json=records, **kw)
    s["reference"].process([x if isinstance(x, dict) else json.dumps(x) for x in records])
    return r


# -- ingest and reads ---------------------------------------------------------------------------
def test_ingest_object_array_ndjson_reads_equal_the_engine(served: dict[str, Any]) -> None:
    c, ref = served["client"], served["reference"]
    one = event("a1", 0, 30)
    r = c.post("/v1/events", json=one)
    ref.process([one])
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["accepted"], body["quarantined"], body["durable"]) == (1, 0, True)
    many = [event("a1", 5, 50, "m2"), event("a2", 6, 7)]
    r = send(served, many)
    assert r.status_code == 200 and r.json()["accepted"] == 2
    lines = [event("a1", 20, 40), event("a2", 21, 1.5, "m9")]
    text = "\n".join(json.dumps(x) for x in lines) + "\n"
    r = c.post("/v1/events", content=text, headers=NDJSON)
    ref.process(lines)
    assert r.status_code == 200 and r.json()["accepted"] == 2
    first, last = r.json()["offsets"]
    assert last == first + 1
    at = "2026-03-01T10:30:00Z"
    for card in ("a1", "a2"):
        got = c.get(f"/v1/features/card/{card}", params={"at": at}).json()
        assert got["found"] and got["key"] == {"card": card}
        assert got["features"] == _strip(ref.read("card", card, at=at), ["card"])
    a1 = c.get("/v1/features/card/a1", params={"at": at}).json()["features"]
    assert (a1["count_1h"], a1["sum_amount_1h"], a1["distinct_merchant_1d"], a1["big"]) == (3, 120.0, 2, True)
    # durable: every acknowledged event is already in bronze, raw text as received
    payloads = {row["payload"] for row in bronze_rows(served["lake"])}
    assert all(line in payloads for line in text.strip().split("\n"))


def _strip(row: dict[str, Any], key: list[str]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in key}


def test_batch_reads_composite_keys_and_expiry_at_read_time(served: dict[str, Any]) -> None:
    c, ref = served["client"], served["reference"]
    assert send(served, [event("b1", 30, 5, "m1"), event("b1", 31, 6, "m2"), event("b2", 32, 7, "m1"),
                         event("b1", 33, 8, "m1")]).status_code == 200
    at = "2026-03-01T10:40:00Z"
    r = c.post("/v1/features", json={"feature_set": "card", "keys": ["b1", ["b2"], {"card": "zz"}],
                                      "at": at})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [x["key"]["card"] for x in res] == ["b1", "b2", "zz"]
    assert [x["found"] for x in res] == [True, True, False]
    want = ref.read_many("card", ["b1", "b2", "zz"], at=at)
    assert [x["features"] for x in res] == [_strip(w, ["card"]) for w in want]
    assert res[2]["features"]["count_1h"] == 0 and res[2]["features"]["mean_amount_1d"] is None
    # composite key: query parameters named by the key columns, and in a batch read
    got = c.get("/v1/features/card_merchant", params={"card": "b1", "merchant": "m1", "at": at}).json()
    assert got["features"] == {"count_1d": 2, "max_amount_1d": 8.0}
    many = c.post("/v1/features", json={"feature_set": "card_merchant", "at": at,
                                        "keys": [["b1", "m2"], {"merchant": "m1", "card": "b2"}]})
    assert [x["features"]["count_1d"] for x in many.json()["results"]] == [1, 1]
    # windows expire at read time, with no event arriving after
    later = c.get("/v1/features/card/b1", params={"at": "2026-03-01T11:40:00Z"}).json()["features"]
    assert later["count_1h"] == 0 and later["sum_amount_1h"] == 0 and later["mean_amount_1d"] == 6.333333333333333
    # the default read time is now: days after these events, every window is empty
    assert c.get("/v1/features/card/b1").json()["features"]["count_1h"] == 0


def test_read_errors_are_4xx(served: dict[str, Any]) -> None:
    c = served["client"]
    r = c.get("/v1/features/nope/x")
    assert r.status_code == 404 and r.json()["known"] == ["card", "card_merchant"]
    assert c.post("/v1/features", json={"feature_set": "nope", "keys": ["x"]}).status_code == 404
    assert c.get("/v1/features/card/x", params={"at": "yesterday-ish"}).status_code == 422
    assert c.get("/v1/features/card_merchant", params={"card": "b1"}).status_code == 422
    assert c.post("/v1/features", json={"feature_set": "card_merchant", "keys": [["b1"]]}).status_code == 422
    assert c.post("/v1/features", json={"keys": ["x"]}).status_code == 422
    assert c.post("/v1/features", content=b"{not json", headers={"Content-Type": "application/json"}
                  ).status_code == 422


# -- bad input: 4xx with per-record reasons, quarantined, landed raw ------------------------------
def test_bad_records_get_per_record_reasons_and_land_in_quarantine(served: dict[str, Any]) -> None:
    c, lake = served["client"], served["lake"]
    good = event("q1", 40, 3)
    bad_type = {**event("q1", 41), "amount": "lots"}
    negative = {**event("q1", 42), "amount": -5}
    no_card = {k: v for k, v in event("q1", 43).items() if k != "card"}
    naive = {**event("q1", 44), "ts": "2026-03-01T10:44:00"}
    r = send(served, [good, bad_type, negative, no_card, 42, naive])
    assert r.status_code == 207, r.text          # some accepted, some not
    body = r.json()
    assert body["accepted"] == 1 and body["quarantined"] == 5
    errors = {e["index"]: e for e in body["errors"]}
    assert (errors[1]["reason"], errors[1]["field"]) == ("wrong_type", "amount")
    assert (errors[2]["reason"], errors[2]["field"]) == ("out_of_range", "amount")
    assert (errors[3]["reason"], errors[3]["field"]) == ("missing_field", "card")
    assert errors[4]["reason"] == "malformed_record"
    assert (errors[5]["reason"], errors[5]["field"]) == ("naive_timestamp", "ts")
    assert all(e["fix"] and e["detail"] for e in body["errors"])
    # every failed record only: 422 for schema violations, 400 when all are malformed
    r = send(served, [bad_type])
    assert r.status_code == 422 and r.json()["errors"][0]["index"] == 0
    r = c.post("/v1/events", content=b'{"card": "q1", "amount": 1,', headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["errors"][0]["reason"] == "malformed_record"
    lines = b'{"card": "q1"\n' + json.dumps(event("q2", 45)).encode() + b"\n[1, 2]\n\xff\xfe\n"
    r = c.post("/v1/events", content=lines, headers=NDJSON)
    served["reference"].process([event("q2", 45)])   # keep the reference's watermark in step
    assert r.status_code == 207
    assert sorted(e["index"] for e in r.json()["errors"]) == [0, 2, 3]
    # all of them are in the quarantine Delta table with their payload, and in bronze
    q = quarantine_rows(lake)
    by_payload = {row["payload"]: row for row in q}
    assert by_payload[json.dumps(bad_type, separators=(",", ":"))]["reason"] == "wrong_type"
    assert by_payload['{"card": "q1"']["reason"] == "malformed_record"
    assert by_payload['{"card": "q1", "amount": 1,']["reason"] == "malformed_record"
    assert by_payload["42"]["reason"] == "malformed_record"
    bronze = {row["payload"] for row in bronze_rows(lake)}
    assert {'{"card": "q1"', "[1, 2]", "42", '{"card": "q1", "amount": 1,'} <= bronze
    # a late event (behind the watermark) is landed and quarantined as late
    r = send(served, [event("q3", 1)])
    assert r.status_code == 422 and r.json()["errors"][0]["reason"] == "late"


def test_oversized_wrong_type_empty_and_duplicates(served: dict[str, Any]) -> None:
    c, lake = served["client"], served["lake"]
    big = json.dumps([event("o1", 50)] * 2000).encode()
    assert len(big) > MAX_BODY
    r = c.post("/v1/events", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "split" in r.json()["fix"]

    def chunks() -> Iterator[bytes]:      # no Content-Length: the limit counts streamed bytes
        for i in range(0, len(big), 8192):
            yield big[i:i + 8192]
    r = c.post("/v1/events", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    r = c.post("/v1/events", content=b"card=o1", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and "ndjson" in r.json()["fix"]
    assert c.post("/v1/events", content=b"[]", headers={"Content-Type": "application/json"}).status_code == 400
    assert c.post("/v1/events", content=b"\n\n", headers=NDJSON).status_code == 400
    # refusals are recorded in the quarantine with the first bytes of the body
    time.sleep(0.3)
    details = [row["detail"] for row in quarantine_rows(lake) if row["step"] == "http"]
    assert sum("413" in d for d in details) == 2 and sum("415" in d for d in details) == 1
    # a duplicate transaction id is accepted once and reported
    e = event("o1", 51)
    assert send(served, [e]).json()["duplicates"] == []
    r = send(served, [e])
    assert r.status_code == 200 and r.json()["duplicates"][0]["index"] == 0
    assert c.get("/v1/features/card/o1", params={"at": "2026-03-01T10:52:00Z"}).json()["features"]["count_1h"] == 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(st.binary(max_size=300),
                      st.text(max_size=200).map(str.encode),
                      st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                                   lambda inner: st.lists(inner, max_size=4)
                                   | st.dictionaries(st.sampled_from(["card", "amount", "ts", "merchant",
                                                                      "transaction_id", "qty", "x"]), inner,
                                                     max_size=6),
                                   max_leaves=12).map(lambda x: json.dumps(x).encode())),
       kind=st.sampled_from(["application/json", "application/x-ndjson", "text/plain", "application/json; charset=utf-8"]))
def test_garbage_bodies_never_get_a_500(served: dict[str, Any], body: bytes, kind: str) -> None:
    r = served["client"].post("/v1/events", content=body, headers={"Content-Type": kind})
    assert r.status_code in (200, 207, 400, 413, 415, 422), (r.status_code, r.text)
    if r.status_code in (207, 400, 422) and r.json().get("errors"):
        assert all({"index", "reason", "field", "detail"} <= set(e) for e in r.json()["errors"])


# -- operations -----------------------------------------------------------------------------------
def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


def test_metrics_health_docs_and_group_commit(served: dict[str, Any]) -> None:
    c = served["client"]
    before = c.get("/metrics").text
    assert send(served, [event("m1", 55), {**event("m1", 56), "qty": "many"}]).status_code == 207

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=served["url"], timeout=30) as ac:
            return await asyncio.gather(*[ac.post("/v1/events", json=event(f"g{i}", 57)) for i in range(30)])
    replies = asyncio.run(burst())
    assert all(r.status_code == 200 and r.json()["durable"] for r in replies)
    batches = {r.json()["batch"] for r in replies}
    assert len(batches) < 30      # concurrent requests shared commits
    after = c.get("/metrics").text
    assert _metric(after, "evenflow_events_in_total") - _metric(before, "evenflow_events_in_total") == 32
    wrong = 'evenflow_events_quarantined_total{reason="wrong_type"}'
    assert _metric(after, wrong) - _metric(before, wrong) == 1
    assert _metric(after, 'evenflow_events_out_total{feature_set="card"}') > 0
    assert _metric(after, "evenflow_processing_seconds_count") > _metric(before, "evenflow_processing_seconds_count")
    assert _metric(after, "evenflow_online_store_entities") >= 32
    assert _metric(after, "evenflow_watermark_lag_seconds") > 0
    assert _metric(after, "evenflow_commits_total") - _metric(before, "evenflow_commits_total") >= len(batches)
    h = c.get("/health")
    assert h.status_code == 200 and h.json()["ready"] and h.json()["store_reachable"]
    assert h.json()["last_commit_age_s"] is not None
    assert "swagger" in c.get("/docs").text.lower()
    spec = c.get("/openapi.json").json()
    assert {"/v1/events", "/v1/features", "/v1/features/{feature_set}/{key}", "/health", "/metrics"} <= set(spec["paths"])
    assert "RecordError" in spec["components"]["schemas"]


def test_not_durable_answers_202_and_lands_soon(served: dict[str, Any]) -> None:
    e = event("nd1", 58)
    r = send(served, [e], params={"durable": "false"})
    assert r.status_code == 202 and r.json()["durable"] is False
    deadline = time.monotonic() + 5
    while json.dumps(e, separators=(",", ":")) not in {x["payload"] for x in bronze_rows(served["lake"])}:
        assert time.monotonic() < deadline
        time.sleep(0.05)


# -- restart, artifacts ---------------------------------------------------------------------------
def test_memory_store_restart_replays_bronze(pipeline_file: Path, tmp_path: Path) -> None:
    pipeline = ef.Pipeline.load(pipeline_file)
    app = create_app(pipeline, lakehouse=tmp_path, commit_interval=0.02)
    events = [event("r1", i, i + 1.0) for i in range(10)] + [{**event("r1", 11), "amount": "x"}]
    with ThreadServer(app) as srv:
        r = httpx.post(f"{srv.url}/v1/events", json=events, timeout=30)
        assert r.status_code == 207
    at = "2026-03-01T10:30:00Z"
    first = app.state.service
    again = Service(pipeline, lakehouse=tmp_path)       # a new process would do the same
    assert again.batch == first.batch and again.next_offset == 12
    assert again.read_many("card", [("r1",)], ef.core.timeutil.to_micros(ef.core.timeutil.parse_instant(at))) == \
        first.read_many("card", [("r1",)], ef.core.timeutil.to_micros(ef.core.timeutil.parse_instant(at)))
    assert len(quarantine_rows(tmp_path)) == 1        # replay re-landed nothing


def test_artifacts_with_another_fingerprint_are_refused(pipeline_file: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from evenflow.cli import app as cli

    (tmp_path / "artifacts.json").write_text("{}")
    (tmp_path / "card.json").write_text(json.dumps({"fingerprint": "0123456789abcdef"}))
    pipeline = ef.Pipeline.load(pipeline_file)
    with pytest.raises(EvenflowError, match="fingerprint mismatch"):
        Service(pipeline, lakehouse=tmp_path, artifacts=tmp_path / "artifacts.json")
    out = CliRunner().invoke(cli, ["serve", str(pipeline_file), "--lakehouse", str(tmp_path / "lake"),
                                   "--artifacts", str(tmp_path / "artifacts.json")])
    assert out.exit_code == 2 and "fingerprint mismatch" in out.output
    # the matching fingerprint is accepted
    (tmp_path / "card.json").write_text(json.dumps({"fingerprint": pipeline.fingerprint({})}))
    assert Service(pipeline, lakehouse=tmp_path, artifacts=tmp_path / "artifacts.json").batch == 0


# -- graceful shutdown with the Redis store, in a real process -------------------------------------
def _start(pipeline_file: Path, lake: Path, port: int, prefix: str) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).parent / "evenflow"
    proc = subprocess.Popen([str(exe), "serve", str(pipeline_file), "--port", str(port),
                             "--lakehouse", str(lake), "--redis", "redis://127.0.0.1:6379/0",
                             "--redis-prefix", prefix, "--commit-interval", "0.5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_sigterm_flushes_and_a_restart_serves_the_same_values(pipeline_file: Path, tmp_path: Path) -> None:
    import redis

    prefix = f"evenflow:test:{uuid.uuid4().hex}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _start(pipeline_file, tmp_path, port, prefix)
    try:
        acked = []
        for i in range(6):       # not durable: acknowledged before their commit (0.5 s interval)
            batch = [event(f"s{i % 3}", i * 3 + j, 10.0 + j) for j in range(3)]
            r = httpx.post(f"{url}/v1/events", json=batch, params={"durable": "false"}, timeout=10)
            assert r.status_code == 202
            acked += [json.dumps(e, separators=(",", ":")) for e in batch]
        at = "2026-03-01T10:20:00Z"
        keys = ["s0", "s1", "s2"]
        reference = StreamEngine(ef.Pipeline.load(pipeline_file))
        reference.process([json.loads(x) for x in acked])
        want = [_strip(row, ["card"]) for row in reference.read_many("card", keys, at=at)]
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught: exit by SIGTERM
        assert proc.wait(30) in (0, -signal.SIGTERM)
        bronze = bronze_rows(tmp_path)
        assert sorted(r["payload"] for r in bronze) == sorted(acked)        # all of them, once each
        assert sorted(int(r["offset"]) for r in bronze) == list(range(1, 19))
        proc = _start(pipeline_file, tmp_path, port, prefix)
        after = httpx.post(f"{url}/v1/features", json={"feature_set": "card", "keys": keys, "at": at}).json()
        assert [x["features"] for x in after["results"]] == want       # state loaded back from Redis
        assert want[0]["count_1h"] == 6
        r = httpx.post(f"{url}/v1/events", json=event("s0", 30), timeout=10)
        assert r.json()["offsets"] == [19, 19]          # the ingest numbering continues

        async def burst() -> list[int]:      # more concurrent reads than Redis connections
            async with httpx.AsyncClient(base_url=url, timeout=30) as ac:
                replies = await asyncio.gather(*[ac.get(f"/v1/features/card/s{i % 3}") for i in range(120)])
            return [r.status_code for r in replies]
        assert set(asyncio.run(burst())) == {200}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        names = list(client.scan_iter(match=f"{prefix}:*"))
        if names:
            client.delete(*names)


def test_backfill_warms_an_empty_store(pipeline_file: Path, tmp_path: Path) -> None:
    history = tmp_path / "history.ndjson"
    rows = [event("h1", i, 2.0) for i in range(5)]
    history.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    pipeline = ef.Pipeline.load(pipeline_file)
    svc = Service(pipeline, lakehouse=tmp_path / "lake", backfill=history)
    at = ef.core.timeutil.to_micros(ef.core.timeutil.parse_instant("2026-03-01T10:10:00Z"))
    (features, found), = svc.read_many("card", [("h1",)], at)
    assert found and features["count_1h"] == 5 and features["sum_amount_1h"] == 10.0
    assert {'card|["h1"]', 'card_merchant|["h1","m1"]'} <= set(svc.store.load_all())   # committed


def test_large_requests_take_the_vectorized_path_with_the_same_outcome(pipeline_file: Path,
                                                                         tmp_path: Path) -> None:
    """A request of ``vector_from`` records or more goes through ``process_batch``: the same
    per-record answer (errors, duplicates), the same quarantine rows and the same state."""
    pipeline = ef.Pipeline.load(pipeline_file)
    body = [event(f"r{i % 4}", i, float(i)) for i in range(40)]
    body[7] = {**body[7], "amount": "x"}
    body[9] = {**body[9], "ts": "soon"}
    body[4] = dict(body[3])                        # a duplicate transaction
    vec = Service(pipeline, lakehouse=tmp_path / "a", vector_from=10)
    one = Service(pipeline, lakehouse=tmp_path / "b", vector_from=0)
    got, _ = vec.ingest(body)
    want, _ = one.ingest(body)
    assert got == want and got["quarantined"] == 2 and len(got["duplicates"]) == 1
    assert vec._qrows == one._qrows
    assert vec.engine.dirty_states() == one.engine.dirty_states()
    assert vec.metrics.events_out.labels(feature_set="card")._value.get() == 37
