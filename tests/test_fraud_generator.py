"""Tests for the synthetic fraud data generator (examples/fraud/generate.py)."""

from __future__ import annotations

import hashlib
import importlib.util
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

GEN_PATH = Path(__file__).resolve().parents[1] / "examples" / "fraud" / "generate.py"
N = 5000

CSV_COLUMNS = ["transaction_id", "card_id", "merchant_id", "amount", "ts", "lat", "lon", "channel", "mcc"]
LABEL_COLUMNS = ["transaction_id", "card_id", "merchant_id", "ts", "amount", "lat", "lon", "channel",
                 "is_fraud", "label_time"]
ISO_WITH_OFFSET = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
NAIVE = re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?$")


def _load_module():
    spec = importlib.util.spec_from_file_location("fraud_generate", GEN_PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def gen():
    return _load_module()


@pytest.fixture(scope="module")
def out(gen, tmp_path_factory):
    d = tmp_path_factory.mktemp("fraud_a")
    counts = gen.generate(d, n_transactions=N, seed=7)
    return d, counts


@pytest.fixture(scope="module")
def csv(out):
    d, _ = out
    return pd.read_csv(d / "transactions.csv", dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def labels(out):
    d, _ = out
    return pq.read_table(d / "labels.parquet")


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _parse_ts(ts: pd.Series) -> pd.Series:
    """Offset-aware ISO 8601 instants; NaT for naive, malformed or impossible timestamps."""
    aware = ts.where(ts.str.match(ISO_WITH_OFFSET))
    out = pd.Series(pd.NaT, index=ts.index, dtype="datetime64[us, UTC]")
    for i, v in aware.dropna().items():  # per value: a bad one must not poison the rest
        out[i] = pd.to_datetime(v, format="ISO8601", utc=True, errors="coerce")
    return out


def _parse_valid(csv: pd.DataFrame) -> pd.DataFrame:
    """Rows of the CSV a careful reader would accept: valid offset-aware ts, non-negative amount."""
    parsed = _parse_ts(csv["ts"])
    has_amount = csv["amount"] != ""
    amount = pd.to_numeric(csv["amount"].where(has_amount), errors="coerce")
    ok = parsed.notna() & has_amount & (amount >= 0)
    v = csv[ok].copy()
    v["ts_parsed"] = parsed[ok]
    v["amount_f"] = amount[ok]
    return v


def test_files_and_columns(out, csv, labels):
    d, counts = out
    assert (d / "transactions.csv").exists() and (d / "labels.parquet").exists()
    header = (d / "transactions.csv").read_text().splitlines()[0]
    assert header.split(",") == CSV_COLUMNS
    assert labels.column_names == LABEL_COLUMNS
    sch = labels.schema
    assert sch.field("ts").type == pa.timestamp("us", tz="UTC")
    assert sch.field("label_time").type == pa.timestamp("us", tz="UTC")
    assert sch.field("amount").type == pa.float64()
    assert pa.types.is_integer(sch.field("is_fraud").type)
    assert len(csv) == counts["transactions"] == N
    assert labels.num_rows == counts["labels"]
    assert set(counts) == {"transactions", "labels", "fraud", "duplicates", "dirty"}


def test_formats(csv, labels):
    assert csv["transaction_id"].str.match(r"^t\d{8}$").all()
    assert csv["card_id"].str.match(r"^c\d{6}$").all()
    assert csv["merchant_id"].str.match(r"^m\d{5}$").all()
    assert csv["mcc"].str.match(r"^\d{4}$").all()
    assert set(csv["channel"]) == {"pos", "ecom", "atm"}
    lab = labels.to_pandas()
    assert set(lab["is_fraud"].unique()) <= {0, 1}
    assert lab["transaction_id"].is_unique
    assert lab["lat"].between(30, 70).all() and lab["lon"].between(-15, 35).all()
    # varied but correct offsets
    ends = csv["ts"].str[-6:]
    assert (ends == "+00:00").sum() > 0.8 * len(csv)
    assert csv["ts"].str.endswith("Z").any()
    assert ends.isin(["+01:00", "+02:00"]).any()


def test_deterministic(gen, out, tmp_path):
    d, counts = out
    counts2 = gen.generate(tmp_path, n_transactions=N, seed=7)
    assert counts2 == counts
    for name in ("transactions.csv", "labels.parquet"):
        assert _sha(tmp_path / name) == _sha(d / name)


def test_different_seed_differs(gen, out, tmp_path):
    d, _ = out
    gen.generate(tmp_path, n_transactions=N, seed=8)
    assert _sha(tmp_path / "transactions.csv") != _sha(d / "transactions.csv")


def test_labels_are_exactly_the_valid_unique_csv_rows(csv, labels):
    v = _parse_valid(csv).drop_duplicates()
    assert v["transaction_id"].is_unique
    lab = labels.to_pandas().set_index("transaction_id")
    v = v.set_index("transaction_id")
    assert set(lab.index) <= set(v.index)
    assert set(lab.index) == set(v.index)
    v = v.loc[lab.index]
    # the instant in the CSV (whatever the offset) equals the label ts
    assert (v["ts_parsed"] == lab["ts"]).all()
    assert np.allclose(v["amount_f"].values, lab["amount"].values)
    assert np.allclose(v["lat"].astype(float).values, lab["lat"].values)
    assert np.allclose(v["lon"].astype(float).values, lab["lon"].values)
    assert (v["card_id"] == lab["card_id"]).all()
    assert (v["merchant_id"] == lab["merchant_id"]).all()
    assert (v["channel"] == lab["channel"]).all()


def test_each_dirty_kind_present(out, csv, labels):
    _, counts = out
    lab_ids = set(labels.column("transaction_id").to_pylist())
    dup = csv.duplicated(keep="first")
    assert dup.sum() == counts["duplicates"] > 0
    missing = csv["amount"] == ""
    negative = csv["amount"].str.startswith("-")
    naive = csv["ts"].str.match(NAIVE)
    malformed = _parse_ts(csv["ts"]).isna() & ~naive
    amount = pd.to_numeric(csv["amount"].where(~missing), errors="coerce")
    outlier = amount >= 1e6
    for name, mask in [("missing", missing), ("negative", negative), ("naive", naive),
                       ("malformed", malformed), ("outlier", outlier)]:
        assert mask.sum() > 0, name
        ids = set(csv.loc[mask, "transaction_id"])
        if name == "outlier":
            assert ids <= lab_ids  # outliers are valid rows, kept as legit
            lab = labels.to_pandas()
            assert (lab.loc[lab["amount"] >= 1e6, "is_fraud"] == 0).all()
        else:
            assert not (ids & lab_ids), name
    n_dirty = int((missing | negative | naive | malformed | outlier).sum())
    assert n_dirty == counts["dirty"]
    total = (counts["dirty"] + counts["duplicates"]) / len(csv)
    assert 0.015 <= total <= 0.035


def test_clean_mode(gen, tmp_path):
    counts = gen.generate(tmp_path, n_transactions=N, seed=3, dirty=False)
    assert counts["dirty"] == 0 and counts["duplicates"] == 0
    assert counts["labels"] == counts["transactions"] == N


def test_fraud_rate_and_label_time(labels):
    lab = labels.to_pandas()
    rate = lab["is_fraud"].mean()
    assert 0.007 <= rate <= 0.03
    assert (lab["label_time"] > lab["ts"]).all()
    legit = lab[lab["is_fraud"] == 0]
    assert (legit["label_time"] - legit["ts"] == pd.Timedelta(days=30)).all()
    fraud = lab[lab["is_fraud"] == 1]
    delay = fraud["label_time"] - fraud["ts"]
    assert delay.min() >= pd.Timedelta(days=2) and delay.max() <= pd.Timedelta(days=40)


def test_fraud_is_learnable(labels):
    lab = labels.to_pandas().sort_values(["card_id", "ts"]).reset_index(drop=True)
    fraud = lab["is_fraud"] == 1
    # night-time concentration
    night = lab["ts"].dt.hour < 5
    assert night[fraud].mean() > 5 * night[~fraud].mean()
    # per-card velocity in the last hour
    n1h = (lab.set_index("ts").groupby("card_id")["amount"].rolling("1h").count()
           .reset_index(drop=True))
    lab["n1h"] = n1h.values
    assert (lab.loc[fraud, "n1h"] >= 4).mean() > 0.4
    assert (lab.loc[~fraud, "n1h"] >= 4).mean() < 0.01
    # tiny card-testing amounts
    assert ((lab["amount"] <= 3.0) & fraud).sum() > 0
    # geographic jumps: >1000 km from the previous transaction within 3 hours
    g = lab.groupby("card_id")
    la1, lo1 = np.radians(g["lat"].shift()), np.radians(g["lon"].shift())
    la2, lo2 = np.radians(lab["lat"]), np.radians(lab["lon"])
    a = np.sin((la2 - la1) / 2) ** 2 + np.cos(la1) * np.cos(la2) * np.sin((lo2 - lo1) / 2) ** 2
    km = 2 * 6371 * np.arcsin(np.sqrt(a))
    hours = (lab["ts"] - g["ts"].shift()).dt.total_seconds() / 3600
    jump = (km > 1000) & (hours < 3)
    assert jump[fraud].sum() > 0
    assert lab.loc[jump, "is_fraud"].mean() > 0.5


def test_roughly_time_ordered(csv):
    ts = _parse_ts(csv["ts"]).dropna()
    diffs = ts.diff().dropna()
    assert (diffs < pd.Timedelta(0)).mean() > 0.1  # out of order locally
    # but globally ordered: rank correlation close to 1, bounded displacement
    assert ts.reset_index(drop=True).rank().corr(pd.Series(np.arange(len(ts)), dtype=float)) > 0.99


def test_cli(gen, tmp_path, capsys):
    gen.main(["--out", str(tmp_path), "--n", "2000", "--seed", "1"])
    assert "transactions=2000" in capsys.readouterr().out
    assert (tmp_path / "labels.parquet").exists()
