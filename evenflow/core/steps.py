"""Cleaning steps. Each has one meaning and three verbs, the same for every step:

- ``fit(table)`` learns its parameters from the training split (an Arrow table) and returns a
  frozen, JSON-able artifact (empty for steps that learn nothing);
- ``sql(artifact)`` gives the batch form: output column -> SQL expression over the input row;
- ``transform_one(record, artifact)`` gives the one-record form used by the stream engine.

Both forms give the same value for the same record and artifact; the contract tests check it.

>>> import pyarrow as pa
>>> step = Impute(column="amount", strategy="median")
>>> art = step.fit(pa.table({"amount": [1.0, None, 3.0, 10.0]}))
>>> art
{'value': 3.0}
>>> step.transform_one({"amount": None}, art)
{'amount': 3.0}
>>> step.sql(art)
{'amount': 'COALESCE("amount", 3.0)'}
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Annotated, Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, model_validator

from evenflow.core.sqltext import ident as _q
from evenflow.core.sqltext import literal as _lit
from evenflow.errors import DefinitionError

Artifact = dict[str, Any]


def _text(value: Any) -> str:
    """A category as text, spelled as SQL's CAST(... AS VARCHAR) spells it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _values(table: pa.Table, column: str) -> list[Any]:
    if column not in table.column_names:
        raise DefinitionError(f"step needs column {column!r}, which the data does not have",
                              field=column, fix="check the column name against the schema")
    return [v for v in table.column(column).to_pylist() if v is not None]


class _Step(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: str
    column: str

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.column}"

    @property
    def learns(self) -> bool:
        return True

    @property
    def output(self) -> str:
        return self.column

    def fit(self, table: pa.Table) -> Artifact:
        raise NotImplementedError

    def sql(self, artifact: Artifact) -> dict[str, str]:
        raise NotImplementedError

    def transform_one(self, record: dict[str, Any], artifact: Artifact) -> dict[str, Any]:
        raise NotImplementedError


