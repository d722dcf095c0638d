"""Train a fraud model on the published training set and show that the windowed features help.

Trains scikit-learn's HistGradientBoostingClassifier twice on the train split: once with every
feature, once with the transaction's own fields only (amount, hour, channel). Prints test PR-AUC
(average precision) for both.

    python examples/fraud/train.py examples/fraud/out/fraud_v1/training_set.parquet
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import average_precision_score

BASELINE = ["amount", "card__hour", "channel"]


def matrix(table, columns: list[str]) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.column_stack([table.column(c).cast("float64").to_numpy(zero_copy_only=False) for c in columns])


def evaluate(path: Path, seed: int = 0) -> dict[str, float]:
    table = pq.read_table(path)
    card = json.loads((path.parent / "card.json").read_text())
    label = card["label"]
    features = [*card["features"], "amount", "channel"]
    train = table.filter(pc.equal(table.column("split"), "train"))
    test = table.filter(pc.equal(table.column("split"), "test"))
    y_train = train.column(label).to_numpy()
    y_test = test.column(label).to_numpy()
    scores = {}
    for name, cols in (("with windowed features", features), ("baseline (no windows)", BASELINE)):
        model = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, random_state=seed)
        model.fit(matrix(train, cols), y_train)
        prob = model.predict_proba(matrix(test, cols))[:, 1]
        scores[name] = float(average_precision_score(y_test, prob))
    scores["prevalence (random model)"] = float(y_test.mean())
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("training_set", type=Path)
    args = parser.parse_args()
    if not args.training_set.exists():
        sys.exit(f"{args.training_set}: not found; build it first: evenflow training-set "
                 "examples/fraud/pipeline.yaml")
    scores = evaluate(args.training_set)
    print("test PR-AUC (average precision)")
    for name, value in scores.items():
        print(f"  {name:<28} {value:.4f}")


if __name__ == "__main__":
    main()
