"""Write a finished table to the warehouse: a DuckDB file (default) or PostgreSQL.

The URL says which: ``duckdb:path/to/file.duckdb`` or ``postgresql://host:port/db``. A
PostgreSQL table name may carry a schema (``features.fraud_v1``); the schema is created if
missing.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import duckdb

from evenflow.core.sqltext import ident as _q
from evenflow.core.sqltext import literal as _lit
from evenflow.errors import EvenflowError, MissingExtraError

_PG_TYPES = {"VARCHAR": "text", "BIGINT": "bigint", "INTEGER": "integer", "DOUBLE": "double precision",
             "FLOAT": "real", "BOOLEAN": "boolean", "TIMESTAMP WITH TIME ZONE": "timestamptz",
             "TIMESTAMP": "timestamp", "HUGEINT": "numeric", "SMALLINT": "smallint", "DATE": "date",
             "TINYINT": "smallint", "UBIGINT": "numeric", "UINTEGER": "bigint"}


def write_table(con: duckdb.DuckDBPyConnection, select_sql: str, url: str, table: str) -> str:
    """Materialize ``select_sql`` (run on ``con``) as ``table`` at ``url``; return where it went."""
    if url.startswith("duckdb:"):
        path = url.removeprefix("duckdb:")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        con.execute(f"ATTACH {_lit(path)} AS __wh")
        parts = table.split(".")
        try:
            if len(parts) == 2:
                con.execute(f"CREATE SCHEMA IF NOT EXISTS __wh.{_q(parts[0])}")
            qualified = ".".join(_q(p) for p in parts)
            con.execute(f"CREATE OR REPLACE TABLE __wh.{qualified} AS {select_sql}")
        finally:
            con.execute("DETACH __wh")
        return f"{path}#{table}"
    if url.startswith(("postgresql://", "postgres://")):
        return _write_postgres(con, select_sql, url, table)
    raise EvenflowError(f"unknown warehouse {url!r}",
                        fix="use duckdb:path/file.duckdb or postgresql://host:5432/db")


def _write_postgres(con: duckdb.DuckDBPyConnection, select_sql: str, url: str, table: str) -> str:
    try:
        import psycopg
    except ImportError as exc:
        raise MissingExtraError("psycopg", "postgres") from exc
    columns = con.sql(f"DESCRIBE {select_sql}").fetchall()
    ddl_cols = ", ".join(f"{_q(name)} {_PG_TYPES.get(typ, 'text')}" for name, typ, *_ in columns)
    parts = table.split(".")
    qualified = ".".join(_q(p) for p in parts)
    handle, path = tempfile.mkstemp(suffix=".csv")
    os.close(handle)
    try:
        con.execute(f"COPY ({select_sql}) TO {_lit(path)} (FORMAT csv, HEADER false)")
        with psycopg.connect(url) as conn, conn.cursor() as cur:
            if len(parts) == 2:
                cur.execute(f"CREATE SCHEMA IF NOT EXISTS {_q(parts[0])}")
            cur.execute(f"DROP TABLE IF EXISTS {qualified}")
            cur.execute(f"CREATE TABLE {qualified} ({ddl_cols})")
            with open(path, "rb") as src, cur.copy(f"COPY {qualified} FROM STDIN (FORMAT csv)") as copy:
                while chunk := src.read(1 << 20):
                    copy.write(chunk)
    except psycopg.Error as exc:
        raise EvenflowError(f"PostgreSQL refused the write: {str(exc).strip()}", file=table,
                            fix="check the URL, that the server runs, and the user's rights") from None
    finally:
        os.unlink(path)
    return f"{url.split('@')[-1]}#{table}"
