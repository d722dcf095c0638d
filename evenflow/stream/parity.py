"""Batch/stream parity: replay a dataset through the stream engine and compare with the batch engine.

The batch engine (DuckDB) is the contract's reference implementation for training sets; the
stream engine must give the same values when serving. :func:`check_parity` reads the events once
with the batch engine, replays them through a :class:`~evenflow.stream.engine.StreamEngine`
(``emit="final"``, records sorted by event time, ``seqs=`` the row numbers so ties break as in
the batch engine), and compares

* the features at every event (``BatchEngine.features_sql``) with the stream's outputs,
* online reads (``StreamEngine.read``) at sampled times during the replay with the batch
  engine's as-of values at the same ``(t, a)`` (its query-point path),
* the quarantine reason and field of every record, and which records each feature set dropped as
  duplicates.

Values agree as in ``docs/semantics.md`` §11 (:func:`same`).

>>> import pyarrow as pa, datetime as dt, evenflow as ef
>>> t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
>>> tx = ef.source.frame(pa.table({"card": ["a", "a", "b", None], "amount": [1.0, 2.0, 5.0, 3.0],
...     "ts": [t0, t0 + dt.timedelta(minutes=30), t0, t0]}), name="tx", key="card", event_time="ts",
...     schema=ef.Schema(card=ef.String(nullable=False), amount=ef.Float(), ts=ef.Timestamp()))
>>> fs = ef.FeatureSet("card", source=tx, features=[ef.sum("amount", window="1h"), ef.std("amount")])
>>> report = check_parity(ef.Pipeline(name="p", feature_sets=[fs]), samples=5)
>>> report.ok, report.events, report.reads, report.quarantined
(True, 3, 5, 1)
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
import typer

from evenflow.core.pipeline import Pipeline
from evenflow.core.source import Source
from evenflow.core.steps import Artifact
from evenflow.errors import DefinitionError
from evenflow.quality.validate import q

#: Relative and absolute float tolerance between engines (docs/semantics.md §11).
REL_TOL = 1e-9
ABS_TOL = 1e-12


def same(x: Any, y: Any) -> bool:
    """Engine values agree: both null, or equal, or numbers within the contract's tolerance.

    >>> same(None, None), same(0.1 + 0.2, 0.3), same(1.0, 1.001), same(None, 0), same(2, 2.0)
    (True, True, False, False, True)
    >>> same(float("nan"), float("nan"))
    True
    """
    if x is None or y is None:
        return x is None and y is None
    if isinstance(x, (int, float)) and isinstance(y, (int, float)) \
            and not isinstance(x, bool) and not isinstance(y, bool):
        if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
            return True
        return math.isclose(x, y, rel_tol=REL_TOL, abs_tol=ABS_TOL)
    return bool(x == y)


@dataclass
class Mismatch:
    """One disagreement: what (a feature, ``quarantine`` or ``duplicate``), where, both values."""

    kind: str                 # "event", "read", "quarantine", "duplicate", "row"
    feature_set: str
    feature: str
    record: str               # the record number, or "key @ time" for a read
    batch: Any
    stream: Any


@dataclass
class ParityReport:
    """What :func:`check_parity` compared and every mismatch it found."""

    events: int = 0
    values: int = 0
    reads: int = 0
    quarantined: int = 0
    duplicates: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


# -- the dataset --------------------------------------------------------------------------------

_FORMATS = {".csv": "csv", ".parquet": "parquet", ".ndjson": "ndjson", ".jsonl": "ndjson",
            ".json": "ndjson"}


def with_data(pipeline: Pipeline, data: str | Path, feature_sets: Sequence[str] | None = None) -> Pipeline:
    """``pipeline`` with the source of ``feature_sets`` read from ``data`` instead.

    The format follows the file's suffix (``.csv``, ``.parquet``, ``.ndjson``/``.jsonl``, a
    folder with ``_delta_log`` is Delta), else the source's own format.
    """
    chosen = _chosen(pipeline, feature_sets)
    name = chosen[0].source_name()
    src = pipeline.sources[name]
    path = Path(data)
    if not path.exists() and "*" not in str(data):
        raise DefinitionError(f"events file {str(data)!r} not found", fix="pass an existing --data path")
    fmt = "delta" if (path / "_delta_log").exists() else _FORMATS.get(path.suffix.lower(), src.format)
    if fmt in ("duckdb", "postgres", "frame"):
        raise DefinitionError(f"cannot tell the format of {str(data)!r}",
                              fix="use a .csv, .parquet, .ndjson file or a Delta table folder")
    new = Source.load({**src.dump(), "format": fmt, "path": str(path.resolve())})
    sets = [fs.model_copy(update={"source": new}) if fs.source_name() == name else fs
            for fs in pipeline.feature_sets]
    others = {k: v for k, v in pipeline.sources.items()
              if k != name and any(fs.source_name() == k for fs in sets)}
    return Pipeline(name=pipeline.name, sources={**others, name: new}, feature_sets=sets,
                    output=pipeline.output)


def _chosen(pipeline: Pipeline, names: Sequence[str] | None) -> list[Any]:
    chosen = [pipeline.feature_set(n) for n in names] if names else list(pipeline.feature_sets)
    if not chosen:
        raise DefinitionError(f"pipeline {pipeline.name!r} has no feature sets")
    sources = sorted({fs.source_name() for fs in chosen})
    if len(sources) > 1:
        raise DefinitionError(f"the feature sets read several sources ({', '.join(sources)}); one "
                              "parity run replays one source", fix="pass --feature-set for one source")
    return chosen


def replay_order(raw: str, table: str, event_time: str) -> str:
    """SQL over the raw records in replay order: invalid ones first, then by (event_time, row)."""
    return (f"SELECT r.*, s.__t FROM {q(raw)} r LEFT JOIN (SELECT __seq, epoch_us({q(event_time)}) "
            f"AS __t FROM {q(table)}) s USING (__seq) ORDER BY s.__t NULLS FIRST, r.__seq")


def raw_records(con: Any, sql: str, batch_rows: int = 20_000) -> Iterator[tuple[list[Any], list[int], list[int | None]]]:
    """(records, seqs, event times) in chunks; NDJSON records are their line, as received."""
    reader = con.sql(sql).to_arrow_reader(batch_rows)
    for chunk in reader:
        rows = chunk.to_pylist()
        seqs = [r.pop("__seq") for r in rows]
        times = [r.pop("__t") for r in rows]
        recs = [r.get("__line", r) for r in rows]
        yield recs, seqs, times


# -- the comparison ---------------------------------------------------------------------------

def check_parity(pipeline: Pipeline, *, feature_sets: Sequence[str] | None = None,
                 artifacts: dict[str, Artifact] | None = None, samples: int = 100,
                 seed: int = 0) -> ParityReport:
    """Replay ``pipeline``'s source through both engines and compare; see the module docstring.

    Learned steps use ``artifacts`` when given, else the batch engine fits them on all events and
    the stream engine gets those fitted artifacts (both sides apply the same ones).
    """
    from evenflow.batch.engine import BatchEngine
    from evenflow.stream.engine import StreamEngine

    chosen = _chosen(pipeline, feature_sets)
    report = ParityReport()
    eng = BatchEngine(pipeline)
    try:
        prepared = {fs.name: eng.prepare(fs, artifacts=artifacts) for fs in chosen}
        fitted: dict[str, Artifact] = dict(artifacts or {})
        for ev in prepared.values():
            fitted.update(ev.artifacts)
        loaded = next(iter(prepared.values())).loaded
        stream = StreamEngine(pipeline, [fs.name for fs in chosen], artifacts=fitted, emit="final")
        batch_rows = {name: _batch_rows(eng, ev) for name, ev in prepared.items()}
        rng = random.Random(seed)
        total = eng._count(loaded.raw)
        n_valid = eng._count(loaded.table)
        # Read points: after a record whose successor has a later event time (every event up to
        # then has arrived), or at the end; the time lies before the next event time.
        stop_at = Counter(total - n_valid + i for i in rng.choices(range(n_valid), k=samples)) \
            if n_valid else Counter()
        outputs: dict[str, dict[int, dict[str, Any]]] = {n: {} for n in prepared}
        quarantine: dict[int, tuple[str, str | None]] = {}
        duplicates: dict[str, set[int]] = {n: set() for n in prepared}
        seen_keys: dict[str, list[tuple[Any, ...]]] = {n: [] for n in prepared}
        known: dict[str, set[tuple[Any, ...]]] = {n: set() for n in prepared}
        reads: list[tuple[str, tuple[Any, ...], int, dict[str, Any]]] = []
        pending_stop: int | None = None
        position = owed = 0

        def absorb(res: Any) -> None:
            for name, rows in res.outputs.items():
                for row in rows:
                    outputs[name][row["__seq"]] = row
                    entity = tuple(row.get(k) for k in prepared[name].key)
                    if entity not in known[name]:
                        known[name].add(entity)
                        seen_keys[name].append(entity)
            for item in res.quarantined:
                quarantine[item["seq"]] = (item["reason"], item["field"])
            for item in res.duplicates:
                duplicates[item["feature_set"]].add(item["seq"])

        def read_now(t_from: int, t_to: int | None, count: int) -> None:
            longest = max(ev.feature_set.longest_window_us() for ev in prepared.values())
            span = (t_to - t_from) if t_to is not None else 2 * max(longest, 3_600_000_000)
            for _ in range(count):
                at = t_from + int(rng.random() * span)
                for name in prepared:
                    # keys the engine holds, plus ones it may have forgotten (reads as empty)
                    keys = sorted(set(stream.sets[name].states) | set(seen_keys[name]), key=repr)
                    if keys:
                        entity = rng.choice(keys)
                        fs = prepared[name]
                        record = {**dict(zip(fs.key, entity, strict=True)),
                                  fs.event_time: _instant(at)}
                        reads.append((name, entity, at, stream.read(name, entity, at=at,
                                                                    record=record)))

        for recs, seqs, times in raw_records(eng.con, replay_order(loaded.raw, loaded.table,
                                                                   loaded.source.event_time or "")):
            start = 0
            for i, t in enumerate(times):
                if pending_stop is not None and t is not None and t > pending_stop:
                    absorb(stream.process(recs[start:i], seqs=seqs[start:i]))
                    start = i
                    read_now(pending_stop, t, owed)
                    pending_stop, owed = None, 0
                if position in stop_at and t is not None:
                    pending_stop = t if pending_stop is None else max(pending_stop, t)
                    owed += stop_at[position]
                position += 1
            absorb(stream.process(recs[start:], seqs=seqs[start:]))
        absorb(stream.flush())
        if pending_stop is not None:
            read_now(pending_stop, None, owed)
        for name, ev in prepared.items():
            _compare_events(report, name, ev.feature_set.feature_names, batch_rows[name], outputs[name])
            _compare_duplicates(report, name, eng, duplicates[name])
        _compare_quarantine(report, eng, loaded.source.name, quarantine)
        _compare_reads(report, eng, prepared, reads)
        report.events = sum(len(r) for r in batch_rows.values())
        report.quarantined = len(quarantine)
        report.duplicates = sum(len(d) for d in duplicates.values())
    finally:
        eng.close()
    return report


def _instant(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


def _batch_rows(eng: Any, ev: Any) -> dict[int, dict[str, Any]]:
    rows = eng.con.sql(eng.features_sql(ev)).to_arrow_table().to_pylist()
    seqs = [r[0] for r in eng.con.sql(f"SELECT __seq FROM {q(ev.table)} ORDER BY __seq").fetchall()]
    return dict(zip(seqs, rows, strict=True))


def _compare_events(report: ParityReport, name: str, features: list[str],
                    batch: dict[int, dict[str, Any]], stream: dict[int, dict[str, Any]]) -> None:
    for seq in sorted(batch.keys() | stream.keys()):
        b, s = batch.get(seq), stream.get(seq)
        if b is None or s is None:
            report.mismatches.append(Mismatch("row", name, "(row)", str(seq),
                                              "present" if b else "absent", "present" if s else "absent"))
            continue
        for f in features:
            report.values += 1
            if not same(b.get(f), s.get(f)):
                report.mismatches.append(Mismatch("event", name, f, str(seq), b.get(f), s.get(f)))


def _compare_quarantine(report: ParityReport, eng: Any, source: str,
                        stream: dict[int, tuple[str, str | None]]) -> None:
    rows = eng.con.sql(f"SELECT record, reason, field FROM __quarantine WHERE source = '{source}' "
                       "AND record IS NOT NULL").fetchall()
    batch = {int(r): (reason, fld or None) for r, reason, fld in rows}
    for seq in sorted(batch.keys() | stream.keys()):
        b, s = batch.get(seq), stream.get(seq)
        if b != (None if s is None else (s[0], s[1] or None)):
            report.mismatches.append(Mismatch("quarantine", "", "reason/field", str(seq),
                                              "/".join(map(str, b)) if b else "kept",
                                              "/".join(map(str, s)) if s else "kept"))


def _compare_duplicates(report: ParityReport, name: str, eng: Any, stream: set[int]) -> None:
    batch = {int(r[0]) for r in eng.con.sql(
        f"SELECT record FROM __duplicates WHERE feature_set = '{name}'").fetchall()}
    for seq in sorted(batch ^ stream):
        report.mismatches.append(Mismatch("duplicate", name, "(dropped)", str(seq),
                                          seq in batch, seq in stream))


def _compare_reads(report: ParityReport, eng: Any, prepared: dict[str, Any],
                   reads: list[tuple[str, tuple[Any, ...], int, dict[str, Any]]]) -> None:
    from evenflow.batch.training import _features_at_points

    for name, ev in prepared.items():
        mine = [r for r in reads if r[0] == name]
        if not mine:
            continue
        # The query rows carry the record's columns (derived features may read them): the key,
        # the event time (the read time) and nulls; the stream read gets the same record.
        schema = eng.con.sql(f"SELECT * FROM {q(ev.table)} LIMIT 0").to_arrow_table().schema
        cols: dict[str, pa.Array] = {}
        for f in schema:
            if f.name in ev.key:
                values = [r[1][ev.key.index(f.name)] for r in mine]
            elif f.name == ev.event_time:
                values = [_instant(r[2]) for r in mine]
            elif f.name == "__seq" or f.name.startswith("__"):
                continue
            else:
                values = [None] * len(mine)
            cols[f.name] = pa.array(values, f.type)
        table = pa.table({**cols, "__qid": pa.array(range(len(mine)), pa.int64()),
                          "__t": pa.array([r[2] for r in mine], pa.int64()),
                          "__a": pa.array([r[2] for r in mine], pa.int64())})
        eng.con.register("__points_arrow", table)
        eng.con.execute("CREATE OR REPLACE TABLE __points AS SELECT * FROM __points_arrow")
        eng.con.unregister("__points_arrow")
        result, _ = _features_at_points(eng, ev, "auto")
        rows = eng.con.sql(f"SELECT * FROM {q(result)} ORDER BY __qid").to_arrow_table().to_pylist()
        for (_, entity, at, got), want in zip(mine, rows, strict=True):
            report.reads += 1
            for f in ev.feature_set.feature_names:
                if not same(want.get(f), got.get(f)):
                    report.mismatches.append(Mismatch("read", name, f, f"{list(entity)} @ {at}",
                                                      want.get(f), got.get(f)))


# -- command line -------------------------------------------------------------------------------

def print_report(report: ParityReport, *, limit: int = 50) -> None:
    """A Rich table of the mismatches (first ``limit``) and a one-line summary."""
    from rich.table import Table

    from evenflow.cli import console

    if report.mismatches:
        table = Table(title=f"Batch/stream mismatches ({len(report.mismatches):,}; first "
                            f"{min(limit, len(report.mismatches))} shown)")
        for col in ("kind", "feature set", "feature", "record", "batch value", "stream value"):
            table.add_column(col)
        for m in report.mismatches[:limit]:
            table.add_row(m.kind, m.feature_set, m.feature, m.record, repr(m.batch), repr(m.stream))
        console.print(table)
    verdict = "[bold green]parity holds[/]" if report.ok else \
        f"[bold red]{len(report.mismatches):,} mismatches[/]"
    console.print(f"{verdict}: {report.events:,} events ({report.values:,} feature values), "
                  f"{report.reads:,} online reads, {report.quarantined:,} quarantined records, "
                  f"{report.duplicates:,} duplicates compared (tolerance rel {REL_TOL:g}, "
                  f"abs {ABS_TOL:g})", highlight=False)


def register_parity(app: Any) -> None:
    """Add ``evenflow parity`` to the ``evenflow`` command line."""
    @app.command()
    def parity(pipeline: Annotated[Path, typer.Argument(help="pipeline YAML file")],
               data: Annotated[Path | None, typer.Option(
                   help="events file or Delta folder replacing the source's path")] = None,
               feature_set: Annotated[list[str] | None, typer.Option(
                   help="feature set(s) to compare (one source); default all")] = None,
               artifacts: Annotated[Path | None, typer.Option(
                   help="a training set's artifacts.json (else fitted on all events)")] = None,
               samples: Annotated[int, typer.Option(help="online reads to compare")] = 200,
               seed: Annotated[int, typer.Option(help="seed of the sampled reads")] = 0) -> None:
        """Replay the events through the stream engine and compare every value with the batch engine."""
        from evenflow.cli import _fail, _read_artifacts
        from evenflow.errors import EvenflowError

        try:
            p = Pipeline.load(pipeline)
            if data is not None:
                p = with_data(p, data, feature_set)
            fitted = _read_artifacts(artifacts) if artifacts else None
            report = check_parity(p, feature_sets=feature_set, artifacts=fitted, samples=samples,
                                  seed=seed)
        except EvenflowError as exc:
            _fail(exc)
            return
        print_report(report)
        if not report.ok:
            raise typer.Exit(1)
