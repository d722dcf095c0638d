"""Contracts: every kind finds exactly its planted violations and nothing on clean data.

Each test generates a clean dataset (seeded), plants violations of one kind in known rows, runs
the real batch engine (DuckDB) and compares what the contract found with what was planted: all
planted rows must be found (100% recall) and no other row (no false positive). Dataset-level
contracts must report the planted value and stop the run at ``error``, not at ``warn``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow as pa
import pytest

import evenflow as ef
from evenflow.batch.engine import BatchEngine, LoadedSource
from evenflow.batch.training import build
from evenflow.core.contracts import ContractError
from evenflow.core.pipeline import Pipeline
from evenflow.core.schema import REASONS
from evenflow.errors import DefinitionError

ROOT = Path(__file__).resolve().parents[1]
T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
N = 4000
CARDS = 40
SEEDS = [1, 2, 3]


def clean_data(n: int = N) -> dict[str, list[Any]]:
    """A dataset that meets every contract used below."""
    rng = random.Random(0)
    channels = ["pos", "ecom", "atm"]
    chan = [channels[i % 3] for i in range(n)]
    amount = [round(rng.uniform(1, 500), 2) for _ in range(n)]
    for i in range(0, n, 7):  # refunds happen, at ATMs only: the rule's "or" branch is exercised
        if chan[i] == "atm":
            amount[i] = -amount[i]
    per_card: dict[str, int] = {}
    card_seq = []
    for i in range(n):
        c = f"c{i % CARDS}"
        per_card[c] = per_card.get(c, 0) + 1
        card_seq.append(per_card[c])
    return {
        "transaction_id": [f"t{i}" for i in range(n)],
        "card_id": [f"c{i % CARDS}" for i in range(n)],
        "ts": [T0 + dt.timedelta(minutes=i) for i in range(n)],
        "seq_no": list(range(n)),
        "card_seq": card_seq,
        "countdown": [n - i for i in range(n)],
        "amount": amount,
        "channel": chan,
        "mcc": [f"{5000 + i % 900:04d}" for i in range(n)],
        "note": [None if i % 50 == 0 else "x" for i in range(n)],  # 2% nulls
    }


def load(data: dict[str, list[Any]], contracts: list[Any]) -> tuple[BatchEngine, LoadedSource]:
    src = ef.source.frame(pa.table(data), name="tx", key="card_id", event_time="ts",
                          contracts=contracts)
    fs = ef.FeatureSet("card", source=src, features=[ef.count(window="1h")])
    engine = BatchEngine(ef.Pipeline(name="p", feature_sets=[fs]), memory_limit="500MB")
    return engine, engine.load_source("tx")


def quarantined(engine: BatchEngine, step: str) -> set[int]:
    rows = engine.con.sql("SELECT record FROM __quarantine WHERE reason = 'contract' AND step = ?",
                          params=[step]).fetchall()
    return {r[0] for r in rows}


def planted_rows(seed: int, k: int = 25, low: int = 1) -> list[int]:
    return sorted(random.Random(seed).sample(range(low, N), k))


# -- row-level kinds: (contract, planting function -> planted rows) ------------------------------

def plant_unique(data: dict[str, list[Any]], seed: int) -> set[int]:
    rows = planted_rows(seed, low=N // 2)
    for j in rows:  # copy the id of an earlier, untouched row: the later occurrence is the violation
        data["transaction_id"][j] = f"t{j - N // 2}"
    return set(rows)


def plant_compound(data: dict[str, list[Any]], seed: int) -> set[int]:
    rows = planted_rows(seed, low=N // 2)
    for j in rows:
        i = j - N // 2
        data["card_id"][j], data["ts"][j] = data["card_id"][i], data["ts"][i]
    return set(rows)


def plant_allowed(data: dict[str, list[Any]], seed: int) -> set[int]:
    rows = planted_rows(seed)
    for j in rows:
        data["channel"][j] = random.Random(j).choice(["crypto", "POS", "pos ", ""])
    return set(rows)


def plant_regex(data: dict[str, list[Any]], seed: int) -> set[int]:
    rows = planted_rows(seed)
    for j in rows:
        data["mcc"][j] = random.Random(j).choice(["12a4", "123", "12345", " 1234", "abcd"])
    return set(rows)


def plant_monotonic(data: dict[str, list[Any]], seed: int) -> set[int]:
    rows = planted_rows(seed)
    for j in rows:  # below every earlier value, and decreasing among consecutive planted rows
        data["seq_no"][j] = -j
    return set(rows)


def plant_monotonic_equal(data: dict[str, list[Any]], seed: int) -> set[int]:
    rows = [j for j in planted_rows(seed) if j - 1 not in planted_rows(seed)]
    for j in rows:  # a repeat: only a strict contract rejects it
        data["seq_no"][j] = data["seq_no"][j - 1]
    return set(rows)


def plant_monotonic_by(data: dict[str, list[Any]], seed: int) -> set[int]:
    rows = planted_rows(seed, low=CARDS)  # not a card's first row: there is a previous value
    for j in rows:
        data["card_seq"][j] = 0
    # a card's next unplanted row is above 0 again; 0 after a planted 0 fails strict, as it should
    return set(rows)


def plant_decreasing(data: dict[str, list[Any]], seed: int) -> set[int]:
    rows = planted_rows(seed)
    for j in rows:
        data["countdown"][j] = N + j
    return set(rows)


def plant_rule(data: dict[str, list[Any]], seed: int) -> set[int]:
    rows = [j for j in planted_rows(seed) if data["channel"][j] != "atm"]
    for j in rows:
        data["amount"][j] = -1.5
    return set(rows)


def plant_sql_rule(data: dict[str, list[Any]], seed: int) -> set[int]:
    rows = planted_rows(seed)
    for j in rows:
        data["mcc"][j] = "9" + data["mcc"][j][1:]  # mcc must start with 5
    return set(rows)


ROW_KINDS = {
    "unique": (ef.unique("transaction_id"), plant_unique),
    "compound_unique": (ef.unique("card_id", "ts"), plant_compound),
    "allowed": (ef.allowed("channel", ["pos", "ecom", "atm"]), plant_allowed),
    "regex": (ef.matches("mcc", r"[0-9]{4}"), plant_regex),
    "monotonic": (ef.monotonic("seq_no"), plant_monotonic),
    "monotonic_strict": (ef.monotonic("seq_no", strict=True), plant_monotonic_equal),
    "monotonic_by_entity": (ef.monotonic("card_seq", strict=True, by="card_id"), plant_monotonic_by),
    "decreasing": (ef.monotonic("countdown", "decreasing"), plant_decreasing),
    "rule": (ef.rule("refund_at_atm", "amount >= 0 or channel == 'atm'"), plant_rule),
    "sql_rule": (ef.rule("mcc_retail", sql="starts_with(mcc, '5')"), plant_sql_rule),
}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", list(ROW_KINDS))
def test_row_contract_finds_exactly_the_planted_rows(kind: str, seed: int) -> None:
    contract, plant = ROW_KINDS[kind]
    data = clean_data()
    planted = plant(data, seed)
    assert planted
    engine, loaded = load(data, [contract])
    (result,) = loaded.contracts
    assert quarantined(engine, f"contract:{contract.name}") == planted
    assert result.failing_rows == len(planted) and not result.passed
    assert [e["record"] for e in result.evidence] == sorted(planted)[:20]
    assert loaded.quarantined == len(planted)
    assert loaded.rows_in == N
    kept = {r[0] for r in engine.con.sql(f'SELECT __seq FROM "{loaded.table}"').fetchall()}
    assert kept == set(range(N)) - planted


@pytest.mark.parametrize("kind", list(ROW_KINDS))
def test_row_contract_finds_nothing_on_clean_data(kind: str) -> None:
    contract, _ = ROW_KINDS[kind]
    engine, loaded = load(clean_data(), [contract])
    (result,) = loaded.contracts
    assert result.passed and result.failing_rows == 0 and result.evidence == []
    assert engine.quarantine().num_rows == 0


def test_all_row_contracts_at_once_find_the_union() -> None:
    """Several contracts in one pass: each finds its own rows, each row is quarantined once."""
    data = clean_data()
    planted = {"allowed": plant_allowed(data, 11), "regex": plant_regex(data, 12),
               "monotonic": plant_monotonic(data, 13)}
    contracts = [ROW_KINDS[k][0] for k in planted]
    engine, loaded = load(data, contracts)
    for c, rows in zip(contracts, planted.values(), strict=True):
        assert {e["record"] for e in next(r for r in loaded.contracts if r.name == c.name).evidence} \
            <= rows
        assert next(r for r in loaded.contracts if r.name == c.name).failing_rows == len(rows)
    union = set().union(*planted.values())
    records = [r[0] for r in engine.con.sql("SELECT record FROM __quarantine").fetchall()]
    assert sorted(records) == sorted(union)  # once each, even when a row breaks two contracts
    both = planted["allowed"] & planted["regex"]
    for record, step, detail in engine.con.sql("SELECT record, step, detail FROM __quarantine").fetchall():
        if record in both:
            assert step == "contract:allowed_channel" and "breaks: allowed_channel, matches_mcc" in detail


def test_quarantine_rows_name_the_rule_and_keep_the_payload() -> None:
    data = clean_data()
    data["channel"][5] = "crypto"
    engine, _ = load(data, [ef.allowed("channel", ["pos", "ecom", "atm"])])
    (row,) = engine.quarantine().to_pylist()
    assert row["reason"] == "contract" and "contract" in REASONS
    assert row["step"] == "contract:allowed_channel" and row["field"] == "channel"
    assert row["detail"].startswith("allowed_channel: channel=crypto is not one of")
    assert json.loads(row["payload"])["transaction_id"] == "t5"


def test_warn_reports_and_keeps_the_rows() -> None:
    data = clean_data()
    planted = plant_allowed(data, 5)
    engine, loaded = load(data, [ef.allowed("channel", ["pos", "ecom", "atm"], severity="warn")])
    (result,) = loaded.contracts
    assert not result.passed and result.failing_rows == len(planted)
    assert engine.quarantine().num_rows == 0 and loaded.quarantined == 0


def test_a_null_result_passes() -> None:
    """A rule over a null operand, and allowed / matches on a null value, pass (SQL CHECK)."""
    data = clean_data()
    for j in range(0, N, 10):
        data["amount"][j] = None
        data["channel"][j] = None if j % 20 else "crypto"  # every 20th row: a real failure
        data["mcc"][j] = None
    data["amount"][3] = -4.0 if data["channel"][3] != "atm" else data["amount"][3]
    failing_rule = {j for j in range(N) if data["amount"][j] is not None and data["amount"][j] < 0
                    and data["channel"][j] not in ("atm", None)}
    contracts = [ef.rule("refund_at_atm", "amount >= 0 or channel == 'atm'"),
                 ef.rule("small", sql="amount < 400 OR amount IS NULL AND channel = 'pos'"),
                 ef.allowed("channel", ["pos", "ecom", "atm"]), ef.matches("mcc", "[0-9]{4}")]
    engine, loaded = load(data, contracts)
    by_name = {r.name: r for r in loaded.contracts}
    assert quarantined(engine, "contract:refund_at_atm") == failing_rule and failing_rule
    small = {j for j in range(N) if data["amount"][j] is not None and data["amount"][j] >= 400}
    assert {e["record"] for e in by_name["small"].evidence} <= small
    assert by_name["small"].failing_rows == len(small)
    assert by_name["allowed_channel"].failing_rows == len(range(0, N, 20))
    assert by_name["matches_mcc"].passed


def test_accounting_reconciles_with_contract_quarantine() -> None:
    data = clean_data()
    planted = plant_regex(data, 3)
    src = ef.source.frame(pa.table(data), name="tx", key="card_id", event_time="ts",
                          contracts=[ef.matches("mcc", r"[0-9]{4}")],
                          schema=ef.Schema(transaction_id=ef.String(unique=True), card_id=ef.String(),
                                           ts=ef.Timestamp(), seq_no=ef.Int(), card_seq=ef.Int(),
                                           countdown=ef.Int(), amount=ef.Float(ge=0),
                                           channel=ef.String(), mcc=ef.String(), note=ef.String()))
    fs = ef.FeatureSet("card", source=src, steps=[ef.Dedup("transaction_id")],
                       features=[ef.count(window="1h")])
    engine = BatchEngine(ef.Pipeline(name="p", feature_sets=[fs]), memory_limit="500MB")
    ev = engine.prepare(fs)
    acc = ev.accounting()
    negative = sum(1 for a in data["amount"] if a < 0)  # schema out_of_range, before contracts
    assert acc["reconciles"] and acc["input"] == N
    counts = engine.quarantine_counts()
    assert counts["out_of_range"] == negative
    assert counts["contract"] == len(planted - {i for i, a in enumerate(data["amount"]) if a < 0})
    assert acc["quarantined"] == negative + counts["contract"]


# -- row contracts with max_failures -------------------------------------------------------------

def test_max_failures_tolerates_then_stops() -> None:
    data = clean_data()
    planted = plant_allowed(data, 9)
    _, loaded = load(data, [ef.allowed("channel", ["pos", "ecom", "atm"], max_failures=len(planted))])
    assert loaded.contracts[0].passed and loaded.quarantined == len(planted)
    with pytest.raises(ContractError) as err:
        load(data, [ef.allowed("channel", ["pos", "ecom", "atm"], max_failures=len(planted) - 1)])
    assert f"allowed_channel failed: observed {len(planted)}, bound <= {len(planted) - 1}" in str(err.value)


# -- dataset-level kinds -------------------------------------------------------------------------

def test_null_fraction_reports_the_planted_fraction() -> None:
    data = clean_data()
    rows = planted_rows(4, k=400)
    for j in rows:
        data["amount"][j] = None
    contract = ef.null_fraction("amount", le=0.05)
    with pytest.raises(ContractError) as err:
        load(data, [contract])
    (result,) = err.value.results
    assert result.observed == pytest.approx(400 / N) and not result.passed
    assert [e["record"] for e in result.evidence] == rows[:20]
    message = str(err.value)
    assert "null_fraction_amount" in message and "observed 0.1" in message and "<= 0.05" in message
    assert "fix:" in message
    # the same data within a looser bound passes; the clean data is within the strict one
    _, loaded = load(data, [ef.null_fraction("amount", le=0.15, ge=0.05)])
    assert loaded.contracts[0].passed
    _, loaded = load(clean_data(), [ef.null_fraction("note", le=0.05), contract])
    assert [r.passed for r in loaded.contracts] == [True, True]
    assert loaded.contracts[0].observed == pytest.approx(0.02)


def test_row_count_bounds() -> None:
    with pytest.raises(ContractError, match=rf"row_count failed: observed {N}, bound >= {N + 1}"):
        load(clean_data(), [ef.row_count(ge=N + 1)])
    with pytest.raises(ContractError, match=rf"observed {N}, bound <= {N - 1}"):
        load(clean_data(), [ef.row_count(le=N - 1)])
    _, loaded = load(clean_data(), [ef.row_count(ge=N, le=N)])
    assert loaded.contracts[0].passed and loaded.contracts[0].observed == N


def test_dataset_contracts_measure_the_rows_that_go_on() -> None:
    """Rows quarantined by an error row contract no longer count for the dataset contracts."""
    data = clean_data()
    planted = plant_allowed(data, 8)
    _, loaded = load(data, [ef.allowed("channel", ["pos", "ecom", "atm"]),
                            ef.row_count(ge=N - len(planted), le=N - len(planted))])
    assert loaded.contracts[1].passed


def test_freshness() -> None:
    latest = T0 + dt.timedelta(minutes=N - 1)
    ref = (latest + dt.timedelta(days=1)).isoformat()
    _, loaded = load(clean_data(), [ef.freshness("ts", within="2d", reference=ref)])
    assert loaded.contracts[0].passed and loaded.contracts[0].observed == latest.isoformat()
    with pytest.raises(ContractError) as err:
        load(clean_data(), [ef.freshness("ts", within="12h", reference=ref)])
    (result,) = err.value.results
    assert result.observed == latest.isoformat() and result.evidence == [
        {"record": N - 1, "ts": latest.isoformat()}]
    assert "freshness_ts failed" in str(err.value) and "12h before" in str(err.value)
    # no reference: the time of the run (data from 2026-03 is old by then, or will be)
    stale = {**clean_data(), "ts": [dt.datetime(2020, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=i)
                                    for i in range(N)]}
    with pytest.raises(ContractError, match="freshness_ts"):
        load(stale, [ef.freshness("ts", within="30d")])


def test_warn_dataset_contract_does_not_stop() -> None:
    _, loaded = load(clean_data(), [ef.row_count(ge=N + 1, severity="warn"),
                                    ef.null_fraction("note", le=0.01, severity="warn")])
    assert [r.passed for r in loaded.contracts] == [False, False]
    assert loaded.contracts[1].observed == pytest.approx(0.02)


# -- definitions -----------------------------------------------------------------------------------

def test_names_and_definition_errors() -> None:
    assert ef.unique("card_id", "ts").name == "unique_card_id_ts"
    assert ef.monotonic("seq", by="card").name == "monotonic_seq_by_card"
    assert ef.row_count(ge=1).name == "row_count"
    assert ef.allowed("x", [1], name="my_rule").name == "my_rule"
    with pytest.raises(DefinitionError, match="two contracts named 'allowed_x'"):
        ef.source.frame(pa.table({"x": [1]}), name="s", contracts=[ef.allowed("x", [1]), ef.allowed("x", [2])])
    with pytest.raises(DefinitionError, match="not a regular expression"):
        ef.matches("x", "[0-9")
    with pytest.raises(DefinitionError, match="cannot parse expression"):
        ef.rule("r", "amount >= ")
    with pytest.raises(DefinitionError, match=r"compare with ==.*or pass DuckDB SQL as sql="):
        ef.rule("refund_ok", "amount >= 0 or channel = 'atm'")
    with pytest.raises(DefinitionError, match="needs a bound"):
        ef.row_count()
    with pytest.raises(DefinitionError, match="max_failures applies to row-level"):
        ef.null_fraction("x", le=0.1).model_validate({"kind": "null_fraction", "column": "x", "le": 0.1,
                                                      "max_failures": 3})
    with pytest.raises(DefinitionError, match="which the schema does not declare"):
        ef.source.csv("x.csv", schema=ef.Schema(a=ef.String()), contracts=[ef.rule("r", "b > 1")])


def test_a_contract_that_cannot_run_names_itself() -> None:
    with pytest.raises(DefinitionError, match="contract 'bad_sql' cannot be evaluated"):
        load(clean_data(), [ef.rule("bad_sql", sql="no_such_column > 1")])
    with pytest.raises(DefinitionError, match="contract 'freshness_amount' cannot be evaluated"):
        load(clean_data(), [ef.freshness("amount", within="1d")])


ALL = [ef.unique("transaction_id"), ef.unique("card_id", "ts", severity="warn"),
       ef.allowed("channel", ["pos", "ecom", "atm"]), ef.matches("mcc", r"[0-9]{4}"),
       ef.null_fraction("amount", le=0.05), ef.row_count(ge=1000),
       ef.monotonic("seq_no", strict=True, by=["card_id"], max_failures=10),
       ef.rule("refund_ok", "amount >= 0 or channel == 'atm'"),
       ef.rule("mcc_retail", sql="starts_with(mcc, '5')", severity="warn"),
       ef.freshness("ts", within="2d", reference="2026-03-05T00:00:00Z")]


def _pipeline(contracts: list[Any]) -> Pipeline:
    schema = ef.Schema(transaction_id=ef.String(), card_id=ef.String(), ts=ef.Timestamp(),
                       seq_no=ef.Int(), amount=ef.Float(), channel=ef.String(), mcc=ef.String())
    src = ef.source.parquet("tx.parquet", name="tx", schema=schema, key="card_id", event_time="ts",
                            contracts=contracts)
    return ef.Pipeline(name="p", feature_sets=[ef.FeatureSet("card", source=src,
                                                             features=[ef.count(window="1h")])])


def test_yaml_round_trip_and_fingerprint() -> None:
    p = _pipeline(ALL)
    text = p.to_yaml()
    assert "kind: monotonic" in text and "refund_ok" in text and "max_failures: 10" in text
    back = Pipeline.from_yaml(text)
    assert back.sources["tx"].contracts == p.sources["tx"].contracts
    assert back.fingerprint() == p.fingerprint()
    # a contract is part of the definition: changing a bound or a severity changes the fingerprint
    changed = [*ALL[:4], ef.null_fraction("amount", le=0.06), *ALL[5:]]
    assert _pipeline(changed).fingerprint() != p.fingerprint()
    warn = [*ALL[:2], ef.allowed("channel", ["pos", "ecom", "atm"], severity="warn"), *ALL[3:]]
    assert _pipeline(warn).fingerprint() != p.fingerprint()
    # no contracts: the definition (and fingerprint) of a source is what it was before contracts
    assert "contracts" not in _pipeline([]).sources["tx"].dump()


def test_yaml_spelling() -> None:
    text = """
