"""The batch engine: compiles definitions to SQL and runs them on DuckDB."""
