"""Source declarations: where events come from and what they must look like.

A source is a declaration only; ``evenflow.io`` reads it. Frames (Polars, pandas, Arrow) are
held in memory and dump to YAML by name only.

>>> from evenflow.core.schema import Schema, Float, Timestamp, String
>>> s = parquet("data/tx/*.parquet", schema=Schema(card_id=String(), amount=Float(), ts=Timestamp()),
...             key="card_id", event_time="ts")
>>> s.name, s.key
('tx', ['card_id'])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, PrivateAttr, model_validator

from evenflow.core.contracts import ContractType, check_contracts
from evenflow.core.schema import Schema
from evenflow.errors import DefinitionError

Format = Literal["parquet", "csv", "ndjson", "delta", "duckdb", "postgres", "frame"]


class Source(BaseModel):
    """Events of one kind: a location, a schema, the entity key and the time columns."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    format: Format
    path: str | None = None
    table: str | None = None
    dsn: str | None = None
    schema_: Schema | None = None
    key: list[str] = []
    event_time: str | None = None
    available_time: str | None = None
    #: checks beyond the schema (``evenflow.core.contracts``), evaluated after validation
    contracts: list[ContractType] = []
    _frame: Any = PrivateAttr(default=None)

    def __init__(self, **data: Any) -> None:
        if "schema" in data:
            data["schema_"] = data.pop("schema")
        if isinstance(data.get("key"), str):
            data["key"] = [data["key"]]
        super().__init__(**data)

    @model_validator(mode="after")
    def _check(self) -> Source:
        if self.format in ("parquet", "csv", "ndjson", "delta") and not self.path:
            raise DefinitionError(f"source {self.name!r} ({self.format}) needs a path")
        if self.format in ("duckdb", "postgres") and not self.table:
            raise DefinitionError(f"source {self.name!r} ({self.format}) needs a table")
        if self.format == "postgres" and not self.dsn:
            raise DefinitionError(f"source {self.name!r} needs a dsn",
                                  fix='e.g. dsn="postgresql://127.0.0.1:5432/test"')
        if self.schema_ is not None:
            declared = set(self.schema_.fields)
            for column in [*self.key, self.event_time, self.available_time]:
                if column is not None and column not in declared:
                    raise DefinitionError(f"source {self.name!r} uses column {column!r}, "
                                          "which its schema does not declare",
                                          field=column, fix=f"add {column}=... to the schema")
        check_contracts(self.contracts, list(self.schema_.fields) if self.schema_ else None, self.name)
        return self

    def dump(self) -> dict[str, Any]:
        """The canonical definition (used for YAML and the fingerprint)."""
        data = self.model_dump(mode="json", exclude_none=True, by_alias=False)
        if "schema_" in data:
            data["schema"] = data.pop("schema_")["fields"]
        if not data.get("contracts"):  # no contracts: the same definition (and fingerprint) as before
            data.pop("contracts", None)
        return data

    @classmethod
    def load(cls, data: dict[str, Any]) -> Source:
        data = dict(data)
        if isinstance(data.get("schema"), dict) and "fields" not in data["schema"]:
            data["schema"] = Schema(data["schema"])
        return cls(**data)

    @property
    def frame(self) -> Any:
        return self._frame


def _stem(path: str) -> str:
    name = Path(path.split("*")[0].rstrip("/")).name or Path(path).parent.name
    return name.split(".")[0] or "source"


def _file(fmt: Format) -> Any:
    def make(path: str, *, schema: Schema | None = None, key: str | list[str] | None = None,
             event_time: str | None = None, available_time: str | None = None,
             name: str | None = None, contracts: list[Any] | None = None) -> Source:
        return Source(name=name or _stem(str(path)), format=fmt, path=str(path), schema=schema,
                      key=key or [], event_time=event_time, available_time=available_time,
                      contracts=contracts or [])
    make.__name__ = fmt
    make.__doc__ = f"A {fmt} source at ``path`` (globs allowed for files)."
    return make


parquet = _file("parquet")
csv = _file("csv")
ndjson = _file("ndjson")
delta = _file("delta")


def duckdb(path: str, table: str, *, schema: Schema | None = None,
           key: str | list[str] | None = None, event_time: str | None = None,
           available_time: str | None = None, name: str | None = None,
           contracts: list[Any] | None = None) -> Source:
    """A table in a DuckDB database file."""
    return Source(name=name or table, format="duckdb", path=str(path), table=table, schema=schema,
                  key=key or [], event_time=event_time, available_time=available_time,
                  contracts=contracts or [])


def postgres(dsn: str, table: str, *, schema: Schema | None = None,
             key: str | list[str] | None = None, event_time: str | None = None,
             available_time: str | None = None, name: str | None = None,
             contracts: list[Any] | None = None) -> Source:
    """A PostgreSQL table (``table`` may be ``schema.table``)."""
    return Source(name=name or table.split(".")[-1], format="postgres", dsn=dsn, table=table,
                  schema=schema, key=key or [], event_time=event_time,
                  available_time=available_time, contracts=contracts or [])


def frame(data: Any, *, name: str, schema: Schema | None = None,
          key: str | list[str] | None = None, event_time: str | None = None,
          available_time: str | None = None, contracts: list[Any] | None = None) -> Source:
    """An in-memory Polars, pandas or Arrow frame."""
    src = Source(name=name, format="frame", schema=schema, key=key or [], event_time=event_time,
                 available_time=available_time, contracts=contracts or [])
    src._frame = data
    return src
