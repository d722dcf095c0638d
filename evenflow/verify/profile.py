"""Profile of a training set: missingness, label balance, distributions and drift per split.

Everything is computed column at a time with Arrow compute and NumPy (no Python loop over
rows), so a profile of a few million rows takes seconds. The numbers feed the dataset report
(:mod:`evenflow.verify.report`) and its JSON twin.

Drift compares the test split with the train split (the reference), per feature:

- numeric: PSI on bins cut at the train split's quantiles (plus one bin for missing values), and
  the two-sample Kolmogorov–Smirnov statistic D on the non-missing values;
- categorical: PSI over the train split's most frequent values (plus "other" and "missing"),
  and Cramér's V from the chi-square test of the split × value table.

A feature is flagged when PSI ≥ ``psi_threshold`` (0.2: the usual "significant shift"), or when
its KS D ≥ ``ks_threshold`` (numeric) or Cramér's V ≥ ``v_threshold`` (categorical) *and* that
test's p-value is below ``alpha`` — the p-value keeps small splits from flagging noise.

>>> import pyarrow as pa
>>> t = pa.table({"split": ["train"] * 4 + ["test"] * 4, "y": [0, 0, 0, 1, 0, 1, 1, None],
...               "x": [1.0, None, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]})
>>> p = profile(t, label="y", features=["x"])
>>> p["missing"]["x"]["train"], p["missing"]["y"]["test"]
({'missing': 1, 'rows': 4, 'fraction': 0.25}, {'missing': 1, 'rows': 4, 'fraction': 0.25})
>>> p["balance"]["train"]["imbalance_ratio"]
3.0
>>> p["drift"]["x"]["ks"]
1.0
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from evenflow.errors import EvenflowError

#: floor for a bin's share in PSI, so an empty bin gives a large but finite term
PSI_EPS = 1e-4
MISSING, OTHER = "(missing)", "(other)"


def _is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def _is_categorical(t: pa.DataType) -> bool:
    return (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_boolean(t)
            or pa.types.is_dictionary(t))


def _missing_mask(col: pa.ChunkedArray) -> np.ndarray:
    """True where a value is null, or NaN in a float column."""
    mask = pc.is_null(col, nan_is_null=pa.types.is_floating(col.type))
    return np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)


def _missing_share(col: pa.ChunkedArray) -> dict[str, Any]:
    n = int(_missing_mask(col).sum())
    return {"missing": n, "rows": len(col), "fraction": n / len(col) if len(col) else None}


def _floats(col: pa.ChunkedArray) -> np.ndarray:
    """The column as float64 with NaN for nulls."""
    return np.asarray(col.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def _num(x: Any) -> float | None:
    """A JSON-safe float: NaN and infinities become None."""
    x = float(x)
    return x if math.isfinite(x) else None


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Population stability index of two count vectors over the same bins.

    Shares below ``PSI_EPS`` are floored so that an empty bin counts as a large shift, not an
    infinite one.

    >>> round(psi(np.array([50, 50]), np.array([50, 50])), 6)
    0.0
    >>> round(psi(np.array([80, 20]), np.array([20, 80])), 4)   # 2 * 0.6 * ln 4
    1.6636
    """
    p = np.maximum(reference / max(reference.sum(), 1), PSI_EPS)
    q = np.maximum(current / max(current.sum(), 1), PSI_EPS)
    return float(np.sum((q - p) * np.log(q / p)))


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov–Smirnov statistic: the largest gap between the two empirical CDFs.

    >>> ks_statistic(np.array([1.0, 2, 3, 4]), np.array([3.0, 4, 5, 6]))
    0.5
    """
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    gap = np.searchsorted(a, grid, "right") / len(a) - np.searchsorted(b, grid, "right") / len(b)
    return float(np.max(np.abs(gap)))


def ks_pvalue(d: float, n: int, m: int) -> float:
    """Asymptotic p-value of a two-sample KS statistic (Kolmogorov distribution)."""
    from scipy.stats import kstwobign

    if not n or not m or math.isnan(d):
        return float("nan")
    return float(kstwobign.sf(d * math.sqrt(n * m / (n + m))))


def _splits(table: pa.Table, split_column: str) -> list[str]:
    found = [s for s in pc.unique(table.column(split_column)).to_pylist() if s is not None]
    order = {"train": 0, "test": 1}
    return sorted(found, key=lambda s: (order.get(s, 2), str(s)))


def _balance(labels: dict[str, pa.ChunkedArray]) -> dict[str, Any]:
    """Counts, shares and majority/minority ratio of the label per split."""
    classes: set[str] = set()
    counts: dict[str, dict[str, int]] = {}
    for split, col in labels.items():
        vc = pc.value_counts(col.drop_null().cast(pa.string())).to_pylist() if len(col) else []
        counts[split] = {v["values"]: int(v["counts"]) for v in vc}
        classes |= set(counts[split])
    out: dict[str, Any] = {}
    for split, c in counts.items():
        full = {k: c.get(k, 0) for k in sorted(classes)}
        n = sum(full.values())
        present = [v for v in full.values() if v]
        absent = [k for k, v in full.items() if not v]
        out[split] = {"counts": full, "fractions": {k: (v / n if n else None) for k, v in full.items()},
                      "labelled_rows": n, "missing_classes": absent,
                      # majority / minority; undefined (None) when a class is absent from the split
                      "imbalance_ratio": (max(present) / min(present)) if present and not absent else None}
    return out


def _bin_edges(values: np.ndarray, bins: int) -> tuple[np.ndarray, bool]:
    """Shared histogram edges over every split: whole numbers get one bin each when few; else
    equal width over the 0.5–99.5 percentile range, with the tails folded into the end bins."""
    lo, hi = float(values.min()), float(values.max())
    if np.all(values == np.round(values)) and hi - lo <= 40:
        return np.arange(lo - 0.5, hi + 1.5), False
    qlo, qhi = np.quantile(values, [0.005, 0.995])
    clipped = bool(qhi > qlo and (qlo > lo or qhi < hi))
    if clipped:
        lo, hi = float(qlo), float(qhi)
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1), clipped


def _numeric(parts: dict[str, np.ndarray], bins: int) -> dict[str, Any]:
    present = {s: v[~np.isnan(v)] for s, v in parts.items()}
    every = np.concatenate(list(present.values())) if present else np.array([])
    out: dict[str, Any] = {"kind": "numeric", "stats": {}, "histogram": None}
    for split, v in present.items():
        if len(v):
            q = np.quantile(v, [0.25, 0.5, 0.75])
            out["stats"][split] = {"count": len(v), "mean": _num(v.mean()),
                                   "std": _num(v.std(ddof=1)) if len(v) > 1 else None,
                                   "min": _num(v.min()), "p25": _num(q[0]), "median": _num(q[1]),
                                   "p75": _num(q[2]), "max": _num(v.max())}
        else:
            out["stats"][split] = {"count": 0}
    if len(every):
        edges, clipped = _bin_edges(every, bins)
        hist = {s: np.histogram(np.clip(v, edges[0], edges[-1]), edges)[0].tolist() for s, v in present.items()}
        out["histogram"] = {"edges": [float(e) for e in edges], "counts": hist, "tails_folded": clipped}
    return out


def _categorical(parts: dict[str, pa.ChunkedArray], top: int) -> dict[str, Any]:
    counts: dict[str, dict[str, int]] = {}
    total: dict[str, int] = {}
    for split, col in parts.items():
        vc = pc.value_counts(col.cast(pa.string())).to_pylist() if len(col) else []
        counts[split] = {(MISSING if v["values"] is None else v["values"]): int(v["counts"]) for v in vc}
        for k, n in counts[split].items():
            total[k] = total.get(k, 0) + n
    ranked = sorted(total, key=lambda k: (-total[k], k))[:top]
    values = {s: {k: c.get(k, 0) for k in ranked} | {OTHER: sum(n for k, n in c.items() if k not in ranked)}
              for s, c in counts.items()}
    return {"kind": "categorical", "distinct": len(total), "top": values}


def _numeric_drift(ref: np.ndarray, cur: np.ndarray, bins: int) -> dict[str, Any]:
    ref_ok, cur_ok = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
    cuts = np.linspace(0, 1, bins + 1)[1:-1]
    edges = np.unique(np.quantile(ref_ok, cuts)) if len(ref_ok) else np.array([])

    def counts(v: np.ndarray, ok: np.ndarray) -> np.ndarray:
        # bins (-inf, e0], (e0, e1], ..., (e_last, inf), then one bin for missing values
        return np.append(np.bincount(np.searchsorted(edges, ok, "left"), minlength=len(edges) + 1),
                         len(v) - len(ok))

    d = ks_statistic(ref_ok, cur_ok)
    return {"psi": psi(counts(ref, ref_ok), counts(cur, cur_ok)), "ks": _num(d),
            "ks_pvalue": _num(ks_pvalue(d, len(ref_ok), len(cur_ok))),
            "bin_edges": [float(e) for e in edges]}


def _categorical_drift(ref: pa.ChunkedArray, cur: pa.ChunkedArray, top: int) -> dict[str, Any]:
    from scipy.stats import chi2_contingency

    def counts(col: pa.ChunkedArray) -> dict[str, int]:
        vc = pc.value_counts(col.cast(pa.string())).to_pylist() if len(col) else []
        return {(MISSING if v["values"] is None else v["values"]): int(v["counts"]) for v in vc}

    r, c = counts(ref), counts(cur)
    keep = sorted(r, key=lambda k: (-r[k], k))[:top]
    table = np.array([[r.get(k, 0) for k in keep] + [sum(n for k, n in r.items() if k not in keep)],
                      [c.get(k, 0) for k in keep] + [sum(n for k, n in c.items() if k not in keep)]])
    out: dict[str, Any] = {"psi": psi(table[0], table[1]), "categories": [*keep, OTHER]}
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] > 1 and table[0].sum() and table[1].sum():
        chi2, p, _, _ = chi2_contingency(table, correction=False)
        out.update(chi2=float(chi2), chi2_pvalue=float(p), cramers_v=math.sqrt(chi2 / table.sum()))
    else:
        out.update(chi2=None, chi2_pvalue=None, cramers_v=0.0)
    return out


def profile(table: pa.Table, *, label: str, features: list[str] | None = None,
            split_column: str = "split", bins: int = 20, psi_bins: int = 10, top: int = 10,
            psi_threshold: float = 0.2, ks_threshold: float = 0.1, v_threshold: float = 0.1,
            alpha: float = 0.01) -> dict[str, Any]:
    """Profile ``table`` per split (see the module docstring for what and how).

    ``features`` are the columns to profile for distributions and drift (default: every column
    but the label and the split); missingness covers every column.
    """
    for column in (split_column, label):
        if column not in table.column_names:
            raise EvenflowError(f"the training set has no column {column!r}", field=column,
                                fix=f"its columns: {', '.join(table.column_names)}")
    splits = _splits(table, split_column)
    parts = {s: table.filter(pc.equal(table.column(split_column), s)) for s in splits}
    columns = [c for c in table.column_names if c != split_column]
    missing = {c: {s: _missing_share(p.column(c)) for s, p in parts.items()} for c in columns}
    wanted = features if features is not None else [c for c in columns if c != label]
    result: dict[str, Any] = {
        "splits": {s: p.num_rows for s, p in parts.items()}, "label": label, "missing": missing,
        "balance": _balance({s: p.column(label) for s, p in parts.items()}),
        "features": {}, "drift": {}, "skipped": {},
        "thresholds": {"psi": psi_threshold, "ks": ks_threshold, "cramers_v": v_threshold,
                       "alpha": alpha, "reference": "train", "current": "test"}}
    for name in wanted:
        if name not in table.column_names:
            raise EvenflowError(f"feature {name!r} is not a column of the training set", field=name,
                                fix=f"its columns: {', '.join(table.column_names)}")
        kind = table.schema.field(name).type
        if _is_numeric(kind):
            result["features"][name] = _numeric({s: _floats(p.column(name)) for s, p in parts.items()}, bins)
        elif _is_categorical(kind):
            result["features"][name] = _categorical({s: p.column(name) for s, p in parts.items()}, top)
        else:
            result["skipped"][name] = f"type {kind} is neither numeric nor categorical"
            continue
        if "train" not in parts or "test" not in parts:
            continue
        if _is_numeric(kind):
            drift = _numeric_drift(_floats(parts["train"].column(name)), _floats(parts["test"].column(name)),
                                   psi_bins)
            by_test = (drift["ks"] or 0) >= ks_threshold and (drift["ks_pvalue"] or 1) < alpha
        else:
            drift = _categorical_drift(parts["train"].column(name), parts["test"].column(name), top)
            by_test = drift["cramers_v"] >= v_threshold and (drift["chi2_pvalue"] or 1) < alpha
        drift["kind"] = result["features"][name]["kind"]
        # a shift in how often a feature is missing is drift too (PSI has a missing bin): show it
        drift["missing_train"] = missing[name]["train"]["fraction"]
        drift["missing_test"] = missing[name]["test"]["fraction"]
        drift["flagged"] = bool(drift["psi"] >= psi_threshold or by_test)
        result["drift"][name] = drift
    return result
