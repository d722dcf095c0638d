"""The definition: YAML round trip, fingerprint stability, Python == YAML, clear errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

import evenflow as ef
from evenflow.core.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[1]
FRAUD = ROOT / "examples" / "fraud"


def fraud_python() -> Pipeline:
    sys.path.insert(0, str(FRAUD))
    try:
        import pipeline as fraud_pipeline  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    return fraud_pipeline.pipeline()


def test_yaml_round_trip_keeps_the_fingerprint() -> None:
    p = Pipeline.load(FRAUD / "pipeline.yaml")
    again = Pipeline.from_yaml(p.to_yaml())
    assert again.fingerprint() == p.fingerprint()
    assert again.canonical() == p.canonical()
    # and a second trip is a fixed point of the text itself
    assert Pipeline.from_yaml(again.to_yaml()).to_yaml() == again.to_yaml()


def test_python_and_yaml_definitions_are_the_same_pipeline() -> None:
    assert fraud_python().fingerprint() == Pipeline.load(FRAUD / "pipeline.yaml").fingerprint()


def test_fingerprint_changes_with_meaning_not_with_location(tmp_path: Path) -> None:
    base = Pipeline.load(FRAUD / "pipeline.yaml")
    data = yaml.safe_load((FRAUD / "pipeline.yaml").read_text())
    data["sources"]["transactions"]["path"] = "/elsewhere/tx.csv"
    data["output"] = {"directory": "/tmp/other"}
    assert Pipeline.from_dict(data).fingerprint() == base.fingerprint()
    data["feature_sets"][0]["features"][1]["window"] = "2h"
    assert Pipeline.from_dict(data).fingerprint() != base.fingerprint()
    assert base.fingerprint({"card/impute:amount": {"value": 1.0}}) != \
        base.fingerprint({"card/impute:amount": {"value": 2.0}})


def test_window_spellings_are_canonical() -> None:
    assert ef.mean("x", window="168h").window == "7d"
    assert ef.mean("x", window="60m").name == "mean_x_1h"


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d["feature_sets"][0]["features"].append({"agg": "median", "column": "amount"}),
     "feature_sets.0.features"),
    (lambda d: d["feature_sets"][0].__setitem__("source", "nope"), "source 'nope'"),
    (lambda d: d["feature_sets"][0]["features"].append({"agg": "count", "window": "1 fortnight"}),
     "cannot read duration"),
    (lambda d: d["sources"]["transactions"].__setitem__("event_time", "when"), "'when'"),
    (lambda d: d["feature_sets"][0]["features"].append({"name": "bad", "expr": "amount.real"}),
     "not allowed"),
])
def test_definition_errors_name_the_place_and_the_fix(tmp_path: Path, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    data = yaml.safe_load((FRAUD / "pipeline.yaml").read_text())
    mutate(data)
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ef.DefinitionError) as err:
        Pipeline.load(path)
    assert message in str(err.value)
    assert str(path) in str(err.value) or err.value.file == str(path)


def test_duplicate_feature_names_are_refused() -> None:
    tx = ef.source.parquet("x.parquet", key="k", event_time="ts")
    with pytest.raises(ef.DefinitionError, match="twice"):
        ef.FeatureSet("f", source=tx, features=[ef.count(window="1h"), ef.count(window="60m")])
