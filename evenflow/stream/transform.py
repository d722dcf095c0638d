"""ELT: bronze (raw events as landed) → silver (valid records) → gold (features), incrementally.

Each run reads only the bronze Delta table's versions it has not processed (the data files
added since), validates them, and appends in one Delta commit per table:

* ``silver``: the valid, typed records (plus ``__bronze_version``);
* ``quarantine``: the bad ones, with reason, field, step and detail;
* ``duplicates``: the records each feature set's Dedup step dropped;
* ``gold/<feature set>``: the features at every new event.

Every commit carries the Delta application transaction ``(evenflow-transform, bronze version)``.
The last processed version is the smallest one the four tables have committed, and a table that
already has the version is not written again: a crash between two writes redoes the missing
ones and nothing twice; a second run with no new bronze version changes nothing.

Features of new events see the older events: the batch engine runs over the silver history
(all of it when a feature set has an unbounded aggregate or a Dedup step, else the part within
the longest window before the earliest new event) followed by the new records, and keeps the
new records' rows (``docs/decisions/0005-elt.md``).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
import typer

from evenflow.core.pipeline import Pipeline
from evenflow.core.steps import Artifact, Dedup
from evenflow.errors import DefinitionError
from evenflow.quality.validate import q

APP_ID = "evenflow-transform"


@dataclass
class TransformStats:
    """What one run did; ``bronze_version`` is ``None`` when there was nothing new."""

    bronze_version: int | None = None
    records: int = 0
    silver: int = 0
    quarantined: int = 0
    duplicates: int = 0
    gold: dict[str, int] = field(default_factory=dict)


@dataclass
class Layout:
    """Where the tables are (default: under the pipeline's lakehouse directory)."""

    bronze: Path
    silver: Path
    quarantine: Path
    duplicates: Path
    gold: Path

    @classmethod
    def under(cls, root: Path, bronze: Path | None = None) -> Layout:
        return cls(bronze or root / "bronze", root / "silver", root / "quarantine",
                   root / "duplicates", root / "gold")


def _version(path: Path) -> int | None:
    from deltalake import DeltaTable

    if not (path / "_delta_log").exists():
        return None
    v = DeltaTable(str(path)).transaction_version(APP_ID)
    return None if v is None else int(v)


def _write(path: Path, table: pa.Table, version: int) -> bool:
    """Append ``table`` as app transaction ``version``; ``False`` if the table already has it."""
    from deltalake import CommitProperties, Transaction, write_deltalake

    done = _version(path)
    if done is not None and done >= version:
        return False
    path.mkdir(parents=True, exist_ok=True)
    write_deltalake(str(path), table, mode="append", commit_properties=CommitProperties(
        app_transactions=[Transaction(APP_ID, version)],
        custom_metadata={"evenflow.bronze_version": str(version)}))
    return True


def _new_payloads(bronze: Path, after: int | None) -> tuple[int, list[str]]:
    """The bronze version now and the payloads of the data files added after version ``after``."""
    import pyarrow.parquet as pq
    from deltalake import DeltaTable

    if not (bronze / "_delta_log").exists():
        raise DefinitionError(f"no bronze Delta table at {bronze}",
                              fix="land events with the runner first (evenflow consume), or pass --bronze")
    now = DeltaTable(str(bronze))
    old = set() if after is None else set(DeltaTable(str(bronze), version=after).file_uris())
    payloads: list[str] = []
    for uri in sorted(set(now.file_uris()) - old, key=now.file_uris().index):
        payloads += [p for p in pq.read_table(uri, columns=["payload"]).column("payload").to_pylist()
                     if p is not None]
    return int(now.version()), payloads


def transform(pipeline: Pipeline, *, layout: Layout | None = None, feature_sets: list[str] | None = None,
              artifacts: dict[str, Artifact] | None = None) -> TransformStats:
    """Process the bronze versions not yet processed; see the module docstring."""
    chosen = [pipeline.feature_set(n) for n in feature_sets] if feature_sets else list(pipeline.feature_sets)
    sources = {fs.source_name() for fs in chosen}
    if len(sources) != 1:
        raise DefinitionError("one transform reads one bronze table, so one source",
                              fix="pass --feature-set for the feature sets of one source")
    layout = layout or Layout.under(pipeline.output.lakehouse_path())
    tables = [layout.silver, layout.quarantine, layout.duplicates, *(layout.gold / fs.name for fs in chosen)]
    versions = [_version(t) for t in tables]
    last = None if any(v is None for v in versions) else min(v for v in versions if v is not None)
    bronze_version, payloads = _new_payloads(layout.bronze, last)
    if last is not None and bronze_version <= last:
        return TransformStats()
    history = _silver_history(layout.silver, last, chosen, payloads, pipeline)
    lines = history + payloads
    fd, name = tempfile.mkstemp(suffix=".ndjson", prefix="evenflow-elt-")
    with os.fdopen(fd, "w") as out:
        out.writelines(line.replace("\n", " ") + "\n" for line in lines)
    try:
        return _run(pipeline, chosen, name, len(history), bronze_version, layout, artifacts)
    finally:
        os.unlink(name)


def _silver_history(silver: Path, last: int | None, chosen: list[Any], payloads: list[str],
                    pipeline: Pipeline) -> list[str]:
    """Silver records (as JSON lines) the new events' features and dedup can depend on."""
    from deltalake import DeltaTable

    if last is None or not (silver / "_delta_log").exists():
        return []
    rows = DeltaTable(str(silver)).to_pyarrow_table().to_pylist()
    rows = [r for r in rows if r["__bronze_version"] <= last]    # a crashed run's rows are redone
    rows.sort(key=lambda r: (r.pop("__bronze_version"), r.pop("__seq")))   # arrival order
    source = pipeline.source_of(chosen[0])
    et = source.event_time or ""
    everything = any(a.window_us is None for fs in chosen for a in fs.aggregates) or \
        any(isinstance(s, Dedup) for fs in chosen for s in fs.steps) or \
        bool(source.schema_ and any(f.unique for f in source.schema_.fields.values()))
    if not everything and rows:
        from evenflow.stream.validate import parse_timestamp

        parsed = [parse_timestamp(_field(p, et))[0] for p in payloads]
        starts = [s for s in parsed if s is not None]
        if starts:
            reach = max(fs.longest_window_us() for fs in chosen)
            edge = min(starts) - timedelta(microseconds=reach)
            rows = [r for r in rows if r[et] is None or r[et] > edge]
    return [json.dumps(r, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v))
            for r in rows]


