"""Schema validation of a micro-batch, column by column, with the per-record validator's outcome.

Each field is typed as a column. A value that is not of the plain JSON type (a number for a
float, text in the strict ISO 8601 form for a timestamp, ...) or that breaks a rule sends its
record through ``RecordValidator.check``, so reasons, fields and typed values are exactly those
of ``StreamEngine.process``.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from evenflow.stream.validate import to_micros, valid_text
from evenflow.stream.vector.columns import BIG, Col, is_none, objects, set_value

if TYPE_CHECKING:
    from evenflow.stream.engine import StreamEngine


def _days_from_civil(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    y = y - (m <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * np.where(m > 2, m - 3, m + 9) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


_DIGITS = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
_MONTH_DAYS = np.array([0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


def parse_timestamps(values: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """``YYYY-MM-DD[T ]HH:MM:SS[.fff|.ffffff](Z|±HH:MM)`` text as UTC µs, and which parsed.

    Anything else (another form, a naive value, a datetime object) is left to the per-record
    parser: the second array is False there.
    """
    n = len(values)
    width = 32
    lens = np.fromiter((len(v) if type(v) is str else 0 for v in values), np.int64, n)
    ok = (lens >= 20) & (lens <= width)
    try:
        raw = np.array([v if type(v) is str and len(v) <= width else "" for v in values], f"S{width}")
    except UnicodeEncodeError:
        return np.zeros(n, np.int64), np.zeros(n, bool)
    m = raw.view(np.uint8).reshape(n, width).astype(np.int16)
    digit = m - 48
    ok &= ((digit[:, _DIGITS] >= 0) & (digit[:, _DIGITS] <= 9)).all(axis=1)
    ok &= (m[:, 4] == 45) & (m[:, 7] == 45) & ((m[:, 10] == 84) | (m[:, 10] == 32))
    ok &= (m[:, 13] == 58) & (m[:, 16] == 58)
    # fraction: none, 3 or 6 digits
    frac_len = np.zeros(n, np.int64)
    dot = m[:, 19] == 46
    for k in (3, 6):
        digits_ok = ((digit[:, 20:20 + k] >= 0) & (digit[:, 20:20 + k] <= 9)).all(axis=1)
        after = m[:, 20 + k]
        is_k = dot & digits_ok & ((after == 90) | (after == 43) | (after == 45))
        frac_len = np.where(is_k & (frac_len == 0), k, frac_len)
    ok &= ~dot | (frac_len > 0)
    zone = 19 + np.where(frac_len > 0, frac_len + 1, 0)
    rows = np.arange(n)
    zc = m[rows, zone]
    zulu = zc == 90
    offset = (zc == 43) | (zc == 45)
    last = width - 1
    at = [np.minimum(zone + j, last) for j in range(6)]
    off_ok = offset & (m[rows, at[3]] == 58)
    for j in (1, 2, 4, 5):
        dj = digit[rows, at[j]]
        off_ok &= (dj >= 0) & (dj <= 9)
    ok &= np.where(zulu, lens == zone + 1, off_ok & (lens == zone + 6))
    num = digit.clip(0, 9)

    def number(*cols: int | np.ndarray) -> np.ndarray:
        out = np.zeros(n, np.int64)
        for c in cols:
            out = out * 10 + (num[:, c] if isinstance(c, int) else num[rows, c])
        return out

    year, month, day = number(0, 1, 2, 3), number(5, 6), number(8, 9)
    hour, minute, second = number(11, 12), number(14, 15), number(17, 18)
    frac = np.where(frac_len == 3, number(20, 21, 22) * 1000,
                    np.where(frac_len == 6, number(20, 21, 22, 23, 24, 25), 0))
    oh, om = number(at[1], at[2]), number(at[4], at[5])
    sign = np.where(zc == 45, -1, 1)
    off = np.where(offset, sign * (oh * 3600 + om * 60), 0)
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    mdays = _MONTH_DAYS[month.clip(0, 12)] - ((month == 2) & ~leap)
    ok &= (year >= 2) & (year <= 9998) & (month >= 1) & (month <= 12) & (day >= 1) & (day <= mdays)
    ok &= (hour <= 23) & (minute <= 59) & (second <= 59) & (oh <= 23) & (om <= 59)
    days = _days_from_civil(year, month.clip(1, 12), day)
    micros = (days * 86400 + hour * 3600 + minute * 60 + second - off) * 1_000_000 + frac
    return micros, ok


def _transpose(records: list[dict[str, Any]], fields: list[Any]) -> list[Sequence[Any]]:
    """One sequence of raw values per field (None where a record lacks the field)."""
    names = [f[0] for f in fields]
    if not records or not names:
        return [[None] * len(records) for _ in names]
    try:
        rows = list(map(operator.itemgetter(*names), records))
    except KeyError:
        return [[r.get(name) for r in records] for name in names]
    return [rows] if len(names) == 1 else list(zip(*rows, strict=True))


def validate(engine: StreamEngine, records: list[dict[str, Any]]) -> tuple[dict[str, Col], np.ndarray,
                                                                             dict[int, tuple[str, str, str]]]:
    """Typed columns, which records are valid, and the failure of each invalid one."""
    n = len(records)
    schema = engine.validator.schema
    suspect = np.zeros(n, bool)
    cols: dict[str, Col] = {}
    fields = engine.validator._fields
    for (name, kind, nullable, _convert, _checks), raw in zip(fields, _transpose(records, fields),
                                                             strict=True):
        spec = schema.fields[name]
        boxed = objects(raw)
        null = is_none(boxed)
        if not nullable:
            suspect |= null
        types = set(map(type, raw))
        if kind == "float":
            if types <= {float, int, type(None)}:
                data = np.array([0.0 if v is None else v for v in raw], np.float64) \
                    if null.any() else np.array(raw, np.float64)
                bad = np.zeros(n, bool)
            else:
                bad = np.fromiter((v is not None and type(v) is not float and type(v) is not int
                                   for v in raw), bool, n)
                data = np.array([v if type(v) is float or type(v) is int else 0.0 for v in raw],
                                np.float64)
            bad |= np.isnan(data)
            col = Col("float", data, null)
        elif kind == "int":
            fine = [type(v) is int and -BIG < v < BIG for v in raw]
            bad = ~np.fromiter(fine, bool, n) & ~null
            col = Col("int", np.array([v if f else 0 for v, f in zip(raw, fine, strict=True)],
                                      np.int64), null)
        elif kind == "bool":
            bad = np.fromiter((v is not None and type(v) is not bool for v in raw), bool, n)
            col = Col("bool", np.array([v is True for v in raw], bool), null)
        elif kind == "timestamp":
            micros, parsed = parse_timestamps(raw)
            if datetime in types:        # aware datetimes from an in-process producer
                for i in [i for i, v in enumerate(raw) if type(v) is datetime and v.tzinfo]:
                    micros[i], parsed[i] = to_micros(raw[i]), True
            bad = ~parsed & ~null
            col = Col("ts", micros, null)
        else:
            bad = np.fromiter((v is not None and (type(v) is not str or not valid_text(v))
                               for v in raw), bool, n)
            col = Col("obj", boxed)
        if kind in ("float", "int"):
            values = col.data
            for op, test in (("ge", np.less), ("gt", np.less_equal), ("le", np.greater),
                             ("lt", np.greater_equal)):
                bound = getattr(spec, op, None)
                if bound is not None:
                    bad |= test(values, bound) & ~null
        if spec.allowed:
            allowed = set(spec.allowed)
            atoms = (str, int, float, bool)
            bad |= np.fromiter((v is not None and (type(v) not in atoms or v not in allowed)
                                for v in raw), bool, n)
        regex = getattr(spec, "regex", None)
        if regex:
            fullmatch = re.compile(regex).fullmatch
            bad |= np.fromiter((type(v) is str and fullmatch(v) is None for v in raw), bool, n)
        suspect |= bad
        cols[name] = col
    failures: dict[int, tuple[str, str, str]] = {}
    valid = np.ones(n, bool)
    for i in np.flatnonzero(suspect).tolist():
        typed, failure = engine.validator.check(records[i])
        if typed is None:
            assert failure is not None
            failures[i] = failure
            valid[i] = False
            continue
        for name, value in typed.items():
            set_value(cols[name], i, value)
    return cols, valid, failures
