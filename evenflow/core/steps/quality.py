"""Quality steps: outliers (flag, clip or quarantine), scaling, one-hot, frequency and
out-of-fold target encoding, and the train-only resampling of class imbalance."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, model_validator

from evenflow.core.sqltext import ident as _q
from evenflow.core.sqltext import literal as _lit
from evenflow.core.steps.base import Artifact, RecordRejected, _Step, _text, _values
from evenflow.core.steps.cleaning import Standardize
from evenflow.errors import DefinitionError


def _f(value: float) -> str:
    """A float literal typed DOUBLE (a bare ``0.5`` is DECIMAL in DuckDB)."""
    return f"CAST({float(value)!r} AS DOUBLE)"


def _floats(table: pa.Table, column: str) -> list[float]:
    return [float(v) for v in _values(table, column)]


def _quantiles(values: list[float], qs: list[float]) -> list[float]:
    """Linear-interpolated quantiles (the same rule as Clip and DuckDB's quantile_cont)."""
    return [float(v) for v in pc.quantile(pa.array(values, pa.float64()), q=qs,
                                           interpolation="linear").to_pylist()]


def _need(values: list[Any], step: str, column: str) -> None:
    if not values:
        raise DefinitionError(f"cannot fit {step} on {column!r}: no non-null values in the training "
                              "split", field=column, fix="impute the column first, or drop the step")


def _lookup_sql(column: str, mapping: dict[str, float], default: float) -> str:
    """SQL mapping a column's text to a float, ``default`` for null or unmapped values."""
    if not mapping:
        return _f(default)
    keys = ", ".join(_lit(k) for k in mapping)
    vals = ", ".join(repr(float(v)) for v in mapping.values())
    return (f"COALESCE(CAST([{vals}] AS DOUBLE[])[list_position([{keys}], "
            f"CAST({_q(column)} AS VARCHAR))], {_f(default)})")


def _lookup(value: Any, mapping: dict[str, float], default: float) -> float:
    return default if value is None else float(mapping.get(_text(value), default))


_OUTLIER_K = {"iqr": 1.5, "zscore": 3.0, "mad": 3.5}


class Outliers(_Step):
    """Bounds learned on the training split; values outside them are flagged, clipped or
    quarantined.

    ``method``: ``iqr`` (``[Q1 - k·IQR, Q3 + k·IQR]``, k=1.5), ``zscore`` (mean ± k·sample std,
    k=3), ``mad`` (median ± k·1.4826·MAD, k=3.5; MAD 0 → 1.2533·mean absolute deviation),
    ``quantile`` (the ``q=(lo, hi)`` quantiles, default (0.01, 0.99)). ``action``: ``flag`` adds
    ``<column>_outlier``; ``clip`` clips to the bounds; ``quarantine`` sends the row to quarantine
    with reason ``outlier``. Nulls are never outliers.

    >>> step = Outliers("x", method="iqr", action="flag")
    >>> art = step.fit(pa.table({"x": [1.0, 2.0, 3.0, 4.0, 100.0]}))
    >>> art
    {'lower': -1.0, 'upper': 7.0}
    >>> step.transform_one({"x": 100.0}, art)
    {'x': 100.0, 'x_outlier': True}
    """

    kind: Literal["outliers"] = "outliers"
    method: Literal["iqr", "zscore", "mad", "quantile"] = "iqr"
    k: float | None = None
    q: tuple[float, float] = (0.01, 0.99)
    action: Literal["flag", "clip", "quarantine"] = "flag"

    @model_validator(mode="after")
    def _check(self) -> Outliers:
        if self.k is not None and (self.method == "quantile" or self.k <= 0):
            raise DefinitionError(f"Outliers({self.column!r}): k= must be > 0 and is not used by "
                                  "method='quantile' (give q=(lo, hi))", field=self.column)
        if not 0 <= self.q[0] < self.q[1] <= 1:
            raise DefinitionError(f"Outliers q={self.q} must satisfy 0 <= lo < hi <= 1",
                                  field=self.column)
        return self

    @property
    def id(self) -> str:
        return f"outliers:{self.column}:{self.method}:{self.action}"

    @property
    def output(self) -> str:
        return self.column + "_outlier" if self.action == "flag" else self.column

    def fit(self, table: pa.Table) -> Artifact:
        values = _floats(table, self.column)
        _need(values, "Outliers", self.column)
        k = self.k if self.k is not None else _OUTLIER_K.get(self.method, 0.0)
        if self.method == "quantile":
            lo, hi = _quantiles(values, list(self.q))
        elif self.method == "iqr":
            q1, q3 = _quantiles(values, [0.25, 0.75])
            lo, hi = q1 - k * (q3 - q1), q3 + k * (q3 - q1)
        elif self.method == "zscore":
            mu = math.fsum(values) / len(values)
            n = len(values)
            sd = math.sqrt(math.fsum((v - mu) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
            lo, hi = mu - k * sd, mu + k * sd
        else:
            (med,) = _quantiles(values, [0.5])
            dev = [abs(v - med) for v in values]
            (mad,) = _quantiles(dev, [0.5])
            # MAD is 0 when over half the values are equal; the mean deviation still sees spread
            scale = 1.4826 * mad if mad > 0 else 1.2533 * math.fsum(dev) / len(dev)
            lo, hi = med - k * scale, med + k * scale
        return {"lower": lo, "upper": hi}

    def _outside_sql(self, artifact: Artifact) -> str:
        x = f"CAST({_q(self.column)} AS DOUBLE)"
        return f"COALESCE({x} < {_f(artifact['lower'])} OR {x} > {_f(artifact['upper'])}, FALSE)"

    def _outside(self, value: Any, artifact: Artifact) -> bool:
        return value is not None and not artifact["lower"] <= float(value) <= artifact["upper"]

    def sql(self, artifact: Artifact) -> dict[str, str]:
        if self.action == "flag":
            return {self.output: self._outside_sql(artifact)}
        if self.action == "clip":
            x = f"CAST({_q(self.column)} AS DOUBLE)"
            # greatest/least skip nulls in DuckDB, so a null would become a bound
            return {self.column: f"CASE WHEN {x} IS NULL THEN NULL ELSE least(greatest({x}, "
                                 f"{_f(artifact['lower'])}), {_f(artifact['upper'])}) END"}
        return {self.column: _q(self.column)}

    def reject_sql(self, artifact: Artifact) -> tuple[str, str] | None:
        if self.action != "quarantine":
            return None
        lo, hi = artifact["lower"], artifact["upper"]
        tail = f" outside [{lo!r}, {hi!r}] ({self.method}, learned on the train split)"
        detail = f"{_lit(self.column + '=')} || CAST({_q(self.column)} AS VARCHAR) || {_lit(tail)}"
        return self._outside_sql(artifact), detail

    def transform_one(self, record: dict[str, Any], artifact: Artifact) -> dict[str, Any]:
        value = record.get(self.column)
        if self.action == "flag":
            return {**record, self.output: self._outside(value, artifact)}
        if self.action == "clip":
            clipped = None if value is None else min(max(float(value), artifact["lower"]), artifact["upper"])
            return {**record, self.column: clipped}
        if self._outside(value, artifact):
            raise RecordRejected(f"{self.column}={value!r} is outside [{artifact['lower']!r}, "
                                 f"{artifact['upper']!r}] learned on the train split",
                                 reason="outlier", step=self.id, field=self.column,
                                 fix="check the value upstream; or use action='clip' or 'flag'")
        return dict(record)


class Scale(_Step):
    """``(x - center) / scale`` with statistics of the training split, or a signed log1p.

    ``standard``: mean and sample std; ``minmax``: min and max - min; ``robust``: median and IQR
    (a zero scale becomes 1); ``log1p``: ``sign(x)·ln(1 + |x|)`` (``log1p`` on x >= 0, defined
    for every x), learns nothing.

    >>> Scale("x", method="robust").fit(pa.table({"x": [1.0, 2.0, 3.0, 4.0, 5.0]}))
    {'center': 3.0, 'scale': 2.0}
    >>> Scale("x", method="log1p").transform_one({"x": 0.0}, {})
    {'x': 0.0}
    """

    kind: Literal["scale"] = "scale"
    method: Literal["standard", "minmax", "robust", "log1p"] = "standard"

    @property
    def learns(self) -> bool:
        return self.method != "log1p"

    def fit(self, table: pa.Table) -> Artifact:
        if self.method == "log1p":
            return {}
        values = _floats(table, self.column)
        _need(values, "Scale", self.column)
        if self.method == "standard":
            art = Standardize(column=self.column).fit(table)
            center, scale = art["mean"], art["std"]
        elif self.method == "minmax":
            center, scale = min(values), max(values) - min(values)
        else:
            center, q1, q3 = _quantiles(values, [0.5, 0.25, 0.75])
            scale = q3 - q1
        return {"center": center, "scale": scale if scale > 0 else 1.0}

    def sql(self, artifact: Artifact) -> dict[str, str]:
        x = f"CAST({_q(self.column)} AS DOUBLE)"
        if self.method == "log1p":
            return {self.column: f"(sign({x}) * ln(1 + abs({x})))"}
        return {self.column: f"(({x} - {_f(artifact['center'])}) / {_f(artifact['scale'])})"}

    def transform_one(self, record: dict[str, Any], artifact: Artifact) -> dict[str, Any]:
        value = record.get(self.column)
        if value is None:
            return {**record, self.column: None}
        x = float(value)
        if self.method == "log1p":
            sign = (x > 0) - (x < 0)
            return {**record, self.column: sign * math.log(1 + abs(x))}
        return {**record, self.column: (x - artifact["center"]) / artifact["scale"]}


def _vocabulary(table: pa.Table, column: str, min_count: int, max_categories: int | None) -> list[str]:
    counts = Counter(_text(v) for v in _values(table, column))
    vocab = sorted((c for c in counts.items() if c[1] >= min_count), key=lambda i: (-i[1], i[0]))
    return [v for v, _ in vocab[:max_categories]]


class OneHot(_Step):
    """Adds one 0/1 column ``<column>=<value>`` per training category (most frequent first, up to
    ``max_categories`` seen at least ``min_count`` times) and ``<column>=other`` for everything
    else: rarer or unseen values, and null. The input column stays.

    >>> step = OneHot("x", max_categories=1)
    >>> art = step.fit(pa.table({"x": ["a", "a", "b"]}))
    >>> step.transform_one({"x": "b"}, art)
    {'x': 'b', 'x=a': 0, 'x=other': 1}
    """

    kind: Literal["onehot"] = "onehot"
    max_categories: int = 20
    min_count: int = 1

    @property
    def output(self) -> str:
        return f"{self.column}=other"

    def fit(self, table: pa.Table) -> Artifact:
        vocab = _vocabulary(table, self.column, self.min_count, self.max_categories)
        # a category literally called "other" would collide with the other bucket: it joins it
        return {"vocabulary": [v for v in vocab if v != "other"]}

    def sql(self, artifact: Artifact) -> dict[str, str]:
        text = f"CAST({_q(self.column)} AS VARCHAR)"
        out = {f"{self.column}={v}": f"CAST(COALESCE({text} = {_lit(v)}, FALSE) AS BIGINT)"
               for v in artifact["vocabulary"]}
        keys = ", ".join(_lit(v) for v in artifact["vocabulary"])
        out[self.output] = (f"CAST(list_position([{keys}]::VARCHAR[], {text}) IS NULL AS BIGINT)"
                            if keys else "CAST(1 AS BIGINT)")
        return out

    def transform_one(self, record: dict[str, Any], artifact: Artifact) -> dict[str, Any]:
        value = record.get(self.column)
        text = None if value is None else _text(value)
        out = {**record}
        for v in artifact["vocabulary"]:
            out[f"{self.column}={v}"] = int(text == v)
        out[self.output] = int(text not in artifact["vocabulary"])
        return out


class FrequencyEncode(_Step):
    """Each value becomes its share of the training split's non-null values; unseen and null
    become 0.0.

    >>> FrequencyEncode("x").fit(pa.table({"x": ["a", "a", "b", None]}))
    {'frequencies': {'a': 0.6666666666666666, 'b': 0.3333333333333333}}
    """

    kind: Literal["frequency"] = "frequency"

    def fit(self, table: pa.Table) -> Artifact:
        counts = Counter(_text(v) for v in _values(table, self.column))
        n = sum(counts.values())
        return {"frequencies": {k: counts[k] / n for k in sorted(counts)}}

    def sql(self, artifact: Artifact) -> dict[str, str]:
        return {self.column: _lookup_sql(self.column, artifact["frequencies"], 0.0)}

    def transform_one(self, record: dict[str, Any], artifact: Artifact) -> dict[str, Any]:
        return {**record, self.column: _lookup(record.get(self.column), artifact["frequencies"], 0.0)}


class TargetEncode(_Step):
    """Each category becomes a smoothed mean of the label, computed **out of fold** on train.

    ``enc(c) = (sum of labels of c + smoothing·prior) / (n_c + smoothing)``, prior = mean label;
    unseen and null categories get the prior. On a training set every train row is encoded with
    the mapping fitted on the *other* folds (its own label never feeds its value; fold =
    ``md5(seed, row id) mod folds``); test rows and the stream use the mapping fitted on the whole
    train split (``sql``/``transform_one``). Training-set step only.

    >>> step = TargetEncode("c", label="y", smoothing=0.0)
    >>> step.fit(pa.table({"c": ["a", "a", "b"], "y": [1, 0, 1]}))["mapping"]
    {'a': 0.5, 'b': 1.0}
    """

    kind: Literal["target_encode"] = "target_encode"
    label: str
    folds: int = Field(default=5, ge=2)
    smoothing: float = Field(default=10.0, ge=0)
    seed: int = 0

    @property
    def fit_columns(self) -> list[str]:
        return [self.column, self.label]

    @property
    def training_only(self) -> bool:
        return True

    def fold_sql(self, row_id: str) -> str:
        """The fold of a row, from its id; the engine adds it to the fit table as ``__fold``."""
        return (f"CAST(md5_number_lower(concat_ws(chr(31), {_lit(str(self.seed))}, "
                f"CAST({_q(row_id)} AS VARCHAR))) % {int(self.folds)} AS BIGINT)")

    def _mapping(self, pairs: list[tuple[str, float]]) -> dict[str, Any]:
        prior = math.fsum(y for _, y in pairs) / len(pairs) if pairs else 0.0
        groups: dict[str, list[float]] = {}
        for c, y in pairs:
            groups.setdefault(c, []).append(y)
        mapping = {c: (math.fsum(ys) + self.smoothing * prior) / (len(ys) + self.smoothing)
                   for c, ys in sorted(groups.items())}
        return {"prior": prior, "mapping": mapping}

    def fit(self, table: pa.Table) -> Artifact:
        for col in (self.column, self.label):
            if col not in table.column_names:
                raise DefinitionError(f"TargetEncode needs column {col!r}, which the data does not "
                                      "have", field=col, fix="check the column and label names")
        cats = table.column(self.column).to_pylist()
        ys = table.column(self.label).to_pylist()
        folds = table.column("__fold").to_pylist() if "__fold" in table.column_names else None
        rows: list[tuple[str, float, int]] = []
        for i, (c, y) in enumerate(zip(cats, ys, strict=True)):
            if c is None or y is None:
                continue
            if isinstance(y, str):
                raise DefinitionError(f"TargetEncode needs a numeric or boolean label; "
                                      f"{self.label!r} holds text ({y!r})", field=self.label,
                                      fix="encode the label as 0/1 first")
            rows.append((_text(c), float(y), -1 if folds is None else int(folds[i])))
        art = self._mapping([(c, y) for c, y, _ in rows])
        # without fold ids (outside a training set) there is nothing to encode out of fold
        art["folds"] = [] if folds is None else [
            self._mapping([(c, y) for c, y, f in rows if f != k]) for k in range(self.folds)]
        return art

    def sql(self, artifact: Artifact) -> dict[str, str]:
        return {self.column: _lookup_sql(self.column, artifact["mapping"], artifact["prior"])}

    def train_sql(self, artifact: Artifact, row_id: str) -> dict[str, str]:
        """The out-of-fold form, for the train split's rows."""
        if not artifact["folds"]:
            raise DefinitionError("TargetEncode was fitted without fold ids", field=self.column,
                                  fix="fit it through a training set")
        whens = " ".join(f"WHEN {k} THEN {_lookup_sql(self.column, f['mapping'], f['prior'])}"
                         for k, f in enumerate(artifact["folds"]))
        return {self.column: f"(CASE {self.fold_sql(row_id)} {whens} END)"}

    def transform_one(self, record: dict[str, Any], artifact: Artifact) -> dict[str, Any]:
        return {**record, self.column: _lookup(record.get(self.column), artifact["mapping"],
                                               artifact["prior"])}


class Resample(BaseModel):
    """Re-balance the **train split only** (test rows are never touched): ``under`` or ``over``
    (random, imbalanced-learn) or ``smote`` (on the numeric feature columns; nulls must be imputed
    first). ``sampling_strategy`` is imbalanced-learn's (``"auto"``, or a minority/majority
    ratio)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    method: Literal["under", "over", "smote"]
    seed: int = 0
    sampling_strategy: float | str = "auto"
    k_neighbors: int = 5
