"""Row expressions: one formula, evaluated by SQL in batch and by Python on one record.

An expression is written as a small Python-like formula over the record's fields and the
feature set's aggregates, e.g. ``"amount / (amount_mean_7d + 1)"`` or
``"hour(ts) < 6"``. It is parsed once into a tree that renders to SQL for the batch engine and
evaluates on a dict for the stream engine, so the two cannot disagree on the meaning.

Nulls propagate as in SQL: any arithmetic or comparison with a null is null, ``coalesce``
picks the first non-null, and division by zero is null.

>>> e = Expr.parse("amount / coalesce(avg_amount, 1)")
>>> e.to_sql()
'("amount" / NULLIF(COALESCE("avg_amount", 1), 0))'
>>> e.evaluate({"amount": 10.0, "avg_amount": None})
10.0
>>> sorted(e.columns())
['amount', 'avg_amount']
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from evenflow.errors import DefinitionError

_BINOPS: dict[type, tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Add: ("+", lambda a, b: a + b),
    ast.Sub: ("-", lambda a, b: a - b),
    ast.Mult: ("*", lambda a, b: a * b),
    ast.Div: ("/", lambda a, b: None if b == 0 else a / b),
}
_CMPOPS: dict[type, tuple[str, Callable[[Any, Any], bool]]] = {
    ast.Lt: ("<", lambda a, b: a < b),
    ast.LtE: ("<=", lambda a, b: a <= b),
    ast.Gt: (">", lambda a, b: a > b),
    ast.GtE: (">=", lambda a, b: a >= b),
    ast.Eq: ("=", lambda a, b: a == b),
    ast.NotEq: ("<>", lambda a, b: a != b),
}


def _hour(value: Any) -> int:
    return int(value.astimezone(UTC).hour) if isinstance(value, datetime) else int(value)


def _epoch_seconds(value: datetime) -> float:
    return (value - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()


# name -> (arity, SQL template, python function); python functions see non-null arguments only.
_FUNCS: dict[str, tuple[int, str, Callable[..., Any]]] = {
    "abs": (1, "abs({0})", abs),
    "sqrt": (1, "CASE WHEN {0} >= 0 THEN sqrt({0}) END", lambda x: math.sqrt(x) if x >= 0 else None),
    # DuckDB has no log1p; a series keeps precision near 0, where ln(1 + x) loses it.
    "log1p": (1, "CASE WHEN abs({0}) < 1e-4 THEN {0} - {0} * {0} / 2 + {0} * {0} * {0} / 3 "
                 "WHEN {0} > -1 THEN ln(1 + {0}) END",
              lambda x: math.log1p(x) if x > -1 else None),
    "hour": (1, "CAST(extract('hour' FROM timezone('UTC', {0})) AS BIGINT)", _hour),
    "epoch_seconds": (1, "(epoch_us({0}) / 1e6)", _epoch_seconds),
    "float": (1, "CAST({0} AS DOUBLE)", float),
}


@dataclass(frozen=True)
class Expr:
    """A parsed row expression. Build it with :meth:`parse`."""

    text: str
    tree: ast.expr

    @classmethod
    def parse(cls, text: str) -> Expr:
        try:
            tree = ast.parse(text.strip(), mode="eval").body
        except SyntaxError as exc:
            raise DefinitionError(f"cannot parse expression {text!r}: {exc.msg}",
                                  fix="use fields, numbers, + - * /, comparisons, and/or/not, "
                                      f"and the functions {', '.join(sorted(_FUNCS))} or coalesce"
                                  ) from exc
        _check(tree, text)
        return cls(ast.unparse(tree), tree)

    def columns(self) -> set[str]:
        return _columns(self.tree)

    def to_sql(self, rename: Mapping[str, str] | None = None) -> str:
        """SQL text; ``rename`` maps a name to the SQL that stands for it (``a."x"``)."""
        return _sql(self.tree, rename or {})

    def compiled(self) -> Callable[[Mapping[str, Any]], Any]:
        """The expression as a Python function of one record (the stream engine's hot path).

        >>> Expr.parse("coalesce(x, 0) * 2 > 3").compiled()({"x": 2})
        True
        """
        return _compile(self.tree)

    def evaluate(self, record: Mapping[str, Any]) -> Any:
        return _eval(self.tree, record)


def _columns(node: ast.expr) -> set[str]:
    """The field and aggregate names a tree reads (a function's own name is not one)."""
    funcs = {id(n.func) for n in ast.walk(node) if isinstance(n, ast.Call)}
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and id(n) not in funcs}


def _check(node: ast.AST, text: str) -> None:
    allowed = (ast.Name, ast.Constant, ast.BinOp, ast.UnaryOp, ast.Compare, ast.BoolOp, ast.Call,
               ast.Load, ast.USub, ast.Not, ast.And, ast.Or, *_BINOPS, *_CMPOPS)
    for sub in ast.walk(node):
        if not isinstance(sub, allowed):
            raise DefinitionError(f"expression {text!r} uses {type(sub).__name__}, which is not allowed",
                                  fix="use fields, numbers, + - * /, comparisons, and/or/not and "
                                      "function calls")
        if isinstance(sub, ast.Compare) and len(sub.ops) != 1:
            raise DefinitionError(f"expression {text!r} chains comparisons", fix="write a < b and b < c")
        if isinstance(sub, ast.Call):
            name = sub.func.id if isinstance(sub.func, ast.Name) else None
            if name == "coalesce" and sub.args and not sub.keywords:
                continue
            if name not in _FUNCS or len(sub.args) != _FUNCS[name][0] or sub.keywords:
                raise DefinitionError(f"expression {text!r} calls unknown function {name!r}",
                                      fix=f"known functions: coalesce, {', '.join(sorted(_FUNCS))}")


def _sql(node: ast.expr, rename: Mapping[str, str]) -> str:
    match node:
        case ast.Name(id=name):
            return rename.get(name) or '"' + name.replace('"', '""') + '"'
        case ast.Constant(value=value):
            if value is None:
                return "NULL"
            if isinstance(value, bool):
                return "TRUE" if value else "FALSE"
            if isinstance(value, str):
                return "'" + value.replace("'", "''") + "'"
            if isinstance(value, float):
                # a bare 0.1 is an exact DECIMAL in SQL; Python means the double
                return f"CAST({value!r} AS DOUBLE)"
            return repr(value)
        case ast.BinOp(left=left, op=op, right=right):
            if isinstance(op, ast.Div):
                return f"({_sql(left, rename)} / NULLIF({_sql(right, rename)}, 0))"
            return f"({_sql(left, rename)} {_BINOPS[type(op)][0]} {_sql(right, rename)})"
        case ast.UnaryOp(op=ast.USub(), operand=operand):
            return f"(-{_sql(operand, rename)})"
        case ast.UnaryOp(op=ast.Not(), operand=operand):
            return f"(NOT {_sql(operand, rename)})"
        case ast.Compare(left=left, ops=[op], comparators=[right]):
            return f"({_sql(left, rename)} {_CMPOPS[type(op)][0]} {_sql(right, rename)})"
        case ast.BoolOp(op=op, values=values):
            word = " AND " if isinstance(op, ast.And) else " OR "
            return "(" + word.join(_sql(v, rename) for v in values) + ")"
        case ast.Call(func=ast.Name(id="coalesce"), args=args):
            return "COALESCE(" + ", ".join(_sql(a, rename) for a in args) + ")"
        case ast.Call(func=ast.Name(id=name), args=args):
            return _FUNCS[name][1].format(*(_sql(a, rename) for a in args))
    raise AssertionError(f"unchecked node {ast.dump(node)}")


def _eval(node: ast.expr, rec: Mapping[str, Any]) -> Any:
    match node:
        case ast.Name(id=name):
            return rec.get(name)
        case ast.Constant(value=value):
            return value
        case ast.BinOp(left=left, op=op, right=right):
            a, b = _eval(left, rec), _eval(right, rec)
            return None if a is None or b is None else _BINOPS[type(op)][1](a, b)
        case ast.UnaryOp(op=ast.USub(), operand=operand):
            v = _eval(operand, rec)
            return None if v is None else -v
        case ast.UnaryOp(op=ast.Not(), operand=operand):
            v = _eval(operand, rec)
            return None if v is None else not v
        case ast.Compare(left=left, ops=[op], comparators=[right]):
            a, b = _eval(left, rec), _eval(right, rec)
            return None if a is None or b is None else _CMPOPS[type(op)][1](a, b)
        case ast.BoolOp(op=op, values=values):
            return _three_valued(isinstance(op, ast.And), [_eval(v, rec) for v in values])
        case ast.Call(func=ast.Name(id="coalesce"), args=args):
            return next((v for v in (_eval(a, rec) for a in args) if v is not None), None)
        case ast.Call(func=ast.Name(id=name), args=args):
            vals = [_eval(a, rec) for a in args]
            return None if any(v is None for v in vals) else _FUNCS[name][2](*vals)
    raise AssertionError(f"unchecked node {ast.dump(node)}")


def _compile(node: ast.expr) -> Callable[[Mapping[str, Any]], Any]:
    """One generated Python function with the same meaning as ``_eval``, built once.

    Each field is read once; every operator is inline code with the null rules of ``_eval``
    (the same operands are evaluated, in the same order), so a record costs one call instead of
    one closure call per node. ``tests/test_expr.py`` checks it against ``_eval``.
    """
    names = sorted(_columns(node))
    scope: dict[str, Any] = {"_three_valued": _three_valued}
    counter = iter(range(1 << 30))

    def temp() -> str:
        return f"_t{next(counter)}"

    def const(value: Any) -> str:
        name = f"_c{next(counter)}"
        scope[name] = value
        return name

    def code(n: ast.expr) -> str:
        match n:
            case ast.Name(id=name):
                return f"v{names.index(name)}"
            case ast.Constant(value=value):
                return const(value)
            case ast.BinOp(left=left, op=op, right=right):
                a, b = temp(), temp()
                if isinstance(op, ast.Div):
                    value = f"(None if {b} == 0 else {a} / {b})"
                else:
                    value = f"({a} {_BINOPS[type(op)][0]} {b})"
                return f"(None if ({a} := {code(left)}) is None or ({b} := {code(right)}) is None else {value})"
            case ast.UnaryOp(op=ast.USub(), operand=operand):
                v = temp()
                return f"(None if ({v} := {code(operand)}) is None else -{v})"
            case ast.UnaryOp(op=ast.Not(), operand=operand):
                v = temp()
                return f"(None if ({v} := {code(operand)}) is None else not {v})"
            case ast.Compare(left=left, ops=[op], comparators=[right]):
                a, b = temp(), temp()
                py = {ast.Eq: "==", ast.NotEq: "!="}.get(type(op), _CMPOPS[type(op)][0])
                # both sides are evaluated, as _eval does, before the null test
                return (f"(None if (({a} := {code(left)}), ({b} := {code(right)}))[0] is None "
                        f"or {b} is None else {a} {py} {b})")
            case ast.BoolOp(op=op, values=values):
                is_and = isinstance(op, ast.And)
                return f"_three_valued({is_and}, [{', '.join(code(v) for v in values)}])"
            case ast.Call(func=ast.Name(id="coalesce"), args=args):
                out = "None"
                for arg in reversed(args):
                    v = temp()
                    out = f"({v} if ({v} := {code(arg)}) is not None else {out})"
                return out
            case ast.Call(func=ast.Name(id=name), args=[arg]):
                v, fn = temp(), const(_FUNCS[name][2])
                return f"(None if ({v} := {code(arg)}) is None else {fn}({v}))"
        raise AssertionError(f"unchecked node {ast.dump(n)}")

    body = code(node)
    lines = ["def expression(rec):", "    get = rec.get"]
    lines += [f"    v{i} = get({name!r})" for i, name in enumerate(names)]
    lines.append(f"    return {body}")
    exec(compile("\n".join(lines), "<evenflow expression>", "exec"), scope)
    return scope["expression"]  # type: ignore[no-any-return]


def _three_valued(is_and: bool, values: list[Any]) -> bool | None:
    """SQL's AND/OR with unknowns."""
    decisive = not is_and
    if any(v is not None and bool(v) is decisive for v in values):
        return decisive
    return None if any(v is None for v in values) else (not decisive)
