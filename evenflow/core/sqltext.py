'''Quoting for the SQL text the engines generate: one rule for identifiers, one for literals.

>>> ident('my "col"'), literal("it's"), literal(None), literal(True), literal(2), literal(0.5)
('"my ""col"""', "'it''s'", 'NULL', 'TRUE', '2', '0.5')
'''

from __future__ import annotations

from typing import Any


def ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def literal(value: Any) -> str:
    """A SQL literal: NULL, TRUE/FALSE, a number, or quoted text for anything else."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"
