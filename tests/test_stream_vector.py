"""The vectorized micro-batch path (``StreamEngine.process_batch``) against ``process``.

Two engines get the same records in the same micro-batches, one through each path. They must
keep, quarantine and deduplicate the same records with the same entries, emit the same rows
(floats within docs/semantics.md §11: window sums use a sequential sum instead of ``fsum``), and
end with the same state: entity windows, retired accumulators, dedup and unique memory,
watermark, counts and checkpoint blobs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_stream_parity import BAD_VALUES, GOOD, SCHEMA, _features, _record, _source, streams

import evenflow as ef
from evenflow.batch.engine import BatchEngine
from evenflow.core.expr import Expr
from evenflow.stream.engine import StreamEngine
from evenflow.stream.parity import same
from evenflow.stream.validate import parse_timestamp, to_micros
from evenflow.stream.vector import Col, parse_timestamps
from evenflow.stream.vector.expressions import evaluate_columns

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = settings(max_examples=30, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _same_row(x: dict[str, Any], y: dict[str, Any]) -> bool:
    if list(x) != list(y):
        return False
    for k in x:
        a, b = x[k], y[k]
        if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
            continue
        if not (a == b or same(a, b)):
            return False
    return True


def _both(pipeline: ef.Pipeline, fs: list[str] | None, records: list[Any], cuts: list[int],
          **kw: Any) -> tuple[StreamEngine, StreamEngine, list[Any]]:
    """Feed both engines; assert equal results batch by batch; return the engines."""
    one, vec = StreamEngine(pipeline, fs, **kw), StreamEngine(pipeline, fs, **kw)
    fast = []
    for lo, hi in itertools.pairwise([0, *sorted(set(cuts)), len(records)]):
        if hi <= lo:
            continue
        want = one.process(records[lo:hi], seqs=range(lo, hi))
        got = vec.process_batch(records[lo:hi], seqs=list(range(lo, hi)))
        fast.append(got.aggregates if got.fast else False)
        assert got.quarantined == want.quarantined
        assert got.duplicates == want.duplicates
        assert got.records == want.records
        for name, rows in want.outputs.items():
            mine = got.rows(name)
            assert len(mine) == len(rows), (name, len(mine), len(rows))
            bad = [(w, g) for w, g in zip(rows, mine, strict=True) if not _same_row(w, g)]
            assert not bad, f"{name}: {len(bad)} rows differ, first: {bad[0]}"
    _same_state(one, vec)
    return one, vec, fast


def _same_state(one: StreamEngine, vec: StreamEngine) -> None:
    assert (one.max_time, one.seq, one.counts) == (vec.max_time, vec.seq, vec.counts)
    for name, a in one.sets.items():
        b = vec.sets[name]
        assert {k: s.to_wire() for k, s in a.states.items()} == \
            {k: s.to_wire() for k, s in b.states.items()}, name
        assert a.seen == b.seen and a.unique_seen == b.unique_seen, name
    assert one.dirty_states() == vec.dirty_states()
    assert one.meta() == vec.meta()


@SETTINGS
@given(stream=streams(), seed=st.integers(0, 2**16), dirty=st.integers(0, 4),
       late=st.integers(0, 3), text=st.booleans())
def test_process_batch_equals_process_on_generated_streams(stream, seed, dirty, late, text):
    """Ties, duplicates, nulls, out-of-order arrivals, available_time, late and invalid records,
    every aggregation bounded and unbounded with both ``closed``, derived features, dedup."""
    rnd = random.Random(seed)
    events, available, lateness = stream["events"], stream["available"], stream["lateness"]
    feats = [*_features("30m", "right"), *_features("2h", "left"),
             ef.since_last(), ef.count(), ef.count("amount"), ef.min("qty"), ef.max("amount"),
             ef.derive("hour_of", "hour(ts)"), ef.derive("ratio", "amount / (count_30m + 1)"),
             ef.derive("big", "coalesce(amount, 0) > 10 and not (qty < 0)")]
    fs = ef.FeatureSet("fs", source=_source(events, available), features=feats,
                       steps=[ef.Dedup("txn")] if seed % 2 else [])
    pipeline = ef.Pipeline(name="p", feature_sets=[fs])
    records: list[Any] = [_record(e, available) for e in events]
    for _ in range(dirty):     # invalid records anywhere
        records.insert(rnd.randint(0, len(records)),
                       {"txn": "x", "card": rnd.choice(["k1", None]), "ts": rnd.choice(["soon", None]),
                        "amount": rnd.choice(["12,5", True, 3])})
    for _ in range(late):      # far behind the watermark once anything arrived
        records.insert(rnd.randint(0, len(records)),
                       {"txn": "old", "card": "k1", "ts": "2020-01-01T00:00:00Z", "amount": 1.0})
    if text:
        records = [json.dumps(r) for r in records] + ["{not json", "[1, 2]"]
    n = len(records)
    cuts = sorted(rnd.sample(range(1, n), min(n - 1, rnd.randint(0, 4)))) if n > 1 else []
    _both(pipeline, None, records, cuts, lateness=lateness)


@SETTINGS
@given(stream=streams(), seed=st.integers(0, 2**16))
def test_fitted_steps_unique_fields_and_two_feature_sets(stream, seed):
    """Impute and Clip as column operations, Standardize and a quarantining Outliers step record
    by record, ``unique`` memory, and a second feature set on another key."""
    events, available, lateness = stream["events"], stream["available"], stream["lateness"]
    src = _source(events, available)
    schema = dict(src.schema_.fields)
    schema["txn"] = ef.String(unique=bool(seed % 2))
    src = src.model_copy(update={"schema_": ef.Schema(**schema)})
    card = ef.FeatureSet("card", source=src,
                         steps=[ef.Dedup("txn"), ef.Impute("amount", "median"),
                                ef.Clip("amount", q=(0.1, 0.9)), ef.Standardize("score"),
                                ef.Outliers("qty", method="zscore", k=1.0, action="quarantine")],
                         features=[ef.sum("amount", window="1h"), ef.std("amount", window="1h"),
                                   ef.mean("score", window="2h"), ef.last("qty", window="2h")])
    merchant = ef.FeatureSet("merchant", source=src, key=["merchant"],
                             features=[ef.count(window="1h"), ef.distinct("card", window="2h")])
    pipeline = ef.Pipeline(name="p", feature_sets=[card, merchant])
    batch = BatchEngine(pipeline)
    try:
        artifacts = batch.prepare(card).artifacts
    except ef.EvenflowError:
        return                     # nothing to fit on (all nulls): the stream would refuse too
    finally:
        batch.close()
    records = [_record(e, available) for e in events]
    rnd = random.Random(seed)
    n = len(records)
    cuts = sorted(rnd.sample(range(1, n), min(n - 1, rnd.randint(0, 3)))) if n > 1 else []
    _both(pipeline, None, records, cuts, lateness=lateness, artifacts=artifacts)


@settings(max_examples=40, deadline=None, database=None)
@given(records=st.lists(st.fixed_dictionaries(
    {k: st.sampled_from([GOOD[k], *BAD_VALUES[k]]) for k in GOOD}), min_size=1, max_size=15))
def test_validation_gives_the_per_record_reasons(records):
    for i, r in enumerate(records):
        r["id"] = f"r{i}" if r["id"] == "r1" else r["id"]
    fs = ef.FeatureSet("fs", source=ef.source.frame([], name="ev", key="card", event_time="ts",
                                                    schema=SCHEMA), features=[ef.count(window="1h")])
    _both(ef.Pipeline(name="p", feature_sets=[fs]), None, records, [], lateness="3650d")


@pytest.mark.parametrize("kw", [{"emit": "final"}, {"ttl": "1h"}, {"remember": "1h"},
                                {"keep": "last"}, {"impute_last": True}])
def test_configurations_outside_the_fast_path_take_process(kw):
    keep = kw.pop("keep", "first")
    steps: list[Any] = [ef.Dedup("txn", keep=keep)]
    if kw.pop("impute_last", False):
        steps.append(ef.Impute("amount", "last"))
    events = [{"txn": f"t{i % 7}", "card": f"k{i % 3}", "event_time": 1_772_000_000_000_000 + i * 60_000_000,
               "amount": None if i % 5 == 0 else float(i), "qty": i, "merchant": "m1", "score": 1.0,
               "available_time": 0, "seq": i} for i in range(40)]
    fs = ef.FeatureSet("fs", source=_source(events, False), steps=steps,
                       features=[ef.sum("amount", window="10m"), ef.count()])
    pipeline = ef.Pipeline(name="p", feature_sets=[fs])
    batch = BatchEngine(pipeline)
    try:
        kw["artifacts"] = batch.prepare(fs).artifacts
    finally:
        batch.close()
    one, vec, fast = _both(pipeline, None, [_record(e, False) for e in events], [13, 29], **kw)
    assert fast == [False, False, False]
    if kw.get("emit") == "final":
        assert one.flush().outputs == vec.flush().outputs


def test_out_of_order_entities_take_the_exact_per_event_evaluation():
    """An event older than its entity's latest (inside the lateness) cannot use the gathered
    windows; that batch's aggregates are evaluated event by event, with the same results."""
    base = 1_772_000_000_000_000
    recs = [{"txn": f"t{i}", "card": "k1", "ts": _iso(base + t * 60_000_000), "amount": float(i)}
            for i, t in enumerate([0, 5, 3, 9, 8, 8, 20])]
    fs = ef.FeatureSet("fs", source=_source([], False), features=[ef.count(window="5m"),
                                                                   ef.sum("amount", window="10m")])
    _one, _vec, paths = _both(ef.Pipeline(name="p", feature_sets=[fs]), None, recs, [2, 5],
                              lateness="10m")
    assert [p["fs"] for p in paths] == ["vectorized", "per-event", "per-event"]


