"""The step interface every step shares (``fit``, ``sql``, ``transform_one``), the rejection a
one-record form raises, and ``Dedup``."""

from __future__ import annotations

from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from evenflow.core.sqltext import ident as _q
from evenflow.errors import DefinitionError, EvenflowError

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


class OnColumn(BaseModel):
    """A step on one column, given positionally: ``Clip("amount", q=(0, 0.99))``; its id is
    ``kind:column``. The fitted steps below and ``NearDedup`` share it."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: str
    column: str

    def __init__(self, column: str | None = None, /, **data: Any) -> None:
        if column is not None:
            data["column"] = column
        super().__init__(**data)

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.column}"


class _Step(OnColumn):
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

    # -- optional verbs; the defaults fit most steps ------------------------------------------------
    @property
    def fit_columns(self) -> list[str]:
        """The columns ``fit`` reads (the engines select only these)."""
        return [self.column]

    @property
    def stateful(self) -> bool:
        """True when ``transform_one`` needs per-entity state (see :meth:`Impute.state_key`)."""
        return False

    @property
    def training_only(self) -> bool:
        """True for steps that only make sense on a training set (they read the label)."""
        return False

    def bind(self, *, key: list[str], order: list[str]) -> _Step:
        """This step with the entity ``key`` and row ``order`` filled in where it needs them.

        The engines call it: a feature set binds its key and ``(event_time, seq)``, a training
        set its labels' key and ``(time, row id)``. Most steps need neither and return ``self``.
        """
        return self

    def adds(self, artifact: Artifact) -> list[str]:
        """Output columns that are new (not the step's input column)."""
        return [c for c in self.sql(artifact) if c != self.column]

    def reject_sql(self, artifact: Artifact) -> tuple[str, str] | None:
        """``(condition, detail)`` SQL for rows the step sends to quarantine, or None.

        The stream form of a rejection is :class:`RecordRejected` raised by ``transform_one``.
        """
        return None


class RecordRejected(EvenflowError):
    """Raised by ``transform_one`` for a record a step sends to quarantine.

    The stream engine catches it and quarantines the record with ``reason`` and ``step``.
    """

    def __init__(self, message: str, *, reason: str, step: str, field: str | None = None,
                 fix: str | None = None) -> None:
        self.reason = reason
        self.step = step
        super().__init__(message, field=field, fix=fix)


def projection(step: _Step, artifact: Artifact, columns: list[str]) -> str:
    """The SELECT list applying ``step`` to a relation with ``columns``: existing columns are
    replaced in place, new ones appended in the order ``sql`` gives them.

    >>> from evenflow.core.steps import Impute
    >>> projection(Impute("x", "mean", indicator=True), {"value": 1.0}, ["x", "y"])
    '* REPLACE (COALESCE("x", CAST(1.0 AS DOUBLE)) AS "x"), ("x" IS NULL) AS "x_missing"'
    """
    return select_list(step.sql(artifact), columns)


def select_list(exprs: dict[str, str], columns: list[str]) -> str:
    """The SELECT list for output expressions over a relation with ``columns``."""
    replace = [f"{sql} AS {_q(col)}" for col, sql in exprs.items() if col in columns]
    added = [f"{sql} AS {_q(col)}" for col, sql in exprs.items() if col not in columns]
    head = f"* REPLACE ({', '.join(replace)})" if replace else "*"
    return ", ".join([head, *added])


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
