"""The dataset report: profile numbers against hand-computed values, the verdict, the JSON twin,
the ``evenflow report`` command, and the page rendered in real headless Chromium.

The browser tests open the written ``report.html`` over ``file://`` in Chromium (Debian packages
``chromium`` and ``chromium-driver``, installed by ``make browser``); the machine has no internet,
so the charts only render if plotly.js really is inlined.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evenflow.errors import EvenflowError
from evenflow.verify.findings import Finding, findings_json
from evenflow.verify.profile import PSI_EPS, ks_statistic, profile, psi
from evenflow.verify.report import build_report, write_report

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "fraud" / "pipeline.yaml"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1280,2000"]


# ---------------------------------------------------------------- profile numbers, by hand

def tiny() -> pa.Table:
    """8 train rows, 8 test rows: x shifts by 4, c flips its majority, y is 3:1 then 1:1."""
    return pa.table({
        "split": ["train"] * 8 + ["test"] * 8,
        "y": [*[0, 0, 0, 0, 0, 0, 1, 1], *[0, 1, 0, 1, 0, 1, None, 1]],
        "x": [*[1.0, 2, 3, 4, 5, 6, 7, 8], *[5.0, 6, 7, 8, 9, 10, 11, 12]],
        "m": [1.0, None, float("nan"), 4, 5, 6, 7, 8] + [None] * 8,
        "c": ["a"] * 6 + ["b"] * 2 + ["a"] * 2 + ["b"] * 6,
    })


def test_missingness_per_column_and_split_counts_nulls_and_nan() -> None:
    p = profile(tiny(), label="y", features=["x", "m", "c"])
    assert p["splits"] == {"train": 8, "test": 8}
    assert p["missing"]["m"]["train"] == {"missing": 2, "rows": 8, "fraction": 0.25}
    assert p["missing"]["m"]["test"] == {"missing": 8, "rows": 8, "fraction": 1.0}
    assert p["missing"]["y"]["test"]["missing"] == 1 and p["missing"]["y"]["train"]["missing"] == 0
    assert p["missing"]["x"]["train"]["missing"] == 0


def test_label_balance_counts_fractions_and_imbalance_ratio() -> None:
    b = profile(tiny(), label="y", features=[])["balance"]
    assert b["train"]["counts"] == {"0": 6, "1": 2}
    assert b["train"]["fractions"] == {"0": 0.75, "1": 0.25}
    assert b["train"]["imbalance_ratio"] == 3.0
    # the unlabelled test row is not counted in the balance
    assert b["test"]["counts"] == {"0": 3, "1": 4} and b["test"]["labelled_rows"] == 7
    assert b["test"]["imbalance_ratio"] == pytest.approx(4 / 3)
    one_class = pa.table({"split": ["train", "train", "test"], "y": [0, 1, 0]})
    b = profile(one_class, label="y", features=[])["balance"]
    assert b["test"]["missing_classes"] == ["1"] and b["test"]["imbalance_ratio"] is None


def test_numeric_psi_on_train_quartile_bins_and_ks_by_hand() -> None:
    d = profile(tiny(), label="y", features=["x"], psi_bins=4)["drift"]["x"]
    # train quartiles of 1..8 (linear interpolation): 2.75, 4.5, 6.25
    assert d["bin_edges"] == [2.75, 4.5, 6.25]
    # bins (-inf, 2.75], (2.75, 4.5], (4.5, 6.25], (6.25, inf), missing:
    # train 2, 2, 2, 2, 0 -> 1/4 each; test (5..12) 0, 0, 2, 6, 0 -> 0, 0, 1/4, 3/4
    train = [0.25, 0.25, 0.25, 0.25, PSI_EPS]
    test = [PSI_EPS, PSI_EPS, 0.25, 0.75, PSI_EPS]
    expected = sum((q - p) * math.log(q / p) for p, q in zip(train, test, strict=True))
    assert d["psi"] == pytest.approx(expected, rel=1e-12)
    assert d["psi"] == pytest.approx(2 * (PSI_EPS - 0.25) * math.log(PSI_EPS / 0.25) + 0.5 * math.log(3))
    # empirical CDFs: at x = 4 train has 4/8, test 0/8; at x = 8 train 8/8, test 4/8
    assert d["ks"] == 0.5
    assert d["flagged"] and d["kind"] == "numeric"


def test_categorical_psi_and_cramers_v_by_hand() -> None:
    d = profile(tiny(), label="y", features=["c"])["drift"]["c"]
    # a: 6/8 -> 2/8, b: 2/8 -> 6/8, other: none in both
    assert d["psi"] == pytest.approx(2 * 0.5 * math.log(3))
    # 2x2 table [[6, 2], [2, 6]], expected 4 everywhere: chi2 = 4 * (2**2 / 4) = 4; V = sqrt(4 / 16)
    assert d["chi2"] == pytest.approx(4.0)
    assert d["cramers_v"] == pytest.approx(0.5)
    assert d["categories"] == ["a", "b", "(other)"]


def test_ks_matches_scipy_and_psi_is_zero_for_identical_counts() -> None:
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=700), np.round(rng.normal(0.2, 1.3, size=300), 1)  # ties included
    assert ks_statistic(a, b) == pytest.approx(ks_2samp(a, b).statistic, abs=1e-12)
    assert psi(np.array([3, 0, 5]), np.array([6, 0, 10])) == 0.0


def test_histograms_share_bins_and_count_every_present_value() -> None:
    rng = np.random.default_rng(2)
    n = 500
    t = pa.table({"split": ["train"] * 400 + ["test"] * 100, "y": rng.integers(0, 2, n),
                  "v": np.append(rng.lognormal(size=n - 1), 1e6)})  # one huge outlier
    h = profile(t, label="y", features=["v"])["features"]["v"]["histogram"]
    assert sum(h["counts"]["train"]) + sum(h["counts"]["test"]) == n
    assert h["tails_folded"] and h["edges"][-1] < 1e6  # the outlier does not stretch the bins
    ints = pa.table({"split": ["train", "test", "train"], "y": [0, 1, 0], "k": [0, 3, 3]})
    h = profile(ints, label="y", features=["k"])["features"]["k"]["histogram"]
    assert h["edges"] == [-0.5, 0.5, 1.5, 2.5, 3.5] and h["counts"] == {"train": [1, 0, 0, 1], "test": [0, 0, 0, 1]}


def test_unknown_label_or_feature_is_a_user_error() -> None:
    with pytest.raises(EvenflowError, match="no column 'nope'"):
        profile(tiny(), label="nope")
    with pytest.raises(EvenflowError, match="feature 'z'"):
        profile(tiny(), label="y", features=["z"])


# ---------------------------------------------------------------- generated training sets

def write_set(folder: Path, table: pa.Table, card: dict[str, Any],
              findings: list[Finding] | None = None) -> Path:
    """A published training set folder: Parquet, card.json, and checks.json when given."""
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / "training_set.parquet")
    (folder / "card.json").write_text(json.dumps(card))
    if findings is not None:
        (folder / "checks.json").write_text(findings_json(findings))
    return folder


def drifted_set(n_train: int = 3000, n_test: int = 1000, seed: int = 11) -> tuple[pa.Table, dict[str, Any]]:
    """Independent features, the same in both splits, except ``f_shifted`` (test mean + 0.5 sd)."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    cols: dict[str, Any] = {f"f{i}": rng.normal(size=n) for i in range(6)}
    shifted = rng.normal(size=n)
    shifted[n_train:] += 0.5
    cols["f_shifted"] = shifted
    cols["counts"] = rng.poisson(3, size=n)
    cols["channel"] = rng.choice(["pos", "ecom", "atm"], size=n, p=[0.6, 0.3, 0.1])
    cols["with_gaps"] = np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n))
    cols["entity"] = rng.choice([f"e{i}" for i in range(40)], size=n)
    cols["row_id"] = [f"r{i}" for i in range(n)]
    table = pa.table({**cols, "y": rng.binomial(1, 0.1, size=n), "split": ["train"] * n_train + ["test"] * n_test})
    features = [*[f"f{i}" for i in range(6)], "f_shifted", "counts", "with_gaps"]
    card = {"name": "drift_demo", "pipeline": "generated", "fingerprint": "f00d", "label": "y",
            "features": features, "feature_sets": [{"name": "gen", "key": ["entity"]}]}
    return table, card


