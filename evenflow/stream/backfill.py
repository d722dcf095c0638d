"""Cold start: load a stream engine's online state from historical events, vectorized.

Replaying months of history through :meth:`StreamEngine.process` costs a Python call per event.
:func:`backfill` instead validates and cleans the history with the batch engine (DuckDB, the
same steps and artifacts), then builds the engine's state directly:

* per entity, the events a query after the cut can still see (those with event time after
  ``watermark - longest window``, or not yet available by then), sorted by ``(event_time, seq)``
  into a :class:`~evenflow.stream.state.KeyState` with one SQL ``GROUP BY``;
* for ``window=None`` aggregates, the *retired* accumulators of the older events (counts, latest
  time, min, max, first, last, distinct sets and integer sums in SQL; exact rational sums and
  sums of squares of Float columns from the grouped values);
* the watermark (largest event time), the next arrival number, and the dedup memory (every kept
  Dedup key) and ``unique`` memory.

The engine then continues exactly as if it had processed the history one record at a time in
event-time order (``tests/test_backfill.py`` checks this against the batch engine).

>>> import pyarrow as pa, datetime as dt, evenflow as ef
>>> from evenflow.stream.engine import StreamEngine
>>> t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
>>> tx = ef.source.frame(pa.table({"card": ["a", "a", "b"], "x": [1.0, 2.0, 5.0],
...     "ts": [t0, t0 + dt.timedelta(hours=3), t0]}), name="tx", key="card", event_time="ts",
...     schema=ef.Schema(card=ef.String(), x=ef.Float(), ts=ef.Timestamp()))
>>> fs = ef.FeatureSet("card", source=tx, features=[ef.sum("x", window="1h"), ef.sum("x")])
>>> eng = StreamEngine(ef.Pipeline(name="p", feature_sets=[fs]))
>>> backfill(eng).events
3
>>> eng.read("card", "a", at=t0 + dt.timedelta(hours=3, minutes=30))
{'card': 'a', 'sum_x_1h': 2.0, 'sum_x': 3.0}
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any

import typer

from evenflow.core.pipeline import Pipeline
from evenflow.core.steps import Dedup
from evenflow.core.timeutil import parse_instant, to_micros
from evenflow.errors import DefinitionError
from evenflow.quality.validate import q
from evenflow.stream.state import KeyState, Retired, RetirePlan

#: Columns of the runner's bronze table (``evenflow.stream.sink.BRONZE_SCHEMA``).
_BRONZE = {"payload", "source", "offset", "ingest_time"}


@dataclass
class BackfillStats:
    """What a backfill loaded: valid events up to the cut, entities, live and retired events."""

    events: int
    entities: int
    live: int
    retired: int
    watermark: int | None


def _until(until: int | str | datetime | None) -> int | None:
    if until is None or isinstance(until, int):
        return until
    return to_micros(parse_instant(until))


def _bronze_as_ndjson(path: Path) -> str:
    """A bronze Delta table's payloads as an NDJSON file (the records exactly as received)."""
    from deltalake import DeltaTable

    table = DeltaTable(str(path)).to_pyarrow_table(columns=["payload"])
    fd, name = tempfile.mkstemp(suffix=".ndjson", prefix="evenflow-bronze-")
    with os.fdopen(fd, "w") as out:
        for payload in table.column("payload").to_pylist():
            if payload is not None:
                out.write(payload.replace("\n", " ") + "\n")
    return name


def history_pipeline(pipeline: Pipeline, events: str | Path | None, feature_sets: list[str]) -> Pipeline:
    """``pipeline`` reading its source from ``events``: a file, a Delta table or a bronze table."""
    from evenflow.stream.parity import with_data

    if events is None:
        return pipeline
    path = Path(events)
    if (path / "_delta_log").exists():
        from deltalake import DeltaTable

        names = set(DeltaTable(str(path)).schema().to_arrow().names)   # type: ignore[attr-defined]
        if names >= _BRONZE:
            return with_data(pipeline, _bronze_as_ndjson(path), feature_sets)
    return with_data(pipeline, path, feature_sets)


