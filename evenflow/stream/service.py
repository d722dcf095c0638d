"""The HTTP service (``evenflow serve``): event ingest, online feature reads, health, metrics.

One process runs one stream engine (the feature sets of one source). ``POST /v1/events`` runs
the records through the engine on the event loop, then hands their raw text to a *group commit*:
every ``commit_interval`` (default 100 ms) the events of all requests since the last commit land
in the bronze Delta table as one application transaction (the HTTP *offset* of an event is its
ingest number, so a restart continues the numbering from the committed offset), the batch's
quarantine rows follow, then the changed entity states, the engine meta and the checkpoint go to
the online store in one transaction (``docs/decisions/0004-exactly-once.md``). A durable request
(the default) is answered after the commit that holds its events, so an acknowledged event is
never lost. Reads evaluate the windows as of the read time.

Status codes of ``POST /v1/events`` (``docs/serving.md``, HTTP service): 200 all accepted (and
durable), 202 all accepted with ``?durable=false``, 207 some records quarantined, 400 every record
malformed, 422 every record rejected by the schema (or late), 413 body too large, 415 wrong
content type, 503 shutting down, overloaded or the lakehouse not writable in time.

>>> split_ndjson(b'{"a": 1}\\n\\n  {"a": 2}\\r\\n')
['{"a": 1}', '  {"a": 2}']
"""

# No ``from __future__ import annotations``: FastAPI reads the route signatures' annotations,
# and the routes' types are imported inside build_app (fastapi stays a lazy import).
import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from evenflow.core.pipeline import Pipeline
from evenflow.core.schema import REASONS
from evenflow.errors import EvenflowError
from evenflow.stream.engine import StreamEngine, StreamResult, state_id
from evenflow.stream.sink import BronzeSink, QuarantineSink, RawEvent
from evenflow.stream.state import KeyState
from evenflow.stream.store import MemoryStore, OnlineStore, RedisStore
from evenflow.stream.validate import _converter
from evenflow.stream.vector import BatchResult

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


class ServiceMetrics:
    """Prometheus metrics of one service, in its own registry (several apps can share a process)."""

    def __init__(self, service: "Service") -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = CollectorRegistry()
        self.events_in = Counter("evenflow_events_in", "records received by POST /v1/events",
                                 registry=r)
        self.events_out = Counter("evenflow_events_out", "feature rows the engine emitted",
                                  ["feature_set"], registry=r)
        self.quarantined = Counter("evenflow_events_quarantined", "records quarantined, by reason "
                                   "code", ["reason"], registry=r)
        self.duplicates = Counter("evenflow_events_duplicate", "records a dedup step dropped",
                                  registry=r)
        self.landed = Counter("evenflow_events_landed", "records committed to bronze", registry=r)
        self.commits = Counter("evenflow_commits", "group commits (bronze, quarantine, store)",
                               registry=r)
        fast = (.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1.0)
        self.processing = Histogram("evenflow_processing_seconds", "engine time per ingest request",
                                    buckets=fast, registry=r)
        self.event_processing = Histogram(
            "evenflow_event_processing_seconds", "engine time per record (request time / records)",
            buckets=(.000005, .00001, .000025, .00005, .0001, .00025, .0005, .001, .005), registry=r)
        self.reads = Histogram("evenflow_feature_read_seconds", "time to answer a feature read",
                               ["kind"], buckets=fast, registry=r)
        self.commit_seconds = Histogram("evenflow_commit_seconds", "time to land one group commit",
                                        buckets=(.01, .025, .05, .1, .25, .5, 1, 2.5, 5), registry=r)

        def lag() -> float:
            wm = service.engine.watermark
            return float("nan") if wm is None else time.time() - wm / 1e6

        def age() -> float:
            return float("nan") if service.last_commit is None else time.time() - service.last_commit

        Gauge("evenflow_watermark_lag_seconds", "wall clock minus the watermark",
              registry=r).set_function(lag)
        # Counted in the engine, which holds the same entities as the store after each commit
        # (the store also keeps dedup memory, so its own size counts more than entities).
        Gauge("evenflow_online_store_entities", "entities with window state",
              registry=r).set_function(lambda: sum(len(fs.states) for fs in service.engine.sets.values()))
        Gauge("evenflow_pending_events", "records processed, waiting for the next commit",
              registry=r).set_function(lambda: service.pending)
        Gauge("evenflow_last_commit_age_seconds", "seconds since the last group commit",
              registry=r).set_function(age)

    def processed(self, result: StreamResult | BatchResult, seconds: float, records: int) -> None:
        self.events_in.inc(records)
        self.processing.observe(seconds)
        if records:
            self.event_processing.observe(seconds / records)
        for name, rows in result.outputs.items():
            if rows:
                self.events_out.labels(feature_set=name).inc(len(rows))
        for row in result.quarantined:
            self.quarantined.labels(reason=row["reason"]).inc()
        if result.duplicates:
            self.duplicates.inc(len(result.duplicates))

    def committed(self, events: int, seconds: float) -> None:
        self.commits.inc()
        self.landed.inc(events)
        self.commit_seconds.observe(seconds)


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
JSON_TYPES = {"application/json", "text/json"}
NDJSON_TYPES = {"application/x-ndjson", "application/ndjson", "application/jsonl",
                "application/x-jsonlines", "application/jsonlines"}
