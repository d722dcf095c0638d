"""The lookup plan on clean typed Parquet, read by Arrow without DuckDB, against the DuckDB path.

``features_at`` reads clean typed Parquet sources straight into Arrow when the lookup plan
answers (``evenflow.io.parquet_arrow``). An engine whose DuckDB connection is already open
keeps the DuckDB path, so each test runs both on the same files and compares the tables
(values, types, order, metadata), the quarantine and which path ran.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from test_lookup_plan import FEATURES, feature_rows, query_rows  # the tests directory is on the path

import evenflow as ef
from evenflow.batch.engine import BatchEngine
from evenflow.batch.retrieval import features_at
from evenflow.io.parquet_arrow import clean_parquet, duckdb_type

TS = pa.timestamp("us", tz="UTC")
BASE = int(dt.datetime(2026, 3, 2, 8, tzinfo=dt.UTC).timestamp()) * 1_000_000
MINUTE = 60_000_000


class Stages:
    """A reporter that records the stages the engine reports."""

    def __init__(self) -> None:
        self.names: list[str] = []

    @contextlib.contextmanager
    def stage(self, name: str, *, total: int | None = None) -> Iterator[Callable[[float], None]]:
        self.names.append(name)
        yield lambda percent: None


def _engine(points: ef.Source, sets: list[ef.FeatureSet], *, connected: bool) -> BatchEngine:
    pipeline = ef.Pipeline(name="features_at", sources={points.name: points}, feature_sets=sets)
    eng = BatchEngine(pipeline, reporter=Stages())
    if connected:  # an engine already in use keeps DuckDB
        eng.con.execute("SELECT 1")
    return eng


def _both(points: ef.Source, sets: list[ef.FeatureSet], **kw) -> tuple[pa.Table, BatchEngine, BatchEngine]:
    """Both paths on the same sources: the Arrow path's table, and both engines after the call.

    Asserts the two tables and quarantines are identical.
    """
    arrow = _engine(points, sets, connected=False)
    duck = _engine(points, sets, connected=True)
    got = features_at(points, sets, engine=arrow, **kw)
    arrow.reporter.connected_by_call = arrow.connected  # type: ignore[attr-defined]
    want = features_at(points, sets, engine=duck, **kw)
    assert got.equals(want, check_metadata=True)
    assert got.schema.metadata == want.schema.metadata
    duck.reporter.connected_by_call = True  # type: ignore[attr-defined]
    assert _took_duckdb(duck)
    assert arrow.quarantine().equals(duck.quarantine())
    assert arrow.quarantine_counts() == duck.quarantine_counts()
    return got, arrow, duck


def _took_arrow(eng: BatchEngine, *sets: str) -> bool:
    """Whether the call answered every set in Arrow, without opening DuckDB (the quarantine
    asked for afterwards opens it)."""
    names = eng.reporter.names  # type: ignore[attr-defined]
    return (not eng.reporter.connected_by_call  # type: ignore[attr-defined]
            and all(f"features {s} at query rows (Arrow)" in names for s in sets))


def _took_duckdb(eng: BatchEngine) -> bool:
    return eng.reporter.connected_by_call and not any(  # type: ignore[attr-defined]
        "(Arrow)" in s for s in eng.reporter.names)  # type: ignore[attr-defined]


def _t(*minutes: int | None) -> pa.Array:
    return pa.array([None if m is None else BASE + m * MINUTE for m in minutes], TS)


def _write(path: Path, table: pa.Table, **kw) -> str:
    pq.write_table(table, path, **kw)
    return str(path)


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(events=feature_rows(), queries=query_rows())
def test_arrow_path_matches_duckdb_path(events, queries):
    """Nulls in every value column, ties and exact duplicates in the events, shuffled arrival,
    repeated query rows, rows on an event time, before a key's first event, on keys without
    events; first and last, closed right and left."""
    with tempfile.TemporaryDirectory() as tmp:
        ev = _write(Path(tmp) / "ev.parquet", pa.table({
            "card": pa.array([e["card"] for e in events], pa.string()),
            "ts": pa.array([e["event_time"] for e in events], TS),
            "amount": pa.array([e["amount"] for e in events], pa.float64()),
            "qty": pa.array([e["qty"] for e in events], pa.int64()),
            "merchant": pa.array([e["merchant"] for e in events], pa.string())}))
        q = _write(Path(tmp) / "q.parquet", pa.table({
            "card": pa.array([r["card"] for r in queries], pa.string()),
            "ts": pa.array([r["t"] for r in queries], TS),
            "row": pa.array(range(len(queries)), pa.int64())}))
        fs = ef.FeatureSet("fs", source=ef.source.parquet(ev, name="tx", key="card", event_time="ts"),
                           features=FEATURES)
        points = ef.source.parquet(q, name="rows", key="card", event_time="ts")
        got, arrow, _ = _both(points, [fs])
        assert _took_arrow(arrow, "fs")
        assert got.equals(features_at(points, [fs], plan="window"), check_metadata=True)


def test_edge_rows_several_sets_and_a_two_part_key(tmp_path: Path) -> None:
    """Rows without history, an entity without rows, duplicate (entity, time) rows in the events
    (the later arrival wins) and in the query rows, a query exactly at an event time."""
    ev = _write(tmp_path / "ev.parquet", pa.table({
        "shop": ["s1", "s1", "s2", "s1", "s2", "s1"], "till": [1, 2, 1, 1, 1, 1],
        "ts": _t(0, 5, 5, 10, 1, 10), "price": [1.0, 2.0, 3.0, None, 9.0, 4.0],
        "tag": ["a", None, "c", "d", "e", "f"]}))
    q = _write(tmp_path / "q.parquet", pa.table({
        "shop": ["s1", "s1", "s2", "s3", "s1", "s1", "s2"], "till": [1, 1, 1, 1, 1, 2, 1],
        "at": _t(10, 10, 0, 7, -1, 5, 5), "label": [0, 1, 0, 1, 0, 1, 1]}))
    src = ef.source.parquet(ev, name="ev", key=["shop", "till"], event_time="ts")
    points = ef.source.parquet(q, name="q", key=["shop", "till"], event_time="at")
    sets = [ef.FeatureSet("a", source=src, features=[ef.last("price"), ef.first("price", closed="left"),
                                                     ef.last("tag", closed="left")]),
            ef.FeatureSet("b", source=src, features=[ef.last("tag")])]
    got, arrow, _ = _both(points, sets)
    assert _took_arrow(arrow, "a", "b")
    # (s1, 1) at 10: the rows at 10 arrive as price None then 4.0; the latest non-null is 4.0
    assert got.column("a__last_price").to_pylist() == [4.0, 4.0, None, None, None, 2.0, 3.0]
    assert got.column("b__last_tag").to_pylist() == ["f", "f", None, None, None, None, "c"]
    assert got.schema.metadata[b"rows_without_history"] == b'{"a": 3, "b": 3}'
    assert got.equals(features_at(points, sets, plan="join"), check_metadata=True)


def test_several_files_arrive_in_file_order(tmp_path: Path) -> None:
    """A glob: ``__seq`` runs on across the files, so of a tie between files, the later file is the last."""
    for i, value in enumerate([1.0, 2.0, 3.0]):
        _write(tmp_path / f"part-{i}.parquet", pa.table({"card": ["a", "b"], "ts": _t(0, i), "v": [value, value]}))
    q = _write(tmp_path / "q.parquet", pa.table({"card": ["a", "b", "b"], "ts": _t(0, 1, 5)}))
    fs = ef.FeatureSet("f", source=ef.source.parquet(str(tmp_path / "part-*.parquet"), name="ev", key="card",
                                                     event_time="ts"), features=[ef.last("v"), ef.first("v")])
    got, arrow, _ = _both(ef.source.parquet(q, name="q", key="card", event_time="ts"), [fs])
    assert _took_arrow(arrow, "f")
    assert got.column("f__last_v").to_pylist() == [3.0, 2.0, 3.0]
    assert got.column("f__first_v").to_pylist() == [1.0, 1.0, 1.0]  # the earliest arrival


def test_a_possible_null_in_a_required_column_takes_duckdb_and_quarantines(tmp_path: Path) -> None:
    """A null key in the events and a null declared-non-nullable value: the statistics show
    them, so DuckDB validates and quarantines exactly as before."""
    ev = _write(tmp_path / "ev.parquet", pa.table({"card": ["a", None, "b"], "ts": _t(0, 1, 2),
                                                   "v": [1.0, 2.0, None]}))
    q = _write(tmp_path / "q.parquet", pa.table({"card": ["a", "b"], "ts": _t(5, 5)}))
    schema = ef.Schema(card=ef.String(), ts=ef.Timestamp(), v=ef.Float(nullable=False))
    src = ef.source.parquet(ev, name="ev", key="card", event_time="ts", schema=schema)
    assert clean_parquet(src) is None
    fs = ef.FeatureSet("f", source=src, features=[ef.last("v")])
    got, arrow, _ = _both(ef.source.parquet(q, name="q", key="card", event_time="ts"), [fs])
    assert _took_duckdb(arrow)
    assert got.column("f__last_v").to_pylist() == [1.0, None]
    assert [(r["record"], r["reason"], r["field"]) for r in arrow.quarantine().to_pylist()] == [
        (1, "null", "card"), (2, "null", "v")]
    # a null in the query rows' key: the query row is quarantined, the other rows come back
    q2 = _write(tmp_path / "q2.parquet", pa.table({"card": ["a", None], "ts": _t(5, 5)}))
    clean = _write(tmp_path / "clean.parquet", pa.table({"card": ["a"], "ts": _t(0), "v": [1.0]}))
    fs2 = ef.FeatureSet("f", source=ef.source.parquet(clean, name="ev", key="card", event_time="ts"),
                        features=[ef.last("v")])
    got, arrow, _ = _both(ef.source.parquet(q2, name="q", key="card", event_time="ts"), [fs2])
    assert _took_duckdb(arrow) and got.column("f__last_v").to_pylist() == [1.0]
    assert [(r["record"], r["reason"]) for r in arrow.quarantine().to_pylist()] == [(1, "null")]


def test_missing_statistics_take_duckdb(tmp_path: Path) -> None:
    """Without statistics a null cannot be ruled out: never guess."""
    ev = _write(tmp_path / "ev.parquet", pa.table({"card": ["a", "b"], "ts": _t(0, 1), "v": [1.0, 2.0]}),
                write_statistics=False)
    q = _write(tmp_path / "q.parquet", pa.table({"card": ["a", "b"], "ts": _t(5, 0)}))
    src = ef.source.parquet(ev, name="ev", key="card", event_time="ts")
    assert clean_parquet(src) is None
    # a required column (not nullable in the file) holds no null whatever its statistics say
    required = pa.schema([pa.field("card", pa.string(), nullable=False), pa.field("ts", TS, nullable=False),
                          pa.field("v", pa.float64())])
    ev2 = _write(tmp_path / "ev2.parquet", pa.table({"card": ["a", "b"], "ts": _t(0, 1), "v": [1.0, 2.0]},
                                                    schema=required), write_statistics=False)
    assert clean_parquet(ef.source.parquet(ev2, name="ev", key="card", event_time="ts")) is not None
    fs = ef.FeatureSet("f", source=src, features=[ef.last("v")])
    got, arrow, _ = _both(ef.source.parquet(q, name="q", key="card", event_time="ts"), [fs])
    assert _took_duckdb(arrow) and got.column("f__last_v").to_pylist() == [1.0, None]


def test_declared_schemas_types_and_zones(tmp_path: Path) -> None:
    """A declared subset of the columns, a non-nullable field without nulls, timestamps stored
    with another zone, large strings: the same values and types as DuckDB's."""
    paris = pa.timestamp("us", tz="Europe/Paris")
    ev = _write(tmp_path / "ev.parquet", pa.table({
        "card": pa.array(["a", "a", "b"], pa.large_string()), "ts": _t(0, 1, 2).cast(paris),
        "v": [1.0, 2.0, 3.0], "ok": [True, None, False], "n": [1, 2, 3], "extra": pa.array([1, 2, 3], pa.int32())}))
    q = _write(tmp_path / "q.parquet", pa.table({"card": ["a", "b"], "ts": _t(1, 2), "known": _t(3, 2)}))
    schema = ef.Schema(card=ef.String(), ts=ef.Timestamp(), v=ef.Float(nullable=False), ok=ef.Bool(), n=ef.Int())
    src = ef.source.parquet(ev, name="ev", key="card", event_time="ts", schema=schema)
    fs = ef.FeatureSet("f", source=src, features=[ef.last("v"), ef.last("ok"), ef.first("n"), ef.last("ts")])
    points = ef.source.parquet(q, name="q", key="card", event_time="ts")
    got, arrow, _ = _both(points, [fs], knowledge_time="known")
    assert _took_arrow(arrow, "f")
    assert got.column("f__last_ok").to_pylist() == [True, False]
    assert got.schema.field("f__last_ts").type == TS
    # an int32 column is not read as an Int unchanged: the inferred schema takes DuckDB
    assert clean_parquet(ef.source.parquet(ev, name="ev", key="card", event_time="ts")) is None


