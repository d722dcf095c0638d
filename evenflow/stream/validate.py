"""Schema validation of one record, with the same outcome as the batch engine's SQL pass.

A record arrives as JSON values (str, int, float, bool, None, or nested). Each declared field is
typed the way the batch engine types the same text (``evenflow/quality/validate.py``): integers
must be written as integers, timestamps must be ISO 8601 with a zone, and so on. The first failed
rule, in schema order, is the record's quarantine reason.

>>> from evenflow.core.schema import Schema, Float, String, Timestamp
>>> v = RecordValidator(Schema(card=String(nullable=False), amount=Float(ge=0), ts=Timestamp()),
...                     required={"card", "ts"})
>>> v.check({"card": "c1", "amount": "12.5", "ts": "2026-03-01T12:00:00+01:00"})[0]["amount"]
12.5
>>> v.check({"card": "c1", "amount": -1, "ts": "2026-03-01T12:00:00Z"})[1]
('out_of_range', 'amount', 'amount=-1.0 is below ge=0.0')
>>> v.check({"card": "c1", "ts": "2026-03-01T12:00:00"})[1][0]
'naive_timestamp'
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from evenflow.core.schema import Schema

Failure = tuple[str, str, str]
_MISSING = object()

# Mirrors of the SQL pass's patterns (strict ISO 8601; a zone offset after a time of day).
_ISO = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.][0-9]+)?)? ?"
                  r"([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)?)?")
_OFFSET = re.compile(r"[0-9]{2}:[0-9]{2}(:[0-9]{2}([.][0-9]+)?)? ?([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)$")
# A subset of _ISO with a zone offset: one cheap regex instead of _ISO and _OFFSET.
_CANONICAL = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})")
_INT = re.compile(r"[+-]?[0-9]+")
# DuckDB's TRY_CAST(text AS BOOLEAN): these words in any case, no surrounding blanks.
_BOOL = {"true": True, "t": True, "1": True, "yes": True, "y": True,
         "false": False, "f": False, "0": False, "no": False, "n": False}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def as_text(value: Any) -> str:
    """A JSON value as the text the batch engine reads for it (``json_extract_string``).

    >>> as_text(True), as_text(3), as_text(1.5), as_text({"a": 1})
    ('true', '3', '1.5', '{"a":1}')
    """
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def _parse_iso(text: str, zone: tzinfo | None) -> datetime | None:
    text = text.replace(" Z", "Z").replace("z", "Z")
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    if value.tzinfo is None:
        if zone is None:
            return None
        value = value.replace(tzinfo=zone)
    try:
        return value.astimezone(UTC)
    except OverflowError:       # year 1 or 9999 pushed past the range of a datetime by its offset
        return None


def parse_timestamp(value: Any, tz: str | None = None) -> tuple[datetime | None, str]:
    """A timestamp value as an aware UTC datetime, or ``None`` and the reason code.

    >>> parse_timestamp("2026-03-01 12:00:00+01")[0].isoformat()
    '2026-03-01T11:00:00+00:00'
    >>> parse_timestamp("2026-03-01T12:00:00", "Europe/Paris")[0].hour
    11
    >>> parse_timestamp("yesterday")
    (None, 'unparseable_timestamp')
    >>> parse_timestamp("0001-01-01T00:00:00+01:00")   # before year 1 in UTC
    (None, 'unparseable_timestamp')
    """
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return (value.replace(tzinfo=ZoneInfo(tz)).astimezone(UTC), "") if tz else \
                (None, "naive_timestamp")
        return value.astimezone(UTC), ""
    if type(value) is str and _CANONICAL.fullmatch(value):
        # The common shape: _ISO matches it and it has an offset, so this is the path below.
        parsed = _parse_iso(value, None)
        return (parsed, "") if parsed else (None, "unparseable_timestamp")
    return _parse_text(as_text(value).strip(), tz)


def _parse_text(text: str, tz: str | None) -> tuple[datetime | None, str]:
    if not _ISO.fullmatch(text):
        return None, "unparseable_timestamp"
    if _OFFSET.search(text):
        parsed = _parse_iso(text, None)
        return (parsed, "") if parsed else (None, "unparseable_timestamp")
    parsed = _parse_iso(text, ZoneInfo(tz) if tz else None)
    if parsed is not None:
        return parsed, ""
    if tz is None and _parse_iso(text, UTC) is not None:
        return None, "naive_timestamp"
    return None, "unparseable_timestamp"


def to_micros(value: datetime) -> int:
    """Microseconds since the epoch of an aware datetime.

    >>> to_micros(datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC))
    1000000
    """
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def valid_text(value: str) -> bool:
    """Whether ``value`` is valid Unicode text: JSON's ``"\\ud800"`` decodes to a lone surrogate,
    which no UTF-8 sink (Delta, msgpack, Arrow) can store, and which the batch engine's JSON
    reader refuses.

    >>> valid_text("été"), valid_text("x" + chr(0xD800))
    (True, False)
    """
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = as_text(value).strip()
    return int(text) if _INT.fullmatch(text) else None


def _float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(as_text(value).strip())
    except ValueError:
        return None


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    return _BOOL.get(as_text(value).lower())


class RecordValidator:
    """Types and checks records against ``schema``; ``required`` fields are never nullable."""

    def __init__(self, schema: Schema, *, required: set[str] | frozenset[str] = frozenset()) -> None:
        self.schema = schema
        self._fields = [(name, field.type, field.nullable and name not in required,
                         _converter(field), _constraints(name, field))
                        for name, field in schema.fields.items()]
        self._check = _generate(self._fields)

    def check(self, record: dict[str, Any]) -> tuple[dict[str, Any] | None, Failure | None]:
        """``(typed record, None)`` or ``(None, (reason, field, detail))`` for the first failure."""
        return self._check(record)  # type: ignore[no-any-return]


def _converter(field: Any) -> Callable[[Any], tuple[Any, str]]:
    if field.type == "timestamp":
        tz = field.tz
        return lambda v: parse_timestamp(v, tz)
    simple: Callable[[Any], Any] = {"int": _int, "float": _float, "bool": _bool,
                                    "string": as_text}[field.type]
    if field.type == "float":
        # The common case first: a JSON number needs no parsing.
        return lambda v: (float(v), "") if type(v) in (float, int) else \
            ((typed := simple(v)), "" if typed is not None else "wrong_type")
    if field.type == "string":
        return lambda v: ((v, "") if valid_text(v) else (None, "wrong_type")) if type(v) is str \
            else (as_text(v), "")

    def convert(value: Any) -> tuple[Any, str]:
        typed = simple(value)
        return typed, "" if typed is not None else "wrong_type"
    return convert


def _range_detail(name: str, word: str, bound: float, value: Any) -> str:
    return f"{name}={value!r} is {word}={bound!r}"


def _constraints(name: str, field: Any) -> list[Rule]:
    """The field's rules over a typed, non-null value, in the batch pass's order."""
    rules: list[Rule] = []

    def rule(test: str, scope: dict[str, Any], reason: str, say: Callable[[Any], str]) -> None:
        rules.append(Rule(test, scope, lambda v: (reason, name, say(v))))

    if field.type in ("int", "float"):
        # NaN sorts above every number in DuckDB, so it breaks le/lt bounds there; the same here.
        for op, word, test in (("ge", "below ge", "value < {bound}"), ("gt", "not above gt", "value <= {bound}"),
                               ("le", "above le", "value > {bound} or value != value"),
                               ("lt", "not below lt", "value >= {bound} or value != value")):
            bound = getattr(field, op)
            if bound is not None:
                rule(test, {"bound": bound}, "out_of_range", partial(_range_detail, name, word, bound))
    if field.allowed:
        allowed = set(field.allowed) | {as_text(a) for a in field.allowed}
        rule("value not in {allowed} and as_text(value) not in {allowed}", {"allowed": allowed},
             "not_allowed", lambda v: f"{name}={as_text(v)} is not one of {field.allowed}")
    regex = getattr(field, "regex", None)
    if regex:
        rule("{fullmatch}(value) is None", {"fullmatch": re.compile(regex).fullmatch}, "regex",
             lambda v: f"{name}={v} does not match {regex}")
    return rules


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule of a field: ``test`` is Python over ``value`` (and ``as_text``), with ``{name}``
    for each entry of ``scope``, true when the value fails; ``failure`` gives the quarantine
    reason, field and detail."""

    test: str
    scope: dict[str, Any]
    failure: Callable[[Any], Failure]


