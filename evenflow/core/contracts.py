"""Data contracts: checks beyond the schema, declared on a source.

A schema says what one record must look like; a contract says what the data as a whole must
look like: unique keys, allowed values, patterns, null fractions, row counts, monotonic
sequences, cross-column rules and freshness. Each contract has a stable ``name`` (derived from
its kind and columns unless given) and a ``severity``:

- a *row-level* contract (``unique``, ``allowed``, ``matches``, ``monotonic``, ``rule``) finds
  the failing rows; at ``error`` they go to quarantine (reason ``contract``), at ``warn`` they
  are reported and kept. ``max_failures=N`` also makes it a dataset-level bound: more than N
  failing rows stops the run (``error``) or is reported (``warn``);
- a *dataset-level* contract (``null_fraction``, ``row_count``, ``freshness``) measures one
  value; at ``error`` a value outside its bound stops the run with :class:`ContractError`.

Definitions here are engine-free; ``evenflow.verify.contracts`` evaluates them in DuckDB.

>>> c = unique("card_id", "ts")
>>> c.name, c.severity, c.level
('unique_card_id_ts', 'error', 'row')
>>> null_fraction("amount", le=0.05, severity="warn").model_dump(exclude_none=True)
{'name': 'null_fraction_amount', 'severity': 'warn', 'kind': 'null_fraction', 'column': 'amount', 'le': 0.05}
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from evenflow.core.expr import Expr
from evenflow.core.timeutil import parse_duration, parse_instant
from evenflow.errors import DefinitionError, EvenflowError

Severity = Literal["error", "warn"]
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


class ContractError(EvenflowError):
    """A contract at severity ``error`` failed on the data: the run stops.

    ``results`` holds every contract's result for the source (see ``evenflow.verify.contracts``).
    """

    def __init__(self, message: str, *, results: list[Any] | None = None, **where: Any) -> None:
        super().__init__(message, **where)
        self.results = results or []


class _Contract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    #: "row": finds failing rows; "dataset": measures one value of the whole data.
    level: ClassVar[Literal["row", "dataset"]] = "row"
    name: str = ""
    severity: Severity = "error"
    max_failures: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _named(self) -> _Contract:
        # the default name is stored, so the dump (and the fingerprint) always spells it out
        if not self.name:
            object.__setattr__(self, "name", self.default_name())
        if not _NAME.match(self.name):
            raise DefinitionError(f"contract name {self.name!r} is not a plain name",
                                  fix="use letters, digits and _ . - (e.g. refund_ok)")
        if self.max_failures is not None and self.level == "dataset":
            raise DefinitionError(f"contract {self.name!r}: max_failures applies to row-level "
                                  "contracts only", fix="drop max_failures=")
        return self

    def default_name(self) -> str:
        return "_".join([self.kind, *self.used_columns()])  # type: ignore[attr-defined]

    def used_columns(self) -> list[str]:
        """The columns the contract reads."""
        return [self.column] if isinstance(getattr(self, "column", None), str) else []  # type: ignore[attr-defined]


class Unique(_Contract):
    """No two rows share the value(s) of ``columns``; the first row (input order) is kept.

    Rows with a null in any of the columns are not compared (as in SQL).
    """

    kind: Literal["unique"] = "unique"
    columns: list[str] = Field(min_length=1)

    def used_columns(self) -> list[str]:
        return list(self.columns)


class Allowed(_Contract):
    """``column`` takes one of ``values`` (nulls pass; bound them with ``null_fraction``)."""

    kind: Literal["allowed"] = "allowed"
    column: str
    values: list[Any] = Field(min_length=1)


class Matches(_Contract):
    """``column`` (text) matches the regular expression ``pattern`` in full (nulls pass)."""

    kind: Literal["matches"] = "matches"
    column: str
    pattern: str

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise DefinitionError(f"pattern {value!r} is not a regular expression: {exc}",
                                  fix="e.g. pattern: '[0-9]{4}'") from None
        return value


class Monotonic(_Contract):
    """``column`` never goes down (``increasing``) or up (``decreasing``) from one row to the next.

    Rows are taken in input order, or ordered by ``order_by``; with ``by`` the sequence is per
    entity. A row fails when it breaks the order against the previous non-null value of its
    sequence; ``strict`` also fails on equal values. Nulls are skipped.
    """

    kind: Literal["monotonic"] = "monotonic"
    column: str
    direction: Literal["increasing", "decreasing"] = "increasing"
    strict: bool = False
    by: list[str] = []
    order_by: str | None = None

    def default_name(self) -> str:
        return "_".join(["monotonic", self.column, *(["by", *self.by] if self.by else [])])

    def used_columns(self) -> list[str]:
        return [self.column, *self.by, *([self.order_by] if self.order_by else [])]


class Rule(_Contract):
    """A cross-column condition every row must meet; a row fails when it is false.

    ``expr`` uses evenflow's expression grammar (``evenflow.core.expr``, shared with the stream
    engine): ``"amount >= 0 or channel == 'atm'"``. ``sql`` takes a DuckDB SQL boolean instead,
    for what the grammar lacks (``IN``, string functions). A null result passes, as in a SQL
    CHECK constraint.
    """

    kind: Literal["rule"] = "rule"
    expr: str | None = None
    sql: str | None = None

    @model_validator(mode="after")
    def _one_form(self) -> Rule:
        if (self.expr is None) == (self.sql is None):
            raise DefinitionError(f"rule {self.name!r} needs exactly one of expr= or sql=",
                                  fix="e.g. rule('refund_ok', \"amount >= 0 or channel == 'atm'\")")
        if self.expr is not None:
            try:
                Expr.parse(self.expr)
            except DefinitionError as exc:
                # the commonest slip: SQL's = where the expression grammar wants ==
                raise DefinitionError(f"rule {self.name!r}: {exc.message}",
                                      fix="compare with == (amount >= 0 or channel == 'atm'), or "
                                          "pass DuckDB SQL as sql=\"amount >= 0 OR channel = 'atm'\""
                                      ) from None
        return self

    def default_name(self) -> str:
        raise DefinitionError("a rule needs a name", fix="e.g. rule('refund_ok', 'amount >= 0')")

    def used_columns(self) -> list[str]:
        return sorted(Expr.parse(self.expr).columns()) if self.expr else []


class NullFraction(_Contract):
    """The fraction of null values of ``column`` lies within ``ge`` .. ``le``."""

    level: ClassVar[Literal["row", "dataset"]] = "dataset"
    kind: Literal["null_fraction"] = "null_fraction"
    column: str
    ge: float | None = Field(default=None, ge=0, le=1)
    le: float | None = Field(default=None, ge=0, le=1)

    @model_validator(mode="after")
    def _bounded(self) -> NullFraction:
        if self.ge is None and self.le is None:
            raise DefinitionError(f"contract {self.name!r} needs a bound", fix="e.g. le=0.05")
        return self


class RowCount(_Contract):
    """The number of valid rows lies within ``ge`` .. ``le``."""

    level: ClassVar[Literal["row", "dataset"]] = "dataset"
    kind: Literal["row_count"] = "row_count"
    ge: int | None = Field(default=None, ge=0)
    le: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _bounded(self) -> RowCount:
        if self.ge is None and self.le is None:
            raise DefinitionError(f"contract {self.name!r} needs a bound", fix="e.g. ge=1000")
        return self


class Freshness(_Contract):
    """The latest value of the time ``column`` is no older than ``within`` before ``reference``.

    ``reference`` is an ISO 8601 time; without it, the time of the run.
    """

    level: ClassVar[Literal["row", "dataset"]] = "dataset"
    kind: Literal["freshness"] = "freshness"
    column: str
    within: str
    reference: str | None = None

    @model_validator(mode="after")
    def _times(self) -> Freshness:
        parse_duration(self.within)
        if self.reference is not None:
            parse_instant(self.reference)
        return self


ContractType = Annotated[Unique | Allowed | Matches | Monotonic | Rule | NullFraction | RowCount
                         | Freshness, Field(discriminator="kind")]


def check_contracts(contracts: list[Any], columns: list[str] | None, source: str) -> None:
    """Definition-time checks: unique names, and (with a schema) known columns.

    >>> check_contracts([allowed("x", [1]), allowed("x", [2])], None, "tx")
    Traceback (most recent call last):
    ...
    evenflow.errors.DefinitionError: source 'tx' has two contracts named 'allowed_x'
      fix: give one of them name=
    """
    seen: set[str] = set()
    for c in contracts:
        if c.name in seen:
            raise DefinitionError(f"source {source!r} has two contracts named {c.name!r}",
                                  fix="give one of them name=")
        seen.add(c.name)
        for column in c.used_columns() if columns is not None else []:
            if column not in columns:  # type: ignore[operator]
                raise DefinitionError(f"contract {c.name!r} of source {source!r} uses column "
                                      f"{column!r}, which the schema does not declare",
                                      field=column, fix=f"columns: {', '.join(columns or [])}")


# -- the Python spelling -----------------------------------------------------------------------
def unique(*columns: str, name: str = "", severity: Severity = "error",
           max_failures: int | None = None) -> Unique:
    """Uniqueness of one column or of a combination: ``unique("card_id", "ts")``."""
    return Unique(columns=list(columns), name=name, severity=severity, max_failures=max_failures)


def allowed(column: str, values: list[Any], *, name: str = "", severity: Severity = "error",
            max_failures: int | None = None) -> Allowed:
    """``column`` in ``values``: ``allowed("channel", ["pos", "ecom", "atm"])``."""
    return Allowed(column=column, values=list(values), name=name, severity=severity,
                   max_failures=max_failures)


def matches(column: str, pattern: str, *, name: str = "", severity: Severity = "error",
            max_failures: int | None = None) -> Matches:
    """``column`` matches ``pattern`` in full: ``matches("mcc", r"[0-9]{4}")``."""
    return Matches(column=column, pattern=pattern, name=name, severity=severity,
                   max_failures=max_failures)


def monotonic(column: str, direction: Literal["increasing", "decreasing"] = "increasing", *,
              strict: bool = False, by: str | list[str] | None = None, order_by: str | None = None,
              name: str = "", severity: Severity = "error",
              max_failures: int | None = None) -> Monotonic:
    """A column that only grows (or only shrinks), optionally per entity: ``monotonic("seq_no")``."""
    by_list = [by] if isinstance(by, str) else list(by or [])
    return Monotonic(column=column, direction=direction, strict=strict, by=by_list,
                     order_by=order_by, name=name, severity=severity, max_failures=max_failures)


def rule(name: str, expr: str | None = None, *, sql: str | None = None,
         severity: Severity = "error", max_failures: int | None = None) -> Rule:
    """A named cross-column rule: ``rule("refund_ok", "amount >= 0 or channel == 'atm'")``."""
    return Rule(name=name, expr=expr, sql=sql, severity=severity, max_failures=max_failures)


def null_fraction(column: str, *, le: float | None = None, ge: float | None = None,
                  name: str = "", severity: Severity = "error") -> NullFraction:
    """Bounds on the share of nulls: ``null_fraction("amount", le=0.05)``."""
    return NullFraction(column=column, le=le, ge=ge, name=name, severity=severity)


def row_count(*, ge: int | None = None, le: int | None = None, name: str = "",
              severity: Severity = "error") -> RowCount:
    """Bounds on the number of valid rows: ``row_count(ge=1000)``."""
    return RowCount(ge=ge, le=le, name=name, severity=severity)


def freshness(column: str, *, within: str, reference: str | None = None, name: str = "",
              severity: Severity = "error") -> Freshness:
    """The newest ``column`` value is at most ``within`` old: ``freshness("ts", within="2d")``."""
    return Freshness(column=column, within=within, reference=reference, name=name,
                     severity=severity)