def test_a_knowledge_time_before_the_row_time(tmp_path: Path) -> None:
    ev = _write(tmp_path / "ev.parquet", pa.table({"card": ["a", "a"], "ts": _t(0, 5), "v": [1.0, 2.0]}))
    q = _write(tmp_path / "q.parquet", pa.table({"card": ["a", "a"], "ts": _t(6, 6), "known": _t(6, 3)}))
    fs = ef.FeatureSet("f", source=ef.source.parquet(ev, name="ev", key="card", event_time="ts"),
                       features=[ef.last("v")])
    points = ef.source.parquet(q, name="q", key="card", event_time="ts")
    with pytest.raises(ef.DefinitionError, match="knowledge time"):
        features_at(points, [fs], knowledge_time="known", plan="lookup")
    got, _, _ = _both(points, [fs], knowledge_time="known")  # auto: the join plan honours a
    assert got.column("f__last_v").to_pylist() == [2.0, 1.0]


def test_errors_are_the_duckdb_paths(tmp_path: Path) -> None:
    """What the DuckDB path rejects, it still rejects: the Arrow path steps aside."""
    ev = _write(tmp_path / "ev.parquet", pa.table({"card": ["a"], "ts": _t(0), "v": [1.0]}))
    q = _write(tmp_path / "q.parquet", pa.table({"other": ["a"], "ts": _t(1)}))
    fs = ef.FeatureSet("f", source=ef.source.parquet(ev, name="ev", key="card", event_time="ts"),
                       features=[ef.last("v")])
    with pytest.raises(ef.DefinitionError, match="lack"):
        features_at(ef.source.parquet(q, name="q", key="other", event_time="ts"), [fs])
    with pytest.raises(ef.DefinitionError, match="no column 'nope'"):
        features_at(ef.source.parquet(q, name="q", key="other", event_time="ts"), [fs], time="nope")


