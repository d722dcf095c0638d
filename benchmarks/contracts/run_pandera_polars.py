"""Pandera, Polars backend: the 20 rules as a ``pandera.polars.DataFrameSchema``, ``lazy=True``.

Built-in checks where Pandera has them (``isin``, ``str_matches``, ``unique``); the others are
Polars expressions over ``data.lazyframe``. Runs in ``benchmarks/.venvs/pandera``.
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import pandera.polars as pa
import polars as pl
from child import main


def _monotonic(strict: bool) -> Any:
    def check(data: Any) -> Any:
        x = pl.col(data.key)
        prev = x.shift(1)  # file order; the first row has no previous value and passes
        ok = (x > prev) if strict else (x >= prev)
        return data.lazyframe.select(ok | prev.is_null() | x.is_null())
    return check


def _rule(rule: dict[str, Any]) -> Any:
    def check(data: Any) -> Any:
        x = pl.col(rule["column"])
        inside = pl.lit(True)
        if "min" in rule:
            inside = inside & (x >= rule["min"])
        if "max" in rule:
            inside = inside & (x <= rule["max"])
        ok = x.is_null() | inside  # a null operand passes, as a SQL CHECK constraint does
        if "unless" in rule:
            other, value = rule["unless"]
            ok = ok | (pl.col(other) == value).fill_null(True)
        return data.lazyframe.select(ok.alias("ok"))
    return check


def validate(df: pl.DataFrame, rules: list[dict[str, Any]]) -> list[str]:
    checks: dict[str, list[Any]] = {c: [] for c in df.columns}
    uniques: dict[str, str] = {}
    frame_checks, compound = [], []
    for r in rules:
        kind, name = r["kind"], r["name"]
        if kind == "unique" and len(r["columns"]) == 1:
            uniques[r["columns"][0]] = name
        elif kind == "unique":
            compound.append(r)
        elif kind == "allowed":
            checks[r["column"]].append(pa.Check.isin(r["values"], name=name))
        elif kind == "matches":
            checks[r["column"]].append(pa.Check.str_matches(f"^(?:{r['pattern']})$", name=name))
        elif kind == "null_fraction":
            checks[r["column"]].append(pa.Check(
                lambda data, le=r["le"]: data.lazyframe.select(pl.col(data.key).is_null().mean() <= le),
                name=name, ignore_na=False))
        elif kind == "row_count":
            frame_checks.append(pa.Check(
                lambda data, ge=r.get("ge"), le=r.get("le"): data.lazyframe.select(
                    (pl.len() >= (ge if ge is not None else 0)) & (pl.len() <= (le if le is not None else 2**62))),
                name=name))
        elif kind == "monotonic":
            checks[r["column"]].append(pa.Check(_monotonic(r["strict"]), name=name, ignore_na=False))
        elif kind == "rule":
            frame_checks.append(pa.Check(_rule(r), name=name, ignore_na=False))
        elif kind == "freshness":
            oldest = datetime.fromisoformat(r["reference"]) - timedelta(days=r["within_days"])
            checks[r["column"]].append(pa.Check(
                lambda data, o=oldest: data.lazyframe.select(pl.col(data.key).max() >= o), name=name))
    columns = {c: pa.Column(checks=checks[c], nullable=True, unique=c in uniques) for c in df.columns}
    schema = pa.DataFrameSchema(columns, checks=frame_checks,
                                unique=compound[0]["columns"] if compound else None)
    try:
        schema.validate(df, lazy=True)
        return []
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        failed = set()
        for check, column in zip(cases["check"].to_list(), cases["column"].to_list(), strict=True):
            if check == "field_uniqueness":
                failed.add(uniques.get(column, check))
            elif check == "multiple_fields_uniqueness":
                failed.add(compound[0]["name"])
            else:
                failed.add(_name(check, column, rules))
        return sorted(failed)


def _name(check: str, column: str | None, rules: list[dict[str, Any]]) -> str:
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

    main(lambda path: pl.read_parquet(path), validate,
         version=f"pandera {pandera.__version__}, polars {pl.__version__}")