def sample_findings() -> list[Finding]:
    """One blocking error with evidence, one accepted error, one warning, one pass."""
    return [
        Finding("temporal_overlap", "error", False, "12 test rows are earlier than the last train time plus the gap",
                observed=12, bound=0, evidence=[{"row": 7, "ts": "2026-03-30T10:00:00+00:00", "split": "test"},
                                                {"row": 9, "ts": "2026-03-30T11:00:00+00:00", "split": "test"}],
                rows=list(range(12))),
        Finding("entity_overlap", "error", False, "3 entities in both splits", observed=3, bound=0,
                rows=[1, 2, 3], accepted=True),
        Finding("label_noise", "warn", False, "5 label-noise candidates", observed=5, bound=0, rows=[4, 5]),
        Finding("target_leakage", "error", True, "no single feature predicts the label", observed=0.71, bound=0.99),
    ]


def test_planted_drift_is_flagged_and_nothing_else(tmp_path: Path) -> None:
    table, card = drifted_set()
    report = build_report(write_set(tmp_path / "ts", table, card))
    drift = report["profile"]["drift"]
    assert {n for n, d in drift.items() if d["flagged"]} == {"f_shifted"}
    assert set(drift) == {*card["features"], "channel"}  # the id and the entity key are left out
    assert report["profile"]["skipped"]["entity"] == "entity key"
    assert report["profile"]["skipped"]["row_id"].startswith("identifier")
    assert report["verdict"]["status"] == "fit_with_warnings"
    assert any("f_shifted" in w for w in report["verdict"]["warnings"])


