"""Quality steps through the engines: outliers, scaling, encoding, imputation by entity, class
imbalance. Planted problems are found entirely, clean data gives nothing, everything learned
comes from the train split, and the batch result equals the one-record (stream) form."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import statistics
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import evenflow as ef
from evenflow.batch.engine import BatchEngine
from evenflow.batch.training import build
from evenflow.core import steps as S
from evenflow.core.schema import REASONS
from evenflow.errors import DefinitionError

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
TEST_FROM = T0 + 40 * DAY
# keeps every label row, in label order; not stratified, so a label flip moves no row across splits
RANDOM = ef.RandomSplit(test_size=0.3, seed=1, stratify=False)


def events(n: int = 1200, *, planted: dict[int, float] | None = None, seed: int = 1,
           nulls: int = 0) -> pa.Table:
    """Uniform amounts in [0, 100) (no outliers by any method's default k) with values planted
    at the given rows; every ``nulls``-th amount null."""
    rng = np.random.default_rng(seed)
    ts = [T0 + dt.timedelta(seconds=float(s)) for s in np.sort(rng.uniform(0, 60 * 86400, n))]
    amount: list[float | None] = [float(a) for a in rng.uniform(0, 100, n)]
    for i, value in (planted or {}).items():
        amount[i] = value
    if nulls:
        amount = [None if i % nulls == 3 else a for i, a in enumerate(amount)]
    return pa.table({
        "card": [f"c{int(c)}" for c in rng.integers(0, 30, n)],
        "merchant": [f"m{int(m)}" for m in rng.integers(0, 8, n)],
        "amount": pa.array(amount, pa.float64()),
        "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
    })


def labels(ev: pa.Table, n: int = 500, seed: int = 2) -> pa.Table:
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(ev.num_rows, n, replace=False))  # no two identical label rows
    merchants = [ev.column("merchant")[int(i)].as_py() for i in idx]
    # the label depends on the merchant, so target encoding has something to learn
    p = {f"m{m}": 0.1 + 0.1 * m for m in range(8)}
    return pa.table({
        "card": [ev.column("card")[int(i)].as_py() for i in idx],
        "merchant": merchants,
        "ts": pa.array([ev.column("ts")[int(i)].as_py() + dt.timedelta(minutes=5) for i in idx],
                       pa.timestamp("us", tz="UTC")),
        "y": [int(rng.uniform() < p[m]) for m in merchants],
    })


def pipeline(ev: pa.Table, *, steps: list[Any] | None = None, ts_steps: list[Any] | None = None,
             lab: pa.Table | None = None, split: Any = None,
             resample: S.Resample | None = None) -> ef.Pipeline:
    tx = ef.source.frame(ev, name="tx", key="card", event_time="ts")
    lb = ef.source.frame(labels(ev) if lab is None else lab, name="labels", key="card", event_time="ts")
    card = ef.FeatureSet("card", source=tx, steps=steps or [],
                         features=[ef.count(window="1d"), ef.mean("amount", window="7d"),
                                   ef.sum("amount", window="1d")])
    spec = ef.TrainingSetSpec(name="t", labels=lb, label="y", features=[card],
                              split=split or ef.TimeSplit(test_from=TEST_FROM.isoformat(), gap="1d"),
                              steps=ts_steps or [], resample=resample)
    return ef.Pipeline(name="p", training_set=spec)


def prepared(ev: pa.Table, steps: list[Any]) -> tuple[BatchEngine, Any, pa.Table]:
    """The feature set's events after ``steps`` (fitted on all events), in input order."""
    p = pipeline(ev, steps=steps)
    eng = BatchEngine(p)
    prep = eng.prepare(p.feature_set("card"))
    out = eng.con.sql(f'SELECT * FROM "{prep.table}" ORDER BY __seq').to_arrow_table()
    return eng, prep, out


# -- outliers ------------------------------------------------------------------------------------

# moderate values: one huge value would inflate the std and mask the others from zscore
PLANTED = {5: 400.0, 77: -150.0, 400: 300.0, 901: 250.0}
METHODS = ["iqr", "zscore", "mad"]


@pytest.mark.parametrize("method", METHODS)
def test_outlier_quarantine_finds_every_planted_row_and_reconciles(method: str) -> None:
    ev = events(planted=PLANTED)
    eng, prep, _ = prepared(ev, [ef.Outliers("amount", method=method, action="quarantine")])
    q = eng.quarantine()
    assert sorted(q.column("record").to_pylist()) == sorted(PLANTED)  # recall 1, nothing else
    assert set(q.column("reason").to_pylist()) == {"outlier"}
    assert set(q.column("step").to_pylist()) == {f"outliers:amount:{method}:quarantine"}
    assert all("learned on the train split" in d for d in q.column("detail").to_pylist())
    assert json.loads(q.column("payload")[0].as_py())["amount"] in PLANTED.values()
    acc = prep.accounting()
    assert acc["reconciles"] and acc["quarantined"] == len(PLANTED) and acc["output"] == 1200 - len(PLANTED)
    assert "outlier" in REASONS


@pytest.mark.parametrize("method", METHODS)
def test_outliers_on_clean_data_find_nothing(method: str) -> None:
    _, prep, out = prepared(events(), [ef.Outliers("amount", method=method, action="flag")])
    assert not any(out.column("amount_outlier").to_pylist())
    assert prep.quarantined == 0


@pytest.mark.parametrize("method", [*METHODS, "quantile"])
def test_outlier_flag_and_clip_agree_with_the_stream_form(method: str) -> None:
    ev = events(planted=PLANTED, nulls=50)
    steps = [ef.Outliers("amount", method=method, action="flag"),
             ef.Outliers("amount", method=method, action="clip")]
    _, prep, out = prepared(ev, steps)
    flags = out.column("amount_outlier").to_pylist()
    if method != "quantile":   # quantile bounds cut the tails of clean data too, by design
        assert [i for i, f in enumerate(flags) if f] == sorted(PLANTED)
    art_flag = prep.artifacts[f"card/outliers:amount:{method}:flag"]
    art_clip = prep.artifacts[f"card/outliers:amount:{method}:clip"]
    assert art_flag == art_clip
    records = ev.to_pylist()
    for record, row in zip(records, out.to_pylist(), strict=True):
        one = steps[1].transform_one(steps[0].transform_one(record, art_flag), art_clip)
        assert one["amount_outlier"] == row["amount_outlier"]
        assert one["amount"] == pytest.approx(row["amount"]) if row["amount"] is not None else one["amount"] is None


def test_outlier_bounds_and_scaling_ignore_values_planted_only_in_test() -> None:
    ev = events()
    ts = ev.column("ts").to_pylist()
    # extreme values only in the test period (after TEST_FROM): a fit on all data would move
    planted = {i: 1e7 for i, t in enumerate(ts) if t >= TEST_FROM}
    ev_planted = events(planted=planted)
    steps = [ef.Outliers("amount", method="zscore", action="flag"), ef.Scale("amount", method="minmax")]
    ts_steps = [ef.Scale("card__mean_amount_7d", method="standard"),
                ef.Outliers("card__sum_amount_1d", method="iqr", action="clip")]
    clean_set = build(pipeline(ev, steps=steps, ts_steps=ts_steps))
    planted_set = build(pipeline(ev_planted, steps=steps, ts_steps=ts_steps))
    assert planted and clean_set.artifacts == planted_set.artifacts
    # and the numbers are those of the train events alone
    cutoff = TEST_FROM - DAY
    train = [a for a, t in zip(ev.column("amount").to_pylist(), ts, strict=True) if t < cutoff]
    art = planted_set.artifacts["card/outliers:amount:zscore:flag"]
    mu, sd = statistics.fmean(train), statistics.stdev(train)
    assert art["lower"] == pytest.approx(mu - 3 * sd) and art["upper"] == pytest.approx(mu + 3 * sd)
    minmax = planted_set.artifacts["card/scale:amount"]
    assert (minmax["center"], minmax["scale"]) == (pytest.approx(min(train)), pytest.approx(max(train) - min(train)))
    train_rows = planted_set.split("train")
    before = build(pipeline(ev_planted, steps=steps)).split("train").column("card__mean_amount_7d").to_pylist()
    scaled = train_rows.column("card__mean_amount_7d").to_pylist()
    kept = [b for b in before if b is not None]
    std_art = planted_set.artifacts["training_set/scale:card__mean_amount_7d"]
    assert std_art["center"] == pytest.approx(statistics.fmean(kept))
    assert statistics.fmean([s for s in scaled if s is not None]) == pytest.approx(0, abs=1e-9)


def test_outlier_quarantine_on_the_training_set_removes_rows_and_counts_them() -> None:
    ev = events()
    lab = labels(ev)
    base = build(pipeline(ev, lab=lab))
    amounts = base.table.column("card__sum_amount_1d").to_pylist()
    step = ef.Outliers("card__sum_amount_1d", method="quantile", q=(0.05, 0.95), action="quarantine")
    ts = build(pipeline(ev, lab=lab, ts_steps=[step]))
    art = ts.artifacts[f"training_set/{step.id}"]
    splits = base.table.column("split").to_pylist()
    outside = [i for i, a in enumerate(amounts) if a is not None and not art["lower"] <= a <= art["upper"]]
    assert outside and ts.table.num_rows == base.table.num_rows - len(outside)
    counted = ts.card["quality_steps"]["quarantined"][step.id]
    assert counted.get("train", 0) == sum(1 for i in outside if splits[i] == "train")
    assert counted.get("test", 0) == sum(1 for i in outside if splits[i] == "test")
    assert ts.card["quarantine"].get("outlier") == len(outside)
    q = ts.engine.quarantine()
    rows = q.filter(pc.equal(q.column("reason"), "outlier"))
    assert set(rows.column("feature_set").to_pylist()) == {"training_set"}
    assert sorted(json.loads(p)["card__sum_amount_1d"] for p in rows.column("payload").to_pylist()) == \
        sorted(amounts[i] for i in outside)


# -- encoding ------------------------------------------------------------------------------------

def test_onehot_and_frequency_encoding_on_a_training_set() -> None:
    ev = events()
    ts = build(pipeline(ev, ts_steps=[ef.OneHot("merchant", max_categories=3),
                                       ef.FrequencyEncode("card")], split=RANDOM))
    art = ts.artifacts["training_set/onehot:merchant"]
    assert len(art["vocabulary"]) == 3
    added = [f"merchant={v}" for v in art["vocabulary"]] + ["merchant=other"]
    assert [c for c in ts.feature_columns if c.startswith("merchant=")] == added
    merchants = ts.table.column("merchant").to_pylist()
    for i, m in enumerate(merchants):
        row = {c: ts.table.column(c)[i].as_py() for c in added}
        assert sum(row.values()) == 1
        assert row[f"merchant={m}" if m in art["vocabulary"] else "merchant=other"] == 1
    x, _ = ts.xy("train")
    assert x.shape[1] == len(ts.feature_columns)
    train_cards = [c for c, s in zip(labels(ev).column("card").to_pylist(), ts.table.column("split").to_pylist(),
                                     strict=True) if s == "train"]
    freq = ts.artifacts["training_set/frequency:card"]["frequencies"]
    assert freq == {c: pytest.approx(train_cards.count(c) / len(train_cards)) for c in set(train_cards)}


def target_set(lab: pa.Table, ev: pa.Table, **kwargs: Any) -> Any:
    step = ef.TargetEncode("merchant", label="y", folds=5, smoothing=2.0, **kwargs)
    return build(pipeline(ev, lab=lab, ts_steps=[step], split=RANDOM)), step


def test_target_encoding_is_out_of_fold_a_rows_own_label_never_feeds_it() -> None:
    ev = events()
    lab = labels(ev)
    ts, step = target_set(lab, ev)
    art = ts.artifacts[f"training_set/{step.id}"]
    assert len(art["folds"]) == 5
    enc = ts.table.column("merchant").to_pylist()
    splits = ts.table.column("split").to_pylist()
    # test rows: the whole-train mapping
    merchants = lab.column("merchant").to_pylist()
    for e, m, s in zip(enc, merchants, splits, strict=True):
        if s == "test":
            assert e == art["mapping"].get(m, art["prior"])
    # train rows: one of the fold mappings, never necessarily the full one; flipping a train row's
    # own label leaves its encoding unchanged (and changes the full mapping)
    train_rows = [i for i, s in enumerate(splits) if s == "train"]
    ys = lab.column("y").to_pylist()
    for i in train_rows[:3] + train_rows[-2:]:
        flipped = lab.set_column(lab.schema.get_field_index("y"), "y",
                                 pa.array([1 - y if j == i else y for j, y in enumerate(ys)]))
        again, _ = target_set(flipped, ev)
        assert again.table.column("merchant")[i].as_py() == enc[i]
        assert again.artifacts[f"training_set/{step.id}"]["mapping"] != art["mapping"]
    # each train row's value is its fold's mapping, which excludes the row
    assert all(any(enc[i] == f["mapping"].get(merchants[i], f["prior"]) for f in art["folds"])
               for i in train_rows)


def test_target_encoding_is_refused_on_a_feature_set() -> None:
    p = pipeline(events(), steps=[ef.TargetEncode("merchant", label="amount")])
    with pytest.raises(DefinitionError, match="belongs on the training set"):
        BatchEngine(p).prepare(p.feature_set("card"))


# -- imputation by entity -------------------------------------------------------------------------

def test_impute_last_by_entity_matches_a_hand_computation_and_the_stream_form() -> None:
    ev = events(nulls=4)
    step = ef.Impute("amount", "last", indicator=True, value=-1.0)
    _, prep, out = prepared(ev, [step])
    art = prep.artifacts["card/impute:amount"]
    assert art == {"value": -1.0, "by": ["card"], "order": ["ts", "__seq"]}
    order = sorted(range(ev.num_rows), key=lambda i: (ev.column("ts")[i].as_py(), i))
    last: dict[str, float] = {}
    expected: dict[int, float] = {}
    bound = step.bind(key=["card"], order=["ts", "__seq"])
    states: dict[str, dict[str, Any]] = {}
    records = ev.to_pylist()
    for i in order:  # the stream sees events in event-time order
        card, amount = records[i]["card"], records[i]["amount"]
        expected[i] = last.get(card, -1.0) if amount is None else amount
        if amount is not None:
            last[card] = amount
        assert isinstance(bound, S.Impute)
        one = bound.transform_one(records[i], art, states.setdefault(bound.state_key(records[i], art), {}))
        assert one["amount"] == expected[i] and one["amount_missing"] is (amount is None)
    assert out.column("amount").to_pylist() == [expected[i] for i in range(ev.num_rows)]
    assert out.column("amount_missing").to_pylist() == [a is None for a in ev.column("amount").to_pylist()]
    assert sum(out.column("amount_missing").to_pylist()) == 300


# -- YAML and fingerprint ------------------------------------------------------------------------

def test_new_steps_and_resample_round_trip_through_yaml_with_the_same_fingerprint() -> None:
    schema = ef.Schema(card=ef.String(), merchant=ef.String(), amount=ef.Float(), ts=ef.Timestamp(),
                       y=ef.Int())
    tx = ef.source.parquet("tx.parquet", schema=schema, key="card", event_time="ts")
    steps = [ef.Impute("amount", "last", indicator=True), ef.Outliers("amount", method="mad", k=4.0,
             action="quarantine"), ef.Scale("amount", method="robust"), ef.OneHot("merchant", max_categories=5)]
    ts_steps = [ef.TargetEncode("merchant", label="y", folds=3, smoothing=1.5),
                ef.FrequencyEncode("card"), ef.Outliers("card__sum_amount_1d", method="quantile", q=(0.1, 0.9))]
    card = ef.FeatureSet("card", source=tx, steps=steps, features=[ef.sum("amount", window="1d")])

    def make(resample: S.Resample) -> ef.Pipeline:
        spec = ef.TrainingSetSpec(name="t", labels=tx, label="y", features=[card], steps=ts_steps,
                                  split=ef.RandomSplit(test_size=0.2), resample=resample)
        return ef.Pipeline(name="p", training_set=spec)

    p = make(ef.Resample(method="smote", seed=3, k_neighbors=4))
    back = ef.Pipeline.from_yaml(p.to_yaml())
    assert back.fingerprint() == p.fingerprint()
    assert back.training_set is not None and back.training_set.steps == ts_steps
    assert back.feature_sets[0].steps == steps
    assert back.training_set.resample == ef.Resample(method="smote", seed=3, k_neighbors=4)
    assert make(ef.Resample(method="smote", seed=4, k_neighbors=4)).fingerprint() != p.fingerprint()
    art = {"training_set/x": {"mapping": {"a": 0.5}}}
    assert back.fingerprint(art) == p.fingerprint(art) != p.fingerprint({"training_set/x": {"mapping": {"a": 0.6}}})
    assert "resample:" in p.to_yaml() and "kind: target_encode" in p.to_yaml()


# -- class imbalance ------------------------------------------------------------------------------

def imbalanced(ev: pa.Table) -> pa.Table:
    lab = labels(ev, n=600)
    rng = np.random.default_rng(9)
    return lab.set_column(lab.schema.get_field_index("y"), "y",
                          pa.array([int(v) for v in rng.uniform(size=lab.num_rows) < 0.15]))


@pytest.mark.parametrize("method", ["under", "over", "smote"])
def test_resampling_touches_the_train_split_only(method: str) -> None:
    ev = events()
    lab = imbalanced(ev)
    ts_steps = [ef.Impute("card__mean_amount_7d", "constant", value=0.0),
                ef.Impute("card__sum_amount_1d", "constant", value=0.0)]
    base = build(pipeline(ev, lab=lab, ts_steps=ts_steps))
    spec = ef.Resample(method=method, seed=1)
    res = build(pipeline(ev, lab=lab, ts_steps=ts_steps, resample=spec))
    # test rows: identical values, identical order
    assert res.split("test").drop_columns(["synthetic"]).equals(base.split("test"))
    assert not any(res.split("test").column("synthetic").to_pylist())
    counts = dict(zip(*np.unique(res.split("train").column("y").to_numpy(), return_counts=True), strict=True))
    before = dict(zip(*np.unique(base.split("train").column("y").to_numpy(), return_counts=True), strict=True))
    assert counts[0] == counts[1]
    assert counts == ({0: before[1], 1: before[1]} if method == "under" else {0: before[0], 1: before[0]})
    info = res.card["quality_steps"]["resample"]
    assert info["train_before"] == {str(k): int(v) for k, v in before.items()}
    synthetic = res.split("train").filter(res.split("train").column("synthetic"))
    assert synthetic.num_rows == (before[0] - before[1] if method == "smote" else 0)
    if method == "smote":
        assert set(synthetic.column("y").to_pylist()) == {1}
        assert synthetic.column("card").null_count == synthetic.num_rows
    else:  # whole original rows, nothing invented
        originals = {json.dumps(r, default=str) for r in base.split("train").to_pylist()}
        assert all(json.dumps({k: v for k, v in r.items() if k != "synthetic"}, default=str) in originals
                   for r in res.split("train").to_pylist())
    # the Python form gives the same table
    again = base.resample(spec.method, seed=1)
    assert again.table.equals(res.table)


def test_class_weights_and_sample_weight_column_come_from_train() -> None:
    ev = events()
    ts = build(pipeline(ev, lab=imbalanced(ev)))
    train_y = ts.split("train").column("y").to_pylist()
    n, n1 = len(train_y), sum(train_y)
    weights = ts.class_weights()
    assert weights == {0: pytest.approx(n / (2 * (n - n1))), 1: pytest.approx(n / (2 * n1))}
    weighted = ts.with_sample_weight()
    got = weighted.table.column("sample_weight").to_pylist()
    assert got == [weights[y] for y in ts.table.column("y").to_pylist()]
    # sklearn agrees with the balanced rule
    from sklearn.utils.class_weight import compute_class_weight
    sk = compute_class_weight("balanced", classes=np.array([0, 1]), y=np.array(train_y))
    assert [weights[0], weights[1]] == pytest.approx(list(sk))


def test_smote_refuses_null_features_with_a_fix() -> None:
    ev = events()
    ts = build(pipeline(ev, lab=imbalanced(ev)))
    col = ts.table.column("card__sum_amount_1d").to_pylist()
    holed = ts.table.set_column(ts.table.schema.get_field_index("card__sum_amount_1d"), "card__sum_amount_1d",
                                pa.array([None, *col[1:]], pa.float64()))
    with pytest.raises(DefinitionError, match="Impute") as info:
        dataclasses.replace(ts, table=holed).resample("smote")
    assert info.value.field == "card__sum_amount_1d"
    with pytest.raises(DefinitionError, match="Encode"):
        dataclasses.replace(ts, feature_columns=["card"]).resample("smote")


def test_added_columns_feed_features_and_impute_last_works_on_a_training_set() -> None:
    ev = events(nulls=4, planted={5: 400.0, 900: -150.0})
    tx = ef.source.frame(ev, name="tx", key="card", event_time="ts")
    lb = ef.source.frame(labels(ev), name="labels", key="card", event_time="ts")
    card = ef.FeatureSet("card", source=tx,
                         steps=[ef.Impute("amount", "last", indicator=True), ef.Outliers("amount", action="flag")],
                         features=[ef.sum("amount_missing", window="60d"), ef.sum("amount_outlier", window="60d"),
                                   ef.mean("amount", window="7d")])
    spec = ef.TrainingSetSpec(name="t", labels=lb, label="y", features=[card],
                              split=ef.TimeSplit(test_from=TEST_FROM.isoformat(), gap="1d"),
                              steps=[ef.Impute("card__mean_amount_7d", "last", indicator=True, value=-1.0)])
    ts = build(ef.Pipeline(name="p", training_set=spec))
    assert ts.feature_columns[-1] == "card__mean_amount_7d_missing"
    # the 60-day sums count the card's null and planted amounts up to each label time
    rows = sorted(ev.to_pylist(), key=lambda r: r["ts"])
    last: dict[str, float] = {}
    for r in rows:  # the flag sees the imputed amount: a null after a planted value is flagged too
        r["filled"] = last.get(r["card"]) if r["amount"] is None else r["amount"]
        if r["amount"] is not None:
            last[r["card"]] = r["amount"]
    bounds = ts.artifacts["card/outliers:amount:iqr:flag"]
    for row in ts.table.to_pylist()[:80]:
        mine = [r for r in rows if r["card"] == row["card"] and r["ts"] <= row["ts"]]
        assert row["card__sum_amount_missing_60d"] == sum(r["amount"] is None for r in mine)
        assert row["card__sum_amount_outlier_60d"] == sum(
            r["filled"] is not None and not bounds["lower"] <= r["filled"] <= bounds["upper"] for r in mine)
    art = ts.artifacts["training_set/impute:card__mean_amount_7d"]
    assert art == {"value": -1.0, "by": ["card"], "order": ["ts", "__qid"]}
