"""Row expressions (``evenflow.core.expr``) evaluated on columns, with SQL null semantics.

>>> import numpy as np
>>> from evenflow.core.expr import Expr
>>> env = {"a": Col("float", np.array([4.0, 1.0, 0.0]), np.array([False, False, True])),
...        "b": Col("int", np.array([2, 0, 1]), np.zeros(3, bool))}
>>> evaluate_columns(Expr.parse("a / b + 1").tree, env, 3).values()
[3.0, None, None]
"""

from __future__ import annotations

import ast

import numpy as np

from evenflow.stream.vector.columns import Col, constant


class Unsupported(Exception):
    pass


def _numeric(c: Col) -> bool:
    return c.kind in ("int", "float")


def evaluate_columns(node: ast.expr, env: dict[str, Col], n: int) -> Col:
    """``Expr`` semantics (``evenflow/core/expr.py``) over columns; ``Unsupported`` otherwise."""
    with np.errstate(all="ignore"):
        return _eval(node, env, n)


def _eval(node: ast.expr, env: dict[str, Col], n: int) -> Col:
    match node:
        case ast.Name(id=name):
            if name not in env:
                return constant(None, n)
            return env[name]
        case ast.Constant(value=value):
            return constant(value, n)
        case ast.BinOp(left=left, op=op, right=right):
            a, b = _eval(left, env, n), _eval(right, env, n)
            if not (_numeric(a) and _numeric(b)):
                raise Unsupported
            null = a.nulls() | b.nulls()
            if isinstance(op, ast.Div):
                zero = b.data == 0
                return Col("float", a.data / np.where(zero, 1, b.data), null | zero)
            fn = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply}[type(op)]
            kind = "int" if a.kind == b.kind == "int" else "float"
            if kind == "int" and (np.abs(a.data).max(initial=0) >= 2**31 or
                                  np.abs(b.data).max(initial=0) >= 2**31):
                raise Unsupported
            return Col(kind, fn(a.data, b.data), null)
        case ast.UnaryOp(op=ast.USub(), operand=operand):
            v = _eval(operand, env, n)
            if not _numeric(v):
                raise Unsupported
            return Col(v.kind, -v.data, v.nulls())
        case ast.UnaryOp(op=ast.Not(), operand=operand):
            v = _eval(operand, env, n)
            if v.kind != "bool":
                raise Unsupported
            return Col("bool", ~v.data, v.nulls())
        case ast.Compare(left=left, ops=[op], comparators=[right]):
            a, b = _eval(left, env, n), _eval(right, env, n)
            same = (_numeric(a) and _numeric(b)) or (a.kind == b.kind and a.kind in ("ts", "bool"))
            if not same:
                raise Unsupported
            fn = {ast.Lt: np.less, ast.LtE: np.less_equal, ast.Gt: np.greater,
                  ast.GtE: np.greater_equal, ast.Eq: np.equal, ast.NotEq: np.not_equal}[type(op)]
            return Col("bool", fn(a.data, b.data), a.nulls() | b.nulls())
        case ast.BoolOp(op=op, values=values):
            parts = [_eval(v, env, n) for v in values]
            if any(p.kind == "obj" or p.kind == "ts" for p in parts):
                raise Unsupported
            decisive = not isinstance(op, ast.And)
            hit = np.zeros(n, bool)
            unknown = np.zeros(n, bool)
            for p in parts:
                truth = p.data.astype(bool)
                hit |= ~p.nulls() & (truth == decisive)
                unknown |= p.nulls()
            return Col("bool", np.where(hit, decisive, not decisive), ~hit & unknown)
        case ast.Call(func=ast.Name(id="coalesce"), args=args):
            parts = [_eval(a, env, n) for a in args]
            kinds = {p.kind for p in parts}
            if not (len(kinds) == 1 and "obj" not in kinds) and not kinds <= {"int", "float"}:
                raise Unsupported
            kind = kinds.pop() if len(kinds) == 1 else "float"
            data = parts[-1].data.astype(np.float64) if kind == "float" else parts[-1].data.copy()
            null = parts[-1].nulls().copy()
            for p in reversed(parts[:-1]):
                here = ~p.nulls()
                data = np.where(here, p.data, data)
                null = np.where(here, False, null)
            return Col(kind, data, null)
        case ast.Call(func=ast.Name(id=name), args=[arg]):
            v = _eval(arg, env, n)
            null = v.nulls()
            if name == "hour":
                if v.kind == "ts":
                    return Col("int", (v.data // 3_600_000_000) % 24, null)
                if v.kind == "int":
                    return Col("int", v.data, null)
                raise Unsupported
            if name == "epoch_seconds" and v.kind == "ts":
                return Col("float", v.data / 1e6, null)
            if not _numeric(v):
                raise Unsupported
            if name == "abs":
                return Col(v.kind, np.abs(v.data), null)
            if name == "float":
                return Col("float", v.data.astype(np.float64), null)
            x = v.data.astype(np.float64)
            if name == "sqrt":
                return Col("float", np.sqrt(np.where(x >= 0, x, 0.0)), null | ~(x >= 0))
            if name == "log1p":
                return Col("float", np.log1p(np.where(x > -1, x, 0.0)), null | ~(x > -1))
    raise Unsupported