def test_verdict_blocks_on_an_unaccepted_error_and_names_it(tmp_path: Path) -> None:
    table, card = drifted_set(600, 200)
    report = build_report(write_set(tmp_path / "ts", table, card, sample_findings()))
    v = report["verdict"]
    assert v["status"] == "not_fit" and v["headline"].startswith("Not fit to train: 1 blocking")
    assert len(v["blocking"]) == 1 and "temporal_overlap" in v["blocking"][0] and "observed 12" in v["blocking"][0]
    assert any("entity_overlap" in w and "accepted" in w for w in v["warnings"])
    assert any("label_noise" in w for w in v["warnings"])
    checks = {f["check"]: f for f in report["checks"]}
    assert checks["temporal_overlap"]["offending_rows"] == 12
    assert checks["temporal_overlap"]["evidence"][1]["row"] == 9
    assert checks["target_leakage"]["passed"]


def test_clean_set_with_passing_checks_is_fit(tmp_path: Path) -> None:
    table, card = drifted_set(600, 200)
    table = table.drop_columns(["f_shifted"])
    card["features"].remove("f_shifted")
    report = build_report(write_set(tmp_path / "ts", table, card, [sample_findings()[3]]))
    assert report["verdict"] == {"status": "fit", "headline": "Fit to train", "blocking": [],
                                 "warnings": [], "notes": []}


def test_single_class_train_split_is_not_fit_and_missing_checks_are_noted(tmp_path: Path) -> None:
    t = pa.table({"split": ["train"] * 5 + ["test"] * 3, "y": [0] * 5 + [0, 1, 0], "x": list(range(8))})
    report = build_report(write_set(tmp_path / "ts", t, {"label": "y", "features": ["x"]}))
    assert report["verdict"]["status"] == "not_fit"
    assert "single label class" in report["verdict"]["blocking"][0]
    assert "checks.json" in report["verdict"]["notes"][0]


def test_contract_results_from_the_card_are_reported(tmp_path: Path) -> None:
    table, card = drifted_set(300, 100)
    # the card's shape (evenflow/batch/training.py _card): per source, each ContractResult.as_dict()
    card["contracts"] = {"transactions": [
        {"name": "amount_non_negative", "kind": "rule", "severity": "warn", "level": "row", "passed": False,
         "observed": 4, "bound": "0", "failing_rows": 4, "evidence": [{"amount": -1.0}]},
        {"name": "rows", "kind": "row_count", "severity": "error", "level": "dataset", "passed": True,
         "observed": 400, "bound": ">= 10", "failing_rows": 0, "evidence": []}]}
    report = build_report(write_set(tmp_path / "ts", table, card))
    c, ok = report["checks"]
    assert (c["check"], c["source"], c["offending_rows"], c["passed"], c["message"]) == (
        "amount_non_negative", "card.json contracts on transactions", 4, False, "rule contract, row-level")
    assert ok["passed"] and ok["check"] == "rows"
    assert any("amount_non_negative" in w for w in report["verdict"]["warnings"])


def test_card_check_summary_stands_in_for_a_missing_checks_json(tmp_path: Path) -> None:
    table, card = drifted_set(300, 100)
    # the card's summary of the build's findings: the offending rows as a count, no evidence
    card["checks"] = [{**{k: v for k, v in f.to_dict().items() if k not in ("rows", "evidence")},
                       "rows": len(f.rows)} for f in sample_findings()]
    report = build_report(write_set(tmp_path / "ts", table, card))
    assert {f["check"]: f["offending_rows"] for f in report["checks"]} == {
        "temporal_overlap": 12, "entity_overlap": 3, "label_noise": 2, "target_leakage": 0}
    assert report["verdict"]["status"] == "not_fit" and report["verdict"]["notes"] == []


