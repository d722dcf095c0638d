"""Out of core: 10M events with a bounded DuckDB memory limit stay within a few GB of RSS."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

N_EVENTS, N_LABELS, N_CARDS = 10_000_000, 1_000_000, 200_000


@pytest.mark.slow
def test_ten_million_events_fit_in_a_few_gigabytes(tmp_path: Path) -> None:
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    start = "TIMESTAMPTZ '2026-01-01 00:00:00+00'"
    con.execute(f"""COPY (SELECT 'c' || CAST(hash(i) % {N_CARDS} AS VARCHAR) AS card_id,
                           {start} + to_microseconds(CAST(hash(i * 7) % (90 * 86400000000) AS BIGINT)) AS ts,
                           CAST(hash(i * 13) % 100000 AS DOUBLE) / 100 AS amount
                    FROM range({N_EVENTS}) t(i)) TO '{tmp_path}/events.parquet' (FORMAT parquet)""")
    con.execute(f"""COPY (SELECT 'c' || CAST(hash(i + 99) % {N_CARDS} AS VARCHAR) AS card_id,
                           {start} + to_microseconds(CAST(hash(i * 3 + 1) % (90 * 86400000000) AS BIGINT)) AS ts
                    FROM range({N_LABELS}) t(i)) TO '{tmp_path}/labels.parquet' (FORMAT parquet)""")
    script = textwrap.dedent(f"""
        import json, resource
        import evenflow as ef
        from evenflow.batch.retrieval import features_at
        ev = ef.source.parquet("{tmp_path}/events.parquet", name="events", key="card_id", event_time="ts")
        rows = ef.source.parquet("{tmp_path}/labels.parquet", name="labels", key="card_id", event_time="ts")
        feats = [f(c, window=w) if c else f(window=w) for w in ("1h", "7d")
                 for f, c in ((ef.count, None), (ef.sum, "amount"), (ef.mean, "amount"), (ef.std, "amount"))]
        out = features_at(rows, [ef.FeatureSet("card", source=ev, features=feats)],
                          memory_limit="1GB", threads=2)
        print(json.dumps({{"rows": out.num_rows, "columns": out.num_columns,
                          "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["rows"] == N_LABELS
    assert result["columns"] == 2 + 8
    assert result["peak_mb"] < 3 * 1024, result
