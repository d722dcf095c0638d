"""evenflow: one definition of a dataset, for training sets and for serving.

>>> import evenflow as ef
>>> ef.count(window="1h").name
'count_1h'
"""

from evenflow.batch.retrieval import features_at
from evenflow.batch.training import TrainingSet, training_set
from evenflow.core import source
from evenflow.core.contracts import (
    ContractError,
    allowed,
    freshness,
    matches,
    monotonic,
    null_fraction,
    row_count,
    rule,
    unique,
)
from evenflow.core.features import (
    Aggregate,
    Derived,
    FeatureSet,
    count,
    derive,
    distinct,
    first,
    last,
    max_,
    mean,
    min_,
    since_last,
    std,
    sum_,
    var,
)
from evenflow.core.pipeline import Output, Pipeline, TrainingSetSpec
from evenflow.core.schema import Bool, Float, Int, Schema, String, Timestamp
from evenflow.core.split import GroupSplit, RandomSplit, TimeSplit
from evenflow.core.steps import (
    Clip,
    Dedup,
    Encode,
    FrequencyEncode,
    Impute,
    OneHot,
    Outliers,
    Resample,
    Scale,
    Standardize,
    TargetEncode,
)
from evenflow.errors import DefinitionError, EvenflowError, SourceError
from evenflow.stream.engine import StreamEngine
from evenflow.verify.findings import Finding, FindingsError
from evenflow.verify.neardup import NearDedup, near_duplicates

sum = sum_  # noqa: A001 - the user-facing name is ef.sum
min = min_  # noqa: A001
max = max_  # noqa: A001

__version__ = "0.1.0"

__all__ = [
    "Aggregate",
    "Bool",
    "Clip",
    "ContractError",
    "Dedup",
    "DefinitionError",
    "Derived",
    "Encode",
    "EvenflowError",
    "FeatureSet",
    "Finding",
    "FindingsError",
    "Float",
    "FrequencyEncode",
    "GroupSplit",
    "Impute",
    "Int",
    "NearDedup",
    "OneHot",
    "Outliers",
    "Output",
    "Pipeline",
    "RandomSplit",
    "Resample",
    "Scale",
    "Schema",
    "SourceError",
    "Standardize",
    "StreamEngine",
    "String",
    "TargetEncode",
    "TimeSplit",
    "Timestamp",
    "TrainingSet",
    "TrainingSetSpec",
    "allowed",
    "count",
    "derive",
    "distinct",
    "features_at",
    "first",
    "freshness",
    "last",
    "matches",
    "max",
    "mean",
    "min",
    "monotonic",
    "near_duplicates",
    "null_fraction",
    "row_count",
    "rule",
    "since_last",
    "source",
    "std",
    "sum",
    "training_set",
    "unique",
    "var",
]
