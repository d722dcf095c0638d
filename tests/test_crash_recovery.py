"""Crash recovery for real: the runner as a subprocess on a Redis Stream, killed with SIGKILL.

After each crash the runner is restarted until the stream is drained. Then the bronze table must
hold every stream entry exactly once (by offset and payload), the quarantine every bad entry
exactly once, and the online state in Redis, read for every key at a fixed time, must equal the
state of an uninterrupted run over the same entries.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from evenflow.core.pipeline import Pipeline
from evenflow.stream.runner import CRASH_POINTS, Runner
from evenflow.stream.sink import BronzeSink, DuplicatesSink, QuarantineSink
from evenflow.stream.sources import RedisStreamSource
from evenflow.stream.store import OnlineReader, RedisStore

redis = pytest.importorskip("redis")
URL = "redis://127.0.0.1:6379/0"
ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 3, 1, tzinfo=UTC)
LATENESS = "10m"

PIPELINE = """
name: crash
sources:
  transactions:
    format: ndjson
    path: unused.ndjson
    key: card_id
    event_time: ts
    schema:
      transaction_id: {type: string, nullable: false}
      card_id: {type: string, nullable: false}
      merchant_id: {type: string, nullable: false}
      amount: {type: float, ge: 0}
      ts: {type: timestamp}
feature_sets:
  - name: card
    source: transactions
    steps:
      - {kind: dedup, key: [transaction_id], keep: first}
    features:
      - {agg: count, window: 10m}
      - {agg: count, window: 1h}
      - {agg: sum, column: amount, window: 1h}
      - {agg: max, column: amount, window: 1d}
      - {agg: mean, column: amount, window: 1d}
      - {agg: std, column: amount, window: 1d}
      - {agg: distinct, column: merchant_id, window: 1d}
      - {agg: since_last, closed: left}
"""


def fraud_like_events(n: int, *, cards: int, seed: int) -> list[str]:
    """Card transactions, roughly in time order, with duplicates, late and bad records."""
    rng = random.Random(seed)
    out: list[str] = []
    t = T0
    for i in range(n):
        t += timedelta(seconds=rng.expovariate(1 / 6))
        kind = rng.random()
        if kind < 0.01:
            out.append(rng.choice(["{not json", "[1, 2]", '"text"', ""]))
            continue
        if kind < 0.03 and out:
            out.append(rng.choice(out))                       # a resent message: dedup
            continue
        ts = t - timedelta(seconds=rng.randint(0, 300))       # out of order within lateness
        if kind < 0.04:
            ts = t - timedelta(hours=2)                       # behind the watermark: late
        amount: object = round(rng.lognormvariate(3, 1), 2)
        if kind < 0.05:
            amount = rng.choice(["abc", -5])                  # wrong_type, out_of_range
        out.append(json.dumps({"transaction_id": f"t{i}", "card_id": f"c{rng.randrange(cards)}",
                               "merchant_id": f"m{rng.randrange(25)}", "amount": amount,
                               "ts": ts.isoformat().replace("+00:00", "Z")}))
    return out


N, CARDS = 2400, 60
EVENTS = fraud_like_events(N, cards=CARDS, seed=11)
READ_AT = "2026-03-01T04:15:00Z"
KEYS = [f"c{i}" for i in range(CARDS)]


@pytest.fixture(scope="module")
def r():
    client = redis.Redis.from_url(URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail("Redis is not running at 127.0.0.1:6379 (make services)")
    yield client
    client.close()


@pytest.fixture(scope="module")
def pipeline_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("crash") / "pipeline.yaml"
    path.write_text(PIPELINE)
    return path


class Run:
    """One stream, one store prefix, one lakehouse: a runner's whole world, cleaned up after."""

    def __init__(self, r, pipeline_file: Path, tmp: Path, events: list[str]) -> None:
        self.r, self.pipeline_file = r, pipeline_file
        tag = uuid.uuid4().hex[:10]
        self.stream, self.prefix, self.lake = f"test:crash:{tag}", f"test:crash:{tag}:store", tmp / "lake"
        self.ids: list[str] = []
        pipe = r.pipeline(transaction=False)
        for payload in events:
            pipe.xadd(self.stream, {"data": payload})
        self.ids = [i.decode() for i in pipe.execute()]
        self.sent = dict(zip(self.ids, events, strict=True))
        self.app_id = f"crash.card.{self.stream}"

    def runner_cmd(self, *extra: str) -> list[str]:
        return [sys.executable, "-m", "evenflow.stream.runner", str(self.pipeline_file),
                "--feature-set", "card", "--redis-stream", self.stream, "--redis-url", URL,
                "--group", "g", "--consumer", "runner", "--store", "redis",
                "--store-prefix", self.prefix, "--lakehouse", str(self.lake),
                "--commit-interval", "100ms", "--max-batch", "300", "--lateness", LATENESS, *extra]

    def run(self, crash: str | None = None, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != "EVENFLOW_CRASH_AT"}
        if crash:
            env["EVENFLOW_CRASH_AT"] = crash
        return subprocess.run(self.runner_cmd("--idle-exit", "0.5", *extra), cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=timeout)

    @property
    def bronze(self) -> BronzeSink:
        return BronzeSink(self.lake / "bronze" / "transactions", self.app_id)

    @property
    def quarantine(self) -> QuarantineSink:
        return QuarantineSink(self.lake / "quarantine" / "card", self.app_id)

    @property
    def duplicates(self) -> DuplicatesSink:
        return DuplicatesSink(self.lake / "duplicates" / "card", self.app_id)

    @property
    def store(self) -> RedisStore:
        return RedisStore(URL, self.prefix)

    def reads(self) -> list[dict]:
        pipeline = Pipeline.load(self.pipeline_file)
        return OnlineReader(pipeline, "card", self.store).read_many(KEYS, at=READ_AT)

    def cleanup(self) -> None:
        self.store.clear()
        self.r.delete(self.stream)