PREFIX_BYTES = 4096     # how much of a refused body the quarantine keeps


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Any:
    from fastapi import Response

    return Response(orjson.dumps(data, default=str), status_code=status,
                    media_type="application/json", headers=headers)


async def read_limited(request: Any, limit: int) -> tuple[bytes, bool]:
    """The body, or its first bytes and ``True`` once it exceeds ``limit`` (never read whole)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return b"", True
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        chunks.append(chunk)
        if size > limit:
            return b"".join(chunks)[:PREFIX_BYTES], True
    return b"".join(chunks), False


def _status(outcome: dict[str, Any], durable: bool) -> int:
    errors = outcome["errors"]
    if not errors:
        return 200 if durable else 202
    if outcome["accepted"] > 0:
        return 207
    return 400 if all(e["reason"] == "malformed_record" for e in errors) else 422


class FastReads:
    """ASGI middleware answering ``GET /v1/features/{feature_set}/{key}`` without FastAPI's
    routing and parameter validation (the hot path of an online service; the route stays
    declared on the app for the OpenAPI docs and answers anything this one passes on)."""

    def __init__(self, app: Any, service: Service) -> None:
        self.app, self.service = app, service

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and \
                scope["path"].startswith("/v1/features/"):
            name, _, key = scope["path"][13:].partition("/")
            fs = self.service.engine.sets.get(name)
            if fs is not None and key and "/" not in key and len(fs.key) == 1:
                query = scope["query_string"]
                at = None
                if query:
                    from urllib.parse import parse_qs

                    params = parse_qs(query.decode("latin-1"))
                    if set(params) - {"at"} or len(params.get("at", [])) > 1:
                        return await self.app(scope, receive, send)
                    at = params.get("at", [None])[0]
                started = time.perf_counter()
                try:
                    typed, t = self.service.parse_key(name, [key]), _read_time(at)
                except (ValueError, EvenflowError) as exc:
                    return await _send(send, 422, {"detail": str(exc)})
                await _send(send, 200, (await self.service.rows(name, [typed], t))[0])
                self.service.metrics.reads.labels(kind="one").observe(time.perf_counter() - started)
                return
        await self.app(scope, receive, send)


async def _send(send: Any, status: int, data: Any) -> None:
    body = orjson.dumps(data, default=str)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _read_time(at: str | None) -> int:
    """A read's time in µs: ``at`` (ISO 8601) or now."""
    from evenflow.stream.engine import _as_micros

    return _as_micros(at)