def backfill(engine: Any, events: str | Path | None = None, *,
             until: int | str | datetime | None = None) -> BackfillStats:
    """Load ``engine``'s state from ``events`` with event time ``<= until``; see the module docstring.

    ``events``: a CSV/Parquet/NDJSON file, a Delta table, the runner's bronze Delta table, or
    ``None`` for the pipeline's own source. The engine should be fresh (nothing processed yet).
    """
    from evenflow.batch.engine import BatchEngine

    names = list(engine.sets)
    pipeline = history_pipeline(engine.pipeline, events, names)
    cut = _until(until)
    artifacts: dict[str, Any] = {}
    for fs in engine.sets.values():
        for step, art in fs.steps:
            if art is not None:
                artifacts[f"{fs.fs.name}/{step.id}"] = art
    batch = BatchEngine(pipeline)
    try:
        loaded = batch.load_source(engine.source.name)
        et = q(loaded.source.event_time or "")
        where = "" if cut is None else f" WHERE epoch_us({et}) <= {int(cut)}"
        max_time, n_events = batch.con.sql(f"SELECT max(epoch_us({et})), count(*) FROM "
                                           f"{q(loaded.table)}{where}").fetchall()[0]
        if engine.max_time is not None:
            raise DefinitionError("backfill needs a fresh engine (this one has processed events)",
                                  fix="create a new StreamEngine and backfill it before processing")
        watermark = None if max_time is None else int(max_time) - engine.lateness
        live = retired = entities = 0
        for name, fss in engine.sets.items():
            ev = batch.prepare(fss.fs, artifacts=artifacts or None)
            view = f"__bf__{name}"
            batch.con.execute(f"CREATE OR REPLACE TEMP VIEW {q(view)} AS SELECT *, epoch_us({et}) AS __t, "
                              f"{_avail(ev)} AS __a FROM {q(ev.table)}{where}")
            if watermark is not None:
                horizon = watermark - max(fss.longest, 1)
                n_live, n_old = _load_states(batch, fss, ev, view, horizon)
                live, retired = live + n_live, retired + n_old
            entities += len(fss.states)
            fss.dirty.update(fss.states)
            _load_memory(batch, fss, ev, et, where)
        engine.max_time = None if max_time is None else int(max_time)
        seqs = batch.con.sql(f"SELECT max(__seq) FROM {q(loaded.raw)}").fetchall()[0][0]
        engine.seq = 0 if seqs is None else int(seqs) + 1
        engine.counts["records"] = int(n_events)
    finally:
        batch.close()
    return BackfillStats(int(n_events), entities, live, retired, watermark)


def _avail(ev: Any) -> str:
    return f"epoch_us({q(ev.available_time)})" if ev.available_time else "epoch_us(" + q(ev.event_time) + ")"


def _load_states(batch: Any, fss: Any, ev: Any, view: str, horizon: int) -> tuple[int, int]:
    """Live events per entity into KeyStates; older ones into the retired accumulators."""
    con = batch.con
    keys = ", ".join(q(k) for k in fss.key)
    order = "ORDER BY __t, __seq"
    cols = "".join(f", list({q(c)} {order})" for c in fss.columns)
    old = f"(__t <= {horizon} AND __a <= {horizon})"
    rows = con.sql(f"SELECT {keys}, list(__t {order}), list(__seq {order}), list(__a {order}){cols} "
                   f"FROM {q(view)} WHERE NOT {old} GROUP BY ALL").fetchall()
    width = len(fss.key)
    live = 0
    for row in rows:
        entity = tuple(row[:width])
        times, seqs, avail, *columns = row[width:]
        late = sum(1 for a, t in zip(avail, times, strict=True) if a > t)
        fss.states[entity] = KeyState(list(times), list(seqs), list(avail), [list(c) for c in columns], late)
        live += len(times)
    n_old = int(con.sql(f"SELECT count(*) FROM {q(view)} WHERE {old}").fetchall()[0][0])
    if fss.retire is not None and n_old:
        _load_retired(con, fss, view, old, keys, width)
    return live, n_old


def _load_retired(con: Any, fss: Any, view: str, old: str, keys: str, width: int) -> None:
    """Exact accumulators of the retired events, per entity, from one grouped query."""
    plan: RetirePlan = fss.retire
    parts = ["count(*)", "max(__t)"]
    for i in plan.columns:
        c = q(fss.columns[i])
        parts += [f"count({c})", f"min({c})", f"max({c})",
                  f"arg_min(struct_pack(t := __t, s := __seq, v := {c}), (__t, __seq)) FILTER ({c} IS NOT NULL)",
                  f"arg_max(struct_pack(t := __t, s := __seq, v := {c}), (__t, __seq)) FILTER ({c} IS NOT NULL)",
                  f"list(DISTINCT {c}) FILTER ({c} IS NOT NULL)",
                  f"list({c}) FILTER ({c} IS NOT NULL)" if i in plan.moments else "NULL"]
    rows = con.sql(f"SELECT {keys}, {', '.join(parts)} FROM {q(view)} WHERE {old} GROUP BY ALL").fetchall()
    for row in rows:
        entity = tuple(row[:width])
        state = fss.states.get(entity)
        if state is None:
            state = fss.states[entity] = KeyState.empty(fss.columns)
        r = Retired.empty(len(fss.columns))
        r.events, r.latest = int(row[width]), int(row[width + 1])
        for j, i in enumerate(plan.columns):
            n, low, high, first, last, seen, values = row[width + 2 + 7 * j: width + 9 + 7 * j]
            r.nonnull[i], r.low[i], r.high[i] = int(n), low, high
            r.first[i] = None if first is None else (first["t"], first["s"], first["v"])
            r.last[i] = None if last is None else (last["t"], last["s"], last["v"])
            r.seen[i] = set(seen or [])
            if values:
                # Exact sums: integers stay int, floats become exact rationals (as Retired.add).
                nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
                exact = [v if isinstance(v, int) else Fraction(v) for v in nums]
                r.total[i] = sum(exact, 0)
                r.squares[i] = sum((Fraction(v) ** 2 for v in exact), Fraction(0))
        state.retired = r


