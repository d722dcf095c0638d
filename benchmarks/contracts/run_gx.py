"""Great Expectations (pandas): the 20 rules as one expectation suite, one validation run.

An ephemeral context, a pandas dataframe asset, one batch of the whole frame. Cross-column rules
use ``row_condition`` (the pandas condition parser), since GX has no row-expression expectation
for pandas. Runs in ``benchmarks/.venvs/gx``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
from child import main


def expectation(r: dict[str, Any]) -> Any:
    kind, meta = r["kind"], {"meta": {"rule": r["name"]}}
    if kind == "unique" and len(r["columns"]) == 1:
        return gxe.ExpectColumnValuesToBeUnique(column=r["columns"][0], **meta)
    if kind == "unique":
        return gxe.ExpectCompoundColumnsToBeUnique(column_list=r["columns"], **meta)
    if kind == "allowed":
        return gxe.ExpectColumnValuesToBeInSet(column=r["column"], value_set=r["values"], **meta)
    if kind == "matches":  # GX searches; anchoring makes it a full match
        return gxe.ExpectColumnValuesToMatchRegex(column=r["column"], regex=f"^(?:{r['pattern']})$", **meta)
    if kind == "null_fraction":
        return gxe.ExpectColumnValuesToNotBeNull(column=r["column"], mostly=1 - r["le"], **meta)
    if kind == "row_count":
        return gxe.ExpectTableRowCountToBeBetween(min_value=r.get("ge"), max_value=r.get("le"), **meta)
    if kind == "monotonic":
        return gxe.ExpectColumnValuesToBeIncreasing(column=r["column"], strictly=r["strict"], **meta)
    if kind == "rule":
        condition = {}
        if "unless" in r:
            other, value = r["unless"]
            # rows where the exception does not apply; a null `other` passes, as in SQL
            condition = {"row_condition": f'{other}.notnull() & ({other} != "{value}")',
                         "condition_parser": "pandas"}
        return gxe.ExpectColumnValuesToBeBetween(column=r["column"], min_value=r.get("min"),
                                                 max_value=r.get("max"), **condition, **meta)
    assert kind == "freshness"
    oldest = pd.Timestamp(r["reference"]) - pd.Timedelta(days=r["within_days"])
    return gxe.ExpectColumnMaxToBeBetween(column=r["column"], min_value=oldest, **meta)


def validate(df: pd.DataFrame, rules: list[dict[str, Any]]) -> list[str]:
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas("bench").add_dataframe_asset("tx")
    batch_definition = asset.add_batch_definition_whole_dataframe("all")
    suite = context.suites.add(gx.ExpectationSuite(name="contracts"))
    for r in rules:
        suite.add_expectation(expectation(r))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="run", data=batch_definition, suite=suite))
    result = definition.run(batch_parameters={"dataframe": df}, result_format="BASIC")
    failed = []
    for res in result.results:
        if res.exception_info and res.exception_info.get("raised_exception"):
            raise RuntimeError(f"{res.expectation_config.meta['rule']}: {res.exception_info}")
        if not res.success:
            failed.append(res.expectation_config.meta["rule"])
    return failed


if __name__ == "__main__":
    logging.disable(logging.WARNING)
    main(lambda path: pd.read_parquet(path), validate, version=f"great_expectations {gx.__version__}, pandas {pd.__version__}")
