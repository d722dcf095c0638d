"""The batch engine: sources -> validated events -> cleaned events -> features, on DuckDB.

>>> import pyarrow as pa, datetime as dt
>>> import evenflow as ef
>>> t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
>>> tx = ef.source.frame(pa.table({"card": ["a", "a", "b"], "amount": [1.0, 2.0, 5.0],
...     "ts": [t0, t0 + dt.timedelta(minutes=30), t0]}), name="tx", key="card", event_time="ts")
>>> fs = ef.FeatureSet("card", source=tx, features=[ef.sum("amount", window="1h")])
>>> out = BatchEngine(ef.Pipeline(name="p", feature_sets=[fs])).features_at_events(fs)
>>> sorted(out.select(["card", "sum_amount_1h"]).to_pylist(), key=str)[0]
{'card': 'a', 'sum_amount_1h': 1.0}
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import duckdb
import pyarrow as pa

from evenflow.batch import compile as C
from evenflow.core.features import Aggregate, FeatureSet
from evenflow.core.pipeline import Pipeline
from evenflow.core.schema import Schema
from evenflow.core.source import Source
from evenflow.core.steps import Artifact, Dedup, projection
from evenflow.errors import DefinitionError
from evenflow.io.readers import open_source
from evenflow.quality.validate import describe, infer_schema, lit, payload_sql, q, validation
from evenflow.verify.contracts import ContractResult, evaluate_contracts
from evenflow.verify.neardup import NearDedup


class Reporter(Protocol):
    """Receives progress; the CLI shows it with Rich. Keyword-only so it can grow.

    ``stage`` yields a callable taking the stage's percentage done (0-100).
    """

    def stage(self, name: str, *, total: int | None = None
              ) -> contextlib.AbstractContextManager[Callable[[float], None]]: ...


class SilentReporter:
    @contextlib.contextmanager
    def stage(self, name: str, *, total: int | None = None) -> Iterator[Callable[[float], None]]:
        yield lambda percent: None


@dataclass
class LoadedSource:
    """A source after validation: the valid typed rows and the counts."""

    source: Source
    schema: Schema
    raw: str
    table: str
    raw_columns: list[str]
    rows_in: int
    quarantined: int
    version: dict[str, str]
    payload: str = ""
    #: results of the source's contracts (evenflow.verify.contracts), in declaration order
    contracts: list[ContractResult] = field(default_factory=list)


@dataclass
class PreparedEvents:
    """A feature set's events after its steps, with the accounting."""

    feature_set: FeatureSet
    table: str
    key: list[str]
    event_time: str
    available_time: str | None
    value_columns: list[str]
    artifacts: dict[str, Artifact]
    rows_in: int
    rows_out: int
    quarantined: int
    duplicates: int
    loaded: LoadedSource = field(repr=False)

    def accounting(self) -> dict[str, Any]:
        ok = self.rows_in == self.rows_out + self.quarantined + self.duplicates
        return {"source": self.loaded.source.name, "input": self.rows_in, "output": self.rows_out,
                "quarantined": self.quarantined, "duplicates": self.duplicates, "reconciles": ok}


@dataclass(frozen=True)
class PointStats:
    """What the engine measures on the events before features at query points."""

    #: (query point, event) pairs the bucketed join with buckets ``longest`` wide would form,
    #: estimated on a sample of a large input (``compile.point_stats_sql``)
    pairs: int
    events: int
    points: int
    #: the bucket width ``pairs`` was measured with (None: not measured, ``pairs`` is 0)
    longest: int | None = None


