"""The stream runner: source → stream engine → exactly-once commit, in micro-batches.

Each micro-batch ``n`` is committed in three steps (``docs/decisions/0004-exactly-once.md``):

1. Delta: raw events appended to bronze as application transaction ``(app_id, n)`` with the last
   source offset in the commit metadata; then the batch's quarantine, same transaction id, in
   its own table, and the batch's duplicates log likewise;
2. the online store: changed entity states, the engine meta and checkpoint ``n`` in one
   transaction (Redis ``MULTI``/``EXEC``);
3. the source: the batch's offsets acknowledged (``XACK``).

A restart reads Delta's committed ``(n, offset)`` and the store's checkpoint. If the store is
behind (a crash between 1 and 2), the events of the missing batches are re-read from bronze and
re-applied to the engine without landing them again; source entries at or before the committed
offset are acknowledged and skipped. So a crash at any point neither loses nor duplicates an
event in bronze, in quarantine or in the online state.

Fault injection for the crash tests: ``EVENFLOW_CRASH_AT=<point>:<batch>`` kills the process with
a real ``SIGKILL`` at that point of that batch; points are ``mid_batch`` (processed, nothing
committed), ``between_sinks`` (bronze committed, quarantine not), ``mid_commit`` (Delta committed,
store not), ``after_commit_before_ack``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import typer

from evenflow.core.pipeline import Pipeline
from evenflow.core.timeutil import parse_duration
from evenflow.errors import EvenflowError
from evenflow.stream.engine import StreamEngine, StreamResult
from evenflow.stream.sink import BronzeSink, DuplicatesSink, QuarantineSink, RawEvent
from evenflow.stream.sources import EventSource, FileReplaySource, RedisStreamSource
from evenflow.stream.store import MemoryStore, OnlineStore, RedisStore
from evenflow.stream.vector import BatchResult

READ_CHUNK = 5_000
CRASH_POINTS = ("mid_batch", "between_sinks", "mid_commit", "after_commit_before_ack")


@dataclass
class RunStats:
    """Counts since the runner started: every event read ends in exactly one of the last three."""

    batches: int = 0
    events: int = 0
    skipped: int = 0          # at or before the committed offset: landed before a restart
    outputs: int = 0
    quarantined: int = 0
    duplicates: int = 0
    replayed_batches: int = 0
    commit_seconds: list[float] = field(default_factory=list)
    #: seconds spent per stage: process (engine), delta (bronze, quarantine, duplicates),
    #: serialize (engine
    #: states and meta), store (the store's transaction), ack
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("process", "delta", "serialize", "store", "ack"), 0.0))


def _crash_point() -> tuple[str, int] | None:
    spec = os.environ.get("EVENFLOW_CRASH_AT")
    if not spec:
        return None
    point, _, batch = spec.partition(":")
    if point not in CRASH_POINTS or not batch.isdigit():
        raise EvenflowError(f"EVENFLOW_CRASH_AT={spec!r} is not <point>:<batch>",
                            fix=f"points: {', '.join(CRASH_POINTS)}; e.g. mid_commit:3")
    return point, int(batch)


class Runner:
    """Reads micro-batches from ``source``, runs them through the engine, commits exactly once.

    ``commit_interval``: how long a batch collects events before it is committed (sooner when
    ``max_batch`` events are in). ``on_batch`` is called after each commit with the batch number
    and the engine's result (metrics, scoring): a ``StreamResult``, or a ``BatchResult`` (one
    Arrow table per feature set) for a batch of ``vector_from`` records or more, which goes
    through the vectorized path (``StreamEngine.process_batch``; the same records, state and
    store contents; ``vector_from=0`` never takes it).
    """

    def __init__(self, pipeline: Pipeline, feature_set: str, source: EventSource,
                 store: OnlineStore | None = None, lakehouse_dir: str | Path | None = None, *,
                 commit_interval: str | int = "1s", max_batch: int = 10_000,
                 artifacts: dict[str, Any] | None = None, lateness: str | int = "0s",
                 ttl: str | int | None = None, app_id: str | None = None,
                 on_batch: Callable[[int, StreamResult | BatchResult], None] | None = None,
                 vector_from: int = 1000) -> None:
        self.pipeline, self.feature_set, self.source = pipeline, feature_set, source
        self.store: OnlineStore = store if store is not None else MemoryStore()
        self.engine = StreamEngine(pipeline, feature_set, artifacts=artifacts, lateness=lateness,
                                   ttl=ttl)
        lake = Path(lakehouse_dir) if lakehouse_dir is not None else pipeline.output.lakehouse_path()
        self.app_id = app_id or f"{pipeline.name}.{feature_set}.{source.name}"
        self.bronze = BronzeSink(lake / "bronze" / self.engine.source.name, self.app_id)
        self.quarantine = QuarantineSink(lake / "quarantine" / feature_set, self.app_id)
        self.duplicates = DuplicatesSink(lake / "duplicates" / feature_set, self.app_id)
        self.interval_s = parse_duration(commit_interval) / 1e6
        self.max_batch = max_batch
        self.on_batch = on_batch
        self.vector_from = vector_from
        self.stats = RunStats()
        self.batch = 0                       # last committed batch number
        self.offset: str | None = None       # last committed source offset
        self._stop = threading.Event()
        self._crash = _crash_point()
        self._recovered = False

    # -- recovery --------------------------------------------------------------------------------
    def recover(self) -> None:
        """Bring the engine and the store to the last batch Delta committed."""
        checkpoint = self.store.checkpoint()
        if checkpoint is not None:
            meta = self.store.meta()
            self.engine.load_states(self.store.load_all())
            if meta is not None:
                self.engine.load_meta(meta)
        committed = self.bronze.committed()
        landed = committed.batch or 0
        done = checkpoint or 0
        if done > landed:
            raise EvenflowError(
                f"the online store is at batch {done} but bronze ({self.bronze.path}) only has "
                f"{landed} for {self.app_id!r}",
                fix="point the runner at the lakehouse it wrote before, or clear the store")
        # Batches landed but not yet in the store (a crash between the Delta commit and the
        # store commit; or a memory store that starts empty): re-apply them from bronze.
        for n in range(done + 1, landed + 1):
            events = self.bronze.batch_events(n)
            _, quarantine, duplicates = self._process(events, n)
            self.quarantine.append(quarantine, batch=n)   # each a no-op if it was landed
            self.duplicates.append(duplicates, batch=n)
            self.store.commit(self.engine.dirty_states(), meta=self.engine.meta(), checkpoint=n)
            self.stats.replayed_batches += 1
        self.batch, self.offset = landed, committed.offset
        self._recovered = True

    # -- one batch ---------------------------------------------------------------------------------
    def _process(self, events: Sequence[RawEvent], batch: int
                 ) -> tuple[StreamResult | BatchResult, list[dict[str, Any]], list[dict[str, Any]]]:
        """Run ``events`` through the engine; the batch's quarantine and duplicates rows, with
        source offsets."""
        records: list[Any] = []
        owners: list[RawEvent] = []
        quarantine: list[dict[str, Any]] = []
        for event in events:
            record, bad = self.source.decode(event)
            if bad is not None:
                quarantine.append(bad)
            else:
                records.append(record)
                owners.append(event)
        # Arrival numbers continue the engine's (restored from the store's meta after a restart),
        # so a replayed batch gets the numbers it had, and a quarantine row maps to its event.
        base = self.engine.seq
        result: StreamResult | BatchResult
        if self.vector_from and len(records) >= self.vector_from:
            result = self.engine.process_batch(records, seqs=list(range(base, base + len(records))))
        else:
            result = self.engine.process(records, seqs=range(base, base + len(records)))
        for row in result.quarantined:
            event = owners[row["seq"] - base]
            # The original text (a CSV line, not its dict form) and where it came from.
            quarantine.append({**row, "payload": event.payload, "source": event.source,
                               "offset": event.offset})
        duplicates = []
        for row in result.duplicates:
            i = row["seq"] - base
            # keep="last" may drop an event of an earlier batch: bronze has it, by its seq.
            dropped = owners[i] if 0 <= i < len(owners) else None
            duplicates.append({**row, "payload": dropped.payload if dropped else row.get("payload"),
                               "source": dropped.source if dropped else None,
                               "offset": dropped.offset if dropped else None})
        return result, quarantine, duplicates

    def _maybe_crash(self, point: str, batch: int) -> None:
        if self._crash == (point, batch):
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    def commit_batch(self, events: Sequence[RawEvent]) -> None:
        """Process and commit one micro-batch (events after the committed offset)."""
        n = self.batch + 1
        s = self.stats
        t0 = time.perf_counter()
        result, quarantine, duplicates = self._process(events, n)
        self._maybe_crash("mid_batch", n)
        t1 = time.perf_counter()
        last = events[-1].offset
        self.bronze.append(events, batch=n, offset=last)
        self._maybe_crash("between_sinks", n)
        self.quarantine.append(quarantine, batch=n)
        self.duplicates.append(duplicates, batch=n)
        self._maybe_crash("mid_commit", n)
        t2 = time.perf_counter()
        states, meta = self.engine.dirty_states(), self.engine.meta()
        t3 = time.perf_counter()
        self.store.commit(states, meta=meta, checkpoint=n)
        self._maybe_crash("after_commit_before_ack", n)
        t4 = time.perf_counter()
        self.source.ack([e.offset for e in events])
        t5 = time.perf_counter()
        for stage, took in zip(s.seconds, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
            s.seconds[stage] += took
        s.commit_seconds.append(t5 - t1)
        self.batch, self.offset = n, last
        s.batches += 1
        s.events += len(events)
        s.outputs += sum(len(rows) for rows in result.outputs.values())
        s.quarantined += len(quarantine)
        s.duplicates += len(result.duplicates)
        if self.on_batch is not None:
            self.on_batch(n, result)

    # -- the loop ----------------------------------------------------------------------------------
    def _collect(self) -> list[RawEvent]:
        """Events for one batch: until the commit interval ends or ``max_batch`` are in."""
        out: list[RawEvent] = []
        done = self.source.offset_key(self.offset) if self.offset is not None else None
        deadline = time.monotonic() + self.interval_s
        while len(out) < self.max_batch and not self._stop.is_set():
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                break
            # Short blocks and bounded reads keep the commit interval and a stop request (SIGTERM)
            # answered promptly, however deep the backlog.
            got = self.source.read(min(self.max_batch - len(out), READ_CHUNK), min(left_ms, 250))
            if done is not None and got:
                old = [e for e in got if self.source.offset_key(e.offset) <= done]
                if old:  # landed before a crash; only the acknowledgement was missing
                    self.source.ack([e.offset for e in old])
                    self.stats.skipped += len(old)
                    got = [e for e in got if self.source.offset_key(e.offset) > done]
            out.extend(got)
            if self.source.exhausted:
                break
        return out

    def stop(self) -> None:
        """Ask the loop to commit what it holds and return."""
        self._stop.set()

    def run(self, *, idle_exit_s: float | None = None, max_batches: int | None = None) -> RunStats:
        """Run until stopped (``stop()``, SIGTERM, SIGINT), the source ends, no event came for
        ``idle_exit_s`` seconds, or ``max_batches`` batches are committed."""
        if not self._recovered:
            self.recover()
        restore = self._handle_signals()
        idle_since = time.monotonic()
        try:
            while not self._stop.is_set():
                events = self._collect()
                if events:
                    self.commit_batch(events)
                    idle_since = time.monotonic()
                    if max_batches is not None and self.stats.batches >= max_batches:
                        break
                elif self.source.exhausted or (
                        idle_exit_s is not None and time.monotonic() - idle_since >= idle_exit_s):
                    break
        finally:
            restore()
        return self.stats

    def _handle_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        def handler(signum: int, frame: FrameType | None) -> None:
            self._stop.set()
        old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for sig, previous in old.items():
                signal.signal(sig, previous)
        return restore


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m evenflow.stream.runner pipeline.yaml --feature-set card --redis-stream ...``"""
    p = argparse.ArgumentParser(prog="python -m evenflow.stream.runner",
                                description="Consume a Redis Stream or replay a file into the "
                                            "stream engine, landing raw events exactly once.")
    p.add_argument("pipeline")
    p.add_argument("--feature-set", required=True)
    p.add_argument("--redis-stream", help="stream key to consume")
    p.add_argument("--file", help="NDJSON or CSV file to replay instead of a stream")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--group", default="evenflow")
    p.add_argument("--consumer", default="runner-1")
    p.add_argument("--claim-idle-ms", type=int, default=None,
                   help="take over entries pending this long in other consumers of the group")
    p.add_argument("--store", choices=["memory", "redis"], default="redis")
    p.add_argument("--store-url", default=None, help="Redis URL of the online store (default: --redis-url)")
    p.add_argument("--store-prefix", default=None)
    p.add_argument("--lakehouse", default=None, help="lakehouse directory (default: the pipeline's)")
    p.add_argument("--commit-interval", default="1s")
    p.add_argument("--max-batch", type=int, default=10_000)
    p.add_argument("--vector-from", type=int, default=1000,
                   help="batches of this many records or more take the vectorized path "
                        "(StreamEngine.process_batch); 0: always record by record")
    p.add_argument("--artifacts", default=None, help="artifacts.json of a training set build")
    p.add_argument("--lateness", default="0s")
    p.add_argument("--ttl", default=None)
    p.add_argument("--app-id", default=None)
    p.add_argument("--idle-exit", type=float, default=None,
                   help="stop after this many seconds without events")
    args = p.parse_args(argv)
    try:
        stats = _run_cli(args)
    except EvenflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"batches": stats.batches, "events": stats.events, "skipped": stats.skipped,
                      "outputs": stats.outputs, "quarantined": stats.quarantined,
                      "duplicates": stats.duplicates, "replayed_batches": stats.replayed_batches}))
    return 0


