"""Online stores: the same contract for memory and the real Redis server, and reads as of a time."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

import evenflow as ef
from evenflow.stream.engine import StreamEngine
from evenflow.stream.store import MemoryStore, OnlineReader, RedisStore

redis = pytest.importorskip("redis")
URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_store():
    store = RedisStore(URL, prefix=f"test:store:{uuid.uuid4().hex[:10]}")
    yield store
    store.clear()
    assert not list(store.redis.scan_iter(match=f"{store.prefix}*"))


@pytest.fixture(params=["memory", "redis"])
def store(request, redis_store):
    return MemoryStore() if request.param == "memory" else redis_store


def test_store_contract(store):
    assert store.checkpoint() is None and store.meta() is None and store.size() == 0
    store.commit({'card|["c1"]': b"\x00one", 'card|["c:2"]': b"two"}, meta=b"m1", checkpoint=1)
    store.commit({'card|["c1"]': b"ONE", 'card|["c3"]': b"three"}, meta=b"m2", checkpoint=2)
    store.commit({'card|["c3"]': None}, meta=b"m3", checkpoint=3)
    assert store.get_many(['card|["c1"]', 'card|["c3"]', 'card|["c:2"]', "nope"]) == \
        [b"ONE", None, b"two", None]
    assert store.get_many([]) == []
    assert (store.checkpoint(), store.meta(), store.size()) == (3, b"m3", 2)
    assert store.load_all() == {'card|["c1"]': b"ONE", 'card|["c:2"]': b"two"}
    store.clear()
    assert store.size() == 0 and store.checkpoint() is None


def test_redis_commit_is_one_multi_exec(redis_store):
    """Everything of a commit goes between one MULTI and its EXEC, as seen by the server."""
    seen: list[tuple[str, str]] = []      # (client address, command), all clients
    ready = threading.Event()
    stop = f"{redis_store.prefix}:stop-monitor"

    def monitor() -> None:
        client = redis.Redis.from_url(URL)
        with client.monitor() as m:
            ready.set()
            for command in m.listen():
                where = f"{command.get('client_address')}:{command.get('client_port')}"
                seen.append((where, command["command"]))
                if stop in command["command"]:
                    return

    thread = threading.Thread(target=monitor, daemon=True)
    thread.start()
    ready.wait(5)
    time.sleep(0.1)
    redis_store.commit({"a": b"1", "b": None}, meta=b"m", checkpoint=7)
    redis_store.redis.get(stop)
    thread.join(10)
    # Other clients (other test runs) may be busy on the same server: keep our connection's.
    ours = next(where for where, text in seen if redis_store.prefix in text)
    mine = [text.split(" ")[0] for where, text in seen if where == ours]
    start = mine.index("MULTI")
    assert mine[start:] == ["MULTI", "MSET", "DEL", "SET", "SET", "EXEC", "GET"]


def test_redis_ttl_expires_idle_states():
    store = RedisStore(URL, prefix=f"test:store:{uuid.uuid4().hex[:10]}", ttl_s=1)
    try:
        store.commit({"k": b"v"}, meta=b"m", checkpoint=1)
        ttl = store.redis.pttl(f"{store.prefix}:e:k")
        assert 0 < ttl <= 1000
        assert store.redis.pttl(f"{store.prefix}:checkpoint") == -1   # never expires
    finally:
        store.clear()


def _engine_and_events():
    tx = ef.source.frame([], name="tx", key="card", event_time="ts",
                         schema=ef.Schema(card=ef.String(), amount=ef.Float(), ts=ef.Timestamp()))
    fs = ef.FeatureSet("card", source=tx, features=[
        ef.count(window="1h"), ef.sum("amount", window="1h"), ef.std("amount", window="1d"),
        ef.since_last()])
    pipeline = ef.Pipeline(name="p", feature_sets=[fs])
    events = [{"card": f"c{i % 4}", "amount": float(i), "ts": f"2026-03-01T10:{i:02d}:00Z"}
              for i in range(40)]
    return pipeline, events


def test_reader_evaluates_redis_state_as_of_the_read_time(redis_store):
    pipeline, events = _engine_and_events()
    engine = StreamEngine(pipeline, "card")
    for chunk in (events[:15], events[15:]):
        engine.process(chunk)
        redis_store.commit(engine.dirty_states(), meta=engine.meta(), checkpoint=1)
    reader = OnlineReader(pipeline, "card", redis_store)
    keys = ["c0", "c1", "c2", "c3", "missing"]
    for at in ("2026-03-01T10:39:00Z", "2026-03-01T11:05:00Z", "2026-03-01T11:38:30Z",
               "2026-03-02T12:00:00Z"):
        assert reader.read_many(keys, at=at) == engine.read_many("card", keys, at=at)
    # windows expire at read time, not only when the next event arrives
    assert reader.read("c0", at="2026-03-01T10:39:00Z")["count_1h"] == 10
    assert reader.read("c0", at="2026-03-01T11:30:00Z")["count_1h"] == 2      # 10:36, 10:32 left
    assert reader.read("c0", at="2026-03-01T11:37:00Z")["count_1h"] == 0
    assert reader.read("missing", at="2026-03-01T10:39:00Z")["count_1h"] == 0
    # A key that left the store (TTL) is not answered from the copy of an earlier read.
    redis_store.commit({'card|["c0"]': None}, meta=engine.meta(), checkpoint=2)
    assert reader.read("c0", at="2026-03-01T10:39:00Z")["count_1h"] == 0
    assert reader.read("c1", at="2026-03-01T10:39:00Z")["count_1h"] == 10


def test_engine_restored_from_redis_continues_like_an_uninterrupted_one(redis_store):
    pipeline, events = _engine_and_events()
    whole = StreamEngine(pipeline, "card")
    want = whole.process(events).outputs["card"]

    first = StreamEngine(pipeline, "card")
    got = first.process(events[:23]).outputs["card"]
    redis_store.commit(first.dirty_states(), meta=first.meta(), checkpoint=1)
    second = StreamEngine(pipeline, "card")
    second.load_states(redis_store.load_all())
    second.load_meta(redis_store.meta())
    got += second.process(events[23:]).outputs["card"]
    assert got == want