def _generate(fields: Sequence[tuple[str, str, bool, Callable[[Any], tuple[Any, str]], list[Rule]]]) -> Any:
    """Straight-line ``check`` for one schema: each field's conversion and rules inline.

    The same steps as the loop this replaces, in the same order: a missing or null value, the
    conversion (with the common JSON types first: a ``str`` that is ASCII, a ``float``, an
    ``int`` for a float field), then each rule. A failure returns at once.
    """
    scope: dict[str, Any] = {"_MISSING": _MISSING, "as_text": as_text}
    lines = ["def check(record):", "    get = record.get", "    typed = {}"]
    for i, (name, kind, nullable, convert, rules) in enumerate(fields):
        scope[f"convert{i}"] = convert
        lines += [f"    raw = get({name!r}, _MISSING)", "    if raw is _MISSING or raw is None:"]
        if nullable:
            lines.append(f"        typed[{name!r}] = None")
        else:
            missing = ("missing_field", name, f"the record has no field {name}")
            lines += ["        if raw is _MISSING:", f"            return None, {missing!r}",
                      f"        return None, {('null', name, f'{name} is null')!r}"]
        lines.append("    else:")
        fast = {"string": "type(raw) is str and raw.isascii()", "float": "type(raw) is float"}.get(kind)
        body = "        "
        if fast is not None:
            lines += [f"        if {fast}:", "            value = raw"]
            if kind == "float":
                lines += ["        elif type(raw) is int:", "            value = float(raw)"]
            lines.append("        else:")
            body = "            "
        reason = "reason" if kind == "timestamp" else "'wrong_type'"
        lines += [f"{body}value, reason = convert{i}(raw)",
                  f"{body}if value is None:",
                  f"{body}    return None, ({reason}, {name!r}, {name + '='!r} + as_text(raw) + "
                  f"{' is not a valid ' + kind!r})"]
        for j, rule in enumerate(rules):
            aliases = {k: f"r{i}_{j}_{k}" for k in rule.scope}
            scope.update({aliases[k]: v for k, v in rule.scope.items()})
            test = rule.test.format(**aliases)
            scope[f"fail{i}_{j}"] = rule.failure
            lines += [f"        if {test}:", f"            return None, fail{i}_{j}(value)"]
        lines.append(f"        typed[{name!r}] = value")
    lines.append("    return typed, None")
    exec(compile("\n".join(lines), "<evenflow record validator>", "exec"), scope)
    return scope["check"]