def test_fraud_replay_matches_process(tmp_path):
    """The fraud example's dirty transactions (duplicates, bad amounts and timestamps, offsets)
    through its card feature set with fitted artifacts, in micro-batches of 700."""
    subprocess.run([sys.executable, str(ROOT / "examples/fraud/generate.py"), "--out", str(tmp_path),
                    "--n", "4000", "--seed", "3"], check=True, capture_output=True)
    pipeline = ef.Pipeline.load(ROOT / "examples/fraud/pipeline.yaml")
    tx = pipeline.sources["transactions"].model_copy(update={"path": str(tmp_path / "transactions.csv")})
    pipeline = pipeline.model_copy(update={"sources": {**pipeline.sources, "transactions": tx}})
    batch = BatchEngine(pipeline)
    try:
        artifacts = batch.prepare(pipeline.feature_set("card")).artifacts
    finally:
        batch.close()
    import csv
    with open(tmp_path / "transactions.csv") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        for f in ("amount", "lat", "lon"):
            with contextlib.suppress(ValueError):    # bad amounts stay text: quarantined
                r[f] = float(r[f]) if r[f] != "" else None
    rows.sort(key=lambda r: r["ts"])
    one, _vec, fast = _both(pipeline, ["card", "merchant"], rows, list(range(700, len(rows), 700)),
                           artifacts=artifacts, lateness="2h")
    assert sum(p["card"] == "vectorized" for p in fast) >= len(fast) // 2, fast
    assert one.counts["quarantined"] > 0 and len(one.sets["card"].states) > 100