@pytest.fixture
def make_run(r, pipeline_file, tmp_path):
    runs: list[Run] = []

    def make(events: list[str] = EVENTS) -> Run:
        run = Run(r, pipeline_file, tmp_path / f"run{len(runs)}", events)
        runs.append(run)
        return run
    yield make
    for run in runs:
        run.cleanup()


@pytest.fixture(scope="module")
def reference(r, pipeline_file, tmp_path_factory):
    """An uninterrupted run (in-process) over the same entries: what every crash run must equal."""
    run = Run(r, pipeline_file, tmp_path_factory.mktemp("reference"), EVENTS)
    try:
        source = RedisStreamSource(URL, run.stream, "g", "runner")
        runner = Runner(Pipeline.load(pipeline_file), "card", source, run.store, run.lake,
                        commit_interval="100ms", max_batch=300, lateness=LATENESS,
                        app_id=run.app_id, vector_from=0)
        stats = runner.run(idle_exit_s=0.5)
        assert stats.events == N and stats.replayed_batches == 0
        quarantine = {q["offset"]: q["reason"] for q in run.quarantine.read().to_pylist()}
        by_position = {run.ids.index(o): reason for o, reason in quarantine.items()}
        reads = run.reads()
        dups = {run.ids.index(d["offset"]) for d in run.duplicates.read().to_pylist()}
        yield {"quarantine": by_position, "duplicates": dups, "reads": reads, "stats": stats}
    finally:
        run.cleanup()


def check_exactly_once(run: Run, reference: dict) -> None:
    """Bronze holds every entry once, quarantine every bad one once, state equals the reference."""
    bronze = run.bronze.read().to_pylist()
    offsets = [row["offset"] for row in bronze]
    assert len(offsets) == len(set(offsets)), "an entry landed twice in bronze"
    assert sorted(offsets, key=lambda o: tuple(map(int, o.split("-")))) == run.ids
    assert all(row["payload"] == run.sent[row["offset"]] for row in bronze)
    quarantine = [q["offset"] for q in run.quarantine.read().to_pylist()]
    assert len(quarantine) == len(set(quarantine)), "an entry was quarantined twice"
    reasons = {run.ids.index(q["offset"]): q["reason"] for q in run.quarantine.read().to_pylist()}
    assert reasons == reference["quarantine"]
    dups = [d["offset"] for d in run.duplicates.read().to_pylist()]
    assert len(dups) == len(set(dups)), "a duplicate was logged twice"
    assert {run.ids.index(o) for o in dups} == reference["duplicates"]
    assert run.r.xpending(run.stream, "g")["pending"] == 0
    assert run.reads() == reference["reads"]