def test_bad_input_is_a_clear_user_error(tmp_path: Path) -> None:
    with pytest.raises(EvenflowError, match="not built"):
        write_report(tmp_path)
    table, card = drifted_set(30, 10)
    folder = write_set(tmp_path / "ts", table, card)
    (folder / "checks.json").write_text("{oops")
    with pytest.raises(EvenflowError, match="not valid JSON"):
        write_report(folder)
    (folder / "checks.json").unlink()
    (folder / "card.json").write_text("[1, 2]")
    with pytest.raises(EvenflowError, match="must be a JSON object"):
        write_report(folder)
    (folder / "training_set.parquet").write_bytes(b"not parquet")
    with pytest.raises(EvenflowError, match="cannot read the training set"):
        write_report(folder)
    no_split = write_set(tmp_path / "no_split", table.drop_columns(["split"]), card)
    with pytest.raises(EvenflowError, match="no column 'split'"):
        write_report(no_split)


# ---------------------------------------------------------------- the fraud example, page and CLI

@pytest.fixture(scope="module")
def fraud_set(tmp_path_factory: pytest.TempPathFactory, fraud_generator: ModuleType) -> Path:
    """The fraud example's training set (3,000 transactions), published, with planted findings."""
    from evenflow.batch.training import build
    from evenflow.core.pipeline import Pipeline

    root = tmp_path_factory.mktemp("report")
    fraud_generator.generate(root / "data", n_transactions=3000, seed=7)
    shutil.copy(EXAMPLE, root / "pipeline.yaml")
    pipeline = Pipeline.load(root / "pipeline.yaml")
    ts = build(pipeline)
    ts.write(pipeline.output)
    folder = root / "out" / "fraud_v1"
    if not (folder / "checks.json").exists():  # the build may write its own; add ours otherwise
        (folder / "checks.json").write_text(findings_json(sample_findings()))
    return folder


@pytest.fixture(scope="module")
def fraud_report(fraud_set: Path) -> tuple[Path, Path]:
    return write_report(fraud_set)


