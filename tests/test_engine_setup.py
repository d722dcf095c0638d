"""The batch engine's connection settings and its row accounting on typed sources."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

import evenflow as ef
from evenflow.batch.engine import BatchEngine
from evenflow.core.source import Source

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _pipeline(src: Source) -> tuple[ef.Pipeline, ef.FeatureSet]:
    fs = ef.FeatureSet("card", source=src, features=[ef.last("amount")])
    return ef.Pipeline(name="p", feature_sets=[fs]), fs


def _write(tmp_path: Path, cards: list[str | None], amounts: list[float]) -> str:
    path = tmp_path / "tx.parquet"
    ts = [T0 + dt.timedelta(minutes=i) for i in range(len(cards))]
    pq.write_table(pa.table({"card": pa.array(cards, pa.string()), "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
                             "amount": amounts}), path)
    return str(path)


def test_settings_are_applied(tmp_path: Path) -> None:
    src = ef.source.parquet(_write(tmp_path, ["a"], [1.0]), name="tx", key="card", event_time="ts")
    pipeline, _ = _pipeline(src)
    engine = BatchEngine(pipeline, memory_limit="1GB", threads=1, temp_directory=str(tmp_path / "spill"))
    settings = dict(engine.con.sql(
        "SELECT name, value FROM duckdb_settings() WHERE name IN ('TimeZone', 'memory_limit', "
        "'threads', 'temp_directory', 'preserve_insertion_order', 'enable_progress_bar', "
        "'enable_progress_bar_print')").fetchall())
    assert settings["TimeZone"] == "UTC"
    assert settings["threads"] == "1"
    assert settings["temp_directory"] == str(tmp_path / "spill")
    assert settings["memory_limit"] in ("953.6 MiB", "1.0 GB", "1000.0 MB")
    assert settings["preserve_insertion_order"] == "true"
    assert (settings["enable_progress_bar"], settings["enable_progress_bar_print"]) == ("true", "false")
    tables = {r[0] for r in engine.con.sql("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert {"__quarantine", "__duplicates"} <= tables


def test_a_silent_stage_starts_no_thread(tmp_path: Path) -> None:
    src = ef.source.parquet(_write(tmp_path, ["a"], [1.0]), name="tx", key="card", event_time="ts")
    engine = BatchEngine(_pipeline(src)[0])
    before = threading.active_count()
    with engine.stage("nothing to report"):
        assert threading.active_count() == before


def test_clean_typed_source_counts(tmp_path: Path) -> None:
    src = ef.source.parquet(_write(tmp_path, ["a", "b", "a"], [1.0, 2.0, 3.0]), name="tx", key="card",
                            event_time="ts")
    pipeline, fs = _pipeline(src)
    ev = BatchEngine(pipeline).prepare(fs)
    assert (ev.loaded.rows_in, ev.loaded.quarantined) == (3, 0)
    assert ev.accounting() == {"source": "tx", "input": 3, "output": 3, "quarantined": 0,
                               "duplicates": 0, "reconciles": True}


def test_typed_source_with_a_null_key_counts(tmp_path: Path) -> None:
    src = ef.source.parquet(_write(tmp_path, ["a", None, "a"], [1.0, 2.0, 3.0]), name="tx", key="card",
                            event_time="ts")
    pipeline, fs = _pipeline(src)
    engine = BatchEngine(pipeline)
    ev = engine.prepare(fs)
    assert (ev.loaded.rows_in, ev.loaded.quarantined, ev.rows_out) == (3, 1, 2)
    assert engine.quarantine_counts() == {"null": 1}


def test_contract_and_unique_quarantine_are_counted(tmp_path: Path) -> None:
    path = _write(tmp_path, ["a", "b", "b", "c"], [1.0, -2.0, 3.0, 4.0])
    schema = ef.Schema(card=ef.String(), ts=ef.Timestamp(), amount=ef.Float(unique=True))
    src = ef.source.parquet(path, name="tx", key="card", event_time="ts", schema=schema,
                            contracts=[ef.rule("positive", "amount >= 0")])
    pipeline, fs = _pipeline(src)
    engine = BatchEngine(pipeline)
    ev = engine.prepare(fs)
    assert (ev.loaded.rows_in, ev.loaded.quarantined) == (4, 1)
    assert ev.rows_out == 3 and ev.accounting()["reconciles"]

    dup = _write(tmp_path, ["a", "b", "c"], [1.0, 1.0, 4.0])
    src = ef.source.parquet(dup, name="tx", key="card", event_time="ts", schema=schema)
    pipeline, fs = _pipeline(src)
    ev = BatchEngine(pipeline).prepare(fs)
    assert (ev.loaded.rows_in, ev.loaded.quarantined, ev.rows_out) == (3, 0, 2)
    assert ev.accounting() == {"source": "tx", "input": 3, "output": 2, "quarantined": 1,
                               "duplicates": 0, "reconciles": True}