def test_reference_run_is_not_trivial(reference):
    """The generated stream exercises every path: features, duplicates, late and bad records."""
    stats = reference["stats"]
    reasons = set(reference["quarantine"].values())
    assert {"malformed_record", "late", "wrong_type", "out_of_range"} <= reasons
    assert stats.duplicates > 10 and stats.batches >= 8
    assert len(reference["duplicates"]) == stats.duplicates
    assert sum(1 for row in reference["reads"] if row["count_1h"]) > 10
    assert stats.events == stats.outputs + stats.quarantined + stats.duplicates


def _committed(run: Run) -> tuple[int | None, ...]:
    return (run.bronze.committed().batch, run.quarantine.committed_batch(),
            run.duplicates.committed_batch(), run.store.checkpoint())


def _expected(point: str, k: int) -> tuple[int, ...]:
    """What bronze, quarantine, duplicates and the store hold after a kill at ``point:k``."""
    return {"mid_batch": (k - 1,) * 4, "between_sinks": (k, k - 1, k - 1, k - 1),
            "mid_commit": (k, k, k, k - 1), "after_commit_before_ack": (k,) * 4}[point]


def test_sigkill_at_every_commit_point_in_turn(make_run, reference):
    """One stream; the runner is killed at each point in turn (a later batch each time), each
    restart recovering from the previous kill, then it runs to the end."""
    run = make_run()
    for k, point in enumerate(CRASH_POINTS, start=2):
        crashed = run.run(f"{point}:{k}")
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr
        # The kill happened where it was asked to: what each side had committed says so.
        assert _committed(run) == _expected(point, k), point
        assert run.r.xpending(run.stream, "g")["pending"] > 0
    resumed = run.run()
    assert resumed.returncode == 0, resumed.stderr
    stats = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert stats["skipped"] > 0           # the last killed batch: landed, acknowledged now
    check_exactly_once(run, reference)


def test_sigkill_with_vectorized_batches(make_run, reference):
    """The same kills with every batch of 50 records or more through ``process_batch``: bronze,
    quarantine, duplicates and the online state equal the record-by-record reference run."""
    run = make_run()
    for k, point in enumerate(CRASH_POINTS, start=2):
        crashed = run.run(f"{point}:{k}", "--vector-from", "50")
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr
        assert _committed(run) == _expected(point, k), point
    resumed = run.run(None, "--vector-from", "50")
    assert resumed.returncode == 0, resumed.stderr
    check_exactly_once(run, reference)


@pytest.mark.slow
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_sigkill_at_each_commit_point(point, make_run, reference):
    run = make_run()
    crashed = run.run(f"{point}:3")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert _committed(run) == _expected(point, 3)
    assert run.r.xpending(run.stream, "g")["pending"] > 0

    resumed = run.run()
    assert resumed.returncode == 0, resumed.stderr
    stats = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert stats["replayed_batches"] == (1 if point in ("between_sinks", "mid_commit") else 0)
    if point != "mid_batch":
        assert stats["skipped"] > 0       # batch 3's entries: landed, acknowledged on restart
    check_exactly_once(run, reference)


