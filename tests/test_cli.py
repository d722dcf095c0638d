"""The ``evenflow`` command line, run as a real subprocess on a small generated fraud dataset.

``inspect``, ``run`` and ``training-set`` succeed and write what they say; user errors exit with
status 2, name the file or field, say how to fix it, and print no traceback.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import duckdb
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "fraud" / "pipeline.yaml"
N = 3000


def evenflow(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the installed entry point (falls back to ``python -m evenflow.cli``)."""
    exe = Path(sys.executable).parent / "evenflow"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "evenflow.cli"]
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    return subprocess.run([*cmd, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def flat(text: str) -> str:
    """Output with Rich's line wrapping undone."""
    return re.sub(r"\s+", " ", text)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, fraud_generator: ModuleType) -> Path:
    """tmp/data (generated, n=3000) and tmp/pipeline.yaml (the example, unchanged)."""
    root = tmp_path_factory.mktemp("cli")
    counts = fraud_generator.generate(root / "data", n_transactions=N, seed=7)
    assert counts["transactions"] == N
    shutil.copy(EXAMPLE, root / "pipeline.yaml")
    return root


@pytest.fixture(scope="module")
def inspected(project: Path) -> subprocess.CompletedProcess[str]:
    return evenflow("inspect", "pipeline.yaml", cwd=project)


@pytest.fixture(scope="module")
def ran(project: Path) -> subprocess.CompletedProcess[str]:
    return evenflow("run", "pipeline.yaml", cwd=project)


@pytest.fixture(scope="module")
def trained(project: Path, ran: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    return evenflow("training-set", "pipeline.yaml", cwd=project)


def test_inspect(inspected: subprocess.CompletedProcess[str], project: Path) -> None:
    assert inspected.returncode == 0, inspected.stderr
    out = flat(inspected.stdout)
    assert re.search(r"fingerprint [0-9a-f]{16}", out)
    assert "pipeline fraud" in out
    assert "feature set card: SQL plan" in out and "feature set merchant: SQL plan" in out
    assert "-- plan: window" in out
    assert "Traceback" not in inspected.stderr


def test_inspect_fingerprint_is_the_pipelines(inspected: subprocess.CompletedProcess[str], project: Path) -> None:
    from evenflow.core.pipeline import Pipeline

    fingerprint = Pipeline.load(project / "pipeline.yaml").fingerprint()
    assert f"fingerprint {fingerprint}" in flat(inspected.stdout)


def test_run(ran: subprocess.CompletedProcess[str], project: Path) -> None:
    assert ran.returncode == 0, ran.stderr
    out = flat(ran.stdout)
    assert "Nothing lost: input = output + quarantined + duplicates" in out
    assert "Quarantine by reason" in out
    assert re.search(r"card\s.*3,000", out) and re.search(r"merchant\s.*3,000", out)
    assert " NO " not in out
    lake = project / "out" / "lakehouse"
    for name in ("card", "merchant"):
        silver = DeltaTable(str(lake / "silver" / name)).to_pyarrow_table()
        gold = DeltaTable(str(lake / "gold" / name)).to_pyarrow_table()
        assert silver.num_rows == gold.num_rows > 0
    bronze = DeltaTable(str(lake / "bronze" / "transactions")).to_pyarrow_table()
    assert bronze.num_rows == N
    con = duckdb.connect(str(project / "out" / "warehouse.duckdb"), read_only=True)
    try:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        assert {"card", "merchant"} <= tables
        (n,), = con.execute("SELECT count(*) FROM card").fetchall()
        assert n == gold.num_rows
    finally:
        con.close()


def test_training_set(trained: subprocess.CompletedProcess[str], project: Path) -> None:
    assert trained.returncode == 0, trained.stderr
    out = flat(trained.stdout)
    card = json.loads((project / "out" / "fraud_v1" / "card.json").read_text())
    assert f"training set fraud_v1 (fingerprint {card['fingerprint']})" in out
    for word in ("train", "test", "held out: gap", "Nothing lost", "Quarantine by reason", "warehouse:"):
        assert word in out, word
    out_dir = project / "out"
    for path in ("warehouse.duckdb", "fraud_v1/card.json", "fraud_v1/card.md", "fraud_v1/training_set.parquet",
                 "fraud_v1/artifacts.json"):
        assert (out_dir / path).is_file(), path
    for table in ("quarantine", "duplicates", "gold/fraud_v1", "bronze/labels", "bronze/transactions"):
        assert (out_dir / "lakehouse" / table / "_delta_log").is_dir(), table


def test_card_reconciles(trained: subprocess.CompletedProcess[str], project: Path) -> None:
    assert trained.returncode == 0, trained.stderr
    card = json.loads((project / "out" / "fraud_v1" / "card.json").read_text())
    assert [fs["name"] for fs in card["feature_sets"]] == ["card", "merchant"]
    for fs in card["feature_sets"]:
        assert fs["input"] == N
        assert fs["input"] == fs["output"] + fs["quarantined"] + fs["duplicates"]
        assert fs["reconciles"] is True
        assert fs["quarantined"] > 0 and fs["duplicates"] > 0
    assert sum(card["quarantine"].values()) > 0
    assert {"naive_timestamp", "unparseable_timestamp", "out_of_range"} <= set(card["quarantine"])
    assert set(card["rows"]) == {"train", "test"} and min(card["rows"].values()) > 0
    parquet = pq.read_table(project / "out" / "fraud_v1" / "training_set.parquet")
    assert parquet.num_rows == card["rows"]["train"] + card["rows"]["test"]
    assert set(card["features"]) <= set(parquet.column_names)
    md = (project / "out" / "fraud_v1" / "card.md").read_text()
    assert card["fingerprint"] in md and "Nothing lost" in md
    con = duckdb.connect(str(project / "out" / "warehouse.duckdb"), read_only=True)
    try:
        (n,), = con.execute("SELECT count(*) FROM fraud_v1").fetchall()
    finally:
        con.close()
    assert n == parquet.num_rows


def test_quarantine_delta_matches_the_card(trained: subprocess.CompletedProcess[str], project: Path) -> None:
    assert trained.returncode == 0, trained.stderr
    card = json.loads((project / "out" / "fraud_v1" / "card.json").read_text())
    quarantine = DeltaTable(str(project / "out" / "lakehouse" / "quarantine")).to_pyarrow_table()
    this_run = [r for r in quarantine.to_pylist() if r["run_id"] == card["run_id"]]
    assert this_run
    counts: dict[str, int] = {}
    for r in this_run:
        counts[r["reason"]] = counts.get(r["reason"], 0) + 1
        assert r["payload"] and json.loads(r["payload"])["transaction_id"]
        assert r["step"] and r["field"]
    assert counts == card["quarantine"]
    # `run` appended its own quarantine earlier: two runs in the table
    assert len(set(quarantine.column("run_id").to_pylist())) == 2


# -- user errors ----------------------------------------------------------------------------------

def assert_user_error(result: subprocess.CompletedProcess[str], *names: str) -> None:
    err = flat(result.stderr)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert "error:" in err
    assert "fix:" in err
    for name in names:
        assert name in err, f"{name!r} not named in: {err}"


# One command per case keeps the suite fast; every command loads the pipeline the same way.

def test_missing_pipeline_file(tmp_path: Path) -> None:
    assert_user_error(evenflow("training-set", "no_such_pipeline.yaml", cwd=tmp_path), "no_such_pipeline.yaml")


@pytest.mark.parametrize("command", ["run"])
def test_typo_in_aggregation_name(command: str, project: Path, tmp_path: Path) -> None:
    text = (project / "pipeline.yaml").read_text()
    assert "{agg: count, window: 1h}" in text
    (tmp_path / "typo.yaml").write_text(text.replace("{agg: count, window: 1h}", "{agg: cout, window: 1h}", 1))
    shutil.copytree(project / "data", tmp_path / "data")
    result = evenflow(command, "typo.yaml", cwd=tmp_path)
    assert_user_error(result, "typo.yaml", "agg")
    assert re.search(r"feature_sets\.0\.features\.\d+\S*agg", flat(result.stderr))


@pytest.mark.parametrize("command", ["training-set"])
def test_source_path_that_does_not_exist(command: str, project: Path, tmp_path: Path) -> None:
    text = (project / "pipeline.yaml").read_text()
    (tmp_path / "moved.yaml").write_text(text.replace("data/transactions.csv", "data/nowhere.csv"))
    shutil.copytree(project / "data", tmp_path / "data")
    assert_user_error(evenflow(command, "moved.yaml", cwd=tmp_path), "data/nowhere.csv")


def test_yaml_that_is_not_a_pipeline(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    assert_user_error(evenflow("inspect", "bad.yaml", cwd=tmp_path), "bad.yaml")


@pytest.mark.postgres
def test_training_set_to_postgres_warehouse(project: Path, tmp_path: Path, pg_dsn: str, pg_schema: str) -> None:
    import psycopg

    text = (project / "pipeline.yaml").read_text()
    assert "name: fraud_v1" in text
    (tmp_path / "pg.yaml").write_text(text.replace("name: fraud_v1", f"name: {pg_schema}.fraud_v1"))
    shutil.copytree(project / "data", tmp_path / "data")
    result = evenflow("training-set", "pg.yaml", "--warehouse", pg_dsn, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"#{pg_schema}.fraud_v1" in flat(result.stdout)
    parquet = pq.read_table(tmp_path / "out" / f"{pg_schema}.fraud_v1" / "training_set.parquet")
    with psycopg.connect(pg_dsn) as conn:
        (n,) = conn.execute(f'SELECT count(*) FROM "{pg_schema}"."fraud_v1"').fetchone()
        splits = dict(conn.execute(f'SELECT split, count(*) FROM "{pg_schema}"."fraud_v1" GROUP BY 1').fetchall())
    assert n == parquet.num_rows > 0
    card = json.loads((tmp_path / "out" / f"{pg_schema}.fraud_v1" / "card.json").read_text())
    assert splits == card["rows"]


def test_error_text_with_brackets_prints_verbatim(capsys) -> None:
    import typer

    from evenflow.cli import _fail
    from evenflow.errors import EvenflowError

    with pytest.raises(typer.Exit):
        _fail(EvenflowError("check [x] failed", fix="accept: [duplicate_rows_across_splits]"))
    err = capsys.readouterr().err
    assert "check [x] failed" in err and "accept: [duplicate_rows_across_splits]" in err