name: p
sources:
  tx:
    format: parquet
    path: tx.parquet
    key: card_id
    event_time: ts
    contracts:
      - {kind: unique, columns: [card_id, ts]}
      - {kind: allowed, column: channel, values: [pos, ecom], severity: warn}
      - {kind: rule, name: refund_ok, expr: "amount >= 0 or channel == 'atm'"}
      - {kind: freshness, column: ts, within: 2d}
feature_sets:
  - {name: card, source: tx, features: [{agg: count, window: 1h}]}
"""
    p = Pipeline.from_yaml(text)
    names = [c.name for c in p.sources["tx"].contracts]
    assert names == ["unique_card_id_ts", "allowed_channel", "refund_ok", "freshness_ts"]
    with pytest.raises(DefinitionError, match="contracts"):
        Pipeline.from_yaml(text.replace("kind: unique", "kind: uniq"))


# -- the fraud example -----------------------------------------------------------------------------

FRAUD_CONTRACTS = """    contracts:
      - {kind: allowed, column: channel, values: [pos, ecom, atm]}
      - {kind: matches, column: mcc, pattern: "[0-9]{4}"}
      - {kind: null_fraction, column: amount, le: 0.05}
      - {kind: row_count, ge: 1000}
      - {kind: unique, columns: [card_id, ts], severity: warn}
      - {kind: rule, name: refund_at_atm, expr: "amount >= 0 or channel == 'atm'", severity: warn}
      - {kind: freshness, column: ts, within: 400d, reference: "2026-06-01"}
