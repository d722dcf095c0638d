"""Findings: the one result type every verification check returns.

A check (a contract, a quality step, a leakage check) reports a :class:`Finding`. Error-level
findings that the user has not accepted by name stop a build with :class:`FindingsError`, whose
message lists each failing check with what was observed against the bound and how to accept it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal

from evenflow.errors import EvenflowError

Severity = Literal["error", "warn", "info"]
SEVERITIES: tuple[str, ...] = ("error", "warn", "info")
MAX_EVIDENCE = 20


def _jsonable(value: Any) -> Any:
    """Make ``value`` JSON-safe: datetimes as ISO text, numpy scalars as Python, NaN as None."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    item = getattr(value, "item", None)  # numpy / pyarrow scalars
    if callable(item):
        try:
            return _jsonable(item())
        except (TypeError, ValueError):
            pass
    return str(value)


@dataclass
class Finding:
    """The outcome of one check.

    ``evidence`` holds at most 20 example rows (longer lists are cut); ``rows`` holds the ids of
    every offending row, however many.

    >>> f = Finding("target_leakage", "error", False, "feature x predicts the label",
    ...             observed=0.999, bound=0.99, rows=[3, 1])
    >>> f.blocking, f.to_dict()["observed"]
    (True, 0.999)
    >>> Finding("x", "warn", False, "m").blocking
    False
    """

    check: str
    severity: Severity
    passed: bool
    message: str
    observed: Any = None
    bound: Any = None
    evidence: list[dict[str, Any]] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    accepted: bool = False

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")
        if len(self.evidence) > MAX_EVIDENCE:
            self.evidence = list(self.evidence[:MAX_EVIDENCE])

    @property
    def blocking(self) -> bool:
        """True when this finding fails a build: an error that failed and was not accepted."""
        return self.severity == "error" and not self.passed and not self.accepted

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (the shape written to ``checks.json``)."""
        return {
            "check": self.check,
            "severity": self.severity,
            "passed": self.passed,
            "message": self.message,
            "observed": _jsonable(self.observed),
            "bound": _jsonable(self.bound),
            "evidence": [_jsonable(e) for e in self.evidence],
            "rows": [int(r) for r in self.rows],
            "accepted": self.accepted,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        """Inverse of :meth:`to_dict` (values stay in their JSON form)."""
        return cls(**{k: data[k] for k in data if k in cls.__dataclass_fields__})


class FindingsError(EvenflowError):
    """Error-level findings failed and were not accepted by name.

    >>> err = FindingsError([Finding("temporal_overlap", "error", False, "test before train",
    ...                              observed=3, bound=0)])
    >>> print(err)  # doctest: +NORMALIZE_WHITESPACE
    1 error-level check failed:
      - temporal_overlap: test before train (observed 3, bound 0)
      fix: fix the data, or accept by name: `accept: [temporal_overlap]` in the training_set
      YAML or `accept=['temporal_overlap']` in Python
    """

    def __init__(self, findings: Sequence[Finding]) -> None:
        self.findings = list(findings)
        names = [f.check for f in self.findings]
        lines = [f"{len(names)} error-level check{'s' if len(names) != 1 else ''} failed:"]
        for f in self.findings:
            lines.append(f"  - {f.check}: {f.message} (observed {f.observed}, bound {f.bound})")
        fix = (
            "fix the data, or accept by name: "
            f"`accept: [{', '.join(names)}]` in the training_set YAML "
            f"or `accept={names!r}` in Python"
        )
        super().__init__("\n".join(lines), fix=fix)


def apply_accept(findings: Iterable[Finding], accept: Iterable[str]) -> list[Finding]:
    """Mark findings whose check name is in ``accept`` as accepted; return them all.

    >>> [f.accepted for f in apply_accept([Finding("a", "error", False, "m")], ["a"])]
    [True]
    """
    names = set(accept)
    out = []
    for f in findings:
        if f.check in names and not f.passed:
            f.accepted = True
        out.append(f)
    return out


def raise_for_findings(findings: Iterable[Finding]) -> None:
    """Raise :class:`FindingsError` if any finding is blocking.

    >>> raise_for_findings([Finding("a", "error", True, "ok")])
    """
    blocking = [f for f in findings if f.blocking]
    if blocking:
        raise FindingsError(blocking)


def findings_json(findings: Iterable[Finding]) -> str:
    """Serialize findings as the ``checks.json`` document."""
    items = [f.to_dict() for f in findings]
    summary = {
        "total": len(items),
        "failed": sum(1 for i in items if not i["passed"]),
        "errors": sum(1 for i in items if not i["passed"] and i["severity"] == "error"),
        "accepted": sum(1 for i in items if i["accepted"]),
    }
    return json.dumps({"summary": summary, "findings": items}, indent=2, sort_keys=False)
