"""Open a :class:`~evenflow.core.source.Source` as a DuckDB relation.

Text formats (CSV, NDJSON) are read with every column as text, so that a bad value becomes a
quarantined record with a reason instead of a failed read. Typed formats keep their types.
Each reader returns a view named by the caller with an extra ``__seq`` column: the record's
position in the input, which is its arrival order.
"""

from __future__ import annotations

import glob
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from evenflow.core.source import Source
from evenflow.errors import MissingExtraError, SourceError


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _files(source: Source) -> list[str]:
    assert source.path is not None
    files = sorted(glob.glob(source.path)) if any(c in source.path for c in "*?[") else [source.path]
    missing = [f for f in files if not os.path.exists(f)]
    if not files or missing:
        raise SourceError(f"source {source.name!r}: no file matches", file=source.path,
                          fix="check the path; globs like data/*.parquet are allowed")
    return files


def _to_arrow(data: Any) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatchReader):
        return data.read_all()
    module = type(data).__module__.split(".")[0]
    if module == "polars":
        return data.to_arrow()
    if module == "pandas":
        return pa.Table.from_pandas(data, preserve_index=False)
    raise SourceError(f"cannot read a {type(data).__name__} as a frame",
                      fix="pass a Polars, pandas or Arrow table")


def open_source(con: duckdb.DuckDBPyConnection, source: Source, view: str) -> dict[str, str]:
    """Create ``view`` over the source; return its version info for the dataset card."""
    fmt = source.format
    version: dict[str, str] = {"format": fmt}
    if fmt in ("csv", "ndjson", "parquet"):
        files = _files(source)
        listing = ", ".join(_lit(f) for f in files)
        if fmt == "csv":
            scan = f"read_csv([{listing}], header=true, all_varchar=true, auto_detect=true)"
        elif fmt == "ndjson":
            scan = (f"read_json([{listing}], format='newline_delimited', "
                    "records=true, maximum_depth=1)")
            scan = _ndjson_as_text(con, scan)
        else:
            scan = f"read_parquet([{listing}])"
        digest = hashlib.sha256()
        for f in files:
            stat = os.stat(f)
            digest.update(f"{f}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        version.update(path=source.path or "", files=str(len(files)), stamp=digest.hexdigest()[:16])
        body = f"SELECT *, CAST(row_number() OVER () AS BIGINT) - 1 AS __seq FROM {scan}"
    elif fmt == "delta":
        try:
            from deltalake import DeltaTable
        except ImportError as exc:  # pragma: no cover - core dependency
            raise MissingExtraError("deltalake", "delta") from exc
        try:
            table = DeltaTable(source.path or "")
        except Exception as exc:
            raise SourceError(f"source {source.name!r}: not a Delta table ({exc})",
                              file=source.path, fix="write it with evenflow or deltalake first") from None
        version.update(path=source.path or "", delta_version=str(table.version()))
        con.register(f"{view}__arrow", table.to_pyarrow_dataset())
        body = f"SELECT *, CAST(row_number() OVER () AS BIGINT) - 1 AS __seq FROM {_q(view + '__arrow')}"
    elif fmt == "duckdb":
        alias = f"{view}__db"
        con.execute(f"ATTACH IF NOT EXISTS {_lit(source.path or '')} AS {_q(alias)} (READ_ONLY)")
        version.update(path=source.path or "", table=source.table or "")
        body = (f"SELECT *, CAST(row_number() OVER () AS BIGINT) - 1 AS __seq "
                f"FROM {_q(alias)}.{source.table}")
    elif fmt == "postgres":
        path = _postgres_to_csv(source)
        version.update(table=source.table or "", dsn=_redact(source.dsn or ""))
        body = (f"SELECT *, CAST(row_number() OVER () AS BIGINT) - 1 AS __seq FROM "
                f"read_csv({_lit(path)}, header=true, all_varchar=true)")
    elif fmt == "frame":
        if source.frame is None:
            raise SourceError(f"source {source.name!r} is a frame but no data was given",
                              fix="build it with evenflow.source.frame(data, name=...)")
        con.register(f"{view}__arrow", _to_arrow(source.frame))
        version.update(rows=str(len(_to_arrow(source.frame))))
        body = f"SELECT *, CAST(row_number() OVER () AS BIGINT) - 1 AS __seq FROM {_q(view + '__arrow')}"
    else:  # pragma: no cover - guarded by the model
        raise SourceError(f"unknown format {fmt}")
    try:
        con.execute(f"CREATE OR REPLACE TABLE {_q(view)} AS {body}")
    except duckdb.Error as exc:
        raise SourceError(f"source {source.name!r} cannot be read: {exc}".split("\n")[0],
                          file=source.path or source.table,
                          fix="check the format= and that the file is complete") from None
    return version


def _ndjson_as_text(con: duckdb.DuckDBPyConnection, scan: str) -> str:
    """NDJSON with every top-level value as text, so type errors quarantine per record."""
    columns = [row[0] for row in con.sql(f"DESCRIBE SELECT * FROM {scan}").fetchall()]
    casts = ", ".join(f"CAST({_q(c)} AS VARCHAR) AS {_q(c)}" for c in columns)
    return f"(SELECT {casts} FROM {scan})"


def _redact(dsn: str) -> str:
    if "@" in dsn and "://" in dsn:
        scheme, rest = dsn.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return dsn


def _postgres_to_csv(source: Source) -> str:
    try:
        import psycopg
    except ImportError as exc:
        raise MissingExtraError("psycopg", "postgres") from exc
    handle, path = tempfile.mkstemp(prefix=f"evenflow-{source.name}-", suffix=".csv")
    os.close(handle)
    table = ".".join(_q(p) for p in (source.table or "").split("."))
    try:
        with psycopg.connect(source.dsn or "") as conn, conn.cursor() as cur, \
                open(path, "wb") as out, \
                cur.copy(f"COPY (SELECT * FROM {table}) TO STDOUT WITH (FORMAT csv, HEADER true)") as copy:
            for chunk in copy:
                out.write(chunk)
    except psycopg.Error as exc:
        raise SourceError(f"source {source.name!r}: PostgreSQL said: {str(exc).strip()}",
                          file=source.table, fix="check the dsn and the table name") from None
    return str(Path(path))