def _run_cli(args: argparse.Namespace) -> RunStats:
    pipeline = Pipeline.load(args.pipeline)
    if bool(args.redis_stream) == bool(args.file):
        raise EvenflowError("give exactly one of --redis-stream and --file",
                            fix="--redis-stream events, or --file events.ndjson")
    source: EventSource
    if args.redis_stream:
        source = RedisStreamSource(args.redis_url, args.redis_stream, args.group, args.consumer,
                                   claim_idle_ms=args.claim_idle_ms)
    else:
        source = FileReplaySource(args.file)
    store: OnlineStore
    if args.store == "redis":
        store = RedisStore(args.store_url or args.redis_url,
                           args.store_prefix or f"evenflow:{pipeline.name}:{args.feature_set}")
    else:
        store = MemoryStore()
    artifacts = None
    if args.artifacts:
        artifacts = json.loads(Path(args.artifacts).read_text())
    runner = Runner(pipeline, args.feature_set, source, store, args.lakehouse,
                    commit_interval=args.commit_interval, max_batch=args.max_batch,
                    artifacts=artifacts, lateness=args.lateness, ttl=args.ttl, app_id=args.app_id,
                    vector_from=args.vector_from)
    try:
        from redis.exceptions import RedisError
    except ImportError:  # pragma: no cover - a file replay with a memory store needs no Redis
        RedisError = OSError  # type: ignore[assignment,misc]
    try:
        return runner.run(idle_exit_s=args.idle_exit)
    except (OSError, RedisError) as exc:
        raise EvenflowError(f"the runner stopped: {exc}",
                            fix="check Redis and the lakehouse directory, then start the runner "
                                "again: it resumes from its last commit") from None
    finally:
        source.close()


def register_consume(app: Any) -> None:
    """Add ``evenflow consume`` (the options of ``python -m evenflow.stream.runner``) to ``app``."""
    @app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
                 add_help_option=False)
    def consume(ctx: typer.Context) -> None:
        """Consume a Redis Stream (or replay a file) into the stream engine, landing raw events
        in bronze exactly once and keeping the online store fresh. --help for the options."""
        code = main(list(ctx.args))
        if code:
            raise typer.Exit(code)


if __name__ == "__main__":
    raise SystemExit(main())