"""


def _fraud_yaml(tmp: Path, contracts: str) -> Path:
    text = (ROOT / "examples" / "fraud" / "pipeline.yaml").read_text()
    anchor = "    key: card_id\n    event_time: ts\n    schema:\n      transaction_id: {type: string, nullable: false, unique: true"
    assert anchor in text
    out = tmp / "pipeline.yaml"
    out.write_text(text.replace(anchor, contracts + anchor, 1))
    return out


@pytest.fixture(scope="module")
def fraud_dir(tmp_path_factory: pytest.TempPathFactory, fraud_generator: ModuleType) -> Path:
    root = tmp_path_factory.mktemp("fraud_contracts")
    fraud_generator.generate(root / "data", n_transactions=3000, seed=7)
    return root


def test_fraud_example_builds_with_contracts(fraud_dir: Path) -> None:
    base = Pipeline.load(_fraud_yaml(fraud_dir, ""))
    ts_plain = build(base)
    ts = build(Pipeline.load(_fraud_yaml(fraud_dir, FRAUD_CONTRACTS)))
    results = ts.card["contracts"]["transactions"]
    assert [r["name"] for r in results] == ["allowed_channel", "matches_mcc", "null_fraction_amount",
                                            "row_count", "unique_card_id_ts", "refund_at_atm", "freshness_ts"]
    assert all(r["passed"] for r in results if r["severity"] == "error")
    for fs in ts.card["feature_sets"]:
        assert fs["reconciles"]
    # the example's data meets the error contracts: the training set is the same rows
    assert ts.table.num_rows == ts_plain.table.num_rows
    assert ts.fingerprint != ts_plain.fingerprint
    assert "contracts" not in ts_plain.card or ts_plain.card["contracts"] == {}


def test_cli_stops_on_an_error_contract(fraud_dir: Path) -> None:
    bad = FRAUD_CONTRACTS.replace("{kind: row_count, ge: 1000}", "{kind: row_count, ge: 1000000}")
    path = _fraud_yaml(fraud_dir, bad)
    exe = Path(sys.executable).parent / "evenflow"
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    result = subprocess.run([str(exe), "training-set", str(path)], cwd=fraud_dir, env=env,
                            capture_output=True, text=True, timeout=300)
    out = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 2, out
    assert "contract row_count failed: observed" in out and "bound >= 1000000" in out
    assert "Traceback" not in out


# -- the monotonic pass: streamed in stored order, or sorted --------------------------------------

def _expected_dips(values: list[int | None], strict: bool) -> set[int]:
    """Rows (by __seq) below (or, strict, not above) the previous non-null value, by hand."""
    bad, prev = set(), None
    for seq, v in enumerate(values):
        if v is None:
            continue
        if prev is not None and (v <= prev if strict else v < prev):
            bad.add(seq)
        prev = v
    return bad


@pytest.mark.parametrize("shuffled", [False, True])
def test_monotonic_in_input_order_whatever_the_stored_order(duck: Any, shuffled: bool) -> None:
    """Stored out of __seq order, the streamed pass notices and sorts: same rows either way."""
    from evenflow.verify.contracts import find_failures

    rng = random.Random(5)
    values: list[int | None] = [i if rng.random() > 0.03 else rng.choice([None, i - 5, i - 1])
                                for i in range(3000)]
    rows = list(enumerate(values))
    if shuffled:
        rng.shuffle(rows)
    stored = pa.table({"__seq": [r[0] for r in rows], "x": [r[1] for r in rows]})  # noqa: F841
    duck.execute("CREATE TABLE v AS SELECT * FROM stored")
    for strict in (False, True):
        found = find_failures(duck, "v", [ef.monotonic("x", strict=strict)])
        got = {r[0] for r in duck.sql(f"SELECT __seq FROM {found} WHERE __f0").fetchall()}
        assert got == _expected_dips(values, strict)
        assert got


def test_monotonic_order_by_another_column() -> None:
    """order_by= sorts by that column (ties by input order) before comparing."""
    data = clean_data()
    n = len(data["ts"])
    data["ts"] = list(reversed(data["ts"]))  # time runs backwards through the file...
    data["countdown"] = list(range(n))  # ...so countdown, increasing in the file, decreases in time
    data["countdown"][n - 10] = -1  # a dip; in time order the next row (record n - 11) rises
    _, loaded = load(data, [ef.monotonic("countdown", "decreasing", order_by="ts")])
    (result,) = loaded.contracts
    assert [e["record"] for e in result.evidence] == [n - 11]


# -- the uniqueness pass: hashes sorted, then only the rows of a repeated hash compared -----------

def _expected_repeats(keys: list[Any]) -> dict[int, int]:
    """Rows (by __seq) whose key an earlier row had -> that earlier row, by hand (nulls skipped)."""
    first: dict[Any, int] = {}
    repeats = {}
    for seq, k in enumerate(keys):
        if k is None or (isinstance(k, tuple) and None in k):
            continue
        if k in first:
            repeats[seq] = first[k]
        else:
            first[k] = seq
    return repeats


def _unique_found(duck: Any, columns: list[str]) -> dict[int, int]:
    from evenflow.verify.contracts import find_failures

    found = find_failures(duck, "v", [ef.unique(*columns)])
    return {r[0]: int(r[1]) for r in duck.sql(f"SELECT __seq, __w0 FROM {found} WHERE __f0").fetchall()}


@pytest.mark.parametrize("repeat_share", [0.002, 0.5])
def test_unique_finds_every_repeat_and_its_first_row(duck: Any, repeat_share: float) -> None:
    """A few repeats (only their rows are compared) or most rows (one aggregate over all)."""
    rng = random.Random(9)
    ids: list[str | None] = []
    for i in range(5000):
        r = rng.random()
        ids.append(None if r < 0.01 else rng.choice(ids[:i] or ["x"]) if r < 0.01 + repeat_share
                   else f"id{i}")
    stored = pa.table({"__seq": list(range(len(ids))), "k": ids})  # noqa: F841
    duck.execute("CREATE TABLE v AS SELECT * FROM stored")
    expected = _expected_repeats(ids)
    assert expected and len(expected) < len(ids)
    assert _unique_found(duck, ["k"]) == expected


def test_unique_compares_like_group_by(duck: Any) -> None:
    """-0.0 repeats 0.0 and NaN repeats NaN, as in SQL's GROUP BY; a null in the key never repeats."""
    stored = pa.table({"__seq": list(range(7)),  # noqa: F841
                       "x": [0.0, -0.0, float("nan"), float("nan"), 1.0, None, None],
                       "y": ["a", "a", "b", "b", "a", "a", "a"]})
    duck.execute("CREATE TABLE v AS SELECT * FROM stored")
    assert _unique_found(duck, ["x"]) == {1: 0, 3: 2}
    assert _unique_found(duck, ["x", "y"]) == {1: 0, 3: 2}


