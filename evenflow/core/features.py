"""Window aggregations, row expressions and feature sets.

The meaning of every aggregation is fixed in ``docs/semantics.md``; both engines implement it.

>>> f = sum_("amount", window="1h")
>>> f.name, f.window_us
('sum_amount_1h', 3600000000)
>>> count(window="7d", closed="left").name
'count_7d_before'
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Tag, field_validator, model_validator

from evenflow.core.expr import Expr
from evenflow.core.schema import reserved
from evenflow.core.source import Source
from evenflow.core.steps import StepType
from evenflow.core.timeutil import format_duration, parse_duration
from evenflow.errors import DefinitionError

AggName = Literal["count", "sum", "mean", "min", "max", "std", "var", "first", "last",
                  "distinct", "since_last"]
#: Aggregations whose value over an empty window is 0 rather than null.
ZERO_WHEN_EMPTY = {"count", "distinct", "sum"}
NEEDS_COLUMN = {"sum", "mean", "min", "max", "std", "var", "first", "last", "distinct"}


class Aggregate(BaseModel):
    """``agg(column)`` over the events of one entity in ``(t - window, t]``.

    ``closed="left"`` excludes events at ``t`` itself (``(t - window, t)``). ``window=None``
    means all history up to ``t``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["aggregate"] = "aggregate"
    agg: AggName
    column: str | None = None
    window: str | None = None
    closed: Literal["right", "left"] = "right"
    name: str = ""

    @field_validator("window")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        return None if value is None else format_duration(parse_duration(value))

    @model_validator(mode="after")
    def _defaults(self) -> Aggregate:
        if self.agg in NEEDS_COLUMN and not self.column:
            raise DefinitionError(f"aggregation {self.agg} needs a column",
                                  fix=f'write {self.agg}("amount", window="1h")')
        if self.agg == "since_last" and self.column:
            raise DefinitionError("since_last takes no column", fix='write since_last(window="7d")')
        if not self.name:
            parts = [self.agg, self.column or "", self.window or ""]
            name = "_".join(p for p in parts if p)
            if self.closed == "left":
                name += "_before"
            object.__setattr__(self, "name", name)
        return self

    @property
    def window_us(self) -> int | None:
        return None if self.window is None else parse_duration(self.window)


class Derived(BaseModel):
    """A row expression over the record's fields and the feature set's aggregates."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["derived"] = "derived"
    name: str
    expr: str

    @field_validator("expr")
    @classmethod
    def _canonical(cls, value: str) -> str:
        return Expr.parse(value).text

    @property
    def parsed(self) -> Expr:
        return Expr.parse(self.expr)


def _feature_kind(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("kind") or ("derived" if "expr" in value else "aggregate"))
    return str(getattr(value, "kind", "aggregate"))


# In YAML a feature with ``expr:`` is derived and one with ``agg:`` an aggregate; ``kind:`` is optional.
FeatureType = Annotated[Annotated[Aggregate, Tag("aggregate")] | Annotated[Derived, Tag("derived")],
                        Discriminator(_feature_kind)]


class FeatureSet(BaseModel):
    """Features of one entity, computed from one source.

    ``key`` defaults to the source's key; set it to aggregate the same events by another entity
    (merchant instead of card). ``steps`` clean the events before aggregation.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)
    name: str
    source: Source | str
    key: list[str] | None = None
    steps: list[StepType] = []
    features: list[FeatureType]

    def __init__(self, name: str | None = None, /, **data: Any) -> None:
        if name is not None:
            data["name"] = name
        if isinstance(data.get("key"), str):
            data["key"] = [data["key"]]
        super().__init__(**data)

    @model_validator(mode="after")
    def _unique_names(self) -> FeatureSet:
        seen: set[str] = set()
        for feature in self.features:
            reserved(feature.name, f"feature set {self.name!r}: feature", fix="give it a name= without the leading '__'")
            if feature.name in seen:
                raise DefinitionError(f"feature set {self.name!r} defines {feature.name!r} twice",
                                      fix="give one of them another name=")
            seen.add(feature.name)
        aggregates = {f.name for f in self.aggregates}
        for derived in self.derived:
            unknown = {c for c in derived.parsed.columns() if c in seen and c not in aggregates}
            if unknown:
                raise DefinitionError(
                    f"derived feature {derived.name!r} refers to derived feature(s) {sorted(unknown)}",
                    fix="derived features may use the record's fields and aggregates only")
        return self

    @property
    def aggregates(self) -> list[Aggregate]:
        return [f for f in self.features if isinstance(f, Aggregate)]

    @property
    def derived(self) -> list[Derived]:
        return [f for f in self.features if isinstance(f, Derived)]

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def source_name(self) -> str:
        return self.source if isinstance(self.source, str) else self.source.name

    def longest_window_us(self) -> int:
        windows = [a.window_us for a in self.aggregates if a.window_us is not None]
        return max(windows, default=0)


def _agg(agg: str) -> Any:
    def make(column: str | None = None, *, window: str | None = None,
             closed: Literal["right", "left"] = "right", name: str = "") -> Aggregate:
        return Aggregate(agg=agg, column=column, window=window, closed=closed, name=name)  # type: ignore[arg-type]
    make.__name__ = agg
    make.__doc__ = f"The {agg} aggregation; see docs/semantics.md."
    return make


count = _agg("count")
sum_ = _agg("sum")
mean = _agg("mean")
min_ = _agg("min")
max_ = _agg("max")
std = _agg("std")
var = _agg("var")
first = _agg("first")
last = _agg("last")
distinct = _agg("distinct")


def since_last(*, window: str | None = None, closed: Literal["right", "left"] = "left",
               name: str = "") -> Aggregate:
    """Seconds from the last event in the window to the query time (null when none).

    It defaults to ``closed="left"``: at an event, the time since the previous one.
    """
    return Aggregate(agg="since_last", window=window, closed=closed, name=name)


def derive(name: str, expr: str) -> Derived:
    """A row expression: ``derive("amount_ratio", "amount / mean_amount_7d")``."""
    return Derived(name=name, expr=expr)
