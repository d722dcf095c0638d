"""Training sets: splits, train-only fitting, every label row back, several entities."""

from __future__ import annotations

import datetime as dt
import statistics
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet
import pytest

import evenflow as ef
from evenflow.batch.training import build

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
ROOT = Path(__file__).resolve().parents[1]


def events(n: int = 2000, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    ts = [T0 + dt.timedelta(seconds=float(s)) for s in np.sort(rng.uniform(0, 60 * 86400, n))]
    amount = rng.gamma(2.0, 10.0, n)
    # later events are much larger: a step fitted on all data would see it
    amount = np.where(np.array([t >= T0 + 40 * DAY for t in ts]), amount * 100, amount)
    amount_list = [None if i % 17 == 0 else float(a) for i, a in enumerate(amount)]
    return pa.table({
        "card": [f"c{int(c)}" for c in rng.integers(0, 40, n)],
        "merchant": [f"m{int(m)}" for m in rng.integers(0, 10, n)],
        "amount": pa.array(amount_list, pa.float64()),
        "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
    })


def labels(ev: pa.Table, seed: int = 2, n: int = 600) -> pa.Table:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, ev.num_rows, n)
    ts = [ev.column("ts")[int(i)].as_py() + dt.timedelta(minutes=float(rng.uniform(0, 90))) for i in idx]
    y = rng.integers(0, 2, n) * (rng.uniform(size=n) < 0.5)
    return pa.table({
        "card": [ev.column("card")[int(i)].as_py() for i in idx] + ["never_seen"],
        "merchant": [ev.column("merchant")[int(i)].as_py() for i in idx] + ["m0"],
        "ts": pa.array([*ts, T0 + 30 * DAY], pa.timestamp("us", tz="UTC")),
        "label_time": pa.array([t + dt.timedelta(days=int(d)) for t, d in zip(ts, rng.integers(1, 20, n), strict=True)]
                               + [T0 + 31 * DAY], pa.timestamp("us", tz="UTC")),
        "y": [int(v) for v in y] + [1],
    })


def pipeline(split: object, *, steps: list | None = None, ts_steps: list | None = None,
             ev: pa.Table | None = None, lab: pa.Table | None = None) -> ef.Pipeline:
    ev = events() if ev is None else ev
    lab = labels(ev) if lab is None else lab
    tx = ef.source.frame(ev, name="tx", key="card", event_time="ts")
    lb = ef.source.frame(lab, name="labels", key="card", event_time="ts")
    card = ef.FeatureSet("card", source=tx, steps=steps or [],
                         features=[ef.count(window="1d"), ef.mean("amount", window="7d"), ef.since_last()])
    merchant = ef.FeatureSet("merchant", source=tx, key="merchant", features=[ef.count(window="1h")])
    spec = ef.TrainingSetSpec(name="t", labels=lb, label="y", features=[card, merchant], split=split,
                              label_available_time="label_time", steps=ts_steps or [])
    return ef.Pipeline(name="p", training_set=spec)


def column(table: pa.Table, name: str) -> list:
    return table.column(name).to_pylist()


def test_time_split_embargo_defaults_to_longest_window_and_respects_label_time() -> None:
    test_from = T0 + 45 * DAY
    ts = build(pipeline(ef.TimeSplit(test_from=test_from.isoformat())))
    assert ts.card["split"]["gap"] == "7d"
    cutoff = test_from - 7 * DAY
    train, test = ts.split("train"), ts.split("test")
    assert max(column(train, "ts")) < cutoff
    assert max(column(train, "label_time")) < cutoff
    assert min(column(test, "ts")) >= test_from
    held = ts.card["held_out"]
    assert held["gap"] > 0 and held["label_late"] > 0
    assert ts.card["rows"]["train"] + ts.card["rows"]["test"] + sum(held.values()) == 601


def test_group_split_keeps_entities_apart_and_is_seeded() -> None:
    ts = build(pipeline(ef.GroupSplit(by=["card"], test_size=0.3, seed=5)))
    train = set(column(ts.split("train"), "card"))
    test = set(column(ts.split("test"), "card"))
    assert train and test and not train & test
    again = build(pipeline(ef.GroupSplit(by=["card"], test_size=0.3, seed=5)))
    assert set(column(again.split("test"), "card")) == test
    other = build(pipeline(ef.GroupSplit(by=["card"], test_size=0.3, seed=6)))
    assert set(column(other.split("test"), "card")) != test


def test_random_split_is_stratified_and_seeded() -> None:
    ts = build(pipeline(ef.RandomSplit(test_size=0.25, seed=3)))
    table = ts.table
    for value in (0, 1):
        rows = table.filter(pc.equal(table.column("y"), value))
        n_test = sum(1 for s in column(rows, "split") if s == "test")
        assert n_test == round(rows.num_rows * 0.25)
    same = build(pipeline(ef.RandomSplit(test_size=0.25, seed=3)))
    assert column(same.table, "split") == column(table, "split")
    other = build(pipeline(ef.RandomSplit(test_size=0.25, seed=4)))
    assert column(other.table, "split") != column(table, "split")