def build_app(service: Service) -> Any:
    """The FastAPI app over a :class:`Service` (see the module docstring for the status codes)."""
    from fastapi import FastAPI, Query, Request
    from pydantic import BaseModel, Field

    class RecordError(BaseModel):
        index: int = Field(description="position of the record in the request (0-based)")
        reason: str = Field(description="reason code (evenflow.core.schema.REASONS)")
        field: str | None = Field(description="the field at fault, if one")
        detail: str = Field(description="what was wrong with the value")
        fix: str = Field(description="what to do about it")

    class IngestResult(BaseModel):
        received: int
        accepted: int = Field(description="records that reached the engine (duplicates included)")
        quarantined: int
        duplicates: list[dict[str, int]] = Field(description="records a dedup step dropped: index "
                                                 "and the arrival number of the record kept")
        errors: list[RecordError]
        offsets: list[int] | None = Field(description="first and last ingest number given")
        durable: bool = Field(description="true: the records are committed to bronze")
        batch: int | None = Field(description="the bronze batch (Delta app transaction) holding them")

    class FeatureRow(BaseModel):
        feature_set: str
        key: dict[str, Any]
        at: str = Field(description="the read time the windows were evaluated at (UTC)")
        found: bool = Field(description="false: no state for this entity (empty windows)")
        features: dict[str, Any]

    class FeaturesRequest(BaseModel):
        feature_set: str
        keys: list[Any] = Field(description="entity keys: a value, a list in key-column order, "
                                "or an object {column: value}", max_length=10_000)
        at: str | None = Field(None, description="ISO 8601 read time; default now")

    class FeaturesResponse(BaseModel):
        feature_set: str
        at: str
        results: list[FeatureRow]

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            await service.close()

    app = FastAPI(title=f"evenflow: {service.pipeline.name}", lifespan=lifespan,
                  description="Event ingest and online features of one evenflow pipeline. "
                              "See docs/serving.md, section HTTP service.")
    app.state.service = service
    metrics = service.metrics

    def unknown(name: str) -> Any:
        return _json({"detail": f"no feature set {name!r} is served here",
                      "known": sorted(service.engine.sets)}, 404)

    at_micros, rows = _read_time, service.rows

    @app.post("/v1/events", response_model=IngestResult, tags=["ingest"], responses={
        207: {"model": IngestResult, "description": "some records quarantined (see errors)"},
        400: {"model": IngestResult, "description": "every record malformed"},
        413: {"description": "body larger than max_body_bytes"},
        415: {"description": "Content-Type is not JSON or NDJSON"},
        422: {"model": IngestResult, "description": "every record rejected (schema, late)"},
        503: {"description": "shutting down, overloaded, or not durable in time"}},
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": {"oneOf": [{"type": "object"}, {"type": "array"}]}},
            "application/x-ndjson": {"schema": {"type": "string"}}}}})
    async def post_events(request: Request, durable: bool = Query(
            True, description="answer after the bronze commit holding the events")) -> Any:
        """Ingest one event (a JSON object), many (a JSON array), or NDJSON lines."""
        if service.stopping:
            return _json({"detail": "shutting down; retry on another instance"}, 503)
        if service.pending > service.max_pending:
            return _json({"detail": "too many events waiting for a commit; retry"}, 503,
                         {"Retry-After": "1"})
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        is_json = kind in JSON_TYPES or kind.endswith("+json")
        if not is_json and kind not in NDJSON_TYPES:
            prefix, _ = await read_limited(request, PREFIX_BYTES)
            service.refuse(prefix[:PREFIX_BYTES], f"refused with 415: Content-Type {kind or 'none'!r}")
            return _json({"detail": f"unsupported Content-Type {kind or 'none'!r}",
                          "fix": "send application/json (an object or an array) or "
                                 "application/x-ndjson (one JSON object per line)"}, 415)
        body, too_large = await read_limited(request, service.max_body_bytes)
        if too_large:
            service.refuse(body, f"refused with 413: body over {service.max_body_bytes} bytes "
                                 f"(Content-Length {request.headers.get('content-length', 'none')}); "
                                 f"payload holds at most its first {PREFIX_BYTES} bytes")
            return _json({"detail": f"body larger than {service.max_body_bytes} bytes",
                          "fix": "split the events over several requests"}, 413)
        records = split_json(body) if is_json else split_ndjson(body)
        if not records:
            return _json({"detail": "no records in the body",
                          "fix": "send a JSON object, a non-empty array, or NDJSON lines"}, 400)
        outcome, future = service.ingest(records)
        outcome["durable"], outcome["batch"] = False, None
        if durable and future is not None:
            try:
                outcome["batch"] = await asyncio.wait_for(asyncio.shield(future),
                                                          service.durable_timeout)
                outcome["durable"] = True
            except TimeoutError:
                return _json({**outcome, "detail": "processed, but not yet committed to bronze "
                              f"({service.commit_error}); it will land when the lakehouse is "
                              "writable again"}, 503)
        return _json(outcome, _status(outcome, durable))

    @app.get("/v1/features/{feature_set}/{key}", response_model=FeatureRow, tags=["features"],
             responses={404: {"description": "unknown feature set; lists the known ones"}})
    async def get_features(feature_set: str, key: str, at: str | None = Query(
            None, description="ISO 8601 read time (default now)")) -> Any:
        """Features of one entity with a one-column key, as of ``at``."""
        return await _get(feature_set, [key], at)

    @app.get("/v1/features/{feature_set}", response_model=FeatureRow, tags=["features"])
    async def get_features_composite(request: Request, feature_set: str, at: str | None = Query(
            None, description="ISO 8601 read time (default now)")) -> Any:
        """Features of one entity, the key given as query parameters named by the key columns
        (for composite keys: ``?merchant_id=m1&card_id=c1``)."""
        if feature_set not in service.engine.sets:
            return unknown(feature_set)
        cols = service.engine.sets[feature_set].key
        missing = [c for c in cols if c not in request.query_params]
        if missing:
            return _json({"detail": f"missing key column(s) {missing} in the query",
                          "fix": f"pass {'&'.join(f'{c}=...' for c in cols)}"}, 422)
        return await _get(feature_set, [request.query_params[c] for c in cols], at)

    async def _get(name: str, values: list[Any], at: str | None) -> Any:
        started = time.perf_counter()
        if name not in service.engine.sets:
            return unknown(name)
        try:
            key = service.parse_key(name, values)
            t = at_micros(at)
        except (ValueError, EvenflowError) as exc:
            return _json({"detail": str(exc)}, 422)
        out = (await rows(name, [key], t))[0]
        metrics.reads.labels(kind="one").observe(time.perf_counter() - started)
        return _json(out)

    @app.post("/v1/features", response_model=FeaturesResponse, tags=["features"],
              responses={404: {"description": "unknown feature set; lists the known ones"}})
    async def post_features(req: FeaturesRequest) -> Any:
        """Features of many entities in one call, all as of the same ``at``."""
        started = time.perf_counter()
        if req.feature_set not in service.engine.sets:
            return unknown(req.feature_set)
        cols = service.engine.sets[req.feature_set].key
        keys = []
        for i, raw in enumerate(req.keys):
            values = [raw.get(c) for c in cols] if isinstance(raw, dict) else \
                list(raw) if isinstance(raw, list) else [raw]
            try:
                keys.append(service.parse_key(req.feature_set, values))
            except ValueError as exc:
                return _json({"detail": f"keys[{i}]: {exc}"}, 422)
        try:
            t = at_micros(req.at)
        except EvenflowError as exc:
            return _json({"detail": str(exc)}, 422)
        results = await rows(req.feature_set, keys, t)
        metrics.reads.labels(kind="many").observe(time.perf_counter() - started)
        return _json({"feature_set": req.feature_set,
                      "at": results[0]["at"] if results else None, "results": results})

    @app.get("/health", tags=["operations"])
    async def health() -> Any:
        """Liveness and readiness: the store answers, the last commit succeeded, not stopping."""
        try:
            if isinstance(service.store, RedisStore):
                service.store.redis.ping()
            reachable = True
        except Exception:
            reachable = False
        ready = reachable and service.commit_error is None and not service.stopping
        age = None if service.last_commit is None else round(time.time() - service.last_commit, 3)
        return _json({"live": True, "ready": ready, "store": service.store_kind,
                      "store_reachable": reachable, "reads_from": service.read_from,
                      "last_commit_age_s": age, "last_commit_error": service.commit_error,
                      "batch": service.batch, "pending_events": service.pending,
                      "watermark_us": service.engine.watermark,
                      "feature_sets": sorted(service.engine.sets)}, 200 if ready else 503)

    @app.get("/metrics", tags=["operations"])
    def prometheus() -> Any:
        """Prometheus exposition of the service's metrics."""
        from fastapi import Response
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(FastReads, service=service)
    return app


