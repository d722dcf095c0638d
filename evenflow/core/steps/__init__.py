"""Cleaning steps. Each has one meaning and three verbs, the same for every step:

- ``fit(table)`` learns its parameters from the training split (an Arrow table) and returns a
  frozen, JSON-able artifact (empty for steps that learn nothing);
- ``sql(artifact)`` gives the batch form: output column -> SQL expression over the input row;
- ``transform_one(record, artifact)`` gives the one-record form used by the stream engine.

Both forms give the same value for the same record and artifact; the contract tests check it.

>>> import pyarrow as pa
>>> step = Impute(column="amount", strategy="median")
>>> art = step.fit(pa.table({"amount": [1.0, None, 3.0, 10.0]}))
>>> art
{'value': 3.0}
>>> step.transform_one({"amount": None}, art)
{'amount': 3.0}
>>> step.sql(art)
{'amount': 'COALESCE("amount", CAST(3.0 AS DOUBLE))'}
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from evenflow.core.steps.base import Artifact, Dedup, RecordRejected, _Step, projection, select_list
from evenflow.core.steps.cleaning import Clip, Encode, Impute, Standardize
from evenflow.core.steps.quality import FrequencyEncode, OneHot, Outliers, Resample, Scale, TargetEncode

ColumnStep = Impute | Clip | Standardize | Encode | Outliers | Scale | OneHot | FrequencyEncode | TargetEncode
from evenflow.verify.neardup import NearDedup  # noqa: E402  (near-duplicate text dedup)

StepType = Annotated[Dedup | NearDedup | Impute | Clip | Standardize | Encode | Outliers | Scale | OneHot
                     | FrequencyEncode | TargetEncode, Field(discriminator="kind")]

__all__ = ["Artifact", "Clip", "ColumnStep", "Dedup", "Encode", "FrequencyEncode", "Impute",
           "NearDedup", "OneHot", "Outliers", "RecordRejected", "Resample", "Scale", "Standardize",
           "StepType", "TargetEncode", "_Step", "projection", "select_list"]