def _iso(us: int) -> str:
    return (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us)).isoformat()


stamps = st.one_of(
    st.builds(lambda d, h, f, z: f"{d.isoformat()}{h}{f}{z}",
              st.dates(dt.date(1, 1, 1), dt.date(9999, 12, 31)),
              st.sampled_from(["T00:00:00", "T23:59:59", " 12:30:45", "T24:00:00", "T10:61:00",
                               "T10:00", "t10:00:00"]),
              st.sampled_from(["", ".123", ".123456", ".1", ".1234567"]),
              st.sampled_from(["Z", "z", "+00:00", "-05:30", "+14:00", "+0100", "+01", "", " Z",
                               "+24:00"])),
    st.text(max_size=30), st.none(), st.integers(), st.floats())


@settings(max_examples=300, deadline=None, database=None)
@given(values=st.lists(stamps, max_size=20))
def test_vectorized_timestamps_parse_exactly_as_the_per_record_parser(values):
    micros, ok = parse_timestamps(values)
    for v, m, good in zip(values, micros.tolist(), ok.tolist(), strict=True):
        if good:
            parsed, _reason = parse_timestamp(v)
            assert parsed is not None and to_micros(parsed) == m, v


EXPRESSIONS = ["a + b * 2", "a / b", "b / a", "-a + 1.5", "abs(b) - 3", "sqrt(a)", "log1p(a)",
               "float(b) / 3", "hour(t)", "epoch_seconds(t) > 1e9", "coalesce(a, b, 0)",
               "a > 1 and b < 2", "a > 1 or not (b == 2)", "coalesce(a, 7) <= b", "a == a", "b != 1"]


@settings(max_examples=60, deadline=None, database=None)
@given(a=st.lists(st.one_of(st.none(), st.floats(-5, 5, allow_nan=False), st.just(0.0), st.just(-1.0)),
                  min_size=1, max_size=12),
       data=st.data())
def test_expressions_on_columns_equal_the_record_form(a, data):
    n = len(a)
    b = data.draw(st.lists(st.one_of(st.none(), st.integers(-3, 3)), min_size=n, max_size=n))
    t = data.draw(st.lists(st.one_of(st.none(), st.integers(0, 2_000_000_000_000_000)), min_size=n,
                           max_size=n))
    stamps_ = [None if v is None else dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=v)
               for v in t]
    env = {"a": Col.of_values(a), "b": Col.of_values(b), "t": Col.of_values(stamps_)}
    if env["a"].kind == "obj" or env["b"].kind == "obj" or env["t"].kind == "obj":
        return          # all null: typed columns only
    for text in EXPRESSIONS:
        expr = Expr.parse(text)
        got = evaluate_columns(expr.tree, env, n)
        values = got.values()
        for i in range(n):
            want = expr.evaluate({"a": a[i], "b": b[i], "t": stamps_[i]})
            assert values[i] == want or same(values[i], want), (text, a[i], b[i], t[i], values[i], want)


