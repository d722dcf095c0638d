"""Schemas: field types and the constraints a record must meet.

A schema is declared once and checked by every engine. A record that breaks it is quarantined
with a reason code (see ``REASONS``), never dropped and never allowed to crash a run.

>>> s = Schema(amount=Float(ge=0), ts=Timestamp())
>>> sorted(s.fields)
['amount', 'ts']
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from evenflow.errors import DefinitionError

#: Reason codes written to quarantine, with a sentence for each that says what to do.
REASONS: dict[str, str] = {
    "missing_field": "the field is absent from the record; add it or declare it nullable",
    "null": "the field is null but declared nullable=False; fill it upstream or add an Impute step",
    "wrong_type": "the value cannot be read as the declared type; fix the producer or the type",
    "unparseable_timestamp": "the value is not an ISO 8601 timestamp; send e.g. 2026-03-01T12:00:00Z",
    "naive_timestamp": "the timestamp has no time zone; send an offset (Z, +01:00) or declare tz= on the field",
    "out_of_range": "the value is outside the declared bounds (ge/gt/le/lt)",
    "not_allowed": "the value is not in the declared allowed set",
    "regex": "the value does not match the declared pattern",
    "not_unique": "another record already has this value of a unique field",
    "late": "the event arrived behind the watermark",
    "malformed_record": "the line is not a record (wrong number of CSV fields, invalid JSON); fix the producer",
    "outlier": "the value is outside the bounds an Outliers step learned on the train split; check it "
               "upstream, or use action='clip' or 'flag' to keep the row",
    "conflicting_labels": "rows with identical features carry different labels; relabel them or add the "
                          "feature that tells them apart",
    "label_noise": "an out-of-fold model is confident the label is wrong (confident learning); review "
                   "and relabel the row",
    "contract": "the record breaks a contract declared on its source (the rule is named in step "
                "and detail); fix the producer, or relax the rule or set severity='warn'",
}


class _FieldBase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    nullable: bool = True
    unique: bool = False
    allowed: list[Any] | None = None


class _Numeric(_FieldBase):
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None


class String(_FieldBase):
    """A text field; ``regex`` must match the whole value."""

    type: Literal["string"] = "string"
    regex: str | None = None


class Int(_Numeric):
    """A 64-bit integer field."""

    type: Literal["int"] = "int"


class Float(_Numeric):
    """A 64-bit floating-point field."""

    type: Literal["float"] = "float"


class Bool(_FieldBase):
    """A boolean field (true/false, 1/0 in text sources)."""

    type: Literal["bool"] = "bool"


class Timestamp(_FieldBase):
    """A point in time, held as UTC microseconds.

    Text values must carry a zone offset. ``tz`` declares the zone of values that do not (for
    example ``tz="Europe/Paris"``); without it a naive value is quarantined as ``naive_timestamp``.
    """

    type: Literal["timestamp"] = "timestamp"
    tz: str | None = None


FieldType = Annotated[String | Int | Float | Bool | Timestamp, Field(discriminator="type")]

SQL_TYPES = {"string": "VARCHAR", "int": "BIGINT", "float": "DOUBLE", "bool": "BOOLEAN",
             "timestamp": "TIMESTAMPTZ"}


class Schema(BaseModel):
    """Named fields in declaration order: ``Schema(amount=Float(ge=0), ts=Timestamp())``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    fields: dict[str, FieldType]

    def __init__(self, fields: dict[str, Any] | None = None, /, **kwargs: Any) -> None:
        super().__init__(fields={**(fields or {}), **kwargs})

    def __contains__(self, name: object) -> bool:
        return name in self.fields

    @model_validator(mode="after")
    def _no_reserved_names(self) -> Schema:
        for name in self.fields:
            reserved(name, "field")
        return self


_RENAME = "rename it (for example in the file, or in a DuckDB view over it) to a name without the leading '__'"


def reserved(name: str, what: str, fix: str = _RENAME) -> None:
    """Refuse a user name that starts with ``__``: the engines' own columns (``__seq``, ``__t``,
    ``__a`` ...) carry such names, and a user column with one would be joined as if it were theirs.

    >>> try:
    ...     reserved("__seq", "field")
    ... except DefinitionError as exc:
    ...     print(exc)
    field '__seq': names that start with '__' are reserved for evenflow's own columns
      fix: rename it (for example in the file, or in a DuckDB view over it) to a name without the leading '__'
    """
    if name.startswith("__"):
        raise DefinitionError(f"{what} {name!r}: names that start with '__' are reserved for evenflow's own "
                              "columns", fix=fix)