def test_learned_steps_are_fitted_on_the_train_split_only() -> None:
    ev = events()
    test_from = T0 + 45 * DAY
    p = pipeline(ef.TimeSplit(test_from=test_from.isoformat(), gap="1d"),
                 steps=[ef.Impute("amount", "median")], ts_steps=[ef.Standardize("card__mean_amount_7d")],
                 ev=ev)
    ts = build(p)
    cutoff = test_from - DAY
    train_amounts = [a for a, t in zip(column(ev, "amount"), column(ev, "ts"), strict=True)
                     if a is not None and t < cutoff]
    assert ts.artifacts["card/impute:amount"]["value"] == pytest.approx(statistics.median(train_amounts))
    all_amounts = [a for a in column(ev, "amount") if a is not None]
    assert statistics.median(all_amounts) != pytest.approx(statistics.median(train_amounts))
    # the training-set step: train rows come out with mean 0 and std 1, test rows do not
    std_art = ts.artifacts["training_set/standardize:card__mean_amount_7d"]
    raw = build(pipeline(ef.TimeSplit(test_from=test_from.isoformat(), gap="1d"),
                         steps=[ef.Impute("amount", "median")], ev=ev))
    train_raw = [v for v in column(raw.split("train"), "card__mean_amount_7d") if v is not None]
    assert std_art["mean"] == pytest.approx(statistics.fmean(train_raw))
    assert std_art["std"] == pytest.approx(statistics.stdev(train_raw))
    scaled = [v for v in column(ts.split("train"), "card__mean_amount_7d") if v is not None]
    assert statistics.fmean(scaled) == pytest.approx(0, abs=1e-9)
    scaled_test = [v for v in column(ts.split("test"), "card__mean_amount_7d") if v is not None]
    assert statistics.fmean(scaled_test) > 1  # test-era amounts are 100x: not re-fitted on them
    assert ts.fingerprint != raw.fingerprint


def test_every_label_row_comes_back_with_nulls_where_nothing_was_known() -> None:
    ts = build(pipeline(ef.RandomSplit(test_size=0.5, seed=0)))
    assert ts.table.num_rows == 601
    row = ts.table.filter(pc.equal(ts.table.column("card"), "never_seen")).to_pylist()[0]
    assert row["card__count_1d"] == 0 and row["card__mean_amount_7d"] is None
    assert row["card__since_last_before"] is None
    by_set = {s["name"]: s for s in ts.card["feature_sets"]}
    assert by_set["card"]["rows_without_history"] >= 1


def test_two_entities_join_into_one_training_set() -> None:
    ev, lab = events(), None
    lab = labels(ev)
    ts = build(pipeline(ef.RandomSplit(test_size=0.5, seed=0), ev=ev, lab=lab))
    assert {"card__count_1d", "merchant__count_1h"} <= set(ts.table.column_names)
    # spot-check one merchant value by hand
    row = ts.table.to_pylist()[10]
    t = row["ts"]
    expect = sum(1 for m, e in zip(column(ev, "merchant"), column(ev, "ts"), strict=True)
                 if m == row["merchant"] and t - dt.timedelta(hours=1) < e <= t)
    assert row["merchant__count_1h"] == expect


def test_training_set_writes_warehouse_parquet_delta_and_card(tmp_path: Path) -> None:
    import duckdb
    from deltalake import DeltaTable

    ts = build(pipeline(ef.RandomSplit(test_size=0.5, seed=0)))
    written = ts.write(directory=str(tmp_path))
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    assert con.sql("SELECT count(*) FROM t").fetchall()[0][0] == ts.table.num_rows
    assert pa.parquet.read_table(written["parquet"]).num_rows == ts.table.num_rows  # type: ignore[attr-defined]
    assert DeltaTable(written["gold"]).to_pyarrow_table().num_rows == ts.table.num_rows
    bronze = DeltaTable(written["bronze/tx"]).to_pyarrow_table()
    assert bronze.num_rows == 2000 and bronze.schema.field("amount").type == pa.string()
    assert sorted(bronze.column("_record").to_pylist()) == list(range(2000))
    card = (tmp_path / "t" / "card.md").read_text()
    assert ts.fingerprint in card and "Nothing lost" in card


@pytest.mark.slow
def test_fraud_example_features_carry_signal(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "examples" / "fraud"))
    try:
        import generate  # type: ignore[import-not-found]
        import pipeline as fraud  # type: ignore[import-not-found]
        import train  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    generate.generate(tmp_path / "data", n_transactions=60_000, seed=3)
    p = fraud.pipeline(tmp_path / "data", tmp_path / "out")
    ts = build(p)
    written = ts.write(p.output)
    scores = train.evaluate(Path(written["parquet"]))
    assert scores["with windowed features"] > scores["baseline (no windows)"] + 0.1
    assert all(s["reconciles"] for s in ts.card["feature_sets"])


def test_serving_features_reuse_the_training_artifacts() -> None:
    """Features at every event with a training set's artifacts apply its fitted values unchanged."""
    from evenflow.batch.engine import BatchEngine

    ev = events()
    test_from = T0 + 45 * DAY
    p = pipeline(ef.TimeSplit(test_from=test_from.isoformat(), gap="1d"),
                 steps=[ef.Impute("amount", "median")], ev=ev)
    ts = build(p)
    fs = p.feature_set("card")
    fitted = ts.artifacts["card/impute:amount"]["value"]
    served = BatchEngine(p).features_at_events(fs, artifacts=ts.artifacts)
    refit = BatchEngine(p).features_at_events(fs)  # fitted on every event: a different value
    nulls = [i for i, a in enumerate(column(ev, "amount")) if a is None]
    assert {column(served, "amount")[i] for i in nulls} == {fitted}
    assert {column(refit, "amount")[i] for i in nulls} != {fitted}
