"""User-facing errors.

Every error a user can cause is an :class:`EvenflowError`. It names where the problem is (file,
record, field) and says how to fix it. The CLI prints these without a traceback.
"""

from __future__ import annotations


class EvenflowError(Exception):
    """A problem the user can fix: bad definition, bad input, missing dependency.

    >>> str(EvenflowError("amount must be >= 0", file="tx.csv", record=7, field="amount",
    ...                   fix="drop negative amounts upstream"))
    'tx.csv: record 7: field amount: amount must be >= 0\\n  fix: drop negative amounts upstream'
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        record: int | str | None = None,
        field: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.record = record
        self.field = field
        self.fix = fix
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.file:
            where.append(str(self.file))
        if self.record is not None:
            where.append(f"record {self.record}")
        if self.field:
            where.append(f"field {self.field}")
        head = ": ".join([*where, self.message])
        return head + (f"\n  fix: {self.fix}" if self.fix else "")


class DefinitionError(EvenflowError):
    """The pipeline definition (Python or YAML) is invalid."""


class SourceError(EvenflowError):
    """A source cannot be read or does not match its declaration."""


class MissingExtraError(EvenflowError):
    """An optional dependency is not installed."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"this feature needs the optional package {module!r}",
            fix=f"pip install 'evenflow[{extra}]'",
        )
