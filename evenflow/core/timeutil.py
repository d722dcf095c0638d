"""Durations and timestamps: the one place where time is parsed.

Timestamps are UTC with microsecond precision. Durations are written like ``"90s"``, ``"15m"``,
``"1h"``, ``"7d"`` or ``"2w"`` and held as integer microseconds, so window bounds are exact.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from evenflow.errors import DefinitionError

_UNITS_US = {
    "us": 1,
    "ms": 1_000,
    "s": 1_000_000,
    "m": 60_000_000,
    "h": 3_600_000_000,
    "d": 86_400_000_000,
    "w": 7 * 86_400_000_000,
}
_DURATION = re.compile(r"^\s*(\d+)\s*(us|ms|s|m|h|d|w)\s*$")


def parse_duration(text: str | int | timedelta) -> int:
    """Return a duration in microseconds.

    >>> parse_duration("1h")
    3600000000
    >>> parse_duration("7d") == 7 * 86_400 * 1_000_000
    True
    """
    if isinstance(text, timedelta):
        return int(text / timedelta(microseconds=1))
    if isinstance(text, int):
        return text
    match = _DURATION.match(str(text))
    if not match:
        raise DefinitionError(
            f"cannot read duration {text!r}",
            fix='write a whole number and a unit: "500ms", "30s", "15m", "1h", "7d" or "2w"',
        )
    value, unit = match.groups()
    if int(value) <= 0:
        raise DefinitionError(f"duration {text!r} must be positive", fix='for example "1h"')
    return int(value) * _UNITS_US[unit]


def format_duration(us: int) -> str:
    """Write microseconds back in the largest exact unit.

    >>> format_duration(3_600_000_000), format_duration(90_000_000)
    ('1h', '90s')
    """
    for unit in ("d", "h", "m", "s", "ms"):
        size = _UNITS_US[unit]
        if us % size == 0:
            return f"{us // size}{unit}"
    return f"{us}us"


def parse_instant(text: str | datetime) -> datetime:
    """Parse a point in time given in a definition (a split date, say) as UTC.

    A date or a time without a zone is taken as UTC here, because it is written by the user in the
    definition, not read from data.

    >>> parse_instant("2026-03-01").isoformat()
    '2026-03-01T00:00:00+00:00'
    """
    if isinstance(text, datetime):
        value = text
    else:
        try:
            value = datetime.fromisoformat(str(text))
        except ValueError as exc:
            raise DefinitionError(
                f"cannot read time {text!r}", fix='use ISO 8601, e.g. "2026-03-01T00:00:00Z"'
            ) from exc
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def to_micros(value: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime."""
    delta = value.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