class BatchEngine:
    """Runs a pipeline's definitions on DuckDB, in memory or spilling to disk.

    ``memory_limit`` bounds DuckDB's memory; larger work spills to ``temp_directory``.
    """

    def __init__(self, pipeline: Pipeline, *, memory_limit: str = "3GB", threads: int | None = None,
                 temp_directory: str | None = None, reporter: Reporter | None = None,
                 run_id: str | None = None) -> None:
        self.pipeline = pipeline
        self.reporter: Reporter = reporter or SilentReporter()
        tmp = temp_directory or os.path.join(tempfile.gettempdir(), "evenflow-spill")
        self._config: dict[str, str | bool | int | float | list[str]] = {
            "preserve_insertion_order": True, "memory_limit": memory_limit, "temp_directory": tmp}
        if threads:
            self._config["threads"] = int(threads)
        self.threads = threads
        self._con: duckdb.DuckDBPyConnection | None = None
        self.run_id = run_id or os.urandom(6).hex()
        self._loaded: dict[str, LoadedSource] = {}

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The DuckDB connection, opened on first use.

        Opening one costs about 17 ms of CPU and 27 MB; a call that reads clean typed Parquet
        straight into Arrow (``evenflow.io.parquet_arrow``) never needs one.
        """
        if self._con is None:
            con = duckdb.connect(config=self._config)
            # one round trip: the time zone (ICU, not settable at connect), progress, the side
            # tables. Progress is read by the reporter (query_progress), never printed by DuckDB.
            con.execute(
                "SET TimeZone='UTC'; SET enable_progress_bar=true; SET enable_progress_bar_print=false; "
                "CREATE TABLE __quarantine (source VARCHAR, feature_set VARCHAR, record BIGINT, "
                "payload VARCHAR, reason VARCHAR, field VARCHAR, step VARCHAR, detail VARCHAR); "
                "CREATE TABLE __duplicates (source VARCHAR, feature_set VARCHAR, record BIGINT, "
                "kept_record BIGINT, step VARCHAR, key VARCHAR)")
            self._con = con
        return self._con

    @property
    def connected(self) -> bool:
        """Whether this engine has opened its DuckDB connection."""
        return self._con is not None

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """A named stage; while it runs, DuckDB's progress on the current query is reported."""
        if isinstance(self.reporter, SilentReporter):  # nobody reads the progress: no poller
            yield
            return
        with self.reporter.stage(name, total=100) as update:
            done = threading.Event()

            def poll() -> None:
                while not done.wait(0.25):
                    if self._con is None:  # nothing runs on DuckDB (yet): nothing to poll
                        continue
                    try:
                        percent = self._con.query_progress()
                    except duckdb.Error:
                        return
                    if percent >= 0:
                        update(percent)

            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
            try:
                yield
            finally:
                done.set()
                poller.join()

    # -- sources ---------------------------------------------------------------------------------
    def load_source(self, name: str) -> LoadedSource:
        """Read and validate a source once; invalid records go to quarantine."""
        if name in self._loaded:
            return self._loaded[name]
        source = self.pipeline.sources[name]
        raw, table = f"raw__{name}", f"src__{name}"
        with self.stage(f"read {name}"):
            version = open_source(self.con, source, raw)
        described = describe(self.con, raw)
        schema = source.schema_ or infer_schema(self.con, raw, source, described=described)
        if source.event_time and source.event_time not in schema.fields:
            raise DefinitionError(f"source {name!r}: event_time {source.event_time!r} not in schema")
        with self.stage(f"validate {name}"):
            check = validation(self.con, raw, source, schema, described=described)
            raw_columns = check.raw_columns
            payload = "r.__line" if "__line" in raw_columns else payload_sql(raw_columns, "r.")
            raw_columns = [c for c in raw_columns if c != "__line"]
            cols = ", ".join(q(c) for c in schema.fields)
            # only the text readers (CSV, NDJSON) keep lines they could not split
            rejected = self._quarantine_rejects(raw, name) if source.format in ("csv", "ndjson") else 0
            read: int | None = None
            as_read = check.as_read
            if as_read:  # does any record fail? and the rows read, in the same round trip
                failed, read = self.con.sql(f"SELECT ({check.failures_sql}), "
                                            f"(SELECT count(*) FROM {q(raw)})").fetchall()[0]
                as_read = not failed
            if as_read:
                # Typed as read and no record fails: the valid rows are the raw relation itself,
                # with nothing to copy (a Parquet file stays a scan, as a hand query reads it).
                self.con.execute(f"CREATE OR REPLACE VIEW {q(table)} AS SELECT {cols}, __seq FROM {q(raw)}")
            else:
                # One pass types and checks every record; the valid rows are a view over it, so
                # the events are materialized once.
                checked = q(table + "__checked")
                self.con.execute(f"CREATE OR REPLACE TABLE {checked} AS {check.sql}")
                self.con.execute(
                    f"INSERT INTO __quarantine SELECT {lit(name)}, NULL, c.__seq, "
                    f"{payload}, split_part(c.__fail, '|', 1), "
                    f"split_part(c.__fail, '|', 2), 'schema', "
                    f"regexp_extract(c.__fail, '^[^|]*[|][^|]*[|](.*)$', 1) "
                    f"FROM (SELECT * FROM {checked} WHERE __fail IS NOT NULL) c JOIN {q(raw)} r USING (__seq)")
                self.con.execute(f"CREATE OR REPLACE VIEW {q(table)} AS SELECT {cols}, __seq "
                                 f"FROM {checked} WHERE __fail IS NULL")
        results: list[ContractResult] = []
        if source.contracts:
            with self.stage(f"contracts {name}"):
                results = evaluate_contracts(self.con, source=name, contracts=source.contracts,
                                             table=table, raw=raw, payload=payload)
        read = self._count(raw) if read is None else int(read)
        # the valid rows are the raw ones as read unless a record failed or a contract dropped some
        valid = read if as_read and not source.contracts else self._count(table)
        rows_in = read + rejected
        loaded = LoadedSource(source, schema, raw, table, raw_columns, rows_in,
                              rows_in - valid, version, payload, results)
        self._loaded[name] = loaded
        return loaded

    def _quarantine_rejects(self, raw: str, name: str) -> int:
        """Lines the reader could not split into a record (ragged CSV, invalid JSON)."""
        rejects = f"{raw}__rejects"
        found = self.con.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name = "
                             f"{lit(rejects)}").fetchall()[0][0]
        if not found:
            return 0
        self.con.execute(
            f"INSERT INTO __quarantine SELECT {lit(name)}, NULL, NULL, "
            f"CAST(json_object('line', payload, 'file', file, 'line_number', line) AS VARCHAR), "
            f"'malformed_record', field, 'read', file || ':' || CAST(line AS VARCHAR) || ': ' || message "
            f"FROM {q(rejects)}")
        return self._count(rejects)

    def _count(self, table: str, where: str = "") -> int:
        return int(self.con.sql(f"SELECT count(*) FROM {q(table)} {where}").fetchall()[0][0])

    # -- steps -----------------------------------------------------------------------------------
    def prepare(self, fs: FeatureSet, *, fit_where: str | None = None,
                artifacts: dict[str, Artifact] | None = None) -> PreparedEvents:
        """Validated events of ``fs``'s source through its steps.

        Learned steps are fitted on the rows matching ``fit_where`` (SQL over the source's
        columns; the training split's events) unless ``artifacts`` are given.
        """
        loaded = self.load_source(fs.source_name())
        source = loaded.source
        key = self.pipeline.key_of(fs)
        if not source.event_time:
            raise DefinitionError(f"source {source.name!r} has no event_time",
                                  fix="declare event_time= on the source")
        for column in key:
            if column not in loaded.schema.fields:
                raise DefinitionError(f"feature set {fs.name!r}: key {column!r} is not a column of "
                                      f"source {source.name!r}", field=column)
        artifacts = dict(artifacts or {})
        fitted: dict[str, Artifact] = {}
        current, duplicates, rejected = loaded.table, 0, 0
        added: list[str] = []  # columns the steps add (indicators, flags, one-hot): aggregatable
        base = f"ev__{fs.name}"
        for i, step in enumerate(fs.steps):
            name = f"{base}__{i}"
            art_key = f"{fs.name}/{step.id}"
            if isinstance(step, Dedup):
                with self.stage(f"{fs.name}: {step.id}"):
                    duplicates += self._dedup(current, name, step, source, fs)
            elif isinstance(step, NearDedup):
                with self.stage(f"{fs.name}: {step.id}"):
                    duplicates += step.apply(self.con, current, name, source=source.name,
                                             feature_set=fs.name, event_time=source.event_time)
            else:
                if step.training_only:
                    raise DefinitionError(f"feature set {fs.name!r}: {step.id} reads the label, so it "
                                          "belongs on the training set", field=step.column,
                                          fix="move it to the training_set's steps")
                bound = step.bind(key=key, order=[source.event_time, "__seq"])
                if art_key in artifacts:
                    art = artifacts[art_key]
                else:
                    where = f" WHERE {fit_where}" if fit_where and bound.learns else ""
                    cols = ", ".join(q(c) for c in bound.fit_columns)
                    fit_table = self.con.sql(f"SELECT {cols} FROM {q(current)}{where}").to_arrow_table()
                    art = bound.fit(fit_table)
                fitted[art_key] = art
                reject = bound.reject_sql(art)
                if reject is not None:
                    rejected += self._reject_rows(current, name + "__kept", step.id, step.column,
                                                  reject, loaded, fs)
                    current = name + "__kept"
                columns = self._columns(current)
                added += [c for c in bound.adds(art) if c not in columns and c not in added]
                self.con.execute(f"CREATE OR REPLACE TEMP VIEW {q(name)} AS SELECT "
                                 f"{projection(bound, art, columns)} FROM {q(current)}")
            current = name
        table = f"{base}"
        with self.stage(f"{fs.name}: unique checks"):
            quarantined = rejected + self._unique(current, table, loaded, fs)
        value_columns = [c for c in loaded.schema.fields
                         if c not in key and c != source.event_time] + added
        plain = not fs.steps and not any(f.unique for f in loaded.schema.fields.values())
        # without steps or unique checks the events are the source's valid rows, already counted
        rows_out = loaded.rows_in - loaded.quarantined if plain else self._count(table)
        return PreparedEvents(fs, table, key, source.event_time, source.available_time,
                              value_columns, fitted, loaded.rows_in, rows_out,
                              loaded.quarantined + quarantined, duplicates, loaded)

    def _columns(self, relation: str) -> list[str]:
        return list(self.con.sql(f"SELECT * FROM {q(relation)} LIMIT 0").columns)

    def _reject_rows(self, current: str, kept: str, step_id: str, column: str,
                     reject: tuple[str, str], loaded: LoadedSource, fs: FeatureSet) -> int:
        """Quarantine the rows a step rejects (reason ``outlier``); ``kept`` gets the others."""
        cond, detail = reject
        marked = q(kept + "__marked")
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {marked} AS SELECT *, COALESCE({cond}, FALSE) "
                         f"AS __rejected, {detail} AS __detail FROM {q(current)}")
        self.con.execute(
            f"INSERT INTO __quarantine SELECT {lit(loaded.source.name)}, {lit(fs.name)}, f.__seq, "
            f"{loaded.payload}, 'outlier', {lit(column)}, {lit(step_id)}, f.__detail "
            f"FROM {marked} f JOIN {q(loaded.raw)} r USING (__seq) WHERE f.__rejected")
        self.con.execute(f"CREATE OR REPLACE TEMP VIEW {q(kept)} AS SELECT * EXCLUDE (__rejected, "
                         f"__detail) FROM {marked} WHERE NOT __rejected")
        return self._count(kept + "__marked", "WHERE __rejected")

    def _dedup(self, current: str, name: str, step: Dedup, source: Source, fs: FeatureSet) -> int:
        loaded = self._loaded[source.name]
        key_cols = step.key or list(loaded.schema.fields)
        part = ", ".join(q(k) for k in key_cols)
        et = q(source.event_time or "__seq")
        order = f"{et}, __seq" if step.keep == "first" else f"{et} DESC, __seq DESC"
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE {q(name + '__ranked')} AS SELECT *, "
            f"row_number() OVER (PARTITION BY {part} ORDER BY {order}) AS __rn, "
            f"first_value(__seq) OVER (PARTITION BY {part} ORDER BY {order}) AS __kept "
            f"FROM {q(current)}")
        key_json = payload_sql(key_cols)
        self.con.execute(
            f"INSERT INTO __duplicates SELECT {lit(source.name)}, {lit(fs.name)}, __seq, __kept, "
            f"{lit(step.id)}, {key_json} FROM {q(name + '__ranked')} WHERE __rn > 1")
        dups = self._count(name + "__ranked", "WHERE __rn > 1")
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {q(name)} AS SELECT * EXCLUDE (__rn, __kept) "
                         f"FROM {q(name + '__ranked')} WHERE __rn = 1")
        self.con.execute(f"DROP TABLE {q(name + '__ranked')}")
        return dups

    def _unique(self, current: str, table: str, loaded: LoadedSource, fs: FeatureSet) -> int:
        unique = [n for n, f in loaded.schema.fields.items() if f.unique]
        if not unique:
            self.con.execute(f"CREATE OR REPLACE VIEW {q(table)} AS SELECT * FROM {q(current)}")
            return 0
        firsts = ", ".join(
            f"first_value(__seq) OVER (PARTITION BY {q(u)} ORDER BY __seq) AS {q('__first_' + u)}"
            for u in unique)
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {q(table + '__u')} AS "
                         f"SELECT *, {firsts} FROM {q(current)}")
        fail = "CASE " + " ".join(
            f"WHEN {q(u)} IS NOT NULL AND {q('__first_' + u)} <> __seq THEN "
            f"'{u}|{u}=' || CAST({q(u)} AS VARCHAR) || ' already seen at record ' || "
            f"CAST({q('__first_' + u)} AS VARCHAR)" for u in unique) + " END"
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {q(table + '__f')} AS "
                         f"SELECT *, {fail} AS __fail FROM {q(table + '__u')}")
        self.con.execute(
            f"INSERT INTO __quarantine SELECT {lit(loaded.source.name)}, {lit(fs.name)}, f.__seq, "
            f"{loaded.payload}, 'not_unique', split_part(f.__fail, '|', 1), "
            f"'schema.unique', split_part(f.__fail, '|', 2) FROM {q(table + '__f')} f "
            f"JOIN {q(loaded.raw)} r USING (__seq) WHERE f.__fail IS NOT NULL "
            # a record is quarantined once, even when several feature sets read its source
            f"AND f.__seq NOT IN (SELECT record FROM __quarantine WHERE source = "
            f"{lit(loaded.source.name)} AND record IS NOT NULL)")
        drop = ", ".join(q("__first_" + u) for u in unique)
        self.con.execute(f"CREATE OR REPLACE TABLE {q(table)} AS SELECT * EXCLUDE ({drop}, __fail) "
                         f"FROM {q(table + '__f')} WHERE __fail IS NULL")
        bad = self._count(table + "__f", "WHERE __fail IS NOT NULL")
        self.con.execute(f"DROP TABLE {q(table + '__f')}; DROP TABLE {q(table + '__u')}")
        return bad

    # -- features --------------------------------------------------------------------------------
    def _shape(self, ev: PreparedEvents) -> C.EventsShape:
        ints = frozenset(n for n, f in ev.loaded.schema.fields.items() if f.type == "int")
        return C.EventsShape(q(ev.table), ev.key, ev.event_time, ev.available_time, ev.value_columns,
                             ints)

    def choose_plan(self, ev: PreparedEvents, plan: Literal["auto", "window", "join"]
                    ) -> Literal["window", "join"]:
        """The plan for features at every event: the window plan unless available_time needs the join."""
        if plan != "auto":
            if plan == "window" and ev.available_time:
                raise DefinitionError("the window plan cannot honour available_time",
                                      fix="use plan='join' or 'auto'")
            return plan
        return "join" if ev.available_time else "window"

    def aggregates_sql(self, ev: PreparedEvents, points: str | None,
                       plan: Literal["auto", "window", "join"] = "auto", *,
                       stats: PointStats | None = None, recent: bool = False) -> str:
        """SQL for the aggregates of ``ev`` at ``points`` (every event when None): ``__qid`` and
        one column per aggregate. ``stats`` (from :meth:`point_stats`) saves measuring again.
        ``recent``: a join at the points also gives ``__recent`` (see ``compile.join_sql``)."""
        aggs = ev.feature_set.aggregates
        if not aggs:
            return (f"SELECT __seq AS __qid FROM {q(ev.table)}" if points is None
                    else f"SELECT __qid FROM {points}")
        shape = self._shape(ev)
        if points is None:
            chosen = self.choose_plan(ev, plan)
            return (C.window_sql if chosen == "window" else C.join_sql)(shape, aggs, None)
        if plan == "join" or ev.available_time:
            return C.join_sql(shape, aggs, points, recent=recent)
        # Query points, no bitemporal filter: each aggregate takes the cheapest exact path.
        running = [a for a in aggs if C.asof_capable(a)]
        bounded = [a for a in aggs if a.window_us is not None]
        rest = [a for a in aggs if a not in running and a not in bounded]
        parts: list[str] = []
        if running:
            parts.append(C.asof_sql(shape, running, points, self._nonnull_columns(ev, running)))
        if bounded:
            if plan == "auto" and self._join_is_cheap(shape, bounded, points, stats=stats):
                parts.append(C.join_sql(shape, bounded, points, bitemporal=False, recent=recent))
            else:
                rest = bounded + rest
        if rest:
            parts.append(C.window_sql(shape, rest, points))
        if len(parts) == 1:
            return parts[0]
        body = f"({parts[0]}) AS p0"
        for i, part in enumerate(parts[1:], 1):
            body += f" JOIN ({part}) AS p{i} USING (__qid)"
        return f"SELECT * FROM {body}"

    def cost_window(self, ev: PreparedEvents, points: str | None,
                    plan: Literal["auto", "window", "join"] = "auto") -> int | None:
        """The bucket width whose join cost :meth:`aggregates_sql` weighs at ``points``: the
        longest bounded window when it will choose between the join and the window plan."""
        if points is None or plan != "auto" or ev.available_time:
            return None
        return max((a.window_us for a in ev.feature_set.aggregates if a.window_us is not None),
                   default=None)

    def point_stats(self, ev: PreparedEvents, points: str, *, longest: int | None = None) -> PointStats:
        """The bucketed join's pairs (with ``longest``) and the row counts, measured on the data."""
        return self._point_stats(self._shape(ev), points, longest)

    #: about this many events and query points are enough to estimate the join's pairs
    COST_SAMPLE_EVENTS = 500_000
    COST_SAMPLE_POINTS = 250_000

    def _point_stats(self, shape: C.EventsShape, points: str, longest: int | None) -> PointStats:
        every_event = every_point = 1
        if longest:
            n_events, n_points = self.con.sql(f"SELECT (SELECT count(*) FROM {shape.table}), "
                                              f"(SELECT count(*) FROM {points})").fetchall()[0]
            every_event = max(1, int(n_events) // self.COST_SAMPLE_EVENTS)
            every_point = max(1, int(n_points) // self.COST_SAMPLE_POINTS)
        pairs, events, n_points = self.con.sql(C.point_stats_sql(
            shape, points, longest, events_every=every_event, points_every=every_point)).fetchall()[0]
        return PointStats(int(pairs), int(events), int(n_points), longest)

    def _join_is_cheap(self, shape: C.EventsShape, bounded: list[Aggregate], points: str, *,
                       stats: PointStats | None = None) -> bool:
        """The bucketed join wins unless hot keys make it pair far more rows than it reads.

        The window plan sorts events and points once, whatever the skew; the join is faster on
        typical data but its pairs grow with the events per window of the busiest keys.
        """
        longest = max(a.window_us or 0 for a in bounded)
        if stats is None or stats.longest != longest:
            stats = self._point_stats(shape, points, longest)
        return stats.pairs <= 8 * (stats.events + stats.points)

    def rows_without_history(self, ev: PreparedEvents, points: str, *, few: bool = False) -> int:
        """Query points whose entity had no event at or before their time (``few``: see
        ``compile.history_sql``)."""
        return int(self.con.sql(C.history_sql(self._shape(ev), points, few=few)).fetchall()[0][0])

    def _nonnull_columns(self, ev: PreparedEvents, aggs: list[Aggregate]) -> set[str]:
        """Columns of ``aggs`` without a single null among the prepared events."""
        cols = sorted({a.column for a in aggs if a.column})
        if not cols:
            return set()
        counts = self.con.sql(f"SELECT count(*), {', '.join(f'count({q(c)})' for c in cols)} "
                              f"FROM {q(ev.table)}").fetchall()[0]
        return {c for c, n in zip(cols, counts[1:], strict=True) if n == counts[0]}

    def features_sql(self, ev: PreparedEvents, plan: Literal["auto", "window", "join"] = "auto") -> str:
        """SQL for the features at every event: the event's columns plus its features."""
        record = f"SELECT *, __seq AS __qid FROM {q(ev.table)}"
        keep = [*ev.key, ev.event_time, *ev.value_columns]
        body = C.derived_sql(self.aggregates_sql(ev, None, plan), record,
                             ev.feature_set.aggregates, ev.feature_set.derived, keep,
                             set(ev.loaded.schema.fields))
        return f"SELECT * EXCLUDE (__qid) FROM ({body}) ORDER BY __qid"

    def features_at_events(self, fs: FeatureSet, *, plan: Literal["auto", "window", "join"] = "auto",
                           artifacts: dict[str, Artifact] | None = None) -> pa.Table:
        """Features at every event of ``fs`` (t = event_time, a = available_time), in input order."""
        ev = self.prepare(fs, artifacts=artifacts)
        return self.con.sql(self.features_sql(ev, plan)).to_arrow_table()

    def quarantine(self) -> pa.Table:
        return self.con.sql("SELECT * FROM __quarantine ORDER BY source, record").to_arrow_table()

    def duplicates(self) -> pa.Table:
        return self.con.sql("SELECT * FROM __duplicates ORDER BY source, record").to_arrow_table()

    def quarantine_counts(self) -> dict[str, int]:
        rows = self.con.sql("SELECT reason, count(*) FROM __quarantine GROUP BY 1 ORDER BY 1").fetchall()
        return {r: int(n) for r, n in rows}

    def close(self) -> None:
        if self._con is not None:
            self._con.close()