def test_report_files_are_self_contained_and_the_page_embeds_its_json_twin(fraud_report: tuple[Path, Path]) -> None:
    html_path, json_path = fraud_report
    page = html_path.read_text()
    assert "<script src" not in page and "<link " not in page  # nothing fetched: plotly.js is inlined
    assert "Plotly.newPlot" in page and len(page) > 3_000_000
    report = json.loads(json_path.read_text())
    start = page.index('<script type="application/json" id="evenflow-report">')
    embedded = page[page.index(">", start) + 1: page.index("</script>", start)]
    assert json.loads(embedded) == report
    for chart in report["charts"]:
        assert f'id="{chart["id"]}"' in page


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not Path(CHROMEDRIVER).exists():
        pytest.fail("chromium-driver is not installed: run `make browser`")
    options = webdriver.ChromeOptions()
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    profile_dir = tempfile.mkdtemp(prefix="ef-chromium-")
    options.add_argument(f"--user-data-dir={profile_dir}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile_dir, ignore_errors=True)


def open_page(driver: Any, path: Path) -> list[dict[str, Any]]:
    """Load ``path``, wait until every chart has drawn or failed, return the console log."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get_log("browser")  # drop anything left from an earlier page
    driver.get(path.as_uri())
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(
        "return [...document.querySelectorAll('div.chart')].every(c => c.querySelector('svg.main-svg'))"))
    log: list[dict[str, Any]] = driver.get_log("browser")
    return log


def test_page_renders_every_chart_in_headless_chromium_without_errors(
        browser: Any, fraud_report: tuple[Path, Path]) -> None:
    from selenium.webdriver.common.by import By

    html_path, json_path = fraud_report
    report = json.loads(json_path.read_text())
    log = open_page(browser, html_path)
    errors = [e for e in log if e["level"] == "SEVERE" or "Error" in e["message"]]
    assert errors == []
    charts = browser.find_elements(By.CSS_SELECTOR, "div.chart")
    assert len(charts) == len(report["charts"]) > 20
    assert [c.get_attribute("id") for c in charts if c.find_elements(By.CSS_SELECTOR, "svg.main-svg")] == \
        [c["id"] for c in report["charts"]]
    # Plotly drew the data: one bar group per split in the balance chart, one trace per split per feature
    assert browser.execute_script("return document.getElementById('chart-balance').data.length") == 2
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart-drift g.point")) == len(report["profile"]["drift"])
    # the JavaScript parsed the same JSON the twin holds
    assert browser.execute_script(
        "return JSON.parse(document.getElementById('evenflow-report').textContent).verdict") == report["verdict"]


def test_visible_page_says_what_the_json_twin_says(browser: Any, fraud_report: tuple[Path, Path]) -> None:
    from selenium.webdriver.common.by import By

    html_path, json_path = fraud_report
    report = json.loads(json_path.read_text())
    open_page(browser, html_path)
    verdict = browser.find_element(By.ID, "verdict")
    assert verdict.get_attribute("data-status") == report["verdict"]["status"]
    assert verdict.find_element(By.TAG_NAME, "h2").text == report["verdict"]["headline"]
    items = [li.text for li in verdict.find_elements(By.TAG_NAME, "li")]
    v = report["verdict"]
    assert items == [*v["blocking"], *v["warnings"], *v["notes"]]
    shown = {r.get_attribute("data-check"): r.get_attribute("data-status")
             for r in browser.find_elements(By.CSS_SELECTOR, "tr.check")}
    assert shown == {f["check"]: "passed" if f["passed"] else "accepted" if f["accepted"] else "failed"
                     for f in report["checks"]}
    flagged = {r.get_attribute("data-feature") for r in browser.find_elements(By.CSS_SELECTOR, "tr.drift")
               if r.get_attribute("data-flagged") == "true"}
    assert flagged == {n for n, d in report["profile"]["drift"].items() if d["flagged"]}
    rows = {r.get_attribute("data-feature"): r for r in browser.find_elements(By.CSS_SELECTOR, "tr.drift")}
    for name, d in report["profile"]["drift"].items():
        assert rows[name].find_elements(By.TAG_NAME, "td")[2].text == f"{d['psi']:,.3f}"
    for split, b in report["profile"]["balance"].items():
        for cls, n in b["counts"].items():
            cell = browser.find_element(By.CSS_SELECTOR, f'tr[data-split="{split}"][data-class="{cls}"] td:nth-child(3)')
            assert cell.text == f"{n:,}"


def test_planted_drift_page_flags_only_the_drifted_feature(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    table, card = drifted_set()
    html_path, _ = write_report(write_set(tmp_path / "ts", table, card, sample_findings()))
    assert [e for e in open_page(browser, html_path) if e["level"] == "SEVERE"] == []
    flagged = [r.get_attribute("data-feature") for r in browser.find_elements(By.CSS_SELECTOR, "tr.drift")
               if r.get_attribute("data-flagged") == "true"]
    assert flagged == ["f_shifted"]
    evidence = browser.find_element(By.CSS_SELECTOR, 'tr.check[data-check="temporal_overlap"] details')
    evidence.find_element(By.TAG_NAME, "summary").click()
    assert "2026-03-30T11:00:00+00:00" in evidence.text
    red = browser.execute_script(
        "const d = document.getElementById('chart-drift').data[0];"
        "return d.y.filter((name, i) => d.marker.color[i] === '#d62728')")
    assert red == ["f_shifted"]


def evenflow(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "evenflow"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "evenflow.cli"]
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    return subprocess.run([*cmd, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_cli_report_from_the_pipeline_yaml(fraud_set: Path, tmp_path: Path) -> None:
    project = fraud_set.parent.parent
    done = evenflow("report", "pipeline.yaml", "--out", str(tmp_path), cwd=project)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["verdict"]["headline"] in done.stdout
    assert (tmp_path / "report.html").exists() and "Rows and label balance per split" in done.stdout


def test_cli_strict_exits_1_only_when_not_fit(tmp_path: Path) -> None:
    table, card = drifted_set(300, 100)
    blocked = write_set(tmp_path / "blocked", table, card, sample_findings())
    done = evenflow("report", str(blocked), "--strict", cwd=tmp_path)
    assert done.returncode == 1 and "Not fit to train" in done.stdout and "temporal_overlap" in done.stdout
    fine = write_set(tmp_path / "fine", table, card, sample_findings()[3:])
    done = evenflow("report", str(fine), "--strict", cwd=tmp_path)
    assert done.returncode == 0 and "Fit to train" in done.stdout


def test_cli_report_user_errors_exit_2_without_traceback(tmp_path: Path) -> None:
    done = evenflow("report", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "not built" in done.stderr and "evenflow training-set" in done.stderr
    (tmp_path / "p.yaml").write_text("name: x\n")
    done = evenflow("report", "p.yaml", cwd=tmp_path)
    assert done.returncode == 2 and "no training_set" in done.stderr
