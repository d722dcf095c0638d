"""Clean typed Parquet sources read straight into Arrow, without DuckDB.

A Parquet source whose columns are read as their declared types, and whose only rules are
non-null checks, has no record that can fail when the file's metadata shows that none of those
columns holds a null (decision 0007 decides the same in SQL, from the same statistics). Such a
source needs no validation pass, no quarantine and no DuckDB connection: its valid rows are the
file's rows, in file order, and ``__seq`` is the row's position (``file_row_number``, offset by
the rows of the files before it).

:func:`clean_parquet` answers from the metadata alone. It returns None, and the caller takes the
DuckDB path, whenever anything could make the answer differ from what
``BatchEngine.load_source`` would do: a column type DuckDB would read as another type, a rule
beyond non-null, a unique field, a contract, a row group without a null count, or a possible
null in a non-nullable column. It never guesses.

>>> import pyarrow as pa, pyarrow.parquet as pq, tempfile, os, datetime as dt
>>> import evenflow as ef
>>> path = os.path.join(tempfile.mkdtemp(), "tx.parquet")
>>> t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
>>> pq.write_table(pa.table({"card": ["a", "b"], "ts": [t0, t0], "amount": [1.0, None]}), path)
>>> clean = clean_parquet(ef.source.parquet(path, name="tx", key="card", event_time="ts"))
>>> list(clean.schema.fields), clean.rows
(['card', 'ts', 'amount'], 2)
>>> clean.read(["card", "amount"]).column("amount").to_pylist()
[1.0, None]
>>> pq.write_table(pa.table({"card": ["a", None], "ts": [t0, t0]}), path)  # a null key
>>> clean_parquet(ef.source.parquet(path, name="tx", key="card", event_time="ts")) is None
True
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from evenflow.core import schema as S
from evenflow.core.source import Source

#: the Arrow type DuckDB hands back for each column type read unchanged (TimeZone is UTC)
ARROW_TYPES: dict[str, pa.DataType] = {
    "VARCHAR": pa.string(), "BIGINT": pa.int64(), "DOUBLE": pa.float64(), "BOOLEAN": pa.bool_(),
    "TIMESTAMP WITH TIME ZONE": pa.timestamp("us", tz="UTC")}
_KINDS: dict[str, type[S.String | S.Int | S.Float | S.Bool]] = {
    "VARCHAR": S.String, "BIGINT": S.Int, "DOUBLE": S.Float, "BOOLEAN": S.Bool}


def duckdb_type(column: pq.ColumnSchema) -> str | None:
    """DuckDB's type for a flat Parquet column, for the few types read as a field type unchanged.

    None for every other column (nested, 32-bit, decimal, naive or non-microsecond times, text
    without the String annotation, ...): those take the DuckDB path.
    """
    if column.max_repetition_level != 0 or "." in column.path:
        return None
    physical, logical = column.physical_type, json.loads(column.logical_type.to_json())
    kind = logical.get("Type", "None")
    if physical == "BYTE_ARRAY" and kind == "String":
        return "VARCHAR"
    if physical == "INT64" and (kind == "None" or (kind == "Int" and logical.get("bitWidth") == 64
                                                   and logical.get("isSigned") is True)):
        return "BIGINT"
    if physical == "DOUBLE" and kind == "None":
        return "DOUBLE"
    if physical == "BOOLEAN" and kind == "None":
        return "BOOLEAN"
    if (physical == "INT64" and kind == "Timestamp" and logical.get("isAdjustedToUTC") is True
            and logical.get("timeUnit") == "microseconds"):
        return "TIMESTAMP WITH TIME ZONE"
    return None


def _as_read(field: S.FieldType, raw_type: str) -> bool:
    """Whether validation types this column as read (``evenflow.quality.validate._typed``)."""
    if isinstance(field, S.Timestamp):
        return raw_type == "TIMESTAMP WITH TIME ZONE"
    return raw_type == S.SQL_TYPES[field.type]


def _no_nulls(files: list[pq.ParquetFile], index: int) -> bool:
    """Whether column ``index`` holds no null in any row group, by the metadata alone."""
    for f in files:
        if f.schema.column(index).max_definition_level == 0:  # required: a null cannot be written
            continue
        meta = f.metadata
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            if group.num_rows == 0:
                continue
            stats = group.column(index).statistics
            if stats is None or not stats.has_null_count or stats.null_count != 0:
                return False
    return True


def _layout(f: pq.ParquetFile) -> list[tuple[str, str, str]]:
    return [(c.name, c.physical_type, c.logical_type.to_json()) for c in f.schema]


@dataclass(frozen=True)
class CleanParquet:
    """A Parquet source no record of which can fail validation: its schema and its files."""

    source: Source
    schema: S.Schema
    files: list[pq.ParquetFile]
    rows: int
    threads: bool = True

    def read(self, columns: list[str]) -> pa.Table:
        """``columns`` (fields of the schema) of every file in file order, as DuckDB hands them back:
        plain nullable fields of the types in ``ARROW_TYPES``, without Parquet field ids."""
        want = pa.schema([pa.field(c, ARROW_TYPES[_RAW[self.schema.fields[c].type]]) for c in columns])
        tables = []
        for f in self.files:  # ParquetFile.read: pq.read_table would import pyarrow.dataset (12 ms)
            table = f.read(columns=columns, use_threads=self.threads, use_pandas_metadata=False)
            if table.schema.types != want.types:  # the file's Arrow schema asked for another type
                table = table.cast(want)  # large_string, dictionary or another zone: exact
            tables.append(pa.Table.from_arrays(table.columns, schema=want))
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


#: the raw type of each field type, for the columns a clean source reads as their field type
_RAW = {"string": "VARCHAR", "int": "BIGINT", "float": "DOUBLE", "bool": "BOOLEAN",
        "timestamp": "TIMESTAMP WITH TIME ZONE"}


def clean_parquet(source: Source, *, threads: bool = True) -> CleanParquet | None:
    """``source`` as a :class:`CleanParquet` when its metadata proves that no record can fail.

    None sends the caller to the DuckDB path (``BatchEngine.load_source``), which then gives the
    answer or the error; nothing here raises for a source that DuckDB would reject.
    """
    if source.format != "parquet" or not source.path or source.contracts:
        return None
    path = source.path
    files = sorted(glob.glob(path)) if any(c in path for c in "*?[") else [path]
    if not files or not all(os.path.isfile(f) for f in files):
        return None
    try:
        opened = [pq.ParquetFile(f) for f in files]
    except Exception:  # not Parquet, or unreadable: DuckDB reports it
        return None
    first = opened[0]
    if any(_layout(f) != _layout(first) for f in opened[1:]):
        return None
    columns = [c.name for c in first.schema]
    # DuckDB's names are case-insensitive: columns that differ only by case are renamed there
    if len({c.lower() for c in columns}) != len(columns) or any(c.startswith("__") for c in columns):
        return None
    raw = {c.name: duckdb_type(c) for c in first.schema}
    if source.schema_ is not None:
        schema = source.schema_
    else:  # as evenflow.quality.validate.infer_schema; any other type takes the DuckDB path
        if any(t is None for t in raw.values()):
            return None
        fields: dict[str, S.FieldType] = {}
        for name, typ in raw.items():
            timed = name in (source.event_time, source.available_time) or typ == "TIMESTAMP WITH TIME ZONE"
            fields[name] = S.Timestamp() if timed else _KINDS[typ or ""]()
        schema = S.Schema(fields)
    if source.event_time and source.event_time not in schema.fields:
        return None
    required = {c for c in [*source.key, source.event_time, source.available_time] if c}
    for name, field in schema.fields.items():
        typ = raw.get(name)
        if typ is None or not _as_read(field, typ) or field.unique or field.allowed:
            return None
        if any(getattr(field, bound, None) is not None for bound in ("ge", "gt", "le", "lt", "regex")):
            return None
        if (not field.nullable or name in required) and not _no_nulls(opened, columns.index(name)):
            return None
    rows = sum(f.metadata.num_rows for f in opened)
    return CleanParquet(source, schema, opened, rows, threads)
