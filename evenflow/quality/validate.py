"""Schema validation compiled to one SQL pass.

For every record the pass computes the typed value of each declared field and the first failed
rule as ``reason|field|detail``. Valid records go on; the others go to quarantine with their
original payload. Nothing is dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from evenflow.core.schema import SQL_TYPES, Schema, Timestamp
from evenflow.core.source import Source
from evenflow.core.sqltext import ident as q
from evenflow.core.sqltext import literal as lit
from evenflow.errors import SourceError

# A zone offset after a time of day (a bare date's "-01" is not an offset).
_OFFSET = r"'[0-9]{2}:[0-9]{2}(:[0-9]{2}([.][0-9]+)?)? ?([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)$'"
# Strict ISO 8601 shape: DuckDB alone would also read "2026-1-5T7:3".
_ISO = (r"'^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.][0-9]+)?)? ?"
        r"([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)?)?$'")


def describe(con: duckdb.DuckDBPyConnection, raw: str) -> dict[str, str]:
    """The columns of ``raw`` and their DuckDB types, in order."""
    return {r[0]: r[1] for r in con.sql(f"DESCRIBE {q(raw)}").fetchall()}


def infer_schema(con: duckdb.DuckDBPyConnection, raw: str, source: Source, *,
                 described: dict[str, str] | None = None) -> Schema:
    """A schema for a source declared without one: the columns as read, times as timestamps.

    ``described``: the columns of ``raw`` from :func:`describe`, to save asking again.
    """
    from evenflow.core import schema as S

    kinds = {"VARCHAR": S.String, "BIGINT": S.Int, "INTEGER": S.Int, "DOUBLE": S.Float,
             "FLOAT": S.Float, "BOOLEAN": S.Bool}
    fields: dict[str, object] = {}
    for name, typ in (described or describe(con, raw)).items():
        if name in ("__seq", "__line"):
            continue
        if name in (source.event_time, source.available_time) or typ.startswith("TIMESTAMP"):
            fields[name] = S.Timestamp()
        else:
            fields[name] = kinds.get(typ.split("(")[0], S.String)()
    return Schema(fields)


def _typed(name: str, field: object, raw_type: str | None, source: Source) -> tuple[str, str]:
    """SQL for the typed value and for 'the raw value could not be typed' (reason code)."""
    col = q(name)
    target = SQL_TYPES[field.type]  # type: ignore[attr-defined]
    if raw_type is None:
        return f"CAST(NULL AS {target})", "FALSE"
    if isinstance(field, Timestamp):
        if raw_type == "VARCHAR":
            text = f"trim({col})"
            aware = f"CASE WHEN regexp_full_match({text}, {_ISO}) THEN TRY_CAST({text} AS TIMESTAMPTZ) END"
            if field.tz:
                value = (f"CASE WHEN regexp_matches({text}, {_OFFSET}) THEN {aware} "
                         f"WHEN regexp_full_match({text}, {_ISO}) "
                         f"THEN timezone({lit(field.tz)}, TRY_CAST({text} AS TIMESTAMP)) END")
                return value, "'unparseable_timestamp'"
            value = f"CASE WHEN regexp_matches({text}, {_OFFSET}) THEN {aware} END"
            reason = (f"CASE WHEN regexp_full_match({text}, {_ISO}) AND "
                      f"TRY_CAST({text} AS TIMESTAMP) IS NOT NULL AND NOT "
                      f"regexp_matches({text}, {_OFFSET}) THEN 'naive_timestamp' "
                      "ELSE 'unparseable_timestamp' END")
            return value, reason
        if raw_type == "TIMESTAMP WITH TIME ZONE":
            return col, "'wrong_type'"
        if raw_type.startswith("TIMESTAMP"):
            if not field.tz:
                raise SourceError(
                    f"source {source.name!r}: column {name!r} holds timestamps without a time zone",
                    file=source.path or source.table, field=name,
                    fix=f"declare the zone, e.g. {name}=Timestamp(tz='UTC'), or write aware timestamps")
            return f"timezone({lit(field.tz)}, CAST({col} AS TIMESTAMP))", "'wrong_type'"
        return f"TRY_CAST({col} AS TIMESTAMPTZ)", "'wrong_type'"
    if raw_type == target:
        return col, "'wrong_type'"
    if target == "BIGINT" and raw_type == "VARCHAR":
        # '3.5' and '1e3' are not integers; TRY_CAST would round them.
        return (f"CASE WHEN regexp_full_match(trim({col}), '[+-]?[0-9]+') "
                f"THEN TRY_CAST(trim({col}) AS BIGINT) END"), "'wrong_type'"
    return f"TRY_CAST({col} AS {target})", "'wrong_type'"


@dataclass(frozen=True)
class Validation:
    """The compiled schema check of one raw relation.

    ``sql`` selects the typed fields, ``__seq`` and ``__fail`` (``reason|field|detail`` or null).
    ``as_read``: every typed field is its raw column unchanged (a typed source such as Parquet
    whose column types are the declared ones), so a check that finds no failing record leaves
    the raw relation itself as the valid rows. ``failures_sql`` counts the failing records, or,
    when non-null checks are the only rules, the nulls among the non-nullable columns (zero
    exactly when no record fails; DuckDB reads them from Parquet statistics).
    """

    sql: str
    raw_columns: list[str]
    as_read: bool
    failures_sql: str


def validation_sql(con: duckdb.DuckDBPyConnection, raw: str, source: Source,
                   schema: Schema) -> tuple[str, list[str]]:
    """SQL selecting typed fields, ``__seq`` and ``__fail`` from ``raw``; and the raw columns."""
    v = validation(con, raw, source, schema)
    return v.sql, v.raw_columns


def validation(con: duckdb.DuckDBPyConnection, raw: str, source: Source, schema: Schema, *,
               described: dict[str, str] | None = None) -> Validation:
    """The schema check of ``raw`` (see :class:`Validation`); ``described`` as for infer_schema."""
    described = described or describe(con, raw)
    raw_columns = [c for c in described if c != "__seq"]  # __line (NDJSON) is the payload
    required = {c for c in [*source.key, source.event_time, source.available_time] if c}
    selects, fails = [], []
    as_read = True
    not_null: list[str] = []  # columns whose only rule is "not null"
    other_rules = False
    for name, field in schema.fields.items():
        raw_type = described.get(name)
        value, bad_type = _typed(name, field, raw_type, source)
        selects.append(f"{value} AS {q(name)}")
        col = q(name)
        as_read = as_read and value == col
        nullable = field.nullable and name not in required
        if raw_type is None:
            if not nullable:
                fails.append(f"WHEN TRUE THEN 'missing_field|{name}|the record has no field {name}'")
                other_rules = True
            continue
        shown = f"CAST({col} AS VARCHAR)"
        if not nullable and "__line" in described:  # NDJSON: an absent key is not a null
            path = lit('$."' + name.replace('"', '\\"') + '"')
            fails.append(f"WHEN NOT json_exists(__line, {path}) THEN "
                         f"'missing_field|{name}|the record has no field {name}'")
            other_rules = True
        if not nullable:
            fails.append(f"WHEN {col} IS NULL THEN 'null|{name}|{name} is null'")
            not_null.append(name)
        # a value read as the declared type cannot fail to be typed: no rule to check
        if value != col:
            fails.append(f"WHEN {col} IS NOT NULL AND ({value}) IS NULL THEN {bad_type} || "
                         f"'|{name}|' || {lit(name + '=')} || {shown} || "
                         f"{lit(' is not a valid ' + field.type)}")  # type: ignore[attr-defined]
        typed = f"({value})"
        for op, sql_op, word in (("ge", "<", "below ge"), ("gt", "<=", "not above gt"),
                                 ("le", ">", "above le"), ("lt", ">=", "not below lt")):
            bound = getattr(field, op, None)
            if bound is not None:
                other_rules = True
                fails.append(f"WHEN {typed} {sql_op} {bound!r} THEN 'out_of_range|{name}|' || "
                             f"{lit(name + '=')} || CAST({typed} AS VARCHAR) || {lit(f' is {word}={bound!r}')}")
        if field.allowed:  # type: ignore[attr-defined]
            other_rules = True
            allowed = ", ".join(lit(v) for v in field.allowed)  # type: ignore[attr-defined]
            fails.append(f"WHEN {typed} IS NOT NULL AND {typed} NOT IN ({allowed}) THEN "
                         f"'not_allowed|{name}|' || {lit(name + '=')} || CAST({typed} AS VARCHAR) || "
                         f"' is not one of ' || {lit(allowed)}")
        regex = getattr(field, "regex", None)
        if regex:
            other_rules = True
            fails.append(f"WHEN {typed} IS NOT NULL AND NOT regexp_full_match({typed}, {lit(regex)}) "
                         f"THEN 'regex|{name}|' || {lit(name + '=')} || {typed} || "
                         f"{lit(' does not match ' + regex)}")
    fail = f"CASE {' '.join(fails)} END" if fails else "CAST(NULL AS VARCHAR)"
    sql = f"SELECT {', '.join(selects)}, __seq, {fail} AS __fail FROM {q(raw)}"
    if other_rules or not as_read:
        failures = f"SELECT count(*) FROM {q(raw)} WHERE ({fail}) IS NOT NULL"
    else:
        nulls = " + ".join(f"(count(*) - count({q(c)}))" for c in not_null)
        failures = f"SELECT {nulls} FROM {q(raw)}" if nulls else "SELECT 0"
    return Validation(sql, raw_columns, as_read, failures)


def payload_sql(raw_columns: list[str], prefix: str = "") -> str:
    """The original record as JSON text."""
    pairs = ", ".join(f"{lit(c)}, {prefix}{q(c)}" for c in raw_columns)
    return f"CAST(json_object({pairs}) AS VARCHAR)"