class Dedup(BaseModel):
    """Keep one record per key (whole row when ``key`` is empty), by event time.

    ``keep="first"`` keeps the earliest event (ties: the first to arrive); ``"last"`` the latest
    (ties: the last to arrive). Dropped records go to the duplicates log with the kept record's
    position.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["dedup"] = "dedup"
    key: list[str] = []
    keep: Literal["first", "last"] = "first"

    def __init__(self, key: str | list[str] | None = None, /, **data: Any) -> None:
        if key is not None:
            data["key"] = [key] if isinstance(key, str) else list(key)
        elif isinstance(data.get("key"), str):
            data["key"] = [data["key"]]
        super().__init__(**data)

    @property
    def id(self) -> str:
        return "dedup:" + (",".join(self.key) or "*")

    @property
    def learns(self) -> bool:
        return False


class Impute(_Step):
    """Fill nulls with a constant or a statistic learned on the training split."""

    kind: Literal["impute"] = "impute"
    strategy: Literal["mean", "median", "mode", "constant"] = "median"
    value: Any = None

    def __init__(self, column: str | None = None, strategy: str | None = None, /,
                 **data: Any) -> None:
        if column is not None:
            data["column"] = column
        if strategy is not None:
            data["strategy"] = strategy
        super().__init__(**data)

    @model_validator(mode="after")
    def _check(self) -> Impute:
        if self.strategy == "constant" and self.value is None:
            raise DefinitionError(f"Impute({self.column!r}, 'constant') needs value=",
                                  field=self.column)
        return self

    @property
    def learns(self) -> bool:
        return self.strategy != "constant"

    def fit(self, table: pa.Table) -> Artifact:
        if self.strategy == "constant":
            return {"value": self.value}
        values = _values(table, self.column)
        if not values:
            raise DefinitionError(f"cannot fit Impute on {self.column!r}: no non-null values in "
                                  "the training split", field=self.column,
                                  fix="use strategy='constant' with value=")
        if self.strategy == "mean":
            return {"value": math.fsum(values) / len(values)}
        if self.strategy == "median":
            ordered = sorted(values)
            mid = len(ordered) // 2
            med = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
            return {"value": med}
        counts = Counter(values)
        top = max(counts.values())
        return {"value": min(v for v, c in counts.items() if c == top)}

    def sql(self, artifact: Artifact) -> dict[str, str]:
        return {self.column: f"COALESCE({_q(self.column)}, {_lit(artifact['value'])})"}

    def transform_one(self, record: dict[str, Any], artifact: Artifact) -> dict[str, Any]:
        value = record.get(self.column)
        return {**record, self.column: artifact["value"] if value is None else value}


class Clip(_Step):
    """Clip (winsorize) to fixed bounds, or to quantiles ``q=(lo, hi)`` learned on train."""

    kind: Literal["clip"] = "clip"
    lower: float | None = None
    upper: float | None = None
    q: tuple[float, float] | None = None

    def __init__(self, column: str | None = None, /, **data: Any) -> None:
        if column is not None:
            data["column"] = column
        super().__init__(**data)

    @model_validator(mode="after")
    def _check(self) -> Clip:
        if self.q is None and self.lower is None and self.upper is None:
            raise DefinitionError(f"Clip({self.column!r}) needs lower/upper or q=(lo, hi)",
                                  field=self.column, fix="e.g. Clip('amount', q=(0.001, 0.999))")
        if self.q is not None and not 0 <= self.q[0] < self.q[1] <= 1:
            raise DefinitionError(f"Clip q={self.q} must satisfy 0 <= lo < hi <= 1",
                                  field=self.column)
        return self

    @property
    def learns(self) -> bool:
        return self.q is not None

    def fit(self, table: pa.Table) -> Artifact:
        if self.q is None:
            return {"lower": self.lower, "upper": self.upper}
        column = pa.array(_values(table, self.column), pa.float64())
        if len(column) == 0:
            raise DefinitionError(f"cannot fit Clip on {self.column!r}: no values in the training "
                                  "split", field=self.column)
        lo, hi = pc.quantile(column, q=list(self.q), interpolation="linear").to_pylist()
        return {"lower": lo, "upper": hi}

    def sql(self, artifact: Artifact) -> dict[str, str]:
        expr = _q(self.column)
        if artifact["lower"] is not None:
            expr = f"greatest({expr}, {_lit(float(artifact['lower']))})"
        if artifact["upper"] is not None:
            expr = f"least({expr}, {_lit(float(artifact['upper']))})"
        return {self.column: f"CASE WHEN {_q(self.column)} IS NULL THEN NULL ELSE {expr} END"}

    def transform_one(self, record: dict[str, Any], artifact: Artifact) -> dict[str, Any]:
        value = record.get(self.column)
        if value is not None:
            if artifact["lower"] is not None:
                value = max(float(value), float(artifact["lower"]))
            if artifact["upper"] is not None:
                value = min(float(value), float(artifact["upper"]))
        return {**record, self.column: value}


class Standardize(_Step):
    """``(x - mean) / std`` with the training split's mean and sample std (std 0 -> 1)."""

    kind: Literal["standardize"] = "standardize"

    def __init__(self, column: str | None = None, /, **data: Any) -> None:
        if column is not None:
            data["column"] = column
        super().__init__(**data)

    def fit(self, table: pa.Table) -> Artifact:
        values = [float(v) for v in _values(table, self.column)]
        if not values:
            raise DefinitionError(f"cannot fit Standardize on {self.column!r}: no values",
                                  field=self.column)
        mu = math.fsum(values) / len(values)
        var = math.fsum((v - mu) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
        sd = math.sqrt(var)
        return {"mean": mu, "std": sd if sd > 0 else 1.0}

    def sql(self, artifact: Artifact) -> dict[str, str]:
        return {self.column: f"((CAST({_q(self.column)} AS DOUBLE) - {_lit(artifact['mean'])}) / "
                             f"{_lit(artifact['std'])})"}

    def transform_one(self, record: dict[str, Any], artifact: Artifact) -> dict[str, Any]:
        value = record.get(self.column)
        out = None if value is None else (float(value) - artifact["mean"]) / artifact["std"]
        return {**record, self.column: out}


class Encode(_Step):
    """Category codes: 1..n for the training vocabulary (most frequent first), 0 for unknown.

    Nulls and values never seen in training fall in the unknown bucket 0. ``min_count`` drops rare
    categories into it; ``max_categories`` caps the vocabulary.
    """

    kind: Literal["encode"] = "encode"
    min_count: int = 1
    max_categories: int | None = None

    def __init__(self, column: str | None = None, /, **data: Any) -> None:
        if column is not None:
            data["column"] = column
        super().__init__(**data)

    def fit(self, table: pa.Table) -> Artifact:
        counts = Counter(_text(v) for v in _values(table, self.column))
        vocab = sorted((c for c in counts.items() if c[1] >= self.min_count),
                       key=lambda item: (-item[1], item[0]))
        if self.max_categories is not None:
            vocab = vocab[: self.max_categories]
        return {"vocabulary": [v for v, _ in vocab]}

    def sql(self, artifact: Artifact) -> dict[str, str]:
        vocab = artifact["vocabulary"]
        if not vocab:
            return {self.column: "CAST(0 AS BIGINT)"}
        keys = ", ".join(_lit(v) for v in vocab)
        return {self.column: f"CAST(COALESCE(list_position([{keys}], CAST({_q(self.column)} AS VARCHAR)), 0) AS BIGINT)"}

    def transform_one(self, record: dict[str, Any], artifact: Artifact) -> dict[str, Any]:
        value = record.get(self.column)
        vocab = artifact["vocabulary"]
        code = 0 if value is None or _text(value) not in vocab else vocab.index(_text(value)) + 1
        return {**record, self.column: code}


ColumnStep = Impute | Clip | Standardize | Encode
StepType = Annotated[Dedup | Impute | Clip | Standardize | Encode, Field(discriminator="kind")]
