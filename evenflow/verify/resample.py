"""Class imbalance on a training set: class weights, and resampling of the **train split only**.

Test rows are never touched: a resampled table holds every test row unchanged, in its order.
imbalanced-learn is imported lazily (the ``verify`` extra).

>>> import pyarrow as pa
>>> class_weights(pa.array([0, 0, 0, 1]))
{0: 0.6666666666666666, 1: 2.0}
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from evenflow.core.steps import Resample
from evenflow.errors import DefinitionError, MissingExtraError


def class_weights(labels: pa.Array | pa.ChunkedArray) -> dict[Any, float]:
    """Balanced weights ``n / (classes · n_c)`` of the non-null labels (scikit-learn's
    ``class_weight="balanced"``), keyed by label value in sorted order."""
    counts = Counter(v for v in labels.to_pylist() if v is not None)
    n, k = sum(counts.values()), len(counts)
    return {c: n / (k * counts[c]) for c in sorted(counts)}


def _imblearn() -> Any:
    try:
        import imblearn.over_sampling
        import imblearn.under_sampling
    except ImportError as exc:  # pragma: no cover - the dev environment has it
        raise MissingExtraError("imbalanced-learn", "verify") from exc
    return imblearn


def resample_table(table: pa.Table, feature_columns: list[str], label: str,
                   spec: Resample) -> tuple[pa.Table, dict[str, Any]]:
    """``table`` with its train rows resampled, its test rows as they were, and a summary.

    The result has a ``synthetic`` column: true for rows SMOTE made (their non-feature columns
    are null; integer features are rounded). Random under/over-sampling keeps whole rows
    (over-sampling repeats them next to the original).
    """
    is_train = pc.fill_null(pc.equal(table.column("split"), "train"), False)
    train, test = table.filter(is_train), table.filter(pc.invert(is_train))
    y = np.asarray(train.column(label).to_pylist(), dtype=object)
    if train.num_rows == 0 or any(v is None for v in y):
        raise DefinitionError("cannot resample: the train split is empty or has null labels",
                              field=label, fix="check the training set's labels")
    y = np.asarray(train.column(label).to_numpy(zero_copy_only=False))
    imblearn = _imblearn()
    before = {str(k): int(v) for k, v in sorted(Counter(y.tolist()).items())}
    synthetic = pa.table({})
    if spec.method in ("under", "over"):
        cls = (imblearn.under_sampling.RandomUnderSampler if spec.method == "under"
               else imblearn.over_sampling.RandomOverSampler)
        sampler = cls(sampling_strategy=spec.sampling_strategy, random_state=spec.seed)
        # resample row positions, not values: every column of a kept row comes along
        idx, y_res = sampler.fit_resample(np.arange(train.num_rows).reshape(-1, 1), y)
        kept = train.take(pa.array(np.sort(idx[:, 0])))
        after_labels = y_res
    else:
        x = _features(train, feature_columns)
        sampler = imblearn.over_sampling.SMOTE(sampling_strategy=spec.sampling_strategy,
                                               random_state=spec.seed, k_neighbors=spec.k_neighbors)
        x_res, y_res = sampler.fit_resample(x, y)
        kept, after_labels = train, y_res
        synthetic = _synthetic_rows(train, feature_columns, label, x_res[train.num_rows:],
                                    y_res[train.num_rows:])
    parts = [kept.append_column("synthetic", pa.array([False] * kept.num_rows)),
             test.append_column("synthetic", pa.array([False] * test.num_rows))]
    if synthetic.num_rows:
        parts.insert(1, synthetic)
    out = pa.concat_tables(parts, promote_options="none")
    after = {str(k): int(v) for k, v in sorted(Counter(np.asarray(after_labels).tolist()).items())}
    return out, {"method": spec.method, "seed": spec.seed, "train_before": before,
                 "train_after": after, "synthetic_rows": synthetic.num_rows}


def _features(train: pa.Table, feature_columns: list[str]) -> Any:
    if not feature_columns:
        raise DefinitionError("SMOTE needs numeric feature columns; the training set has none")
    cols = []
    for c in feature_columns:
        try:
            cols.append(train.column(c).cast(pa.float64()).to_numpy(zero_copy_only=False))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DefinitionError(f"SMOTE needs numeric features; {c!r} is {train.column(c).type}",
                                  field=c, fix="encode it first (Encode, OneHot, TargetEncode)") from exc
    x = np.column_stack(cols)
    if np.isnan(x).any():
        bad = feature_columns[int(np.where(np.isnan(x).any(axis=0))[0][0])]
        raise DefinitionError(f"SMOTE cannot interpolate nulls; feature {bad!r} has some in train",
                              field=bad, fix="add an Impute step for it on the training set")
    return x


def _synthetic_rows(train: pa.Table, feature_columns: list[str], label: str, x: Any,
                    y: Any) -> pa.Table:
    n = len(y)
    arrays = []
    for f in train.schema:
        if f.name in feature_columns:
            values = x[:, feature_columns.index(f.name)]
            if pa.types.is_integer(f.type):
                values = np.round(values)
            arrays.append(pa.array(values).cast(f.type))
        elif f.name == label:
            arrays.append(pa.array(np.asarray(y).tolist(), f.type))
        elif f.name == "split":
            arrays.append(pa.array(["train"] * n, f.type))
        else:
            arrays.append(pa.nulls(n, f.type))
    table = pa.Table.from_arrays(arrays, schema=train.schema)
    return table.append_column("synthetic", pa.array([True] * n))
