"""Warehouse (DuckDB, PostgreSQL) and lakehouse (Delta) storage."""
