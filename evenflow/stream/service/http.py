"""The HTTP API over a :class:`Service` (FastAPI), and ``evenflow serve``."""

# No ``from __future__ import annotations``: FastAPI reads the route signatures' annotations,
# and the routes' types are imported inside build_app (fastapi stays a lazy import).
import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson

from evenflow.core.pipeline import Pipeline
from evenflow.errors import EvenflowError
from evenflow.stream.service.ingest import Service, split_json, split_ndjson
from evenflow.stream.store import OnlineStore, RedisStore

log = logging.getLogger("evenflow.serve")

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