def test_sigterm_commits_what_it_holds_and_exits(make_run, reference):
    run = make_run()
    # A long commit interval: the runner is holding read, uncommitted entries when stopped.
    proc = subprocess.Popen(run.runner_cmd("--commit-interval", "60s", "--max-batch", "100000"),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while _pending(run) < N and time.monotonic() < deadline:
            time.sleep(0.1)
        assert run.bronze.committed().batch is None
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["batches"] == 1
    check_exactly_once(run, reference)


def _pending(run: Run) -> int:
    try:
        return int(run.r.xpending(run.stream, "g")["pending"])
    except redis.ResponseError:       # the runner has not created its group yet
        return 0


def _entries_read(run: Run) -> int:
    """How many stream entries the group has delivered so far (Redis 7 ``entries-read``)."""
    try:
        groups = run.r.xinfo_groups(run.stream)
    except redis.ResponseError:       # no stream or group yet
        return 0
    for g in groups:
        name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
        if name == "g":
            return int(g.get("entries-read") or 0)
    return 0


def _restart_until_drained(run: Run, *, kill_after: list[float], crash: list[str]) -> int:
    """Run, killing each attempt (external ``kill -9`` after a delay, or an injected point),
    then run once more to the end. Returns the number of kills that hit a live process."""
    kills = 0
    for attempt in range(len(kill_after) + len(crash)):
        if attempt < len(crash):
            done = run.run(crash[attempt])
            kills += done.returncode == -signal.SIGKILL
            continue
        before = _entries_read(run)
        proc = subprocess.Popen(run.runner_cmd("--idle-exit", "0.5"), cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # The delay counts from when this attempt starts reading new entries, not from its
        # start-up (imports take seconds on a loaded machine), so a kill lands mid-stream
        # however fast the runner is.
        deadline = time.monotonic() + 60
        while proc.poll() is None and _entries_read(run) <= before and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(kill_after[attempt - len(crash)])
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=30)
    final = run.run(timeout=300)
    assert final.returncode == 0, final.stderr
    return kills


@pytest.mark.slow
def test_repeated_crashes_and_external_kill9(make_run, reference):
    """Several injected crashes in one run, then external ``kill -9`` at random moments."""
    rng = random.Random(5)
    run = make_run()
    kills = _restart_until_drained(
        run, crash=["mid_commit:2", "after_commit_before_ack:3", "between_sinks:4", "mid_batch:5"],
        kill_after=[rng.uniform(0.05, 0.3) for _ in range(4)])
    assert kills >= 5
    check_exactly_once(run, reference)


@pytest.mark.slow
def test_external_kill9_on_a_larger_stream(r, pipeline_file, tmp_path):
    """20k entries, killed with ``kill -9`` at random times until drained; compared with an
    uninterrupted in-process run on its own copy of the stream."""
    events = fraud_like_events(20_000, cards=500, seed=3)
    rng = random.Random(17)
    crashed = Run(r, pipeline_file, tmp_path / "crashed", events)
    clean = Run(r, pipeline_file, tmp_path / "clean", events)
    try:
        runner = Runner(Pipeline.load(pipeline_file), "card",
                        RedisStreamSource(URL, clean.stream, "g", "runner"), clean.store, clean.lake,
                        commit_interval="100ms", max_batch=300, lateness=LATENESS,
                        app_id=clean.app_id)
        runner.run(idle_exit_s=0.5)
        kills = _restart_until_drained(crashed, crash=[],
                                       kill_after=[rng.uniform(0.05, 0.5) for _ in range(6)])
        assert kills >= 4
        ref = {"quarantine": {clean.ids.index(q["offset"]): q["reason"]
                              for q in clean.quarantine.read().to_pylist()}}
        keys = [f"c{i}" for i in range(500)]
        pipeline = Pipeline.load(pipeline_file)
        want = OnlineReader(pipeline, "card", clean.store).read_many(keys, at=READ_AT)
        ref["reads"] = OnlineReader(pipeline, "card", crashed.store).read_many(keys, at=READ_AT)
        assert ref["reads"] == want
        bronze = [row["offset"] for row in crashed.bronze.read().to_pylist()]
        assert len(bronze) == len(set(bronze)) == len(events)
        reasons = {crashed.ids.index(q["offset"]): q["reason"]
                   for q in crashed.quarantine.read().to_pylist()}
        assert reasons == ref["quarantine"]
        assert r.xpending(crashed.stream, "g")["pending"] == 0
    finally:
        crashed.cleanup()
        clean.cleanup()
