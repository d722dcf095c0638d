"""Contamination and leakage checks: each finds every planted problem and nothing on clean data.

Check functions run on generated Arrow tables; the build-level tests run the real fraud example
(small N) through ``build``: it passes, and the same set with a feature copying the label fails
with a message naming the check and how to accept it.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import yaml

import evenflow as ef
from evenflow.batch.training import build
from evenflow.core.pipeline import Pipeline
from evenflow.verify import leakage as L
from evenflow.verify.findings import Finding, FindingsError

ROOT = Path(__file__).resolve().parents[1]
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
HOUR_US = 3_600_000_000


def _table(n: int = 400, seed: int = 0, **extra: Any) -> pa.Table:
    """Rows with ids, a random 70/30 split, two float features, a binary label, an entity and a time."""
    rng = np.random.default_rng(seed)
    data = {"__row": np.arange(n), "split": np.where(rng.random(n) < 0.7, "train", "test"),
            "x1": rng.normal(size=n), "x2": rng.normal(size=n), "y": rng.integers(0, 2, n),
            "card": [f"c{i}" for i in rng.integers(0, 80, n)],
            "ts": pa.array([T0 + dt.timedelta(minutes=int(m)) for m in rng.integers(0, 10_000, n)],
                           pa.timestamp("us", tz="UTC"))}
    data.update(extra)
    return pa.table(data)


def _set(table: pa.Table, column: str, values: list[Any]) -> pa.Table:
    i = table.column_names.index(column)
    return table.set_column(i, column, pa.array(values, table.schema.field(column).type))


# -- duplicate rows ------------------------------------------------------------------------------
def test_duplicate_rows_found_entirely_and_not_on_clean_data() -> None:
    t = _table()
    assert L.duplicate_rows_across_splits(t, ["x1", "x2", "y"]).passed
    split, x1, x2, y = (t.column(c).to_pylist() for c in ("split", "x1", "x2", "y"))
    train = [i for i, s in enumerate(split) if s == "train"]
    test = [i for i, s in enumerate(split) if s == "test"]
    planted = test[::7]
    for k, i in enumerate(planted):
        src = train[k * 3]
        x1[i], x2[i], y[i] = x1[src], x2[src], y[src]
    x1[test[1]] = None  # a null compares equal to a null
    x1[train[1]], x2[train[1]], y[train[1]] = None, x2[test[1]], y[test[1]]
    planted.append(test[1])
    dirty = _set(_set(_set(t, "x1", x1), "x2", x2), "y", y)
    f = L.duplicate_rows_across_splits(dirty, ["x1", "x2", "y"])
    assert not f.passed and f.severity == "error" and sorted(f.rows) == sorted(planted)
    assert f.observed == len(planted) and len(f.evidence) <= 20
    # the same features with another label is not a duplicate row
    y2 = [1 - v if i in planted else v for i, v in enumerate(y)]
    assert L.duplicate_rows_across_splits(_set(dirty, "y", y2), ["x1", "x2", "y"]).passed


def test_a_chance_repeat_in_a_tiny_share_of_test_rows_is_a_warning_with_its_rows() -> None:
    t = _table(n=6000, seed=3)
    split = t.column("split").to_pylist()
    train = next(i for i, s in enumerate(split) if s == "train")
    test = next(i for i, s in enumerate(split) if s == "test")
    cols = {c: t.column(c).to_pylist() for c in ("x1", "x2", "y")}
    for c in cols:
        cols[c][test] = cols[c][train]
    dirty = _set(_set(_set(t, "x1", cols["x1"]), "x2", cols["x2"]), "y", cols["y"])
    f = L.duplicate_rows_across_splits(dirty, ["x1", "x2", "y"])
    assert not f.passed and f.severity == "warn" and f.rows == [test]
    assert "at most 0.1%" in f.message


def test_rows_without_history_are_not_counted_as_duplicates() -> None:
    t = _table(n=50)
    zero = [0.0 if i % 5 == 0 else v for i, v in enumerate(t.column("x1").to_pylist())]
    none = [None if i % 5 == 0 else v for i, v in enumerate(t.column("x2").to_pylist())]
    t = _set(_set(_set(t, "x1", zero), "x2", none), "y", [0] * 50)
    f = L.duplicate_rows_across_splits(t, ["x1", "x2", "y"])
    assert f.passed and "not counted" in f.message


# -- near-duplicate text --------------------------------------------------------------------------
def _sentences(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    words = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), int(rng.integers(3, 9))))
             for _ in range(2000)]
    return [" ".join(rng.choice(words, 12)) for _ in range(n)]


def test_near_duplicate_text_found_entirely_and_not_on_clean_data() -> None:
    texts = _sentences(400, seed=1)
    t = _table(text=texts)
    assert L.near_duplicate_text_across_splits(t, ["text"]).passed
    split = t.column("split").to_pylist()
    train = [i for i, s in enumerate(split) if s == "train"]
    test = [i for i, s in enumerate(split) if s == "test"]
    planted = test[::4]
    for k, i in enumerate(planted):  # a typo, a case change, or a word dropped: Jaccard >= 0.85
        text = texts[train[k]]
        texts[i] = [text[:30] + "q" + text[31:], text.upper(), " ".join(text.split()[:-1])][k % 3]
    f = L.near_duplicate_text_across_splits(_table(text=texts), ["text"])
    assert not f.passed and sorted(f.rows) == sorted(planted)
    assert all(e["jaccard"] >= 0.8 for e in f.evidence)
    skipped = L.near_duplicate_text_across_splits(t, [])
    assert skipped.passed and skipped.severity == "info"


# -- entity overlap --------------------------------------------------------------------------------
def test_entity_overlap_found_entirely_and_not_on_a_group_split() -> None:
    t = _table()
    cards = t.column("card").to_pylist()
    split = ["test" if int(c[1:]) % 4 == 0 else "train" for c in cards]  # disjoint by entity
    clean = _set(t, "split", split)
    assert L.entity_overlap(clean, ["card"]).passed
    # plant: for two test entities with several rows, move one row to train
    test_cards = [c for c in sorted(set(cards)) if int(c[1:]) % 4 == 0 and cards.count(c) > 1]
    leaked = set(test_cards[:2])
    split2 = list(split)
    for c in leaked:
        split2[cards.index(c)] = "train"
    f = L.entity_overlap(_set(t, "split", split2), ["card"])
    expected = [i for i, c in enumerate(cards) if c in leaked]
    assert expected and not f.passed and f.rows == expected and f.observed == len(leaked)


# -- temporal overlap -------------------------------------------------------------------------------
def test_temporal_overlap_found_entirely_and_not_on_a_time_split() -> None:
    t = _table()
    ts = t.column("ts").to_pylist()
    cut = T0 + dt.timedelta(minutes=6000)
    gap = dt.timedelta(hours=2)
    split = ["train" if v < cut - gap else "test" if v >= cut else "held" for v in ts]
    keep = [s != "held" for s in split]
    clean = _set(t, "split", split).filter(pa.array(keep))
    assert L.temporal_overlap(clean, "ts", int(gap.total_seconds() * 1e6), promised=True).passed
    # plant: test rows inside the gap and before the cutoff
    split2 = list(split)
    planted = [i for i, v in enumerate(ts) if cut - gap <= v < cut][:5] + \
              [i for i, v in enumerate(ts) if v < cut - gap][:5]
    for i in planted:
        split2[i] = "test"
    dirty = _set(t, "split", split2).filter(pa.array([s != "held" for s in split2]))
    f = L.temporal_overlap(dirty, "ts", int(gap.total_seconds() * 1e6), promised=True)
    assert not f.passed and f.severity == "error" and f.rows == sorted(planted)
    info = L.temporal_overlap(dirty, "ts", 0, promised=False)
    assert info.severity == "info" and not info.blocking


# -- label before features ---------------------------------------------------------------------------
def test_label_before_features_found_entirely_and_not_on_clean_data() -> None:
    t = _table()
    ts = t.column("ts").to_pylist()
    later = [v + dt.timedelta(days=3) for v in ts]
    assert L.label_before_features(t.append_column("label_time", pa.array(later)), "ts", "label_time").passed
    planted = [3, 50, 51, 399]
    bad = [v - dt.timedelta(seconds=1) if i in planted else later[i] for i, v in enumerate(ts)]
    f = L.label_before_features(t.append_column("label_time", pa.array(bad)), "ts", "label_time")
    assert not f.passed and f.rows == planted
    assert L.label_before_features(t, "ts", None).passed


# -- target leakage ------------------------------------------------------------------------------------
def test_target_leakage_finds_copies_and_near_perfect_predictors_either_direction() -> None:
    t = _table(n=1000)
    clean = L.target_leakage(t, "y", ["x1", "x2"])
    assert clean.passed and clean.observed["max_auc"] < 0.99
    y = np.asarray(t.column("y").to_pylist())
    rng = np.random.default_rng(5)
    dirty = t.append_column("copy", pa.array(y)) \
        .append_column("strong", pa.array(y + rng.normal(0, 0.05, len(y)))) \
        .append_column("reversed", pa.array(-3.0 * y + rng.normal(0, 0.05, len(y)))) \
        .append_column("text_copy", pa.array([str(v) for v in y]))
    f = L.target_leakage(dirty, "y", ["x1", "x2", "copy", "strong", "reversed"])
    assert not f.passed
    assert set(f.observed["leaking"]) == {"copy", "strong", "reversed", "text_copy"}


def test_auc_matches_scikit_learn() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 5, 300).astype(float), rng.integers(0, 2, 300)
    assert L.auc(x, y) == pytest.approx(roc_auc_score(y, x))


# -- fit outside train ----------------------------------------------------------------------------------
def test_fit_outside_train_flags_each_bad_scope() -> None:
    good = {"scope": "train", "filter": "x", "rows": 10, "max_time_us": 100}
    arts = {"a/impute:x": {"value": 1, "fit_scope": good},
            "a/clip:x": {"lower": 0, "fit_scope": {**good, "scope": "all"}},
            "a/standardize:x": {"mean": 0, "fit_scope": {**good, "max_time_us": 101}},
            "training_set/encode:c": {"vocabulary": []}}
    assert L.fit_outside_train(arts, ["a/impute:x"], train_until_us=100).passed
    f = L.fit_outside_train(arts, list(arts), train_until_us=100)
    assert not f.passed and [e["artifact"] for e in f.evidence] == list(arts)[1:]


# -- point in time ----------------------------------------------------------------------------------------
def _small_pipeline(split: Any, *, accept: list[str] | None = None) -> Pipeline:
    rng = np.random.default_rng(11)
    n = 600
    ev = pa.table({"card": [f"c{i}" for i in rng.integers(0, 30, n)],
                   "ts": pa.array([T0 + dt.timedelta(minutes=int(m)) for m in np.sort(rng.integers(0, 20_000, n))],
                                  pa.timestamp("us", tz="UTC")),
                   "amount": [None if i % 13 == 0 else float(v) for i, v in enumerate(rng.integers(1, 500, n))],
                   "merchant": [f"m{i}" for i in rng.integers(0, 20, n)]})
    lab = pa.table({"card": [f"c{i}" for i in rng.integers(0, 30, 300)],
                    "ts": pa.array([T0 + dt.timedelta(minutes=int(m)) for m in rng.integers(0, 20_000, 300)],
                                   pa.timestamp("us", tz="UTC")),
                    "y": rng.integers(0, 2, 300)})
    tx = ef.source.frame(ev, name="tx", key="card", event_time="ts")
    lb = ef.source.frame(lab, name="labels", key="card", event_time="ts")
    fs = ef.FeatureSet("card", source=tx, steps=[ef.Impute("amount", "median")], features=[
        ef.count(window="1h"), ef.sum("amount", window="1d"), ef.mean("amount", window="2h"),
        ef.std("amount", window="1d"), ef.last("amount", closed="left"), ef.first("amount"),
        ef.distinct("merchant", window="1d"), ef.since_last(), ef.max("amount", window="3h"),
        ef.derive("ratio", "amount / (mean_amount_2h + 1)")])
    spec = ef.TrainingSetSpec(name="t", labels=lb, label="y", features=[fs], split=split,
                              accept=accept or [])
    return ef.Pipeline(name="p", training_set=spec)


def test_point_in_time_matches_a_clean_build_and_finds_every_planted_look_ahead() -> None:
    p = _small_pipeline(ef.TimeSplit(test_from="2026-01-10"))
    ts = build(p)
    con = ts.engine.con
    by = {f.check: f for f in ts.findings}
    assert by["point_in_time"].passed and "3000" not in by["point_in_time"].message
    fs = p.feature_sets[0]
    keys, times = {"card": ["card"]}, {"card": ("ts", None)}
    built = "(SELECT *, epoch_us(ts) AS __t, epoch_us(ts) AS __a FROM __ts0)"
    every = L.point_in_time(con, [fs], keys, times, built, sample=10_000)
    assert every.passed and "match" in every.message
    # plant a look-ahead: for some rows, count the next hour's events too
    con.execute("UPDATE __ts0 SET card__count_1h = (SELECT count(*) FROM ev__card e WHERE e.card = __ts0.card "
                "AND e.ts > __ts0.ts - INTERVAL 1 HOUR AND e.ts <= __ts0.ts + INTERVAL 1 HOUR) "
                "WHERE __qid % 5 = 0")
    planted = sorted(q for (q,) in con.sql(
        "SELECT __qid FROM __ts0 WHERE __qid % 5 = 0 AND card__count_1h <> (SELECT count(*) FROM ev__card e "
        "WHERE e.card = __ts0.card AND e.ts > __ts0.ts - INTERVAL 1 HOUR AND e.ts <= __ts0.ts)").fetchall())
    assert planted
    f = L.point_in_time(con, [fs], keys, times, built, sample=10_000)
    assert not f.passed and f.rows == planted
    assert {e["feature"] for e in f.evidence} <= {"card__count_1h", "card__ratio"}


def test_fit_scope_is_recorded_in_each_learned_artifact() -> None:
    ts = build(_small_pipeline(ef.TimeSplit(test_from="2026-01-10")))
    scope = ts.artifacts["card/impute:amount"]["fit_scope"]
    assert scope["scope"] == "train" and scope["rows"] > 0
    assert scope["max_time_us"] < int(dt.datetime(2026, 1, 10, tzinfo=dt.UTC).timestamp() * 1e6)


def test_group_and_random_splits_pass_their_checks() -> None:
    group = build(_small_pipeline(ef.GroupSplit(by=["card"], test_size=0.3)))
    by = {f.check: f for f in group.findings}
    assert by["entity_overlap"].passed and by["entity_overlap"].severity == "error"
    rand = build(_small_pipeline(ef.RandomSplit(test_size=0.3)))
    by = {f.check: f for f in rand.findings}
    assert by["temporal_overlap"].severity == "info" and not by["temporal_overlap"].passed
    assert [f.check for f in rand.findings if not f.passed] == ["temporal_overlap"]


# -- the fraud example ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fraud(tmp_path_factory: pytest.TempPathFactory, fraud_generator: ModuleType) -> Path:
    root = tmp_path_factory.mktemp("fraud_checks")
    fraud_generator.generate(root / "data", n_transactions=3000, seed=7)
    shutil.copy(ROOT / "examples" / "fraud" / "pipeline.yaml", root / "pipeline.yaml")
    return root


def _fraud(root: Path, *, leak: bool, accept: list[str] | None = None) -> Pipeline:
    data = yaml.safe_load((root / "pipeline.yaml").read_text())
    if leak:  # a feature read from the labels table: at label time it sees the label itself
        data["feature_sets"].append({"name": "chargebacks", "source": "labels",
                                     "features": [{"agg": "max", "column": "is_fraud", "window": "1m"}]})
        data["training_set"]["features"].append("chargebacks")
    if accept:
        data["training_set"]["accept"] = accept
    data["output"] = {"directory": str(root / "out")}
    return Pipeline.from_dict(data, base=root)


def test_fraud_training_set_passes_every_check_and_writes_checks_json(fraud: Path) -> None:
    ts = build(_fraud(fraud, leak=False))
    assert {f.check for f in ts.findings} == set(L.CHECKS)
    assert all(f.passed for f in ts.findings), [f.message for f in ts.findings if not f.passed]
    assert {c["check"] for c in ts.card["checks"]} == set(L.CHECKS)
    written = ts.write()
    doc = json.loads(Path(written["checks"]).read_text())
    assert doc["summary"]["errors"] == 0 and len(doc["findings"]) == len(L.CHECKS)
    assert json.loads(Path(written["card"]).read_text())["checks"][0]["check"]


def test_fraud_with_a_feature_copying_the_label_fails_clearly(fraud: Path) -> None:
    with pytest.raises(FindingsError) as info:
        build(_fraud(fraud, leak=True))
    text = str(info.value)
    assert "target_leakage" in text and "chargebacks__max_is_fraud_1m" in text
    assert "accept: [target_leakage]" in text and "accept=['target_leakage']" in text
    assert [f.check for f in info.value.findings] == ["target_leakage"]


def test_accepting_the_finding_by_name_lets_the_build_through(fraud: Path) -> None:
    ts = build(_fraud(fraud, leak=True, accept=["target_leakage"]))
    f = next(f for f in ts.findings if f.check == "target_leakage")
    assert not f.passed and f.accepted and not f.blocking
    # accepting another check does not let this one through
    with pytest.raises(FindingsError):
        build(_fraud(fraud, leak=True, accept=["temporal_overlap"]))


def test_yaml_accept_and_text_columns_round_trip_and_keep_old_fingerprints(fraud: Path) -> None:
    plain = _fraud(fraud, leak=False)
    data = yaml.safe_load(plain.to_yaml())
    assert "accept" not in data["training_set"] and "text_columns" not in data["training_set"]
    data["training_set"].update(accept=["temporal_overlap"], text_columns=["channel"])
    again = Pipeline.from_yaml(yaml.safe_dump(data))
    assert again.training_set is not None and again.training_set.accept == ["temporal_overlap"]
    assert Pipeline.from_yaml(again.to_yaml()).fingerprint() == again.fingerprint() != plain.fingerprint()


def test_findings_error_lists_every_failing_check() -> None:
    err = FindingsError([Finding("a", "error", False, "m1", observed=2, bound=0),
                         Finding("b", "error", False, "m2", observed=0.999, bound=0.99)])
    assert "a: m1 (observed 2, bound 0)" in str(err) and "accept: [a, b]" in str(err)
