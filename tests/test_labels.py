"""Label quality: planted conflicting labels and flipped labels are found entirely; clean data
gives nothing; quarantining removes train rows only and records them."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import evenflow as ef
from evenflow.batch.engine import BatchEngine
from evenflow.batch.training import TrainingSet
from evenflow.core.schema import REASONS
from evenflow.errors import DefinitionError
from evenflow.verify.findings import Finding
from evenflow.verify.labels import check_labels, conflicting_labels, label_noise, quarantine_rows


def blobs(n: int = 600, *, flip: int = 0, seed: int = 0, test: int = 100) -> tuple[pa.Table, list[int]]:
    """Two well-separated Gaussian classes (train rows first, then ``test`` test rows); ``flip``
    train labels flipped at random positions, returned as the planted rows."""
    rng = np.random.default_rng(seed)
    total = n + test
    y = rng.integers(0, 2, total)
    x = rng.normal(0, 1, (total, 2)) + np.where(y[:, None] == 1, 4.0, -4.0)
    # flip only rows beyond their class's centre: unmistakably wrong labels, not the ambiguous
    # ones near the boundary that no model can call
    deep = np.where((np.where(y[:n] == 1, 1, -1) * (x[:n, 0] + x[:n, 1])) > 8)[0]
    planted = sorted(int(i) for i in rng.choice(deep, flip, replace=False)) if flip else []
    y_obs = y.copy()
    y_obs[planted] = 1 - y_obs[planted]
    return pa.table({"x1": x[:, 0], "x2": x[:, 1], "y": y_obs.tolist(),
                     "split": ["train"] * n + ["test"] * test}), planted


def as_training_set(table: pa.Table) -> TrainingSet:
    eng = BatchEngine(ef.Pipeline(name="labels"))
    return TrainingSet("t", table, {"quality_steps": {}}, {}, "", ["x1", "x2"], "y", eng)


def test_label_noise_finds_every_flipped_label() -> None:
    table, planted = blobs(flip=15)
    found = label_noise(table, ["x1", "x2"], "y")
    assert isinstance(found, Finding) and not found.passed and found.check == "label_noise"
    assert set(planted) <= set(found.rows)                      # recall 1
    assert len(set(found.rows) - set(planted)) <= 2             # and hardly anything else
    assert found.evidence and all(e["label"] != e["predicted"] for e in found.evidence)
    assert all(e["p_given_label"] < 0.5 for e in found.evidence)
    assert found.to_dict()["rows"] == found.rows


def test_label_noise_on_clean_labels_finds_nothing() -> None:
    table, _ = blobs(seed=3)
    found = label_noise(table, ["x1", "x2"], "y")
    assert found.passed and found.rows == [] and found.observed == 0


def test_label_noise_uses_out_of_fold_probabilities() -> None:
    """A model that memorizes its training rows would vouch for every flipped label in sample;
    out of fold it cannot, so the flips are still found."""
    from sklearn.neighbors import KNeighborsClassifier

    table, planted = blobs(flip=10, seed=5)
    found = label_noise(table, ["x1", "x2"], "y", model=KNeighborsClassifier(n_neighbors=1))
    assert set(planted) <= set(found.rows)


def test_label_noise_only_looks_at_the_asked_split() -> None:
    table, _ = blobs(seed=4)
    ys = table.column("y").to_pylist()
    # flip labels of test rows only: a train-only check must not report them
    flipped = [1 - v if s == "test" else v for v, s in zip(ys, table.column("split").to_pylist(), strict=True)]
    table = table.set_column(table.schema.get_field_index("y"), "y", pa.array(flipped))
    assert label_noise(table, ["x1", "x2"], "y").rows == []
    assert len(label_noise(table, ["x1", "x2"], "y", split=None).rows) >= 90


def test_conflicting_labels_finds_every_planted_pair_and_nothing_else() -> None:
    table, _ = blobs(n=300, seed=1, test=0)
    rows = table.to_pylist()
    planted = []
    for i in range(0, 30, 3):   # conflicting copies
        rows.append({**rows[i], "y": 1 - rows[i]["y"]})
        planted += [i, len(rows) - 1]
    for i in range(100, 110):   # agreeing copies: duplicates, not conflicts
        rows.append(dict(rows[i]))
    rows.append({"x1": None, "x2": 1.0, "y": 0, "split": "train"})
    rows.append({"x1": None, "x2": 1.0, "y": 1, "split": "train"})   # nulls compare equal
    planted += [len(rows) - 2, len(rows) - 1]
    rows.append({**rows[200], "y": 1 - rows[200]["y"], "split": "test"})  # other split: ignored
    found = conflicting_labels(pa.Table.from_pylist(rows), ["x1", "x2"], "y")
    assert not found.passed and found.rows == sorted(planted)
    assert found.observed == len(planted) and len(found.evidence) == 20
    assert {e["group"] for e in found.evidence} <= set(planted)
    clean = conflicting_labels(table, ["x1", "x2"], "y")
    assert clean.passed and clean.rows == []


def test_check_labels_and_quarantine_remove_train_rows_only() -> None:
    table, planted = blobs(flip=12, seed=7)
    rows = table.to_pylist()
    rows.append({**rows[0], "y": 1 - rows[0]["y"]})           # a conflicting copy of train row 0
    rows.append({**rows[650], "y": 1 - rows[650]["y"]})       # and of a test row, in test
    ts = as_training_set(pa.Table.from_pylist(rows))
    findings = check_labels(ts)
    by_check = {f.check: f for f in findings}
    assert set(by_check) == {"conflicting_labels", "label_noise"}
    assert by_check["conflicting_labels"].rows == [0, 700]
    assert set(planted) <= set(by_check["label_noise"].rows)
    cleaned = quarantine_rows(ts, findings)
    removed = set(by_check["label_noise"].rows) | {0, 700}
    assert cleaned.table.num_rows == ts.table.num_rows - len(removed)
    assert cleaned.split("test").equals(ts.split("test"))
    q = ts.engine.quarantine()
    assert sorted(q.column("record").to_pylist()) == sorted(removed)
    assert set(q.column("reason").to_pylist()) <= {"conflicting_labels", "label_noise"} <= set(REASONS)
    assert json.loads(q.filter(pc.equal(q.column("record"), 700)).column("payload")[0].as_py())["y"] == rows[700]["y"]
    assert sum(cleaned.card["quality_steps"]["label_quarantine"].values()) == len(removed)


def test_label_checks_refuse_bad_columns_with_a_fix() -> None:
    table, _ = blobs(n=50, test=0)
    with pytest.raises(DefinitionError) as info:
        conflicting_labels(table, ["nope"], "y")
    assert info.value.field == "nope"
    text = table.append_column("city", pa.array(["a"] * 50))
    with pytest.raises(DefinitionError, match="numeric"):
        label_noise(text, ["city"], "y")
    tiny: dict[str, Any] = {"x1": [1.0, 2.0], "x2": [1.0, 2.0], "y": [0, 1], "split": ["train", "train"]}
    assert label_noise(pa.table(tiny), ["x1", "x2"], "y").passed   # too few rows: says so, passes
