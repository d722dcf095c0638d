"""Validation of typed sources (Parquet, frames): a source read as its declared types, whose
records cannot fail, stays a view over the raw relation; any failing record, or a type to
convert, takes the one checking pass. Both give the same rows, quarantine and counts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import evenflow as ef
from evenflow.batch.engine import BatchEngine

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _events(cards: list[str | None], amounts: list[float | None]) -> pa.Table:
    return pa.table({
        "card": pa.array(cards, pa.string()),
        "ts": pa.array([T0 + dt.timedelta(minutes=i) for i in range(len(cards))], pa.timestamp("us", tz="UTC")),
        "amount": pa.array(amounts, pa.float64()),
    })


def _load(tmp_path: Path, table: pa.Table, schema: ef.Schema) -> tuple[BatchEngine, list[dict[str, object]]]:
    path = tmp_path / "ev.parquet"
    pq.write_table(table, path)
    src = ef.source.parquet(str(path), name="ev", key="card", event_time="ts", schema=schema)
    fs = ef.FeatureSet("card", source=src, features=[ef.count(window="1h")])
    eng = BatchEngine(ef.Pipeline(name="p", feature_sets=[fs]))
    loaded = eng.load_source("ev")
    rows = eng.con.sql(f'SELECT * FROM "{loaded.table}" ORDER BY __seq').to_arrow_table().to_pylist()
    return eng, rows


def _materialized(eng: BatchEngine) -> bool:
    return bool(eng.con.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name = "
                            "'src__ev__checked'").fetchall()[0][0])


SCHEMA = ef.Schema(card=ef.String(nullable=False), ts=ef.Timestamp(), amount=ef.Float())


def test_clean_typed_parquet_is_not_copied_and_keeps_every_row(tmp_path: Path) -> None:
    table = _events(["a", "b", "a"], [1.0, None, 3.0])
    eng, rows = _load(tmp_path, table, SCHEMA)
    assert not _materialized(eng)
    assert rows == [{**r, "__seq": i} for i, r in enumerate(table.to_pylist())]
    assert eng.quarantine().num_rows == 0
    assert eng._loaded["ev"].rows_in == 3 and eng._loaded["ev"].quarantined == 0


def test_a_null_key_in_typed_parquet_is_quarantined_by_the_checking_pass(tmp_path: Path) -> None:
    table = _events(["a", None, "a"], [1.0, 2.0, 3.0])
    eng, rows = _load(tmp_path, table, SCHEMA)
    assert _materialized(eng)
    assert [r["__seq"] for r in rows] == [0, 2]
    q = eng.quarantine().to_pylist()
    assert [(r["record"], r["reason"], r["field"], r["step"]) for r in q] == [(1, "null", "card", "schema")]
    assert eng._loaded["ev"].rows_in == 3 and eng._loaded["ev"].quarantined == 1


@pytest.mark.parametrize(("amounts", "copied", "quarantined"), [
    ([1.0, 0.0, None], False, []),              # bounds hold (a null is not out of range)
    ([1.0, -2.0, None], True, [(1, "out_of_range", "amount")]),
])
def test_bounds_on_typed_parquet_are_checked_before_the_copy_is_skipped(
        tmp_path: Path, amounts: list[float | None], copied: bool, quarantined: list[tuple[int, str, str]]) -> None:
    schema = ef.Schema(card=ef.String(nullable=False), ts=ef.Timestamp(), amount=ef.Float(ge=0))
    eng, rows = _load(tmp_path, _events(["a", "b", "c"], amounts), schema)
    assert _materialized(eng) is copied
    assert [(r["record"], r["reason"], r["field"]) for r in eng.quarantine().to_pylist()] == quarantined
    assert len(rows) == 3 - len(quarantined)


def test_a_column_of_another_type_is_converted_by_the_checking_pass(tmp_path: Path) -> None:
    table = _events(["a", "b"], [1.0, 2.0]).set_column(2, "amount", pa.array([1, 2], pa.int64()))
    eng, rows = _load(tmp_path, table, SCHEMA)
    assert _materialized(eng)
    assert [r["amount"] for r in rows] == [1.0, 2.0]
    assert all(isinstance(r["amount"], float) for r in rows)
