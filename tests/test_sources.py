"""Every source kind reads the same events into the same features.

One small event table (ties in event time, nulls, several zone offsets, a duplicate id) is
written in every format evenflow reads: Parquet (one file and a glob of two), CSV, NDJSON,
Delta, a DuckDB database file, a PostgreSQL table, and Polars / pandas / Arrow frames. Each is
declared with the same schema and run through the same feature set; the outputs must be equal,
value for value, type for type, row for row.

Also: missing locations give a SourceError naming them; naive Parquet timestamps need ``tz=``;
training sets published to the PostgreSQL and DuckDB warehouses read back intact.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import evenflow as ef
from evenflow.batch.engine import BatchEngine
from evenflow.batch.publish import write_training_set
from evenflow.batch.training import build
from evenflow.core.source import Source

UTC = dt.UTC
T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def _t(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


# id, card, merchant, amount, n, flag, ts, how the ts is written in text formats
# (offset representations of the same instant)
EVENTS: list[tuple[Any, ...]] = [
    ("t01", "c1", "m1", 10.0, 1, True, _t(0), "Z"),
    ("t02", "c1", "m2", None, 2, False, _t(30), "+01:00"),
    ("t03", "c1", "m1", 20.25, 3, True, _t(60), "+00:00"),
    ("t04", "c1", "m3", 30.5, 4, False, _t(60), "-05:00"),       # ties with t03 at 10:00
    ("t05", "c2", None, 7.125, 5, True, _t(5), "+02:00"),
    ("t06", "c1", "m1", 40.0, 6, True, _t(80), "Z"),
    ("t07", "c2", "m2", 0.0, 7, False, _t(65.5), "+05:30"),
    ("t08", "c3", "m9", 1e-3, 8, True, _t(24 * 60), "Z"),
    ("t09", "c2", "m2", 99.99, 9, True, _t(66), "Z"),
    ("t07", "c2", "m2", 0.5, 10, False, _t(65.5), "Z"),          # same id and time as t07: dedup
    ("t10", "c1", "m2", 12.0, 11, False, _t(60 * 25), "+01:00"),
    ("t11", "c3", "m9", 3.0, 12, True, T0 + dt.timedelta(days=1, microseconds=1), "+01:00"),
]
COLUMNS = ["id", "card", "merchant", "amount", "n", "flag", "ts"]

SCHEMA = ef.Schema(id=ef.String(nullable=False), card=ef.String(nullable=False), merchant=ef.String(),
                   amount=ef.Float(ge=0), n=ef.Int(), flag=ef.Bool(), ts=ef.Timestamp())
ARROW_SCHEMA = pa.schema([("id", pa.string()), ("card", pa.string()), ("merchant", pa.string()),
                          ("amount", pa.float64()), ("n", pa.int64()), ("flag", pa.bool_()),
                          ("ts", pa.timestamp("us", tz="UTC"))])
SOURCE_ARGS: dict[str, Any] = {"schema": SCHEMA, "key": "card", "event_time": "ts", "name": "events"}


def arrow_events(rows: list[tuple[Any, ...]] = EVENTS) -> pa.Table:
    return pa.Table.from_pylist([dict(zip(COLUMNS, r[:7], strict=True)) for r in rows], schema=ARROW_SCHEMA)


def _iso(ts: dt.datetime, offset: str) -> str:
    if offset == "Z":
        return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")
    sign = 1 if offset[0] == "+" else -1
    hours, minutes = int(offset[1:3]), int(offset[4:6])
    zone = dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))
    return ts.astimezone(zone).isoformat()


def feature_set(source: Source) -> ef.FeatureSet:
    return ef.FeatureSet(
        "card", source=source, steps=[ef.Dedup("id", keep="last")],
        features=[
            ef.count(window="1h"), ef.count(window="1h", closed="left"),
            ef.sum("amount", window="1h"), ef.sum("n", window="1d"), ef.mean("amount", window="1d"),
            ef.min("amount", window="1d"), ef.max("amount", window="1d"),
            ef.std("amount", window="1d"), ef.var("amount"),
            ef.first("amount", window="1d"), ef.last("amount", window="1d"),
            ef.last("merchant", window="2h", closed="left"),
            ef.distinct("merchant", window="1d"), ef.since_last(),
            ef.derive("ratio", "amount / (sum_amount_1h + 1)"),
            ef.derive("hour", "hour(ts)"),
            ef.derive("flag_big", "flag and amount > 15"),
        ])


def features(source: Source) -> pa.Table:
    fs = feature_set(source)
    engine = BatchEngine(ef.Pipeline(name="sources", feature_sets=[fs]))
    try:
        return engine.features_at_events(fs)
    finally:
        engine.close()


# -- writers: each puts EVENTS somewhere and returns the Source that declares it ----------------

def src_parquet(tmp: Path, **_: Any) -> Source:
    pq.write_table(arrow_events(), tmp / "events.parquet")
    return ef.source.parquet(str(tmp / "events.parquet"), **SOURCE_ARGS)


def src_parquet_glob(tmp: Path, **_: Any) -> Source:
    (tmp / "parts").mkdir()
    table = arrow_events()
    # sorted path order is arrival order: part-0 holds the first rows
    pq.write_table(table.slice(0, 5), tmp / "parts" / "part-0.parquet")
    pq.write_table(table.slice(5), tmp / "parts" / "part-1.parquet")
    return ef.source.parquet(str(tmp / "parts" / "*.parquet"), **SOURCE_ARGS)


def _text_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def src_csv(tmp: Path, **_: Any) -> Source:
    lines = [",".join(COLUMNS)]
    for row in EVENTS:
        values = [_text_value(v) for v in row[:6]] + [_iso(row[6], row[7])]
        lines.append(",".join(values))
    (tmp / "events.csv").write_text("\n".join(lines) + "\n")
    return ef.source.csv(str(tmp / "events.csv"), **SOURCE_ARGS)


def src_ndjson(tmp: Path, **_: Any) -> Source:
    with open(tmp / "events.ndjson", "w") as out:
        for row in EVENTS:
            record = dict(zip(COLUMNS[:6], row[:6], strict=True))
            record["ts"] = _iso(row[6], row[7])
            out.write(json.dumps(record) + "\n")
    return ef.source.ndjson(str(tmp / "events.ndjson"), **SOURCE_ARGS)


def src_delta(tmp: Path, **_: Any) -> Source:
    from deltalake import write_deltalake

    write_deltalake(str(tmp / "events_delta"), arrow_events())
    return ef.source.delta(str(tmp / "events_delta"), **SOURCE_ARGS)


def src_duckdb(tmp: Path, **_: Any) -> Source:
    path = tmp / "events.duckdb"
    con = duckdb.connect(str(path))
    events = arrow_events()  # noqa: F841 - read by DuckDB's replacement scan
    con.execute("CREATE TABLE events AS SELECT * FROM events")
    con.close()
    return ef.source.duckdb(str(path), "events", **SOURCE_ARGS)


def src_postgres(tmp: Path, *, pg: tuple[str, str] | None = None, **_: Any) -> Source:
    import psycopg

    assert pg is not None
    dsn, schema = pg
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE TABLE "{schema}".events (id text, card text, merchant text, '
                     "amount double precision, n bigint, flag boolean, ts timestamptz)")
        with conn.cursor() as cur:
            cur.executemany(f'INSERT INTO "{schema}".events VALUES (%s, %s, %s, %s, %s, %s, %s)',
                            [r[:7] for r in EVENTS])
    return ef.source.postgres(dsn, f"{schema}.events", **SOURCE_ARGS)


def src_polars(tmp: Path, **_: Any) -> Source:
    import polars as pl

    frame = pl.DataFrame([dict(zip(COLUMNS, r[:7], strict=True)) for r in EVENTS],
                         schema={"id": pl.String, "card": pl.String, "merchant": pl.String,
                                 "amount": pl.Float64, "n": pl.Int64, "flag": pl.Boolean,
                                 "ts": pl.Datetime("us", "UTC")}, orient="row")
    return ef.source.frame(frame, **SOURCE_ARGS)


def src_pandas(tmp: Path, **_: Any) -> Source:
    import pandas as pd

    frame = pd.DataFrame([dict(zip(COLUMNS, r[:7], strict=True)) for r in EVENTS])
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    assert frame["amount"].isna().sum() == 1  # None became NaN: a pandas null
    return ef.source.frame(frame, **SOURCE_ARGS)


def src_arrow(tmp: Path, **_: Any) -> Source:
    return ef.source.frame(arrow_events(), **SOURCE_ARGS)


WRITERS: dict[str, Callable[..., Source]] = {
    "parquet": src_parquet, "parquet_glob": src_parquet_glob, "csv": src_csv, "ndjson": src_ndjson,
    "delta": src_delta, "duckdb": src_duckdb, "postgres": src_postgres, "polars": src_polars,
    "pandas": src_pandas, "arrow": src_arrow,
}


@pytest.fixture(scope="module")
def expected(tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    """Features over the Arrow table itself: the baseline every source must reproduce."""
    out = features(src_arrow(tmp_path_factory.mktemp("baseline")))
    # sanity: the baseline is the meaning of docs/semantics.md on this data
    rows = out.to_pylist()
    assert len(rows) == len(EVENTS) - 1  # one duplicate id dropped
    t04 = next(r for r in rows if r["id"] == "t04")
    assert t04["count_1h"] == 3 and t04["sum_amount_1h"] == 50.75  # t02 (null), t03, t04 at 10:00
    assert t04["last_amount_1d"] == 30.5  # tie at 10:00 broken by arrival: t04 after t03
    t07 = next(r for r in rows if r["id"] == "t07")
    assert t07["amount"] == 0.5 and t07["n"] == 10  # keep="last" kept the later arrival
    return out


@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.postgres) if k == "postgres" else k
                                  for k in WRITERS])
def test_every_source_kind_gives_identical_features(kind: str, tmp_path: Path, expected: pa.Table,
                                                    request: pytest.FixtureRequest) -> None:
    pg = None
    if kind == "postgres":
        pg = (request.getfixturevalue("pg_dsn"), request.getfixturevalue("pg_schema"))
    source = WRITERS[kind](tmp_path, pg=pg)
    out = features(source)
    assert [(f.name, f.type) for f in out.schema] == [(f.name, f.type) for f in expected.schema]
    got, want = out.to_pylist(), expected.to_pylist()
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g == w, f"{kind}: row {i} differs"


@pytest.mark.parametrize("kind", ["parquet", "csv", "ndjson", "delta", "duckdb", "arrow"])
def test_every_source_kind_accounts_for_every_record(kind: str, tmp_path: Path) -> None:
    source = WRITERS[kind](tmp_path)
    fs = feature_set(source)
    engine = BatchEngine(ef.Pipeline(name="sources", feature_sets=[fs]))
    ev = engine.prepare(fs)
    assert ev.accounting() == {"source": "events", "input": len(EVENTS), "output": len(EVENTS) - 1,
                               "quarantined": 0, "duplicates": 1, "reconciles": True}
    assert engine.quarantine().num_rows == 0


# -- errors ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda p: ef.source.parquet(str(p / "nope.parquet"), **SOURCE_ARGS),
    lambda p: ef.source.parquet(str(p / "nothing" / "*.parquet"), **SOURCE_ARGS),
    lambda p: ef.source.csv(str(p / "nope.csv"), **SOURCE_ARGS),
    lambda p: ef.source.ndjson(str(p / "nope.ndjson"), **SOURCE_ARGS),
    lambda p: ef.source.delta(str(p / "nope_delta"), **SOURCE_ARGS),
    lambda p: ef.source.duckdb(str(p / "nope.duckdb"), "events", **SOURCE_ARGS),
], ids=["parquet", "parquet_glob", "csv", "ndjson", "delta", "duckdb"])
def test_missing_location_gives_source_error_naming_it(make: Callable[[Path], Source],
                                                        tmp_path: Path) -> None:
    source = make(tmp_path)
    with pytest.raises(ef.SourceError) as info:
        features(source)
    assert source.path is not None
    assert source.path in str(info.value)
    assert info.value.fix


@pytest.mark.postgres
def test_missing_postgres_table_gives_source_error(pg_dsn: str, pg_schema: str) -> None:
    source = ef.source.postgres(pg_dsn, f"{pg_schema}.no_such_table", **SOURCE_ARGS)
    with pytest.raises(ef.SourceError) as info:
        features(source)
    assert "no_such_table" in str(info.value)


def test_missing_duckdb_table_gives_source_error(tmp_path: Path) -> None:
    src_duckdb(tmp_path)
    source = ef.source.duckdb(str(tmp_path / "events.duckdb"), "other", **SOURCE_ARGS)
    with pytest.raises(ef.SourceError) as info:
        features(source)
    assert "other" in str(info.value)


def _naive_parquet(path: Path) -> None:
    table = pa.table({"card": ["a", "a", "b"], "amount": [1.0, 2.0, 3.0],
                      "ts": pa.array([dt.datetime(2026, 1, 15, 12, 0), dt.datetime(2026, 7, 1, 12, 0),
                                      dt.datetime(2026, 3, 29, 3, 30)], pa.timestamp("us"))})
    pq.write_table(table, path)


def test_naive_parquet_timestamps_without_tz_raise_clear_source_error(tmp_path: Path) -> None:
    _naive_parquet(tmp_path / "naive.parquet")
    schema = ef.Schema(card=ef.String(), amount=ef.Float(), ts=ef.Timestamp())
    source = ef.source.parquet(str(tmp_path / "naive.parquet"), schema=schema, key="card",
                               event_time="ts")
    with pytest.raises(ef.SourceError) as info:
        features(source)
    err = info.value
    assert err.field == "ts"
    assert "time zone" in err.message
    assert err.fix and "tz=" in err.fix
    assert str(tmp_path / "naive.parquet") in str(err)


def test_naive_parquet_timestamps_with_tz_are_converted(tmp_path: Path) -> None:
    _naive_parquet(tmp_path / "naive.parquet")
    schema = ef.Schema(card=ef.String(), amount=ef.Float(), ts=ef.Timestamp(tz="Europe/Paris"))
    source = ef.source.parquet(str(tmp_path / "naive.parquet"), schema=schema, key="card",
                               event_time="ts")
    fs = ef.FeatureSet("card", source=source, features=[ef.count(window="1h")])
    out = BatchEngine(ef.Pipeline(name="tz", feature_sets=[fs])).features_at_events(fs)
    assert out.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert [t.astimezone(UTC) for t in out.column("ts").to_pylist()] == [
        dt.datetime(2026, 1, 15, 11, 0, tzinfo=UTC),   # CET, +01:00
        dt.datetime(2026, 7, 1, 10, 0, tzinfo=UTC),    # CEST, +02:00
        dt.datetime(2026, 3, 29, 1, 30, tzinfo=UTC),   # 03:30 on the DST day is CEST
    ]


# -- warehouses ------------------------------------------------------------------------------------

def _training_pipeline(tmp: Path, name: str, output: ef.Output) -> ef.Pipeline:
    events = src_parquet(tmp)
    # label rows carry the fields the derived features read (amount, flag), as in examples/fraud
    labels = arrow_events().select(["id", "card", "amount", "flag", "ts"]).append_column(
        "label", pa.array([i % 2 for i in range(len(EVENTS))], pa.int64()))
    label_src = ef.source.frame(labels, name="labels", key="card", event_time="ts")
    fs = feature_set(events)
    spec = ef.TrainingSetSpec(name=name, labels=label_src, label="label", features=[fs],
                              split=ef.RandomSplit(test_size=0.3, seed=1))
    return ef.Pipeline(name="wh", feature_sets=[fs], training_set=spec, output=output)


@pytest.mark.postgres
def test_training_set_written_to_postgres_warehouse_reads_back(tmp_path: Path, pg_dsn: str,
                                                               pg_schema: str) -> None:
    import psycopg

    output = ef.Output(directory=str(tmp_path / "out"), warehouse=pg_dsn)
    name = f"{pg_schema}.ts_v1"
    pipeline = _training_pipeline(tmp_path, name, output)
    ts = build(pipeline)
    written = write_training_set(ts, output)
    assert written["warehouse"].endswith(f"#{name}")
    with psycopg.connect(pg_dsn) as conn:
        tables = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                              (pg_schema,)).fetchall()
        assert tables == [("ts_v1",)]
        cols = [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
            "AND table_name = 'ts_v1' ORDER BY ordinal_position", (pg_schema,)).fetchall()]
        assert cols == ts.table.column_names
        (n,) = conn.execute(f'SELECT count(*) FROM "{pg_schema}"."ts_v1"').fetchone()
        assert n == ts.table.num_rows > 0
        rows = conn.execute(f'SELECT id, ts, label, split, "card__sum_amount_1h", "card__std_amount_1d", '
                            f'"card__flag_big" FROM "{pg_schema}"."ts_v1" ORDER BY id, ts').fetchall()
    want = sorted(((r["id"], r["ts"], r["label"], r["split"], r["card__sum_amount_1h"],
                    r["card__std_amount_1d"], r["card__flag_big"]) for r in ts.table.to_pylist()),
                  key=lambda r: (r[0], r[1]))
    assert len(rows) == len(want)
    for got, exp in zip(rows, want, strict=True):
        assert got[:4] == exp[:4]
        assert got[4] == pytest.approx(exp[4], rel=1e-12) if exp[4] is not None else got[4] is None
        assert got[5] == pytest.approx(exp[5], rel=1e-12) if exp[5] is not None else got[5] is None
        assert got[6] == exp[6]


@pytest.mark.postgres
def test_postgres_warehouse_overwrites_on_rerun(tmp_path: Path, pg_dsn: str, pg_schema: str) -> None:
    import psycopg

    output = ef.Output(directory=str(tmp_path / "out"), warehouse=pg_dsn)
    name = f"{pg_schema}.ts_v1"
    pipeline = _training_pipeline(tmp_path, name, output)
    for _ in range(2):
        ts = build(pipeline)
        write_training_set(ts, output)
    with psycopg.connect(pg_dsn) as conn:
        (n,) = conn.execute(f'SELECT count(*) FROM "{pg_schema}"."ts_v1"').fetchone()
    assert n == ts.table.num_rows


def test_training_set_written_to_duckdb_warehouse_reads_back(tmp_path: Path) -> None:
    output = ef.Output(directory=str(tmp_path / "out"))
    pipeline = _training_pipeline(tmp_path, "ts_v1", output)
    ts = build(pipeline)
    written = write_training_set(ts, output)
    path = tmp_path / "out" / "warehouse.duckdb"
    assert written["warehouse"] == f"{path}#ts_v1"
    con = duckdb.connect(str(path), read_only=True)
    try:
        back = con.sql("SELECT * FROM ts_v1").to_arrow_table()
    finally:
        con.close()
    assert back.column_names == ts.table.column_names
    assert back.num_rows == ts.table.num_rows
    assert back.to_pylist() == ts.table.to_pylist()
    parquet = pq.read_table(tmp_path / "out" / "ts_v1" / "training_set.parquet")
    assert parquet.num_rows == ts.table.num_rows
    assert set(parquet.column("split").to_pylist()) == {"train", "test"}


def test_training_set_derived_feature_over_field_the_label_rows_lack_is_null(tmp_path: Path) -> None:
    """docs/semantics.md section 5: the record is the label row; "a name the record lacks is null"."""
    events = src_parquet(tmp_path)
    labels = arrow_events().select(["id", "card", "ts"]).append_column(
        "label", pa.array([i % 2 for i in range(len(EVENTS))], pa.int64()))
    label_src = ef.source.frame(labels, name="labels", key="card", event_time="ts")
    fs = ef.FeatureSet("card", source=events, features=[
        ef.sum("amount", window="1h"), ef.derive("ratio", "amount / (sum_amount_1h + 1)")])
    spec = ef.TrainingSetSpec(name="ts", labels=label_src, label="label", features=[fs],
                              split=ef.RandomSplit(test_size=0.3, seed=1))
    ts = build(ef.Pipeline(name="wh", feature_sets=[fs], training_set=spec))
    assert ts.table.num_rows > 0
    assert set(ts.table.column("card__ratio").to_pylist()) == {None}
