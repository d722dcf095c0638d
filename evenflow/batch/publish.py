"""Write a run's results: warehouse table, Parquet export, Delta tables, card, quarantine.

Layout under the pipeline's ``output.directory`` (default ``out``)::

    warehouse.duckdb                     the warehouse (unless output.warehouse points elsewhere)
    <name>/training_set.parquet          Parquet export, with a ``split`` column
    <name>/card.json, card.md            the dataset card
    <name>/artifacts.json                fitted step artifacts, keyed by step
    <name>/checks.json                   contamination and leakage findings of the build
    runs/<run id>.json                   `evenflow run`: accounting, quarantine counts, outputs
    lakehouse/bronze/<source>            raw records as read (Delta)
    lakehouse/silver/<feature set>       validated, cleaned events (Delta)
    lakehouse/gold/<name>                features (Delta)
    lakehouse/quarantine                 rejected records with reason, field, step (Delta, appended)
    lakehouse/duplicates                 dropped duplicates pointing at the kept record (Delta, appended)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evenflow.batch.engine import BatchEngine, PreparedEvents
from evenflow.batch.training import TrainingSet, card_markdown
from evenflow.core.pipeline import Output
from evenflow.quality.validate import lit, q
from evenflow.stores.lakehouse import land_raw, write_delta
from evenflow.stores.warehouse import write_table


def write_side_tables(engine: BatchEngine, output: Output) -> dict[str, str]:
    """Bronze landing of every loaded source, and this run's quarantine and duplicates."""
    lake = output.lakehouse_path()
    written: dict[str, str] = {}
    for name, loaded in engine._loaded.items():
        with engine.stage(f"land raw {name} (bronze)"):
            # streamed in batches: the raw text of a large source never sits in memory whole
            cols = ", ".join(f"CAST({q(c)} AS VARCHAR) AS {q(c)}" for c in loaded.raw_columns)
            raw = engine.con.sql(f"SELECT {lit(engine.run_id)} AS _run_id, {lit(name)} AS _source, "
                                 f"__seq AS _record, {cols} FROM {q(loaded.raw)}").arrow()
            land_raw(lake / "bronze" / name, raw, source=name, run_id=engine.run_id)
            written[f"bronze/{name}"] = str(lake / "bronze" / name)
    for table in ("quarantine", "duplicates"):
        data = engine.con.sql(f"SELECT {lit(engine.run_id)} AS run_id, now() AS written_at, * "
                              f"FROM __{table}").to_arrow_table()
        if data.num_rows:
            write_delta(lake / table, data, mode="append", metadata={"run_id": engine.run_id})
            written[table] = str(lake / table)
    return written


def write_training_set(ts: TrainingSet, output: Output) -> dict[str, str]:
    """Publish a training set everywhere it belongs; return what went where."""
    eng = ts.engine
    folder = Path(output.directory) / ts.name
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    with eng.stage("write warehouse table"):
        written["warehouse"] = write_table(eng.con, "SELECT * FROM __training_set",
                                           output.warehouse_url(), ts.name)
    with eng.stage("write Parquet export"):
        path = folder / "training_set.parquet"
        eng.con.execute(f"COPY (SELECT * FROM __training_set) TO {lit(str(path))} (FORMAT parquet)")
        written["parquet"] = str(path)
    with eng.stage("write gold Delta table"):
        gold = output.lakehouse_path() / "gold" / ts.name
        write_delta(gold, ts.table, mode="overwrite",
                    metadata={"fingerprint": ts.fingerprint, "run_id": eng.run_id})
        written["gold"] = str(gold)
    written.update(write_side_tables(eng, output))
    ts.card["outputs"] = written
    (folder / "artifacts.json").write_text(json.dumps(ts.artifacts, indent=2, sort_keys=True, default=str))
    (folder / "card.json").write_text(json.dumps(ts.card, indent=2, default=str))
    if ts.findings:  # contamination and leakage checks of the build, in full (evidence, rows)
        from evenflow.verify.findings import findings_json

        (folder / "checks.json").write_text(findings_json(ts.findings))
        written["checks"] = str(folder / "checks.json")
    (folder / "card.md").write_text(card_markdown(ts.card))
    written["card"] = str(folder / "card.json")
    return written


def write_features(engine: BatchEngine, prepared: list[PreparedEvents], output: Output) -> dict[str, Any]:
    """``evenflow run``: cleaned events (silver) and features at every event (gold)."""
    lake = output.lakehouse_path()
    written: dict[str, Any] = {}
    for ev in prepared:
        name = ev.feature_set.name
        with engine.stage(f"write silver/{name}"):
            silver = engine.con.sql(f"SELECT * EXCLUDE (__seq) FROM {q(ev.table)} ORDER BY __seq").arrow()
            write_delta(lake / "silver" / name, silver, mode="overwrite",
                        metadata={"run_id": engine.run_id})
        with engine.stage(f"features {name} at every event -> gold/{name}"):
            gold = engine.con.sql(engine.features_sql(ev)).arrow()
            write_delta(lake / "gold" / name, gold, mode="overwrite", metadata={"run_id": engine.run_id})
        with engine.stage(f"write warehouse table {name}"):
            write_table(engine.con, engine.features_sql(ev), output.warehouse_url(), name)
        written[name] = {"silver": str(lake / "silver" / name), "gold": str(lake / "gold" / name)}
    written.update(write_side_tables(engine, output))
    summary = {"run_id": engine.run_id, "pipeline": engine.pipeline.name,
               "fingerprint": engine.pipeline.fingerprint({k: v for ev in prepared
                                                           for k, v in ev.artifacts.items()}),
               "accounting": [{"feature_set": ev.feature_set.name, **ev.accounting()} for ev in prepared],
               "quarantine": engine.quarantine_counts(), "outputs": written}
    runs = Path(output.directory) / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    (runs / f"{engine.run_id}.json").write_text(json.dumps(summary, indent=2, default=str))
    written["summary"] = str(runs / f"{engine.run_id}.json")
    return written