def _field(payload: str, name: str) -> Any:
    """One field of a raw payload, ``None`` when it is not a JSON object (it will be quarantined)."""
    try:
        record = json.loads(payload)
    except ValueError:
        return None
    return record.get(name) if isinstance(record, dict) else None


def _run(pipeline: Pipeline, chosen: list[Any], path: str, offset: int, version: int, layout: Layout,
         artifacts: dict[str, Artifact] | None) -> TransformStats:
    from evenflow.batch.engine import BatchEngine
    from evenflow.stream.parity import with_data

    p = with_data(pipeline, path, [fs.name for fs in chosen])
    eng = BatchEngine(p)
    stats = TransformStats(bronze_version=version)
    try:
        loaded = eng.load_source(chosen[0].source_name())
        prepared = [eng.prepare(p.feature_set(fs.name), artifacts=artifacts) for fs in chosen]
        con = eng.con
        cols = ", ".join(q(c) for c in loaded.schema.fields)
        new = f"__seq >= {offset}"
        silver = con.sql(f"SELECT {cols}, __seq - {offset} + 0 AS __seq, CAST({version} AS BIGINT) AS "
                         f"__bronze_version FROM {q(loaded.table)} WHERE {new} "
                         f"AND __seq NOT IN (SELECT record FROM __quarantine WHERE record IS NOT NULL) "
                         f"ORDER BY __seq").to_arrow_table()
        quarantine = con.sql(f"SELECT payload, reason, field, step, detail, feature_set, record - {offset} "
                             f"AS record, CAST({version} AS BIGINT) AS bronze_version FROM __quarantine "
                             f"WHERE record IS NULL OR record >= {offset} ORDER BY record").to_arrow_table()
        duplicates = con.sql(f"SELECT feature_set, record - {offset} AS record, kept_record - {offset} AS "
                             f"kept_record, step, key, CAST({version} AS BIGINT) AS bronze_version "
                             f"FROM __duplicates WHERE record >= {offset} ORDER BY record").to_arrow_table()
        golds = {}
        for ev in prepared:
            seqs = f"(SELECT __seq FROM {q(ev.table)} ORDER BY __seq)"
            rows = con.sql(f"SELECT * FROM ({eng.features_sql(ev)}) POSITIONAL JOIN {seqs}").to_arrow_table()
            keep = pa.compute.greater_equal(rows.column("__seq"), offset)
            golds[ev.feature_set.name] = rows.filter(keep).drop(["__seq"]).append_column(
                "__bronze_version", pa.array([version] * int(pa.compute.sum(keep).as_py() or 0), pa.int64()))
    finally:
        eng.close()
    stats.records = loaded.rows_in - offset
    stats.silver, stats.quarantined, stats.duplicates = silver.num_rows, quarantine.num_rows, duplicates.num_rows
    _write(layout.silver, silver, version)
    _write(layout.quarantine, quarantine, version)
    _write(layout.duplicates, duplicates, version)
    for name, table in golds.items():
        _write(layout.gold / name, table, version)
        stats.gold[name] = table.num_rows
    return stats


def register_transform(app: Any) -> None:
    """Add ``evenflow transform`` to the ``evenflow`` command line."""

    @app.command("transform")
    def transform_command(
            pipeline: Annotated[Path, typer.Argument(help="pipeline YAML file")],
            bronze: Annotated[Path | None, typer.Option(help="bronze Delta table (default <lakehouse>/bronze)")] = None,
            follow: Annotated[bool, typer.Option(help="keep running, every --interval")] = False,
            interval: Annotated[str, typer.Option(help="time between runs with --follow")] = "5s",
            feature_set: Annotated[list[str] | None, typer.Option(help="feature set(s); default all")] = None,
            artifacts: Annotated[Path | None, typer.Option(help="a training set's artifacts.json")] = None,
    ) -> None:
        """Bronze → silver (valid records), quarantine, duplicates → gold (features), new versions only."""
        import time

        from evenflow.cli import _fail, _read_artifacts, console
        from evenflow.core.timeutil import parse_duration
        from evenflow.errors import EvenflowError

        try:
            p = Pipeline.load(pipeline)
            layout = Layout.under(p.output.lakehouse_path(), bronze)
            fitted = _read_artifacts(artifacts) if artifacts else None
            pause = parse_duration(interval) / 1e6
            while True:
                stats = transform(p, layout=layout, feature_sets=feature_set, artifacts=fitted)
                if stats.bronze_version is None:
                    console.print("nothing new in bronze", highlight=False)
                else:
                    console.print(f"bronze version {stats.bronze_version}: {stats.records:,} records → "
                                  f"silver {stats.silver:,}, quarantine {stats.quarantined:,}, duplicates "
                                  f"{stats.duplicates:,}, gold {stats.gold}", highlight=False)
                if not follow:
                    break
                time.sleep(pause)
        except EvenflowError as exc:
            _fail(exc)
        except KeyboardInterrupt:
            return
