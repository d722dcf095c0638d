"""Pandera, pandas backend: the 20 rules as a ``DataFrameSchema`` validated with ``lazy=True``.

Built-in checks where Pandera has them (``isin``, ``str_matches``, ``unique``), vectorized
custom checks otherwise. Runs in ``benchmarks/.venvs/pandera``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import pandas as pd
import pandera.pandas as pa
from child import main


def _monotonic(strict: bool) -> Any:
    def check(s: pd.Series) -> pd.Series:
        prev = s.shift()  # file order; the first row has no previous value and passes
        ok = (s > prev) if strict else (s >= prev)
        return ok | prev.isna() | s.isna()
    return check


def _rule(rule: dict[str, Any]) -> Any:
    col = rule["column"]

    def check(df: pd.DataFrame) -> pd.Series:
        x = df[col]
        ok = x.isna()  # a null operand passes, as a SQL CHECK constraint does
        inside = pd.Series(True, index=df.index)
        if "min" in rule:
            inside &= x >= rule["min"]
        if "max" in rule:
            inside &= x <= rule["max"]
        ok |= inside
        if "unless" in rule:
            other, value = rule["unless"]
            ok |= (df[other] == value).fillna(False) | df[other].isna()
        return ok
    return check


def validate(df: pd.DataFrame, rules: list[dict[str, Any]]) -> list[str]:
    checks: dict[str, list[Any]] = {c: [] for c in df.columns}
    uniques: dict[str, bool] = {}
    frame_checks, compound = [], []
    for r in rules:
        kind, name = r["kind"], r["name"]
        if kind == "unique" and len(r["columns"]) == 1:
            uniques[r["columns"][0]] = True
        elif kind == "unique":
            compound.append(r)
        elif kind == "allowed":
            checks[r["column"]].append(pa.Check.isin(r["values"], name=name))
        elif kind == "matches":
            checks[r["column"]].append(pa.Check.str_matches(f"^(?:{r['pattern']})$", name=name))
        elif kind == "null_fraction":
            checks[r["column"]].append(pa.Check(lambda s, le=r["le"]: bool(s.isna().mean() <= le),
                                                name=name, ignore_na=False))
        elif kind == "row_count":
            frame_checks.append(pa.Check(lambda d, ge=r.get("ge"), le=r.get("le"):
                                         (ge is None or len(d) >= ge) and (le is None or len(d) <= le),
                                         name=name))
        elif kind == "monotonic":
            checks[r["column"]].append(pa.Check(_monotonic(r["strict"]), name=name, ignore_na=False))
        elif kind == "rule":
            frame_checks.append(pa.Check(_rule(r), name=name, ignore_na=False))
        elif kind == "freshness":
            oldest = pd.Timestamp(r["reference"]) - pd.Timedelta(days=r["within_days"])
            checks[r["column"]].append(pa.Check(lambda s, o=oldest: bool(s.max() >= o), name=name))
    names = {c: r["name"] for r in rules if r["kind"] == "unique" for c in r["columns"]
             if len(r["columns"]) == 1}
    columns = {c: pa.Column(checks=checks[c], nullable=True, unique=uniques.get(c, False))
               for c in df.columns}
    schema = pa.DataFrameSchema(columns, checks=frame_checks,
                                unique=compound[0]["columns"] if compound else None,
                                report_duplicates="all")
    try:
        schema.validate(df, lazy=True)
        return []
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        failed = set()
        for check, column in zip(cases["check"], cases["column"], strict=True):
            check = str(check)
            if check in ("field_uniqueness", "multiple_fields_uniqueness"):
                failed.add(names.get(str(column), compound[0]["name"] if compound else check)
                           if check == "field_uniqueness" else compound[0]["name"])
            else:
                failed.add(_name(check, str(column), rules))
        return sorted(failed)


def _name(check: str, column: str, rules: list[dict[str, Any]]) -> str:
    """Failure cases name built-in checks by their text (``isin([...])``): map back to the rule."""
    for r in rules:
        if r["name"] == check:
            return check
    for r in rules:
        if r.get("column") == column and r["kind"] in ("allowed", "matches") and \
                check.startswith("isin" if r["kind"] == "allowed" else "str_matches"):
            return r["name"]
    return check


if __name__ == "__main__":
    import pandera

    main(lambda path: pd.read_parquet(path), validate,
         version=f"pandera {pandera.__version__}, pandas {pd.__version__}")
