"""How label rows are divided into train and test.

>>> TimeSplit(test_from="2026-03-01", gap="7d").gap
'7d'
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from evenflow.core.timeutil import format_duration, parse_duration, parse_instant


class TimeSplit(BaseModel):
    """Train on rows before ``test_from - gap``, test on rows from ``test_from``.

    The gap (embargo) defaults to the longest feature window, so no training window overlaps a
    test window. A train row also needs its label to be known (``label_available_time``) before
    the train cutoff. Rows in the gap, and rows whose label came too late, are held out and
    counted in the dataset card.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["time"] = "time"
    test_from: str
    gap: str | None = None

    @field_validator("test_from")
    @classmethod
    def _instant(cls, value: str) -> str:
        return parse_instant(value).isoformat()

    @field_validator("gap")
    @classmethod
    def _gap(cls, value: str | None) -> str | None:
        return None if value is None else format_duration(parse_duration(value))


class GroupSplit(BaseModel):
    """All rows of an entity land in the same split (a stable hash of the key, seeded)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["group"] = "group"
    by: list[str]
    test_size: float = Field(0.2, gt=0, lt=1)
    seed: int = 0


class RandomSplit(BaseModel):
    """A seeded random split, stratified by the label by default."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["random"] = "random"
    test_size: float = Field(0.2, gt=0, lt=1)
    seed: int = 0
    stratify: bool = True


SplitType = Annotated[TimeSplit | GroupSplit | RandomSplit, Field(discriminator="kind")]
