"""Cleaning steps: impute, clip (winsorize), standardize, and category encoding with an unknown
bucket."""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import model_validator

from evenflow.core.sqltext import ident as _q
from evenflow.core.sqltext import literal as _lit
from evenflow.core.steps.base import Artifact, _Step, _text, _values
from evenflow.errors import DefinitionError


class Impute(_Step):
    """Fill nulls with a constant, a statistic learned on the training split, or the entity's
    last known value.

    ``strategy="last"`` fills a null with the last non-null value of the same entity (``by``)
    among the rows up to this one in ``order`` (event time, then arrival); ``value=`` is the
    fallback when the entity has none (default: stays null). The engines fill ``by``/``order``
    from the feature set's key and event time when they are not given. ``indicator=True`` adds
    ``<column>_missing``: whether the input was null.

    >>> step = Impute("x", "last", by=["k"], order=["t"])
    >>> art = step.fit(pa.table({"x": [1.0]}))
    >>> state: dict[str, Any] = {}
    >>> [step.transform_one({"k": "a", "x": v}, art, state)["x"] for v in (2.0, None, None)]
    [2.0, 2.0, 2.0]
    """

    kind: Literal["impute"] = "impute"
    strategy: Literal["mean", "median", "mode", "constant", "last"] = "median"
    value: Any = None
    indicator: bool = False
    by: list[str] | None = None
    order: list[str] | None = None

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
        if self.strategy != "last" and (self.by is not None or self.order is not None):
            raise DefinitionError(f"Impute({self.column!r}): by= and order= are for strategy='last'",
                                  field=self.column)
        return self

    @property
    def learns(self) -> bool:
        return self.strategy not in ("constant", "last")

    @property
    def stateful(self) -> bool:
        return self.strategy == "last"

    @property
    def output(self) -> str:
        return self.column

    def bind(self, *, key: list[str], order: list[str]) -> Impute:
        if self.strategy != "last" or (self.by is not None and self.order is not None):
            return self
        return self.model_copy(update={"by": self.by if self.by is not None else list(key),
                                       "order": self.order if self.order is not None else list(order)})

    def state_key(self, record: dict[str, Any], artifact: Artifact) -> str:
        """The entity whose state a record reads and updates (JSON text of its key values)."""
        return json.dumps([record.get(b) for b in artifact["by"]], default=str)

    def fit(self, table: pa.Table) -> Artifact:
        if self.strategy in ("constant", "last"):
            if self.strategy == "last":
                if not self.by or not self.order:
                    raise DefinitionError(f"Impute({self.column!r}, 'last') needs the entity key "
                                          "and the row order", field=self.column,
                                          fix="give by=[...] and order=[...], or use it in a "
                                              "feature set or training set, which fill them in")
                return {"value": self.value, "by": list(self.by), "order": list(self.order)}
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
        col = _q(self.column)
        if self.strategy == "last":
            by = ", ".join(_q(b) for b in artifact["by"])
            order = ", ".join(_q(o) for o in artifact["order"])
            fill = (f"last_value({col} IGNORE NULLS) OVER (PARTITION BY {by} ORDER BY {order} "
                    "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)")
            expr = f"COALESCE({col}, {fill}, {_lit(artifact['value'])})"
        else:
            expr = f"COALESCE({col}, {_lit(artifact['value'])})"
        out = {self.column: expr}
        if self.indicator:
            out[self.column + "_missing"] = f"({col} IS NULL)"
        return out

    def transform_one(self, record: dict[str, Any], artifact: Artifact,
                      state: dict[str, Any] | None = None) -> dict[str, Any]:
        """One record; ``state`` is the entity's state for ``strategy='last'`` (updated in place).

        The stream engine keeps one JSON-able state dict per ``(step, state_key(record))`` and
        checkpoints it with its other operator state.
        """
        value = record.get(self.column)
        out = {**record}
        if value is None:
            if self.strategy == "last" and state is not None and "value" in state:
                out[self.column] = state["value"]
            else:
                out[self.column] = artifact["value"]
        elif self.strategy == "last" and state is not None:
            state["value"] = value
        if self.indicator:
            out[self.column + "_missing"] = value is None
        return out


class Clip(_Step):
    """Clip (winsorize) to fixed bounds, or to quantiles ``q=(lo, hi)`` learned on train."""

    kind: Literal["clip"] = "clip"
    lower: float | None = None
    upper: float | None = None
    q: tuple[float, float] | None = None

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
