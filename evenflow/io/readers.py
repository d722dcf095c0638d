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
from evenflow.core.sqltext import ident as _q
from evenflow.core.sqltext import literal as _lit
from evenflow.errors import MissingExtraError, SourceError


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
        digest = hashlib.sha256()
        for f in files:
            stat = os.stat(f)
            digest.update(f"{f}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        version.update(path=source.path or "", files=str(len(files)), stamp=digest.hexdigest()[:16])
        if fmt == "parquet":
            # A view, not a copy: Parquet is cheap to scan again, and file_row_number makes the
            # record positions the same on every scan.
            con.execute(f"CREATE OR REPLACE VIEW {_q(view)} AS {_parquet_scan(files)}")
            return version
        scan = _csv_scan(con, files, view) if fmt == "csv" else _ndjson_scan(con, files, view, source)
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
        if not os.path.exists(source.path or ""):
            raise SourceError(f"source {source.name!r}: no DuckDB database here", file=source.path,
                              fix="check the path of the .duckdb file")
        try:
            con.execute(f"ATTACH IF NOT EXISTS {_lit(source.path or '')} AS {_q(alias)} (READ_ONLY)")
        except duckdb.Error as exc:
            raise SourceError(f"source {source.name!r}: cannot open the database: {exc}".split("\n")[0],
                              file=source.path, fix="check that it is a DuckDB file") from None
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
        data = _to_arrow(source.frame)  # converted once: a pandas frame copies
        con.register(f"{view}__arrow", data)
        version.update(rows=str(data.num_rows))
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


def _parquet_scan(files: list[str]) -> str:
    import pyarrow.parquet as pq

    listing = ", ".join(_lit(f) for f in files)
    seq = "file_row_number"
    if len(files) > 1:
        offsets, total = [], 0
        for f in files:
            offsets.append(f"WHEN {_lit(f)} THEN {total}")
            total += pq.ParquetFile(f).metadata.num_rows
        seq = f"(CASE filename {' '.join(offsets)} END + file_row_number)"
    try:
        columns = [c for c in pq.ParquetFile(files[0]).schema_arrow.names]
    except Exception as exc:
        raise SourceError(f"not a readable Parquet file: {exc}", file=files[0],
                          fix="check that the file is complete and is Parquet") from None
    cols = ", ".join(_q(c) for c in columns)
    return (f"SELECT {cols}, CAST({seq} AS BIGINT) AS __seq FROM read_parquet([{listing}], "
            f"file_row_number=true, filename=true)")


def _header(path: str) -> list[str]:
    import csv

    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        return next(csv.reader(fh), [])


def _csv_scan(con: duckdb.DuckDBPyConnection, files: list[str], view: str) -> str:
    """CSV with the header's columns as text; lines that do not fit go to ``<view>__rejects``.

    Types and the dialect are not guessed: a guess made from a few lines can turn one ragged
    line into a one-column file. Ragged lines are kept as quarantine records instead.
    """
    header = _header(files[0])
    if not header:
        raise SourceError("the CSV file is empty or has no header line", file=files[0],
                          fix="write a header line with the column names first")
    columns = "{" + ", ".join(f"{_lit(c)}: 'VARCHAR'" for c in header) + "}"
    listing = ", ".join(_lit(f) for f in files)
    rejects = f"{view}__rejects"
    con.execute(f"CREATE OR REPLACE TABLE {_q(view + '__lines')} AS SELECT * FROM read_csv([{listing}], "
                f"header=true, auto_detect=false, delim=',', quote='\"', escape='\"', "
                f"columns={columns}, store_rejects=true, rejects_table={_lit(rejects + '_raw')}, "
                f"rejects_scan={_lit(rejects + '_scan')})")
    con.execute(
        f"CREATE OR REPLACE TABLE {_q(rejects)} AS SELECT any_value(s.file_path) AS file, r.line, "
        f"any_value(r.csv_line) AS payload, any_value(r.column_name) AS field, "
        f"string_agg(DISTINCT r.error_message, '; ') AS message "
        f"FROM {_q(rejects + '_raw')} r JOIN {_q(rejects + '_scan')} s USING (scan_id, file_id) "
        f"GROUP BY r.file_id, r.line ORDER BY r.file_id, r.line")
    return _q(view + "__lines")


# CASE, not AND: DuckDB evaluates both sides of AND, and json_type fails on invalid JSON.
_IS_OBJECT = "(CASE WHEN json_valid(__line) THEN json_type(__line) = 'OBJECT' ELSE false END)"


def _ndjson_scan(con: duckdb.DuckDBPyConnection, files: list[str], view: str, source: Source) -> str:
    """NDJSON line by line: every top-level value as text, invalid lines to ``<view>__rejects``."""
    listing = ", ".join(_lit(f) for f in files)
    con.execute(f"CREATE OR REPLACE TABLE {_q(view + '__lines')} AS SELECT filename AS file, "
                f"CAST(row_number() OVER () AS BIGINT) AS line, line AS __line FROM read_csv([{listing}], "
                f"header=false, auto_detect=false, delim='\x1e', quote='', escape='', "
                f"columns={{'line': 'VARCHAR'}}, filename=true) WHERE trim(line) <> ''")
    con.execute(f"CREATE OR REPLACE TABLE {_q(view + '__rejects')} AS SELECT file, line, "
                f"__line AS payload, NULL AS field, 'not a JSON object' AS message "
                f"FROM {_q(view + '__lines')} WHERE NOT {_IS_OBJECT}")
    valid = f"(SELECT * FROM {_q(view + '__lines')} WHERE {_IS_OBJECT})"
    if source.schema_ is not None:
        keys = list(source.schema_.fields)
    else:
        rows = con.sql(f"SELECT DISTINCT unnest(json_keys(__line)) FROM {valid} LIMIT 10000").fetchall()
        keys = sorted(r[0] for r in rows)
    cols = ", ".join(f"json_extract_string(__line, {_lit('$.' + json_path_key(k))}) AS {_q(k)}" for k in keys)
    return f"(SELECT {cols}{', ' if cols else ''}__line FROM {valid} ORDER BY line)"


def json_path_key(key: str) -> str:
    return '"' + key.replace('"', '\\"') + '"'


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