def test_quarantine_after_the_arrow_path_opens_duckdb_on_demand(tmp_path: Path) -> None:
    ev = _write(tmp_path / "ev.parquet", pa.table({"card": ["a"], "ts": _t(0), "v": [1.0]}))
    fs = ef.FeatureSet("f", source=ef.source.parquet(ev, name="ev", key="card", event_time="ts"),
                       features=[ef.last("v")])
    points = ef.source.parquet(ev, name="q", key="card", event_time="ts")
    eng = _engine(points, [fs], connected=False)
    assert features_at(points, [fs], engine=eng).column("f__last_v").to_pylist() == [1.0]
    assert not eng.connected
    assert eng.quarantine().num_rows == 0 and eng.connected


def test_column_types_agree_with_duckdb(tmp_path: Path) -> None:
    """The types the Arrow path reads as a field type unchanged are the ones DuckDB describes."""
    table = pa.table({
        "s": pa.array(["x"], pa.string()), "ls": pa.array(["x"], pa.large_string()), "i64": [1],
        "i32": pa.array([1], pa.int32()), "u64": pa.array([1], pa.uint64()), "f64": [1.0],
        "f32": pa.array([1.0], pa.float32()), "b": [True], "t_utc": _t(0), "t_ms": _t(0).cast(pa.timestamp("ms", "UTC")),
        "t_ns": _t(0).cast(pa.timestamp("ns", "UTC")), "t_naive": _t(0).cast(pa.timestamp("us")),
        "bin": pa.array([b"x"], pa.binary()), "d": pa.array([dt.date(2026, 1, 1)], pa.date32()),
        "dec": pa.array([1], pa.decimal128(10, 2)), "lst": pa.array([[1]], pa.list_(pa.int64())),
        "dict": pa.array(["x"]).dictionary_encode()})
    path = _write(tmp_path / "types.parquet", table)
    described = {r[0]: r[1] for r in duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall()}
    schema = pq.ParquetFile(path).schema
    mapped = {schema.column(i).path: duckdb_type(schema.column(i)) for i in range(len(schema))}
    known = {c: t for c, t in mapped.items() if t is not None}
    assert known == {"s": "VARCHAR", "ls": "VARCHAR", "i64": "BIGINT", "f64": "DOUBLE", "b": "BOOLEAN",
                     "t_utc": "TIMESTAMP WITH TIME ZONE", "dict": "VARCHAR"}
    for column, typ in known.items():
        assert described[column] == typ, column
    # names DuckDB would tell apart differently (case) or holds itself (__seq): DuckDB decides
    for columns in ({"Card": ["a"], "card": ["b"], "ts": _t(0)}, {"card": ["a"], "ts": _t(0), "__seq": [1]}):
        odd = _write(tmp_path / "odd.parquet", pa.table(columns))
        assert clean_parquet(ef.source.parquet(odd, name="ev", key="card", event_time="ts")) is None

