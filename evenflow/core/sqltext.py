'''Quoting for the SQL text the engines generate: one rule for identifiers, one for literals.

>>> ident('my "col"'), literal("it's"), literal(None), literal(True), literal(2), literal(0.5)
('"my ""col"""', "'it''s'", 'NULL', 'TRUE', '2', 'CAST(0.5 AS DOUBLE)')
'''

from __future__ import annotations

import math
from typing import Any


def ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def literal(value: Any) -> str:
    """A SQL literal: NULL, TRUE/FALSE, a number, or quoted text for anything else.

    A float is a DOUBLE. A bare ``3.0`` is an exact DECIMAL in SQL: ``COALESCE(int_col, 3.0)``
    would make a whole integer column DECIMAL (``decimal.Decimal`` in Python), which the stream
    engine's values never are. NaN and the infinities are written as text.

    >>> literal(3.0), literal(float("nan")), literal(float("-inf"))
    ('CAST(3.0 AS DOUBLE)', "CAST('nan' AS DOUBLE)", "CAST('-inf' AS DOUBLE)")
    """
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return f"CAST({value!r} AS DOUBLE)" if math.isfinite(value) else f"CAST('{value!r}' AS DOUBLE)"
    if isinstance(value, int):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"