def create_app(pipeline: Pipeline, **options: Any) -> Any:
    """The FastAPI app serving ``pipeline``. ``options`` are :class:`Service`'s keywords:
    ``feature_sets``, ``artifacts`` (dict, or the path of a training set's artifacts.json whose
    fingerprint is checked), ``store`` (``"memory"`` or a :class:`RedisStore`), ``lakehouse``,
    ``lateness``, ``ttl``, ``commit_interval`` (s), ``max_body_bytes``, ``read_from``, ``backfill``,
    ``vector_from`` (requests of this many records or more take ``StreamEngine.process_batch``).
    Recovery (store states, bronze batches the store lacks) runs here, before serving."""
    return build_app(Service(pipeline, **options))


def register_serve(app: Any) -> None:
    """Add ``evenflow serve`` to the command line ``app``."""
    import typer

    @app.command()
    def serve(pipeline: Path = typer.Argument(..., help="pipeline YAML file"),
              host: str = typer.Option("127.0.0.1", help="interface to listen on"),
              port: int = typer.Option(8000, help="TCP port"),
              feature_set: list[str] = typer.Option(None, "--feature-set", help="serve only these "
                                                    "feature sets (one source); default all"),
              artifacts: Path = typer.Option(None, help="artifacts.json of a training set; refused "
                                             "if its recorded fingerprint differs from the pipeline's"),
              redis: str = typer.Option(None, help="Redis URL of the online store (default: memory)"),
              redis_prefix: str = typer.Option(None, help="key prefix in Redis (default "
                                                "evenflow:<pipeline>:http)"),
              lakehouse: Path = typer.Option(None, help="lakehouse directory (default: the "
                                             "pipeline's output)"),
              lateness: str = typer.Option("0s", help="allowed lateness behind the watermark"),
              ttl: str = typer.Option(None, help="forget entities idle this long"),
              commit_interval: float = typer.Option(0.1, help="seconds between group commits"),
              max_body_bytes: int = typer.Option(16 << 20, help="larger bodies get 413"),
              read_from: str = typer.Option(None, help="engine or store (default: store with "
                                            "--redis, engine otherwise)"),
              backfill: Path = typer.Option(None, help="warm an empty store from historical "
                                            "events (evenflow.stream.backfill)"),
              vector_from: int = typer.Option(1000, help="requests of this many records or more "
                                              "go through the vectorized path; 0: never"),
              log_level: str = typer.Option("warning", help="uvicorn log level")) -> None:
        """Serve a pipeline over HTTP: POST /v1/events, GET/POST /v1/features, /health, /metrics,
        /docs. SIGTERM or Ctrl-C commits everything processed before exiting."""
        import uvicorn

        from evenflow.cli import _fail

        try:
            p = Pipeline.load(pipeline)
            store: str | OnlineStore = "memory"
            if redis:
                store = RedisStore(redis, redis_prefix or f"evenflow:{p.name}:http")
            web = create_app(p, feature_sets=feature_set or None, artifacts=artifacts, store=store,
                             lakehouse=lakehouse, lateness=lateness, ttl=ttl,
                             commit_interval=commit_interval, max_body_bytes=max_body_bytes,
                             read_from=read_from, backfill=backfill, vector_from=vector_from)
        except EvenflowError as exc:
            _fail(exc)
            return
        svc = web.state.service
        typer.echo(f"evenflow serve: {p.name} {sorted(svc.engine.sets)} on http://{host}:{port} "
                   f"(store {svc.store_kind}, bronze {svc.bronze.path} at batch {svc.batch})",
                   err=True)
        uvicorn.run(web, host=host, port=port, log_level=log_level, access_log=False,
                    timeout_graceful_shutdown=30)
