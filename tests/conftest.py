"""Shared, generic fixtures: the PostgreSQL test server, a throwaway schema, DuckDB, the fraud generator.

PostgreSQL tests are marked ``@pytest.mark.postgres``; they use a fresh schema
``ef_test_<random hex>`` that is dropped (with everything in it) at teardown.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import duckdb
import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Candidate DSNs for the local test server (trust auth); the first that answers is used.
PG_DSNS = [
    os.environ.get("EVENFLOW_TEST_PG_DSN", ""),
    "postgresql://postgres@127.0.0.1:5432/test",
    "postgresql://root@127.0.0.1:5432/test",
]


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """A DSN of the PostgreSQL test server; the test is skipped when no server answers."""
    psycopg = pytest.importorskip("psycopg")
    errors = []
    for dsn in filter(None, PG_DSNS):
        try:
            with psycopg.connect(dsn, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            return dsn
        except psycopg.Error as exc:  # pragma: no cover - depends on the machine
            errors.append(f"{dsn}: {exc}")
    pytest.skip("no PostgreSQL server: " + "; ".join(errors))  # pragma: no cover


@pytest.fixture
def pg_schema(pg_dsn: str) -> Iterator[str]:
    """A fresh, empty schema ``ef_test_<hex>``; dropped with its contents afterwards."""
    import psycopg

    name = f"ef_test_{secrets.token_hex(6)}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def pg_conn(pg_dsn: str) -> Iterator[object]:
    """An autocommit psycopg connection to the test server."""
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def duck() -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB connection set up like the batch engine's (UTC session)."""
    con = duckdb.connect(config={"preserve_insertion_order": True})
    con.execute("SET TimeZone='UTC'")
    try:
        yield con
    finally:
        con.close()


@pytest.fixture(scope="session")
def fraud_generator() -> ModuleType:
    """``examples/fraud/generate.py`` as a module (``generate(out_dir, n_transactions=, seed=)``)."""
    path = ROOT / "examples" / "fraud" / "generate.py"
    spec = importlib.util.spec_from_file_location("evenflow_fraud_generate", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
