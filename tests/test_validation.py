"""Validation of text input (CSV, NDJSON): quarantine reasons, payloads, accounting, dedup.

Every record of a text source ends in exactly one place (docs/semantics.md section 9):
the output, the quarantine (original payload, reason, field, step) or the duplicates log
(pointing at the kept record). Bad input never raises.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable

import evenflow as ef
from evenflow.batch.engine import BatchEngine, PreparedEvents
from evenflow.batch.publish import write_side_tables, write_training_set
from evenflow.batch.training import build
from evenflow.core.schema import REASONS

UTC = dt.UTC
COLUMNS = ["id", "card", "amount", "score", "n", "channel", "ts"]
SCHEMA = ef.Schema(
    id=ef.String(nullable=False, unique=True, regex="t[0-9]+"),
    card=ef.String(),
    amount=ef.Float(ge=0, le=1000),
    score=ef.Float(gt=0, lt=1),
    n=ef.Int(),
    channel=ef.String(allowed=["pos", "ecom"]),
    ts=ef.Timestamp(),
)
GOOD = {"id": "t0", "card": "c1", "amount": "12.5", "score": "0.5", "n": "3", "channel": "pos",
        "ts": "2026-03-01T12:00:00Z"}


# -- writing text sources -----------------------------------------------------------------------

def write_csv(path: Path, records: list[dict[str, Any]], columns: list[str] = COLUMNS) -> Path:
    """Records as CSV lines; None and '' both become an empty field."""
    def cell(v: Any) -> str:
        return "" if v is None else str(v)
    lines = [",".join(columns)] + [",".join(cell(r.get(c)) for c in columns) for r in records]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_ndjson(path: Path, records: list[dict[str, Any]]) -> Path:
    """Records as JSON lines; '' becomes JSON null, so both formats mean the same."""
    with open(path, "w") as out:
        for r in records:
            out.write(json.dumps({k: (None if v == "" else v) for k, v in r.items()}) + "\n")
    return path


def source_for(fmt: str, tmp: Path, records: list[dict[str, Any]], schema: ef.Schema = SCHEMA,
               **kwargs: Any) -> ef.source.Source:
    args = {"schema": schema, "key": "card", "event_time": "ts", "name": "tx", **kwargs}
    if fmt == "csv":
        return ef.source.csv(str(write_csv(tmp / "tx.csv", records)), **args)
    return ef.source.ndjson(str(write_ndjson(tmp / "tx.ndjson", records)), **args)


def prepare(source: ef.source.Source, steps: list[Any] | None = None,
            name: str = "card") -> tuple[BatchEngine, PreparedEvents]:
    fs = ef.FeatureSet(name, source=source, steps=steps or [], features=[ef.count(window="1h")])
    engine = BatchEngine(ef.Pipeline(name="v", feature_sets=[fs]))
    return engine, engine.prepare(fs)


def good(i: int, **changes: Any) -> dict[str, Any]:
    minute = i % 60
    return {**GOOD, "id": f"t{i}", "ts": f"2026-03-01T12:{minute:02d}:00Z", **changes}


FORMATS = ["csv", "ndjson"]

# (test id, changed fields, expected reason, expected field). One fault per record.
CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("null_in_non_nullable", {"id": ""}, "null", "id"),
    ("float_from_text", {"amount": "abc"}, "wrong_type", "amount"),
    ("int_from_text", {"n": "abc"}, "wrong_type", "n"),
    ("int_from_decimal", {"n": "3.5"}, "wrong_type", "n"),
    ("unparseable_timestamp_word", {"ts": "yesterday"}, "unparseable_timestamp", "ts"),
    ("unparseable_timestamp_bad_date", {"ts": "2026-13-45T00:00:00Z"}, "unparseable_timestamp", "ts"),
    ("naive_timestamp", {"ts": "2026-03-01T12:00:00"}, "naive_timestamp", "ts"),
    ("naive_timestamp_space", {"ts": "2026-03-01 12:00:00.250"}, "naive_timestamp", "ts"),
    ("naive_timestamp_date_only", {"ts": "2026-03-01"}, "naive_timestamp", "ts"),
    ("out_of_range_ge", {"amount": "-0.01"}, "out_of_range", "amount"),
    ("out_of_range_le", {"amount": "1000.5"}, "out_of_range", "amount"),
    ("out_of_range_gt", {"score": "0"}, "out_of_range", "score"),
    ("out_of_range_lt", {"score": "1"}, "out_of_range", "score"),
    ("not_allowed", {"channel": "atm"}, "not_allowed", "channel"),
    ("regex_no_match", {"id": "x1"}, "regex", "id"),
    ("regex_partial_match_only", {"id": "t1x"}, "regex", "id"),
    ("missing_key", {"card": ""}, "null", "card"),
    ("null_event_time", {"ts": ""}, "null", "ts"),
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("changes", "reason", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_value_is_quarantined_with_reason_field_step_and_payload(
        fmt: str, changes: dict[str, Any], reason: str, field: str, tmp_path: Path) -> None:
    bad = good(1, **changes)
    records = [good(0), bad, good(2)]
    engine, ev = prepare(source_for(fmt, tmp_path, records))
    quarantine = engine.quarantine().to_pylist()
    assert len(quarantine) == 1, quarantine
    (q,) = quarantine
    assert (q["source"], q["record"], q["reason"], q["field"], q["step"]) == ("tx", 1, reason, field, "schema")
    assert q["reason"] in REASONS
    payload = json.loads(q["payload"])
    assert set(payload) == set(COLUMNS)
    for column, raw in bad.items():
        expected = None if raw == "" else raw
        assert payload[column] == expected, f"payload {column}: {payload[column]!r} is not the raw {raw!r}"
    assert ev.accounting() == {"source": "tx", "input": 3, "output": 2, "quarantined": 1,
                               "duplicates": 0, "reconciles": True}


@pytest.mark.parametrize("fmt", FORMATS)
def test_valid_text_values_are_typed(fmt: str, tmp_path: Path) -> None:
    records = [good(0, amount="0", score="0.001", n=" 7 ", ts="2026-03-01T12:00:00.123456+01:00"),
               good(1, amount="1000", n="-2", channel="ecom", ts="2026-03-01T23:30:00-05:30", card="c2")]
    engine, ev = prepare(source_for(fmt, tmp_path, records))
    assert engine.quarantine().num_rows == 0
    rows = engine.con.sql(f"SELECT * EXCLUDE (__seq) FROM {ev.table} ORDER BY __seq").to_arrow_table()
    assert rows.schema.field("amount").type == pa.float64()
    assert rows.schema.field("n").type == pa.int64()
    assert rows.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    got = rows.to_pylist()
    assert [r["amount"] for r in got] == [0.0, 1000.0]
    assert [r["n"] for r in got] == [7, -2]
    assert [r["ts"] for r in got] == [dt.datetime(2026, 3, 1, 11, 0, 0, 123456, tzinfo=UTC),
                                      dt.datetime(2026, 3, 2, 5, 0, tzinfo=UTC)]


@pytest.mark.parametrize("fmt", FORMATS)
def test_naive_timestamps_accepted_with_declared_zone(fmt: str, tmp_path: Path) -> None:
    schema = ef.Schema({**SCHEMA.fields, "ts": ef.Timestamp(tz="Europe/Paris")})
    records = [good(0, ts="2026-03-01T12:00:00"),          # CET: 11:00 UTC
               good(1, ts="2026-07-01 12:00:00"),          # CEST: 10:00 UTC
               good(2, ts="2026-03-01T12:00:00+00:00"),    # an explicit offset still wins
               good(3, ts="2026-03-01T12:00:00Z"),
               good(4, ts="not a time")]
    engine, ev = prepare(source_for(fmt, tmp_path, records, schema=schema))
    rows = engine.con.sql(f"SELECT ts FROM {ev.table} ORDER BY __seq").fetchall()
    assert [r[0] for r in rows] == [dt.datetime(2026, 3, 1, 11, tzinfo=UTC), dt.datetime(2026, 7, 1, 10, tzinfo=UTC),
                                    dt.datetime(2026, 3, 1, 12, tzinfo=UTC), dt.datetime(2026, 3, 1, 12, tzinfo=UTC)]
    assert engine.quarantine_counts() == {"unparseable_timestamp": 1}


@pytest.mark.parametrize("fmt", FORMATS)
def test_date_only_value_with_declared_zone_is_read_in_that_zone(fmt: str, tmp_path: Path) -> None:
    schema = ef.Schema({**SCHEMA.fields, "ts": ef.Timestamp(tz="Europe/Paris")})
    engine, ev = prepare(source_for(fmt, tmp_path, [good(0, ts="2026-03-01")], schema=schema))
    rows = engine.con.sql(f"SELECT ts FROM {ev.table}").fetchall()
    assert rows == [(dt.datetime(2026, 2, 28, 23, tzinfo=UTC),)]  # Paris midnight


def test_schema_quarantine_detail_describes_the_failure(tmp_path: Path) -> None:
    """The __fail string is 'reason|field|detail'; the detail (the bad value) must survive."""
    records = [good(0, amount="abc"), good(1, amount="-3"), good(2, channel="atm")]
    engine, _ = prepare(source_for("csv", tmp_path, records))
    details = [q["detail"] for q in engine.quarantine().to_pylist()]
    assert details[0] is not None and "abc" in details[0]
    assert details[1] is not None and "-3" in details[1]
    assert details[2] is not None and "atm" in details[2]


@pytest.mark.parametrize("fmt", FORMATS)
def test_missing_key_column_quarantines_every_record(fmt: str, tmp_path: Path) -> None:
    records = [{k: v for k, v in good(i).items() if k != "card"} for i in range(4)]
    if fmt == "csv":
        path = write_csv(tmp_path / "tx.csv", records, [c for c in COLUMNS if c != "card"])
        source = ef.source.csv(str(path), schema=SCHEMA, key="card", event_time="ts", name="tx")
    else:
        source = source_for(fmt, tmp_path, records)
    engine, ev = prepare(source)
    q = engine.quarantine().to_pylist()
    assert [(r["record"], r["reason"], r["field"]) for r in q] == [(i, "missing_field", "card") for i in range(4)]
    assert ev.accounting()["reconciles"] and ev.rows_out == 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_first_failing_check_wins_and_record_is_quarantined_once(fmt: str, tmp_path: Path) -> None:
    records = [good(0, id="", amount="abc", ts="yesterday")]
    engine, ev = prepare(source_for(fmt, tmp_path, records))
    q = engine.quarantine().to_pylist()
    assert len(q) == 1
    assert q[0]["reason"] in {"null", "wrong_type", "unparseable_timestamp"}
    assert ev.accounting()["quarantined"] == 1


# -- unique after dedup ---------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_not_unique_is_checked_after_dedup(fmt: str, tmp_path: Path) -> None:
    records = [good(0), good(1), good(1),                  # exact repeat: a duplicate, not a violation
               good(2, card="c9"), good(0, amount="99")]   # t0 again, other content: not_unique
    records[3]["id"] = "t1"                                # another t1 with other content
    engine, ev = prepare(source_for(fmt, tmp_path, records), steps=[ef.Dedup()])
    dups = engine.duplicates().to_pylist()
    assert [(d["record"], d["kept_record"]) for d in dups] == [(2, 1)]
    q = engine.quarantine().to_pylist()
    assert [(r["record"], r["reason"], r["field"], r["step"], r["feature_set"]) for r in q] == [
        (3, "not_unique", "id", "schema.unique", "card"), (4, "not_unique", "id", "schema.unique", "card")]
    assert json.loads(q[1]["payload"])["amount"] == "99"
    assert "record 0" in (q[1]["detail"] or "")
    assert ev.accounting() == {"source": "tx", "input": 5, "output": 2, "quarantined": 2, "duplicates": 1,
                               "reconciles": True}


def test_record_is_quarantined_once_even_with_two_feature_sets(tmp_path: Path) -> None:
    """docs/semantics.md section 9: 'A record is quarantined once'."""
    records = [good(0), good(1), good(2, id="t0")]
    source = source_for("csv", tmp_path, records)
    sets = [ef.FeatureSet("card", source=source, features=[ef.count(window="1h")]),
            ef.FeatureSet("channel", source="tx", key="channel", features=[ef.count(window="1h")])]
    engine = BatchEngine(ef.Pipeline(name="v", feature_sets=sets))
    for fs in sets:
        assert engine.prepare(fs).accounting()["reconciles"]
    q = engine.quarantine().to_pylist()
    assert len({(r["source"], r["record"]) for r in q}) == len(q) == 1
    assert engine.quarantine_counts() == {"not_unique": 1}


# -- accounting -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_semantics_example_accounting(fmt: str, tmp_path: Path) -> None:
    """docs/semantics.md section 9: 10 in = 6 out + 2 quarantined + 2 duplicates."""
    schema = ef.Schema(transaction_id=ef.String(), card=ef.String(), amount=ef.Float(ge=0), ts=ef.Timestamp())
    rows = [{"transaction_id": f"x{i}", "card": "c1", "amount": f"{i}.5", "ts": f"2026-03-01T10:{i:02d}:00Z"}
            for i in range(8)]
    rows[2]["ts"] = "2026-03-01T10:02:00"      # naive
    rows[5]["amount"] = "-5"                   # out of range
    rows += [dict(rows[0]), {**rows[3], "amount": "7.5"}]  # two repeats of a transaction_id
    if fmt == "csv":
        path = write_csv(tmp_path / "tx.csv", rows, list(rows[0]))
        source = ef.source.csv(str(path), schema=schema, key="card", event_time="ts", name="tx")
    else:
        source = ef.source.ndjson(str(write_ndjson(tmp_path / "tx.ndjson", rows)), schema=schema,
                                  key="card", event_time="ts", name="tx")
    engine, ev = prepare(source, steps=[ef.Dedup("transaction_id")])
    assert ev.accounting() == {"source": "tx", "input": 10, "output": 6, "quarantined": 2, "duplicates": 2,
                               "reconciles": True}
    assert engine.quarantine_counts() == {"naive_timestamp": 1, "out_of_range": 1}
    assert engine.duplicates().num_rows == 2


# -- dedup ----------------------------------------------------------------------------------------

DEDUP_ROWS = [("t1", "10:05"), ("t1", "10:00"), ("t2", "11:00"), ("t2", "11:00")]


@pytest.mark.parametrize(("keep", "kept", "dropped"), [
    ("first", [1, 2], [(0, 1), (3, 2)]),
    ("last", [0, 3], [(1, 0), (2, 3)]),
])
def test_dedup_keeps_by_event_time_then_arrival(keep: str, kept: list[int], dropped: list[tuple[int, int]],
                                               tmp_path: Path) -> None:
    """The table of docs/semantics.md section 6."""
    schema = ef.Schema(txn_id=ef.String(), card=ef.String(), ts=ef.Timestamp())
    rows = [{"txn_id": t, "card": "c", "ts": f"2026-03-01T{hm}:00Z"} for t, hm in DEDUP_ROWS]
    path = write_csv(tmp_path / "d.csv", rows, ["txn_id", "card", "ts"])
    source = ef.source.csv(str(path), schema=schema, key="card", event_time="ts", name="d")
    engine, ev = prepare(source, steps=[ef.Dedup("txn_id", keep=keep)])
    out = [r[0] for r in engine.con.sql(f"SELECT __seq FROM {ev.table} ORDER BY __seq").fetchall()]
    assert out == kept
    dups = engine.duplicates().to_pylist()
    assert [(d["record"], d["kept_record"]) for d in dups] == dropped
    assert {d["step"] for d in dups} == {"dedup:txn_id"}
    assert {d["feature_set"] for d in dups} == {"card"}
    assert [json.loads(d["key"]) for d in dups] == [{"txn_id": "t1"}, {"txn_id": "t2"}]
    assert ev.accounting() == {"source": "d", "input": 4, "output": 2, "quarantined": 0, "duplicates": 2,
                               "reconciles": True}


@pytest.mark.parametrize("keep", ["first", "last"])
def test_dedup_of_many_ties_points_every_drop_at_the_kept_record(keep: str, tmp_path: Path) -> None:
    schema = ef.Schema(txn_id=ef.String(), card=ef.String(), ts=ef.Timestamp())
    rows = [{"txn_id": "same", "card": "c", "ts": "2026-03-01T10:00:00Z"} for _ in range(6)]
    path = write_csv(tmp_path / "d.csv", rows, ["txn_id", "card", "ts"])
    source = ef.source.csv(str(path), schema=schema, key="card", event_time="ts", name="d")
    engine, _ = prepare(source, steps=[ef.Dedup(keep=keep)])   # whole-row dedup
    kept = 0 if keep == "first" else 5
    dups = engine.duplicates().to_pylist()
    assert sorted(d["record"] for d in dups) == [i for i in range(6) if i != kept]
    assert {d["kept_record"] for d in dups} == {kept}
    assert {d["step"] for d in dups} == {"dedup:*"}


# -- side tables in Delta -------------------------------------------------------------------------

def _dirty(tmp: Path) -> ef.source.Source:
    records = [good(i, card=f"c{i % 3}") for i in range(12)]
    records[3]["amount"] = "abc"
    records[5]["ts"] = "2026-03-01T12:00:00"
    records[7]["channel"] = "atm"
    records.append(dict(records[0]))
    records.append(dict(records[1]))
    return source_for("csv", tmp, records)


def test_quarantine_and_duplicates_land_in_delta(tmp_path: Path) -> None:
    engine, ev = prepare(_dirty(tmp_path), steps=[ef.Dedup("id")])
    output = ef.Output(directory=str(tmp_path / "out"))
    written = write_side_tables(engine, output)
    lake = tmp_path / "out" / "lakehouse"
    assert written["quarantine"] == str(lake / "quarantine")
    quarantine = DeltaTable(str(lake / "quarantine")).to_pyarrow_table()
    duplicates = DeltaTable(str(lake / "duplicates")).to_pyarrow_table()
    bronze = DeltaTable(str(lake / "bronze" / "tx")).to_pyarrow_table()
    assert quarantine.num_rows == ev.quarantined == 3
    assert duplicates.num_rows == ev.duplicates == 2
    assert bronze.num_rows == ev.rows_in == 14
    assert set(quarantine.column("run_id").to_pylist()) == {engine.run_id}
    got = sorted((r["record"], r["reason"], r["field"], r["step"], r["payload"]) for r in quarantine.to_pylist())
    want = sorted((r["record"], r["reason"], r["field"], r["step"], r["payload"])
                  for r in engine.quarantine().to_pylist())
    assert got == want
    assert [r[:2] for r in got] == [(3, "wrong_type"), (5, "naive_timestamp"), (7, "not_allowed")]
    assert json.loads(got[0][4])["amount"] == "abc"
    assert sorted((r["record"], r["kept_record"]) for r in duplicates.to_pylist()) == [(12, 0), (13, 1)]
    # bronze keeps the raw text and the record position
    raw = {r["_record"]: r for r in bronze.to_pylist()}
    assert raw[3]["amount"] == "abc" and raw[5]["ts"] == "2026-03-01T12:00:00"


def test_side_tables_append_across_runs(tmp_path: Path) -> None:
    output = ef.Output(directory=str(tmp_path / "out"))
    runs = []
    for _ in range(2):
        engine, _ = prepare(_dirty(tmp_path), steps=[ef.Dedup("id")])
        write_side_tables(engine, output)
        runs.append(engine.run_id)
    quarantine = DeltaTable(str(tmp_path / "out" / "lakehouse" / "quarantine")).to_pyarrow_table()
    assert quarantine.num_rows == 6
    assert sorted(set(quarantine.column("run_id").to_pylist())) == sorted(runs)


def test_training_set_publishes_quarantine_and_duplicates(tmp_path: Path) -> None:
    events = _dirty(tmp_path)
    labels = pa.table({"id": [f"L{i}" for i in range(6)], "card": [f"c{i % 3}" for i in range(6)],
                       "ts": pa.array([dt.datetime(2026, 3, 1, 13, i, tzinfo=UTC) for i in range(6)],
                                      pa.timestamp("us", tz="UTC")),
                       "label": [0, 1, 0, 1, 0, 1]})
    fs = ef.FeatureSet("card", source=events, steps=[ef.Dedup("id"), ef.Impute("amount", "median")],
                       features=[ef.count(window="1h"), ef.mean("amount", window="1d")])
    spec = ef.TrainingSetSpec(name="ts_v1", labels=ef.source.frame(labels, name="labels", key="card",
                                                                   event_time="ts"),
                              label="label", features=[fs], split=ef.RandomSplit(test_size=0.5, seed=3))
    output = ef.Output(directory=str(tmp_path / "out"))
    pipeline = ef.Pipeline(name="v", feature_sets=[fs], training_set=spec, output=output)
    ts = build(pipeline)
    write_training_set(ts, output)
    lake = tmp_path / "out" / "lakehouse"
    assert DeltaTable(str(lake / "quarantine")).to_pyarrow_table().num_rows == 3
    assert DeltaTable(str(lake / "duplicates")).to_pyarrow_table().num_rows == 2
    card = json.loads((tmp_path / "out" / "ts_v1" / "card.json").read_text())
    (acc,) = card["feature_sets"]
    assert acc["input"] == acc["output"] + acc["quarantined"] + acc["duplicates"] and acc["reconciles"]
    assert card["quarantine"] == {"wrong_type": 1, "naive_timestamp": 1, "not_allowed": 1}


# -- garbage never raises -------------------------------------------------------------------------

def test_csv_of_garbage_values_runs_and_quarantines_every_row(tmp_path: Path) -> None:
    junk = ["@@", "NaN?", "' OR 1=1 --", "\u00e9\u00e8\u4e2d", "0x1F", "--", "{}", "[1,2]", "null?"]
    records = [{c: junk[(i + j) % len(junk)] for j, c in enumerate(COLUMNS)} for i in range(60)]
    path = write_csv(tmp_path / "junk.csv", [{k: v.replace(",", ";") for k, v in r.items()} for r in records])
    source = ef.source.csv(str(path), schema=SCHEMA, key="card", event_time="ts", name="tx")
    engine, ev = prepare(source, steps=[ef.Dedup("id")])
    assert ev.accounting() == {"source": "tx", "input": 60, "output": 0, "quarantined": 60, "duplicates": 0,
                               "reconciles": True}
    assert engine.quarantine().num_rows == 60
    assert set(engine.quarantine_counts()) <= set(REASONS)
    out = engine.features_at_events(ef.FeatureSet("card", source="tx", features=[ef.count(window="1h")]))
    assert out.num_rows == 0


def _good_line(i: int) -> str:
    return ",".join(good(i).values())


@pytest.mark.parametrize("bad_line", ["t99,c1", _good_line(99) + ",extra,more", "just some words"],
                         ids=["too_few_fields", "too_many_fields", "no_delimiter"])
def test_one_malformed_csv_line_is_quarantined_alone(bad_line: str, tmp_path: Path) -> None:
    """One bad line among 25 good ones: the bad line is quarantined, the good ones go on."""
    lines = [",".join(COLUMNS), *(_good_line(i) for i in range(20)), bad_line,
             *(_good_line(i) for i in range(20, 25))]
    (tmp_path / "tx.csv").write_text("\n".join(lines) + "\n")
    source = ef.source.csv(str(tmp_path / "tx.csv"), schema=SCHEMA, key="card", event_time="ts", name="tx")
    engine, ev = prepare(source)
    assert ev.accounting() == {"source": "tx", "input": 26, "output": 25, "quarantined": 1, "duplicates": 0,
                               "reconciles": True}
    [row] = engine.quarantine().to_pylist()
    # a line that is not a record has no record position; the detail names the file line
    assert (row["record"], row["reason"], row["step"]) == (None, "malformed_record", "read")
    assert row["detail"].startswith(f"{tmp_path / 'tx.csv'}:22: ")
    assert json.loads(row["payload"])["line"] == bad_line


def test_csv_with_only_malformed_lines_accounts_for_every_line(tmp_path: Path) -> None:
    """A short file of ragged lines: every line is a record in the accounting, none vanishes."""
    lines = [",".join(COLUMNS), _good_line(0), "t2,c1", _good_line(3) + ",extra,more"]
    (tmp_path / "tx.csv").write_text("\n".join(lines) + "\n")
    source = ef.source.csv(str(tmp_path / "tx.csv"), schema=SCHEMA, key="card", event_time="ts", name="tx")
    _engine, ev = prepare(source)
    assert ev.rows_in == 3
    assert ev.rows_out + ev.quarantined == 3


def test_ndjson_with_a_malformed_line_quarantines_that_line(tmp_path: Path) -> None:
    """A line that is not JSON is bad input like any other: quarantined, not a crashed run."""
    lines = [json.dumps(good(0)), '{"id": "t1", "card": ', json.dumps(good(2))]
    (tmp_path / "tx.ndjson").write_text("\n".join(lines) + "\n")
    source = ef.source.ndjson(str(tmp_path / "tx.ndjson"), schema=SCHEMA, key="card", event_time="ts", name="tx")
    _engine, ev = prepare(source)
    assert ev.accounting() == {"source": "tx", "input": 3, "output": 2, "quarantined": 1, "duplicates": 0,
                               "reconciles": True}


@pytest.mark.parametrize("name", ["__seq", "__t", "__anything"])
def test_names_with_a_leading_double_underscore_are_refused(name: str) -> None:
    """A declared field named like an engine column (``__seq``) was joined as if it were one and
    multiplied the rows; such names are refused when the definition is built, with the fix."""
    with pytest.raises(ef.errors.DefinitionError, match="reserved") as caught:
        ef.Schema(card=ef.String(), ts=ef.Timestamp(), **{name: ef.Int()})
    assert name in str(caught.value) and "rename it" in str(caught.value)
    src = ef.source.ndjson("x.ndjson", name="tx", key="card", event_time="ts",
                           schema=ef.Schema(card=ef.String(), ts=ef.Timestamp(), amount=ef.Float()))
    with pytest.raises(ef.errors.DefinitionError, match="reserved") as caught:
        ef.FeatureSet("card", source=src, features=[ef.count(window="1h", name=name)])
    assert "name=" in str(caught.value)
    ef.Schema(card=ef.String(), ts=ef.Timestamp(), _x=ef.Int(), x__y=ef.Int())   # one underscore is fine


def test_a_feature_named_like_a_source_field_is_refused() -> None:
    """Batch output kept the field and renamed the feature (``count_1h_1``); the stream's row
    replaced the field with the feature. The pipeline now refuses the clash, with the fix."""
    src = ef.source.ndjson("x.ndjson", name="tx", key="card", event_time="ts",
                           schema=ef.Schema(card=ef.String(), ts=ef.Timestamp(), count_1h=ef.Int()))
    fs = ef.FeatureSet("card", source=src, features=[ef.count(window="1h")])
    with pytest.raises(ef.errors.DefinitionError, match="'count_1h' has the name of a field of source 'tx'"):
        ef.Pipeline(name="p", feature_sets=[fs])
    renamed = ef.FeatureSet("card", source=src, features=[ef.count(window="1h", name="count_1h_feature")])
    assert ef.Pipeline(name="p", feature_sets=[renamed]).feature_sets[0].feature_names == ["count_1h_feature"]