def test_outputs_are_typed_arrow_tables():
    fs = ef.FeatureSet("fs", source=_source([], False), features=[ef.count(window="1h"),
                                                                   ef.mean("amount", window="1h")])
    eng = StreamEngine(ef.Pipeline(name="p", feature_sets=[fs]))
    res = eng.process_batch([{"txn": "t1", "card": "k1", "ts": "2026-03-01T10:00:00+01:00",
                              "amount": 2.5, "qty": 3}])
    table = res.outputs["fs"]
    assert isinstance(table, pa.Table) and res.fast
    assert table.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("count_1h").type == pa.int64()
    assert table.to_pylist()[0]["ts"] == dt.datetime(2026, 3, 1, 9, tzinfo=dt.UTC)
    assert np.isclose(table.column("mean_amount_1h").to_pylist()[0], 2.5)


def test_an_expression_of_mixed_types_is_kept_as_text():
    fs = ef.FeatureSet("fs", source=_source([], False),
                       features=[ef.count(window="1h"), ef.derive("who", "coalesce(merchant, 1)")])
    eng = StreamEngine(ef.Pipeline(name="p", feature_sets=[fs]))
    recs = [{"txn": "t1", "card": "k1", "ts": "2026-03-01T10:00:00Z", "merchant": "m1"},
            {"txn": "t2", "card": "k1", "ts": "2026-03-01T10:01:00Z", "merchant": None}]
    res = eng.process_batch(recs)
    assert [r["who"] for r in res.rows("fs")] == ["m1", "1"]
    assert res.outputs["fs"].schema.field("who").type == pa.string()


JUNK = [None, True, False, 0, -1, 2**70, 1.5, float("inf"), float("-inf"), "", "x", "nan", "1e400",
        "2026-03-01T10:00:00Z", "2026-03-01T10:00:00.123+05:30", "2026-02-30T10:00:00Z",
        "2026-03-01T24:00:00Z", "été", "r5", "a", [1, 2], {"k": 1}, "  true ",
        "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-03-01T10:00:00.1234567Z"]


@settings(max_examples=60, deadline=None, database=None)
@given(records=st.lists(st.one_of(
    st.fixed_dictionaries({k: st.one_of(st.just(GOOD[k]), st.sampled_from(JUNK)) for k in GOOD},
                          optional={"extra": st.sampled_from(JUNK)}),
    st.sampled_from(["{bad", "[1]", "null", b"\xff\xfe", '{"id": "r9"}'])), min_size=1, max_size=25),
    lateness=st.sampled_from(["0s", "10m", "3650d"]))
def test_junk_never_crashes_and_matches_process(records, lateness):
    """Any JSON value in any field, text that is not JSON, timestamps a datetime cannot hold:
    both paths quarantine the same records with the same reasons and keep the same state."""
    fs = ef.FeatureSet("fs", source=ef.source.frame([], name="ev", key="card", event_time="ts",
                                                    schema=SCHEMA),
                       steps=[ef.Dedup("id")],
                       features=[ef.count(window="1h"), ef.sum("x", window="1h"), ef.max("n", window="1h"),
                                 ef.distinct("kind", window="1h"), ef.last("ok", window="1h"),
                                 ef.derive("d", "x / (n + 1)")])
    _both(ef.Pipeline(name="p", feature_sets=[fs]), None, records, [len(records) // 2], lateness=lateness)


def test_text_that_is_not_unicode_is_quarantined_on_both_paths():
    """JSON's "\\ud800" decodes to a lone surrogate, which no UTF-8 sink can store: the record
    goes to quarantine (wrong_type) instead of failing the checkpoint later."""
    fs = ef.FeatureSet("fs", source=_source([], False), features=[ef.count(window="1h")])
    records = ['{"txn": "t1", "card": "k\\ud800", "ts": "2026-03-01T10:00:00Z"}',
               {"txn": "t2", "card": "k1", "merchant": "m" + chr(0xDC00), "ts": "2026-03-01T10:01:00Z"},
               {"txn": "t3", "card": "k1", "ts": "2026-03-01T10:02:00Z"}]
    one, _vec, _ = _both(ef.Pipeline(name="p", feature_sets=[fs]), None, records, [])
    assert one.counts == {"records": 3, "quarantined": 2}     # _both also encoded the checkpoint
