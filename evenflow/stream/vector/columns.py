"""Columns of a micro-batch: NumPy arrays with a null mask, or object arrays of Python values."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from evenflow.stream.validate import to_micros

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")
#: integers beyond this are left to the per-record path (a float64 holds them inexactly)
BIG = 2**53


class Fallback(Exception):
    """The fast path does not apply; the caller takes the exact per-record path."""


@dataclass
class Col:
    """One column of a micro-batch: ``kind`` is float, int, bool, ts (µs), or obj (Python values).

    Numeric and ts columns hold a NumPy array and a null mask; obj columns a Python list.
    """

    kind: str
    data: Any
    null: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.kind == "obj" and not isinstance(self.data, np.ndarray):
            self.data = objects(self.data)

    @classmethod
    def of_values(cls, values: list[Any]) -> Col:
        """A column from Python values (None = null), typed when every value has one type."""
        kinds = set(map(type, values)) - {type(None)}
        if kinds == {float} or kinds == {float, int}:
            data = np.array(values, np.float64)          # None becomes NaN
            nan = np.isnan(data)
            null = np.zeros(len(values), bool)
            if nan.any():
                where = np.flatnonzero(nan)
                null[where] = [values[i] is None for i in where.tolist()]
                data[null] = 0.0
            return cls("float", data, null)
        null = np.fromiter((v is None for v in values), bool, len(values))
        if kinds == {int} and all(-BIG < v < BIG for v in values if v is not None):
            return cls("int", np.array([0 if v is None else v for v in values], np.int64), null)
        if kinds == {bool}:
            return cls("bool", np.array([False if v is None else v for v in values], bool), null)
        if kinds == {datetime}:
            return cls("ts", np.array([0 if v is None else to_micros(v) for v in values], np.int64),
                       null)
        return cls("obj", list(values))

    def take(self, idx: np.ndarray) -> Col:
        if self.kind == "obj":
            return Col("obj", self.data[idx])
        assert self.null is not None
        return Col(self.kind, self.data[idx], self.null[idx])

    def values(self) -> list[Any]:
        """Python values, None for nulls (timestamps as aware datetimes)."""
        if self.kind == "obj":
            return self.data.tolist()  # type: ignore[no-any-return]
        assert self.null is not None
        if self.kind == "ts":
            out: list[Any] = [EPOCH + timedelta(microseconds=m) for m in self.data.tolist()]
        else:
            out = self.data.tolist()
        for i in np.flatnonzero(self.null).tolist():
            out[i] = None
        return out

    def nulls(self) -> np.ndarray:
        if self.null is not None:
            return self.null
        return is_none(self.data)

    def arrow(self) -> pa.Array:
        if self.kind == "obj":
            try:
                if set(map(type, self.data)) <= {str, type(None)}:
                    return pa.array(self.data, type=pa.string())
                return pa.array(self.data)
            except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeEncodeError):
                # Values of several types (an expression that returns text or a number), or
                # text that is not valid Unicode (a lone surrogate from a JSON escape): an Arrow
                # column holds one type of valid UTF-8, so they are kept as their escaped text.
                return pa.array([None if v is None else
                                 str(v).encode("utf-8", "backslashreplace").decode("utf-8")
                                 for v in self.data], pa.string())
        mask = self.null if self.null is not None and self.null.any() else None
        if self.kind == "ts":
            return pa.array(self.data, type=TS, mask=mask)
        return pa.array(self.data, mask=mask)


def is_none(objects: np.ndarray) -> np.ndarray:
    """Which elements of an object array are None."""
    return np.asarray(objects == None)  # noqa: E711 - elementwise, not an identity test


def objects(values: Any) -> np.ndarray:
    """A 1-d object array of ``values`` (tuples stay elements, not rows)."""
    return np.fromiter(values, object, len(values))


def set_value(col: Col, i: int, value: Any) -> None:
    """Overwrite row ``i`` with a typed Python value (from the per-record validator)."""
    if col.kind == "obj":
        col.data[i] = value
        return
    assert col.null is not None
    if value is None:
        col.null[i] = True
        return
    col.null[i] = False
    col.data[i] = to_micros(value) if col.kind == "ts" else value




def constant(value: Any, n: int) -> Col:
    if value is None:
        return Col("float", np.zeros(n), np.ones(n, bool))
    if isinstance(value, bool):
        return Col("bool", np.full(n, value), np.zeros(n, bool))
    if isinstance(value, int) and -BIG < value < BIG:
        return Col("int", np.full(n, value, np.int64), np.zeros(n, bool))
    if isinstance(value, float):
        return Col("float", np.full(n, value), np.zeros(n, bool))
    return Col("obj", [value] * n)
