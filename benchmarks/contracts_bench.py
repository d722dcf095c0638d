"""Benchmark: 20 contract rules over 10M rows, evenflow against Pandera (pandas, Polars) and GX.

The same 20 rules (``benchmarks/contracts/rules.py``) run over the same generated Parquet file in
each tool, each in its own child process and virtualenv, one after another:

- evenflow: contracts on a Parquet source, ``BatchEngine.load_source`` (main venv);
- Pandera with the pandas backend and with the Polars backend (``benchmarks/.venvs/pandera``);
- Great Expectations with pandas (``benchmarks/.venvs/gx``).

Before any ratio is reported, every tool must agree on which rules fail, and that set must be
the planted one (``rules.EXPECTED_FAILURES``). Times are reported as ratios to evenflow.

    .venv/bin/python benchmarks/contracts_bench.py            # 10M rows
    .venv/bin/python benchmarks/contracts_bench.py --quick    # 1M rows
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "contracts"))

from rules import (  # noqa: E402
    CHANNELS,
    COUNTRIES,
    CURRENCIES,
    EXPECTED_FAILURES,
    START,
    STATUSES,
    STEP_US,
    rules,
)

DATA = HERE / "data"
VENVS = HERE / ".venvs"
IMPLS = {
    "evenflow": (Path(sys.executable), "run_evenflow.py"),
    "pandera_pandas": (VENVS / "pandera" / "bin" / "python", "run_pandera_pandas.py"),
    "pandera_polars": (VENVS / "pandera" / "bin" / "python", "run_pandera_polars.py"),
    "gx": (VENVS / "gx" / "bin" / "python", "run_gx.py"),
}


def _pick(values: list[str], salt: int) -> str:
    array = "[" + ", ".join(f"'{v}'" for v in values) + "]"
    return f"{array}[1 + CAST(hash(i, {salt}) % {len(values)} AS BIGINT)]"


def generate(rows: int, path: Path) -> None:
    """Write the data once: clean rows with planted violations of six of the 20 rules."""
    import duckdb

    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'; SET enable_progress_bar=false")
    start = START.strftime("%Y-%m-%d %H:%M:%S+00")
    # planted: ~10 repeated ids per 10M, ~100 unknown countries, ~50 bad mcc, 0.67% null channel
    # (bound 0.1%), ~10 sequence dips, ~20 negative amounts outside ATMs
    con.execute(f"""
    COPY (
      WITH base AS (
        SELECT i,
               CASE WHEN i % 150 = 1 THEN NULL
                    WHEN i % 500009 = 13 THEN 'pos' ELSE {_pick(CHANNELS, 3)} END AS channel
        FROM range({rows}) t(i))
      SELECT
        't' || CASE WHEN i % 1000003 = 500000 THEN i - 1 ELSE i END AS transaction_id,
        'c' || CAST(hash(i, 1) % 200000 AS BIGINT) AS card_id,
        CASE WHEN i % 1000000 = 999999 THEN i - 10 ELSE i END AS seq_no,
        TIMESTAMPTZ '{start}' + to_microseconds(i * {STEP_US}) AS ts,
        CASE WHEN i % 500009 = 13 THEN -5.0
             WHEN hash(i, 2) % 50 = 0 THEN NULL
             WHEN channel = 'atm' AND hash(i, 7) % 10 = 0 THEN -round(CAST(hash(i, 8) % 50000 AS DOUBLE) / 100 + 1, 2)
             ELSE round(CAST(hash(i, 8) % 100000 AS DOUBLE) / 100 + 1, 2) END AS amount,
        channel,
        CASE WHEN i % 200003 = 11 THEN '12a4'
             ELSE lpad(CAST(5000 + hash(i, 4) % 900 AS VARCHAR), 4, '0') END AS mcc,
        CASE WHEN i % 100003 = 7 THEN 'XX' ELSE {_pick(COUNTRIES, 5)} END AS country,
        {_pick(CURRENCIES, 6)} AS currency,
        {_pick(STATUSES, 9)} AS status,
        'm' || CAST(hash(i, 10) % 50000 AS BIGINT) AS merchant_id,
        CAST(hash(i, 11) % 180000000 AS DOUBLE) / 1e6 - 90 AS lat,
        CAST(hash(i, 12) % 360000000 AS DOUBLE) / 1e6 - 180 AS lon
      FROM base ORDER BY i
    ) TO '{path}' (FORMAT parquet, ROW_GROUP_SIZE 1000000)""")
    con.close()


def run(impl: str, data: Path, rows: int, timeout: float) -> dict[str, Any]:
    python, script = IMPLS[impl]
    if not python.exists():
        raise SystemExit(f"{impl}: {python} is missing; run `make bench-contracts` to create the venvs")
    fd, result = tempfile.mkstemp(prefix="contracts-", suffix=".json")
    os.close(fd)
    t0 = time.perf_counter()
    try:
        env = {**os.environ, "GX_ANALYTICS_ENABLED": "false"}  # no network calls from GX
        subprocess.run([str(python), str(HERE / "contracts" / script), "--data", str(data),
                        "--rows", str(rows), "--result-file", result], check=True, timeout=timeout,
                       env=env)
        out: dict[str, Any] = json.loads(Path(result).read_text())
    finally:
        os.unlink(result)
    out["wall_seconds"] = time.perf_counter() - t0
    for key in [k for k in out if k.endswith("_override")]:  # evenflow times its own stages
        out[key.removesuffix("_override")] = out.pop(key)
    return out


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def report(rows: int, results: dict[str, list[dict[str, Any]]]) -> str:
    """A Markdown table: medians over the runs, ratios to evenflow (> 1: evenflow is faster)."""
    keys = ["load_seconds", "validate_seconds", "validate_cpu_seconds", "peak_rss_bytes"]
    med = {impl: {k: _median(runs, k) for k in keys} for impl, runs in results.items()}
    for m in med.values():
        m["total"] = m["load_seconds"] + m["validate_seconds"]
    base = med["evenflow"]
    lines = [f"{rows:,} rows, 20 rules, median of {len(results['evenflow'])} run(s); "
             "ratio = the tool's time / evenflow's time", "",
             "| tool | load (s) | validate (s) | validate, CPU (s) | load + validate (s) | "
             "peak RSS (MB) | validate ratio | validate CPU ratio | load + validate ratio |",
             "|---|---|---|---|---|---|---|---|---|"]
    for impl, m in med.items():
        lines.append(
            f"| {results[impl][0]['version']} | {m['load_seconds']:.2f} | {m['validate_seconds']:.2f} | "
            f"{m['validate_cpu_seconds']:.2f} | {m['total']:.2f} | {m['peak_rss_bytes'] / 2**20:,.0f} | "
            f"{m['validate_seconds'] / base['validate_seconds']:.2f} | "
            f"{m['validate_cpu_seconds'] / base['validate_cpu_seconds']:.2f} | "
            f"{m['total'] / base['total']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--quick", action="store_true", help="1M rows")
    ap.add_argument("--impls", default=",".join(IMPLS))
    ap.add_argument("--repeat", type=int, default=1, help="runs per tool, interleaved")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--out", help="result JSON (default benchmarks/results/contracts_<rows>.json)")
    args = ap.parse_args()
    rows = 1_000_000 if args.quick else args.rows
    data = DATA / f"contracts_{rows}.parquet"
    if not data.exists():
        t0 = time.perf_counter()
        generate(rows, data)
        print(f"generated {data} in {time.perf_counter() - t0:.1f} s", flush=True)
    results: dict[str, list[dict[str, Any]]] = {}
    load_before = os.getloadavg()[0]
    for i in range(args.repeat):  # round robin, so a busy spell on the machine hits every tool
        for impl in args.impls.split(","):
            print(f"run {i + 1}/{args.repeat}: {impl} ...", flush=True)
            r = run(impl, data, rows, args.timeout)
            results.setdefault(impl, []).append(r)
            print(f"  {r['version']}: load {r['load_seconds']:.2f} s, validate {r['validate_seconds']:.2f} s "
                  f"(CPU {r['validate_cpu_seconds']:.2f} s), peak {r['peak_rss_bytes'] / 2**20:,.0f} MB, "
                  f"failing {r['failed']}", flush=True)
    disagree = {impl: run_["failed"] for impl, runs in results.items() for run_ in runs
                if run_["failed"] != sorted(EXPECTED_FAILURES)}
    if disagree:
        raise SystemExit(f"tools disagree with the planted failures {sorted(EXPECTED_FAILURES)}: {disagree}")
    print(f"all tools agree: {len(EXPECTED_FAILURES)} of {len(rules(rows))} rules fail "
          f"({', '.join(sorted(EXPECTED_FAILURES))})\n")
    if "evenflow" in results:
        print(report(rows, results))
    out = Path(args.out or HERE / "results" / f"contracts_{rows // 1_000_000}m.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"\nload average (1 min) before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f} "
          "on 2 cores")
    out.write_text(json.dumps({"rows": rows, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               "load_average": [load_before, os.getloadavg()[0]],
                               "results": results}, indent=2))


if __name__ == "__main__":
    main()
