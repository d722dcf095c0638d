"""The service behind the HTTP API: the engine, the sinks, the online store and the group commit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from evenflow.core.pipeline import Pipeline
from evenflow.core.schema import REASONS
from evenflow.errors import EvenflowError
from evenflow.stream.engine import StreamEngine, StreamResult, state_id
from evenflow.stream.service.metrics import ServiceMetrics
from evenflow.stream.sink import BronzeSink, QuarantineSink, RawEvent
from evenflow.stream.state import KeyState
from evenflow.stream.store import MemoryStore, OnlineStore, RedisStore
from evenflow.stream.validate import _converter
from evenflow.stream.vector import BatchResult

log = logging.getLogger("evenflow.serve")

log = logging.getLogger("evenflow.serve")

#: The ``source`` column of bronze rows landed by the service.
HTTP_SOURCE = "http"


def split_ndjson(body: bytes) -> list[str]:
    """The non-blank lines of an NDJSON body, as text (invalid UTF-8 replaced, never an error)."""
    text = body.decode("utf-8", "replace")
    return [line.rstrip("\r") for line in text.split("\n") if line.strip()]


def split_json(body: bytes) -> list[Any]:
    """Records of a JSON body: an object is one record, an array holds many. A body that is not
    JSON comes back whole as one text record (the engine quarantines it as malformed)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return [body.decode("utf-8", "replace")]
    # Anything but an object goes on as its JSON text, which the engine quarantines as
    # malformed (a string element is never read as a record of its own).
    return [r if isinstance(r, dict) else orjson.dumps(r).decode()
            for r in (data if isinstance(data, list) else [data])]


def load_artifacts(path: str | Path, pipeline: Pipeline) -> dict[str, Any]:
    """A training set's ``artifacts.json``, refused unless the dataset card next to it records
    the fingerprint this pipeline has with these artifacts (serving what training did not see
    is the bug this prevents)."""
    path = Path(path)
    if not path.exists():
        raise EvenflowError("file not found", file=str(path),
                            fix="pass out/<training set>/artifacts.json of `evenflow training-set`")
    try:
        artifacts = json.loads(path.read_text())
    except ValueError as exc:
        raise EvenflowError(f"not valid JSON: {exc}", file=str(path)) from None
    card_path = path.parent / "card.json"
    if not card_path.exists():
        raise EvenflowError("no card.json next to the artifacts: their fingerprint cannot be checked",
                            file=str(path), fix="pass the artifacts.json of a training set folder")
    recorded = json.loads(card_path.read_text()).get("fingerprint")
    actual = pipeline.fingerprint(artifacts)
    if recorded != actual:
        raise EvenflowError(
            f"fingerprint mismatch: the training set was built with fingerprint {recorded}, this "
            f"pipeline with these artifacts has {actual}; the served features would differ from "
            "the trained ones", file=str(path),
            fix="serve the pipeline YAML the training set was built from, or rebuild the training set")
    return dict(artifacts)