def _load_memory(batch: Any, fss: Any, ev: Any, et: str, where: str) -> None:
    """Dedup keys of the kept records and ``unique`` values, as the engine remembers them."""
    con = batch.con
    entity_cols = ", ".join(q(k) for k in fss.key)
    for i, (step, artifact) in enumerate(fss.steps):
        if artifact is not None or not isinstance(step, Dedup):
            continue
        table = f"ev__{fss.fs.name}__{i}"
        cols = step.key or [c for c in batch.load_source(fss.fs.source_name()).schema.fields]
        n, w = len(cols), len(fss.key)
        sql = (f"SELECT {', '.join(q(c) for c in cols)}, __seq, epoch_us({et}), {entity_cols} "
               f"FROM {q(table)}{where}")
        memory = fss.seen.setdefault(step.id, {})
        for row in _rows(con, sql):
            dkey, seq, t, entity = row[:n], int(row[n]), int(row[n + 1]), row[n + 2:n + 2 + w]
            memory[dkey] = (seq, t, tuple(entity))
            fss._remember("d", step.id, dkey, t)
    for name in fss.unique:
        sql = (f"SELECT {q(name)}, min(__seq), arg_min(epoch_us({et}), __seq) FROM {q(ev.table)}{where} "
               f"{'AND' if where else 'WHERE'} {q(name)} IS NOT NULL GROUP BY 1")
        for value, seq, t in _rows(con, sql):
            fss.unique_seen[name][value] = (int(seq), int(t))
            fss._remember("u", name, value, int(t))


def _rows(con: Any, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(r.values()) for r in con.sql(sql).to_arrow_table().to_pylist()]


def _fit(pipeline: Pipeline, data: Path | None, names: list[str] | None) -> dict[str, Any]:
    """Without a training set's artifacts, learned steps are fitted on the whole history (as
    ``evenflow run`` does): right to explore, wrong to serve a model trained on other fits."""
    from evenflow.batch.engine import BatchEngine

    chosen = names or [fs.name for fs in pipeline.feature_sets]
    history = history_pipeline(pipeline, data, chosen)
    if not any(not isinstance(step, Dedup) for n in chosen for step in history.feature_set(n).steps):
        return {}
    batch = BatchEngine(history)
    try:
        fitted: dict[str, Any] = {}
        for n in chosen:
            fitted.update(batch.prepare(history.feature_set(n)).artifacts)
        return fitted
    finally:
        batch.close()


def register_backfill(app: Any) -> None:
    """Add ``evenflow backfill`` to the ``evenflow`` command line."""
    @app.command("backfill")
    def backfill_command(
            pipeline: Annotated[Path, typer.Argument(help="pipeline YAML file")],
            data: Annotated[Path | None, typer.Option(
                help="history: a CSV/Parquet/NDJSON file, a Delta table or the runner's bronze table "
                     "(default: the pipeline's source)")] = None,
            redis: Annotated[str, typer.Option(help="online store")] = "redis://127.0.0.1:6379/0",
            prefix: Annotated[str, typer.Option(help="key prefix in the online store")] = "evenflow",
            feature_set: Annotated[list[str] | None, typer.Option(help="feature set(s); default all")] = None,
            artifacts: Annotated[Path | None, typer.Option(help="a training set's artifacts.json")] = None,
            until: Annotated[str | None, typer.Option(help="last event time to load (ISO 8601)")] = None,
            lateness: Annotated[str, typer.Option(help="allowed lateness of the stream that continues")] = "0s",
    ) -> None:
        """Load the online store's state from historical events, without replaying them one by one."""
        from evenflow.cli import _fail, _read_artifacts, console
        from evenflow.errors import EvenflowError
        from evenflow.stream.engine import StreamEngine
        from evenflow.stream.store import RedisStore

        try:
            p = Pipeline.load(pipeline)
            fitted = _read_artifacts(artifacts) if artifacts else _fit(p, data, feature_set)
            engine = StreamEngine(p, feature_set or None, artifacts=fitted, lateness=lateness)
            stats = backfill(engine, data, until=until)
            store = RedisStore(redis, prefix=prefix)
            if store.checkpoint() is not None:
                raise EvenflowError(f"the online store {redis} (prefix {prefix!r}) already holds a "
                                    f"checkpoint", fix="backfill into an empty store (another --prefix, "
                                                       "or clear it first)")
            states = engine.dirty_states()
            store.commit(states, meta=engine.meta(), checkpoint=0)
        except EvenflowError as exc:
            _fail(exc)
            return
        console.print(f"backfilled {stats.events:,} events: {stats.entities:,} entities, "
                      f"{stats.live:,} events in windows, {stats.retired:,} older events retired (kept "
                      f"only as running totals of window=None aggregates); {len(states):,} entries written to {redis} (prefix {prefix!r}), "
                      f"checkpoint 0", highlight=False)