def test_unique_in_parts_and_with_colliding_hashes(duck: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hashes sorted a part at a time, or extra candidates (as a hash collision would add): the
    same rows, since candidates are then compared by their keys."""
    import evenflow.verify.contracts as V

    rng = random.Random(4)
    keys = [(f"c{rng.randrange(300)}", rng.randrange(40)) for _ in range(3000)]
    stored = pa.table({"__seq": list(range(3000)), "a": [k[0] for k in keys],  # noqa: F841
                       "b": [k[1] for k in keys]})
    duck.execute("CREATE TABLE v AS SELECT * FROM stored")
    expected = _expected_repeats(keys)
    assert 0 < len(expected) < 3000 // 8  # the path that compares only the candidates' rows
    assert _unique_found(duck, ["a", "b"]) == expected
    monkeypatch.setattr(V, "HASHES_PER_PASS", 500)
    assert _unique_found(duck, ["a", "b"]) == expected
    found = V._repeated_hashes

    def colliding(*args: Any) -> Any:
        candidates, hit = found(*args)
        every = duck.sql("SELECT DISTINCT hash(a, b) FROM v").fetchnumpy()["hash(a, b)"]
        extra = every[:200]
        return V.np.union1d(candidates, extra), hit + len(extra)
    monkeypatch.setattr(V, "_repeated_hashes", colliding)
    assert _unique_found(duck, ["a", "b"]) == expected


# -- allowed / matches decided on a column's distinct values, or row by row -----------------------

def _value_rule_rows(values: list[Any], ok: Any) -> set[int]:
    return {seq for seq, v in enumerate(values) if v is not None and not ok(v)}


@pytest.mark.parametrize("case", ["few_values", "all_distinct", "many_failing_values", "integers"])
def test_allowed_and_matches_find_the_same_rows_whatever_the_cardinality(duck: Any, case: str) -> None:
    """Few distinct values (decided on the values), one per row (decided row by row), more failing
    values than an IN list takes, a non-text column: the failing rows are the ones by hand."""
    from evenflow.verify.contracts import find_failures

    rng = random.Random(3)
    n = 4000
    values: list[Any]
    if case == "few_values":
        values = [rng.choice(["pos", "ecom", "atm", "POS", "crypto", None]) for _ in range(n)]
    elif case == "all_distinct":
        values = [f"t{i}" if rng.random() > 0.01 else f"x{i}" for i in range(n)]
    elif case == "many_failing_values":
        values = [f"b{i // 3}" if i % 2 else rng.choice(["pos", "atm"]) for i in range(n)]
    else:
        values = [rng.choice([1, 2, 3, 7, None]) for _ in range(n)]
    stored = pa.table({"__seq": list(range(n)), "k": values})  # noqa: F841
    duck.execute("CREATE TABLE v AS SELECT * FROM stored")
    allowed_values = [1, 2, 3] if case == "integers" else ["pos", "ecom", "atm", "t1", "t2"]
    pattern = "[1-3]" if case == "integers" else "pos|atm|b[0-9]*[13579]|t[0-9]*[02468]"
    found = find_failures(duck, "v", [ef.allowed("k", allowed_values), ef.matches("k", pattern)])
    for i, ok in enumerate([lambda v: v in allowed_values, lambda v: re.fullmatch(pattern, str(v))]):
        got = {r[0] for r in duck.sql(f"SELECT __seq FROM {found} WHERE __f{i}").fetchall()}
        assert got == _value_rule_rows(values, ok), (case, i)
        assert 0 < len(got) < n


# -- the failing rows carry the columns their rules read; the shortcuts agree with the long way ---

def _mixed_rules() -> list[Any]:
    return [ef.unique("k"), ef.unique("a", "b"), ef.allowed("s", ["pos", "atm"]), ef.matches("m", "[0-9]{2}"),
            ef.rule("refund", "amount >= 0 or s == 'atm'"), ef.monotonic("x"),
            ef.monotonic("y", strict=True, by="g", order_by="o")]


def _mixed_table(duck: Any, n: int = 3000) -> None:
    rng = random.Random(21)
    k = [f"id{i}" if rng.random() > 0.004 else f"id{rng.randrange(max(i, 1))}" for i in range(n)]
    stored = pa.table({  # noqa: F841
        "__seq": list(range(n)), "k": k,
        "a": [f"c{rng.randrange(50)}" for _ in range(n)], "b": [rng.randrange(80) for _ in range(n)],
        "s": [rng.choice(["pos", "atm", "POS", None]) for _ in range(n)],
        "m": [rng.choice(["12", "34", "1x", None]) for _ in range(n)],
        "amount": [rng.choice([1.0, -1.0, None]) for _ in range(n)],
        "x": [None if rng.random() < 0.05 else i - (rng.random() < 0.02) * 7 for i in range(n)],
        "g": [f"g{i % 5}" for i in range(n)], "o": [rng.randrange(10_000) for _ in range(n)],
        "y": [rng.randrange(1000) for _ in range(n)]})
    duck.execute("CREATE OR REPLACE TABLE v AS SELECT * FROM stored")


def _failures(duck: Any, rules: list[Any]) -> list[list[tuple[Any, ...]]]:
    """Per rule: its failing rows, their helper text and the values of the rule's columns."""
    from evenflow.verify.contracts import find_failures

    found = find_failures(duck, "v", rules)
    return [duck.sql(f"SELECT __seq, __w{i}{''.join(', ' + k for k in c.used_columns())} FROM {found} "
                     f"WHERE __f{i} ORDER BY __seq").fetchall() for i, c in enumerate(rules)]


def test_failing_rows_carry_the_values_their_rules_read(duck: Any) -> None:
    """Each failing row holds, for every rule it fails, the table's values of that rule's columns
    (what evidence and quarantine details show), read on the way instead of by a join."""
    from evenflow.verify.contracts import find_failures

    _mixed_table(duck)
    rules = _mixed_rules()
    found = find_failures(duck, "v", rules)
    for i, c in enumerate(rules):
        cols = c.used_columns()
        got = duck.sql(f"SELECT __seq, {', '.join(cols)} FROM {found} WHERE __f{i} ORDER BY 1").fetchall()
        want = duck.sql(f"SELECT __seq, {', '.join(cols)} FROM v WHERE __seq IN "
                        f"(SELECT __seq FROM {found} WHERE __f{i}) ORDER BY 1").fetchall()
        assert got == want and got, c.name


def test_uniqueness_candidates_marked_in_the_shared_scan_or_compared_apart(
        duck: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Few repeated hashes are marked in the shared scan; more than IN_LIST, or more than one row
    in 8, take their own pass: the same failing rows, first records and carried values."""
    import evenflow.verify.contracts as V

    _mixed_table(duck)
    rules = _mixed_rules()
    fused = _failures(duck, rules)
    monkeypatch.setattr(V, "IN_LIST", 0)  # an exact pass of its own per key
    assert _failures(duck, rules) == fused
    monkeypatch.setattr(V, "HASHES_PER_PASS", 700)  # several parts, still the same
    assert _failures(duck, rules) == fused
    for only in ([rules[0]], [rules[1]], rules[:2]):  # no scalar rule: the marks scan alone
        monkeypatch.setattr(V, "IN_LIST", 1000)
        alone = _failures(duck, only)
        monkeypatch.setattr(V, "IN_LIST", 0)
        assert _failures(duck, only) == alone and alone
    repeats = _expected_repeats(duck.sql("SELECT k FROM v ORDER BY __seq").fetchnumpy()["k"].tolist())
    assert {r[0]: int(r[1]) for r in fused[0]} == repeats and repeats


def test_contracts_on_a_parquet_source_report_what_a_frame_source_does(tmp_path: Path) -> None:
    """A typed Parquet source stays a scan (no copy): several row groups, nulls, failing values
    only after the first 100,000 rows (the distinct-value sample), dataset measures that the
    Parquet statistics answer. Verdicts, evidence, quarantine and kept rows equal a frame's."""
    import pyarrow.parquet as pq

    n = 150_000
    rng = random.Random(8)
    chan = [None if i % 97 == 0 else ("crypto" if i > 120_000 and i % 1001 == 0 else ["pos", "atm"][i % 2])
            for i in range(n)]
    merchant = [f"m{rng.randrange(30_000)}" if i < 140_000 or i % 5 else f"x{i}" for i in range(n)]
    tid = [f"t{i}" if i % 40_000 != 39_999 else f"t{i - 30_000}" for i in range(n)]
    amount = [None if i % 50 == 0 else (-2.0 if i % 10_007 == 3 and chan[i] != "atm" else 3.0) for i in range(n)]
    table = pa.table({"transaction_id": tid, "card_id": [f"c{i % 700}" for i in range(n)],
                      "ts": pa.array([T0 + dt.timedelta(seconds=i) for i in range(n)], pa.timestamp("us", tz="UTC")),
                      "seq_no": [i if i % 33_333 else i - 5 for i in range(n)], "amount": amount,
                      "channel": chan, "merchant_id": merchant})
    path = tmp_path / "tx.parquet"
    pq.write_table(table, path, row_group_size=40_000)
    contracts = [ef.unique("transaction_id"), ef.unique("card_id", "ts"),
                 ef.allowed("channel", ["pos", "atm"]), ef.matches("merchant_id", "m[0-9]+", severity="warn"),
                 ef.matches("transaction_id", "t[0-9]+"), ef.rule("refund_at_atm", "amount >= 0 or channel == 'atm'"),
                 ef.monotonic("seq_no", strict=True), ef.null_fraction("amount", le=0.05),
                 ef.null_fraction("channel", le=0.001, severity="warn"),
                 ef.freshness("ts", within="1d", reference=(T0 + dt.timedelta(seconds=n)).isoformat()),
                 ef.row_count(ge=1000)]

    def run(src: Any) -> tuple[list[dict[str, Any]], list[tuple[Any, ...]], list[int]]:
        fs = ef.FeatureSet("card", source=src, features=[ef.count(window="1h")])
        engine = BatchEngine(ef.Pipeline(name="p", feature_sets=[fs]), memory_limit="1GB")
        loaded = engine.load_source("tx")
        q = engine.con.sql("SELECT record, reason, field, step, detail, payload FROM __quarantine "
                           "ORDER BY record").fetchall()
        kept = [r[0] for r in engine.con.sql(f'SELECT __seq FROM "{loaded.table}" ORDER BY 1').fetchall()]
        return [r.as_dict() for r in loaded.contracts], q, kept

    schema = ef.Schema(transaction_id=ef.String(), card_id=ef.String(), ts=ef.Timestamp(), seq_no=ef.Int(),
                       amount=ef.Float(), channel=ef.String(), merchant_id=ef.String())
    common: dict[str, Any] = {"name": "tx", "key": "card_id", "event_time": "ts", "contracts": contracts}
    from_parquet = run(ef.source.parquet(str(path), schema=schema, **common))
    from_frame = run(ef.source.frame(table, **common))
    assert from_parquet == from_frame
    results = {r["name"]: r for r in from_parquet[0]}
    assert results["allowed_channel"]["failing_rows"] == len([c for c in chan if c == "crypto"]) > 0
    assert results["matches_merchant_id"]["failing_rows"] == sum(m.startswith("x") for m in merchant) > 0
    assert results["unique_transaction_id"]["failing_rows"] == 3
    assert not results["null_fraction_channel"]["passed"] and results["freshness_ts"]["passed"]
    assert all(r["evidence"] for r in from_parquet[0] if not r["passed"] and r["level"] == "row")