class Service:
    """The engine, the sinks, the online store and the group commit behind the HTTP API."""

    def __init__(self, pipeline: Pipeline, *, feature_sets: Sequence[str] | None = None,
                 artifacts: dict[str, Any] | str | Path | None = None,
                 store: str | OnlineStore = "memory", lakehouse: str | Path | None = None,
                 lateness: str | int = "0s", ttl: str | int | None = None,
                 commit_interval: float = 0.1, max_body_bytes: int = 16 << 20,
                 max_pending: int = 200_000, durable_timeout: float = 30.0,
                 read_from: str | None = None, app_id: str | None = None,
                 backfill: str | Path | None = None, vector_from: int = 1000) -> None:
        if isinstance(artifacts, (str, Path)):
            artifacts = load_artifacts(artifacts, pipeline)
        self.pipeline = pipeline
        self.engine = StreamEngine(pipeline, list(feature_sets) if feature_sets else None,
                                   artifacts=artifacts, lateness=lateness, ttl=ttl)
        self.source = self.engine.source
        self.store: OnlineStore = MemoryStore() if store == "memory" else store  # type: ignore[assignment]
        if isinstance(self.store, str):
            raise EvenflowError(f"unknown store {store!r}", fix='use "memory" or a RedisStore')
        self.store_kind = "redis" if isinstance(self.store, RedisStore) else "memory"
        self.read_from = read_from or ("store" if self.store_kind == "redis" else "engine")
        lake = Path(lakehouse) if lakehouse is not None else pipeline.output.lakehouse_path()
        self.app_id = app_id or f"{pipeline.name}.http.{self.source.name}"
        self.bronze = BronzeSink(lake / "bronze" / self.source.name, self.app_id)
        self.quarantine = QuarantineSink(lake / "quarantine" / self.source.name, self.app_id)
        self.commit_interval, self.max_body_bytes = commit_interval, max_body_bytes
        self.vector_from = vector_from       # requests this large go through process_batch
        self.max_pending, self.durable_timeout = max_pending, durable_timeout
        self.key_types = {name: [_converter(self.source.schema_.fields[k])  # type: ignore[union-attr]
                                 if k in self.source.schema_.fields else None  # type: ignore[union-attr]
                                 for k in fs.key] for name, fs in self.engine.sets.items()}
        # Events processed but not yet committed, their quarantine rows, and the future the
        # durable requests among them wait on.
        self._events: list[RawEvent] = []
        self._qrows: list[dict[str, Any]] = []
        self._future: asyncio.Future[int] | None = None
        self._wake: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None
        self._aredis: Any = None       # the asynchronous Redis client of the reads
        self._task: asyncio.Task[None] | None = None
        self.batch = 0
        self.next_offset = 1
        self.last_commit: float | None = None
        self.commit_error: str | None = None
        self.stopping = False
        self._last_cut = 0.0
        self.metrics = ServiceMetrics(self)
        self.recover(backfill)

    # -- start, recovery, shutdown -----------------------------------------------------------------
    def recover(self, backfill: str | Path | None = None) -> None:
        """Load the store's states, re-apply bronze batches the store lacks, continue numbering."""
        checkpoint = self.store.checkpoint()
        if checkpoint is not None:
            self.engine.load_states(self.store.load_all())
            if (meta := self.store.meta()) is not None:
                self.engine.load_meta(meta)
        elif backfill is not None:
            self._backfill(backfill)
        committed = self.bronze.committed()
        landed, done = committed.batch or 0, checkpoint or 0
        if done > landed:
            raise EvenflowError(
                f"the online store is at batch {done} but bronze ({self.bronze.path}) only has "
                f"batch {landed} for {self.app_id!r}",
                fix="point --lakehouse at the lakehouse this store was built with, or clear the store")
        if landed > done:      # a memory store starts empty; a crash can leave Redis behind
            self._replay(done, landed)
        if landed > done or (checkpoint is None and backfill is not None):
            self.store.commit(self.engine.dirty_states(), meta=self.engine.meta(), checkpoint=landed)
        self.batch = landed
        self.next_offset = int(committed.offset) + 1 if committed.offset else 1

    def _backfill(self, path: str | Path) -> None:
        try:
            from evenflow.stream.backfill import backfill  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            raise EvenflowError("--backfill is not available: evenflow.stream.backfill is not "
                                "installed in this version", fix="start without --backfill") from None
        backfill(self.engine, path)

    def _replay(self, done: int, landed: int) -> None:
        import pyarrow.compute as pc

        table = self.bronze._table()
        assert table is not None
        rows = table.to_pyarrow_dataset().to_table(
            columns=["payload", "offset", "batch"],
            filter=(pc.field("app_id") == self.app_id) & (pc.field("batch") > done)).to_pylist()
        rows.sort(key=lambda r: (r["batch"], int(r["offset"])))
        qdone = self.quarantine.committed_batch() or 0
        for n in range(done + 1, landed + 1):
            events = [RawEvent(r["payload"], HTTP_SOURCE, r["offset"]) for r in rows if r["batch"] == n]
            _, _, qrows = self._process([e.payload for e in events], events)
            if n > qdone:      # a crash between the bronze and the quarantine commit
                self.quarantine.append(qrows, batch=n)
        log.info("re-applied bronze batches %d..%d (%d events)", done + 1, landed, len(rows))

    def start(self) -> None:
        """Start the group-commit loop (inside the server's event loop)."""
        self._wake, self._lock = asyncio.Event(), asyncio.Lock()
        self._task = asyncio.get_running_loop().create_task(self._commit_loop())

    async def close(self) -> None:
        """Graceful shutdown: commit everything processed (bronze, quarantine, store checkpoint)."""
        self.stopping = True
        if self._task is not None and self._lock is not None:
            # Holding the lock, no commit is under way: the loop is waiting, and cancelling it
            # there loses nothing (a cancelled commit would drop the events it had cut).
            async with self._lock:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        while self._events or self._qrows:
            await self._commit_once()
        if self._aredis is not None:
            await self._aredis.aclose()
        log.info("stopped at batch %d, offset %d", self.batch, self.next_offset - 1)

    # -- ingest ----------------------------------------------------------------------------------
    def _process(self, records: list[Any], events: list[RawEvent]
                 ) -> tuple[StreamResult | BatchResult, int, list[dict[str, Any]]]:
        base = self.engine.seq        # the engine numbers this call's records base, base + 1, ...
        started = time.perf_counter()
        result: StreamResult | BatchResult
        if self.vector_from and len(records) >= self.vector_from:
            result = self.engine.process_batch(records)       # the same records and state
        else:
            result = self.engine.process(records)
        self.metrics.processed(result, time.perf_counter() - started, len(records))
        qrows = [{**row, "payload": events[row["seq"] - base].payload, "source": HTTP_SOURCE,
                  "offset": events[row["seq"] - base].offset} for row in result.quarantined]
        return result, base, qrows

    def ingest(self, records: list[Any]) -> tuple[dict[str, Any], asyncio.Future[int] | None]:
        """Process ``records`` (dicts, or text the engine parses); queue them for the next commit.

        Returns the per-record outcome and the future of the commit that will hold them.
        """
        events = []
        for record in records:
            text = record if isinstance(record, str) else orjson.dumps(record).decode()
            events.append(RawEvent(text, HTTP_SOURCE, str(self.next_offset)))
            self.next_offset += 1
        result, base, qrows = self._process(records, events)
        errors = [{"index": q["seq"] - base, "reason": q["reason"], "field": q["field"],
                   "detail": q["detail"], "fix": REASONS.get(q["reason"], "")}
                  for q in result.quarantined]
        dups = [{"index": d["seq"] - base, "kept": d["kept"]} for d in result.duplicates
                if base <= d["seq"] < base + len(records)]
        self._events += events
        self._qrows += qrows
        outcome = {"received": len(records), "accepted": len(records) - len(errors),
                   "quarantined": len(errors), "duplicates": dups, "errors": errors,
                   "offsets": [int(events[0].offset), int(events[-1].offset)] if events else None}
        return outcome, self._pending_future()

    def refuse(self, prefix: bytes, reason_detail: str) -> None:
        """Record a refused request (413, 415) in the quarantine: its first bytes and why."""
        self._qrows.append({"payload": prefix.decode("utf-8", "replace"), "reason": "malformed_record",
                            "field": None, "step": "http", "detail": reason_detail,
                            "source": HTTP_SOURCE, "offset": None, "seq": None})
        self.metrics.quarantined.labels(reason="malformed_record").inc()
        self._pending_future()

    def _pending_future(self) -> asyncio.Future[int] | None:
        if self._wake is None:       # not serving (tests calling ingest directly)
            return None
        if self._future is None:
            self._future = asyncio.get_running_loop().create_future()
        self._wake.set()
        return self._future

    @property
    def pending(self) -> int:
        return len(self._events)

    # -- group commit ----------------------------------------------------------------------------
    async def _commit_loop(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            # Let the requests of one interval join the same commit.
            since = time.monotonic() - self._last_cut
            if since < self.commit_interval:
                await asyncio.sleep(self.commit_interval - since)
            self._wake.clear()
            await self._commit_once()

    async def _commit_once(self) -> None:
        """Cut a batch (events, quarantine, changed states: all as of this instant, on the event
        loop, so the store checkpoint matches bronze exactly), then land it off the loop."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            await self._commit_locked()

    async def _commit_locked(self) -> None:
        self._last_cut = time.monotonic()
        events, qrows, future = self._events, self._qrows, self._future
        self._events, self._qrows, self._future = [], [], None
        states, meta = self.engine.dirty_states(), self.engine.meta()
        n = self.batch + 1
        offset = events[-1].offset if events else str(self.next_offset - 1)
        delay = 0.05
        while True:
            started = time.perf_counter()
            try:
                await asyncio.to_thread(self._land, n, events, qrows, states, meta, offset)
                break
            except Exception as exc:  # disk full, Redis down: keep the batch and retry
                self.commit_error = f"{type(exc).__name__}: {exc}"
                log.error("commit of batch %d failed (%s); retrying", n, self.commit_error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        self.commit_error = None
        self.batch, self.last_commit = n, time.time()
        self.metrics.committed(len(events), time.perf_counter() - started)
        if future is not None and not future.done():
            future.set_result(n)

    def _land(self, n: int, events: list[RawEvent], qrows: list[dict[str, Any]],
              states: dict[str, bytes | None], meta: bytes, offset: str) -> None:
        if self.bronze.append(events, batch=n, offset=offset) is None:
            raise RuntimeError(f"bronze already holds batch {n} of {self.app_id!r}: another "
                               "process writes with the same app id; give each instance its own")
        self.quarantine.append(qrows, batch=n)
        self.store.commit(states, meta=meta, checkpoint=n)

    # -- reads -----------------------------------------------------------------------------------
    def parse_key(self, feature_set: str, values: Sequence[Any]) -> tuple[Any, ...]:
        """Type a key's values (text from a URL) as the source's schema declares its columns."""
        fs = self.engine.sets[feature_set]
        if len(values) != len(fs.key):
            raise ValueError(f"the key of {feature_set!r} has {len(fs.key)} column(s) "
                             f"{fs.key}, got {len(values)} value(s)")
        out = []
        for name, value, convert in zip(fs.key, values, self.key_types[feature_set], strict=True):
            typed = convert(value)[0] if convert is not None and value is not None else value
            if typed is None and value is not None:
                raise ValueError(f"key column {name}: {value!r} is not a valid "
                                 f"{self.source.schema_.fields[name].type}")  # type: ignore[union-attr]
            out.append(typed)
        return tuple(out)

    async def rows(self, name: str, keys: list[tuple[Any, ...]], at: int) -> list[dict[str, Any]]:
        """The response rows of a read: feature set, key, read time, found, features.

        From Redis the blobs come with an asynchronous ``MGET``: the event loop serves other
        requests during the round trip instead of blocking on it.
        """
        from datetime import UTC, datetime

        blobs = None
        if self.read_from == "store" and isinstance(self.store, RedisStore):
            if self._aredis is None:
                import redis.asyncio

                kw = self.store.redis.connection_pool.connection_kwargs
                # A burst of reads waits for one of 32 connections rather than failing.
                pool = redis.asyncio.BlockingConnectionPool(max_connections=32, timeout=None, **{
                    k: kw[k] for k in ("host", "port", "db", "username", "password") if k in kw})
                self._aredis = redis.asyncio.Redis(connection_pool=pool)
            blobs = await self._aredis.mget([self.store._entity(state_id(name, k)) for k in keys])

        when = datetime.fromtimestamp(at / 1e6, UTC).isoformat().replace("+00:00", "Z")
        key_cols = self.engine.sets[name].key
        return [{"feature_set": name, "key": dict(zip(key_cols, k, strict=True)), "at": when,
                 "found": found, "features": feats}
                for k, (feats, found) in zip(keys, self.read_many(name, keys, at, blobs), strict=True)]

    def read_many(self, feature_set: str, keys: Sequence[tuple[Any, ...]], at: int,
                  blobs: Sequence[bytes | None] | None = None) -> list[tuple[dict[str, Any], bool]]:
        """``(features, found)`` per key as of ``at`` (µs), from the engine or the online store
        (``blobs``: the keys' state blobs, already fetched)."""
        fs = self.engine.sets[feature_set]
        if self.read_from == "engine":
            states = [fs.states.get(k) for k in keys]
        else:
            if blobs is None:
                blobs = self.store.get_many([state_id(feature_set, k) for k in keys])
            states = [None if b is None else KeyState.from_blob(b) for b in blobs]
        return [(fs.features_of(state, key, at), state is not None)
                for key, state in zip(keys, states, strict=True)]


# -- the HTTP API ---------------------------------------------------------------------------------
