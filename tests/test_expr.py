"""Row expressions: the SQL form (run by DuckDB) and the Python form agree, nulls included.

docs/semantics.md section 5: arithmetic, comparisons and functions with a null argument give
null; and/or are three-valued; coalesce returns its first non-null argument; division by zero
gives null; sqrt of a negative and log1p of x <= -1 give null; hour(ts) is the UTC hour.

Generated records use values from a bounded grid (section 11): multiples of 0.25 within
+-1e4, small integers with many zeros, timestamps with assorted zone offsets.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
from collections.abc import Iterator
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evenflow.core.expr import Expr
from evenflow.errors import DefinitionError

UTC = dt.UTC
SETTINGS = settings(max_examples=100, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ARROW = pa.schema([("x", pa.float64()), ("y", pa.float64()), ("i", pa.int64()), ("j", pa.int64()),
                   ("p", pa.bool_()), ("q", pa.bool_()), ("s", pa.string()),
                   ("ts", pa.timestamp("us", tz="UTC"))])


@pytest.fixture(scope="module")
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    c = duckdb.connect()
    c.execute("SET TimeZone='UTC'")  # as the batch engine
    yield c
    c.close()


def run_sql(con: duckdb.DuckDBPyConnection, expr: Expr, records: list[dict[str, Any]]) -> list[Any]:
    rows = [{name: r.get(name) for name in ARROW.names} for r in records]
    table = pa.Table.from_pylist(rows, schema=ARROW).append_column(
        "__i", pa.array(range(len(rows)), pa.int64()))
    con.register("__records", table)
    try:
        out = con.execute(f"SELECT {expr.to_sql()} FROM __records ORDER BY __i").fetchall()
    finally:
        con.unregister("__records")
    return [r[0] for r in out]


def agree(a: Any, b: Any) -> bool:
    """docs/semantics.md section 11, plus: a boolean is never a number."""
    if isinstance(a, decimal.Decimal):
        a = float(a)
    if isinstance(b, decimal.Decimal):
        b = float(b)
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)


def same_outcome(f: Any, g: Any, record: dict[str, Any]) -> bool:
    """The same value (bit for bit, NaN included, bool is not int) or the same exception type."""
    outcome = []
    for fn in (f, g):
        try:
            outcome.append(("value", fn(record)))
        except Exception as exc:  # the exception type is the outcome
            outcome.append(("raised", type(exc)))
    (ka, a), (kb, b) = outcome
    if ka != kb or type(a) is not type(b):
        return False
    return a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))


def check(con: duckdb.DuckDBPyConnection, text: str, records: list[dict[str, Any]]) -> None:
    expr = Expr.parse(text)
    assert Expr.parse(expr.text).text == expr.text  # canonical text is a fixed point
    by_sql = run_sql(con, expr, records)
    compiled = expr.compiled()
    for record, sql_value in zip(records, by_sql, strict=True):
        py_value = expr.evaluate(record)
        assert same_outcome(compiled, expr.evaluate, record), f"{text!r} on {record}: compiled != evaluate"
        assert agree(py_value, sql_value), (
            f"{text!r} on {record}: Python {py_value!r}, SQL {sql_value!r} ({expr.to_sql()})")


# -- generated records ----------------------------------------------------------------------------

def nullable(s: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), s)


GRID = st.one_of(st.sampled_from([0.0, 1.0, -1.0, 0.5, -0.75, 2.0]),
                 st.integers(-40_000, 40_000).map(lambda k: k / 4))
INTS = st.one_of(st.sampled_from([0, 0, 1, -1, 2]), st.integers(-100, 100))
ZONES = [dt.timezone(dt.timedelta(hours=h, minutes=m)) for h, m in [(0, 0), (1, 0), (-5, 0), (5, 30), (13, 45)]]
TIMES = st.builds(lambda t, z: t.replace(tzinfo=UTC).astimezone(z),
                  st.datetimes(min_value=dt.datetime(1990, 1, 1), max_value=dt.datetime(2090, 1, 1)),
                  st.sampled_from(ZONES))
RECORDS = st.lists(st.fixed_dictionaries({
    "x": nullable(GRID), "y": nullable(GRID), "i": nullable(INTS), "j": nullable(INTS),
    "p": nullable(st.booleans()), "q": nullable(st.booleans()),
    "s": nullable(st.sampled_from(["pos", "ecom", "atm", "", "Zed"])), "ts": nullable(TIMES),
}), min_size=1, max_size=12)

# -- generated expressions (typed: numbers and booleans) ----------------------------------------
# Constants are dyadic (0.5, 2.25 ...), exact in binary and decimal alike; see the decimal test below.

NUM_LEAVES = st.one_of(st.sampled_from(["x", "y", "i", "j"]),
                       st.sampled_from(["0", "1", "2", "3", "0.5", "2.25", "-1", "10"]),
                       st.sampled_from(["log1p(x)", "log1p(y)", "hour(ts)", "epoch_seconds(ts)", "float(i)"]))


def _num_tree(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(children, st.sampled_from(["+", "-", "*", "/"]), children).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        children.map(lambda a: f"(-{a})"),
        st.tuples(st.sampled_from(["abs", "sqrt", "float"]), children).map(lambda t: f"{t[0]}({t[1]})"),
        st.lists(children, min_size=1, max_size=3).map(lambda a: f"coalesce({', '.join(a)})"),
    )


NUM = st.recursive(NUM_LEAVES, _num_tree, max_leaves=5)
CMP = st.one_of(
    st.tuples(NUM, st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), NUM).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
    st.tuples(st.sampled_from(["==", "!=", "<", ">="]), st.sampled_from(["'pos'", "'ecom'", "'m'", "''"]))
    .map(lambda t: f"(s {t[0]} {t[1]})"),
)
BOOL_LEAVES = st.one_of(st.sampled_from(["p", "q", "True", "False", "(p == q)"]), CMP)


def _bool_tree(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        children.map(lambda a: f"(not {a})"),
        st.tuples(st.sampled_from(["and", "or"]), st.lists(children, min_size=2, max_size=3))
        .map(lambda t: "(" + f" {t[0]} ".join(t[1]) + ")"),
        st.lists(children, min_size=1, max_size=3).map(lambda a: f"coalesce({', '.join(a)})"),
    )


BOOL = st.recursive(BOOL_LEAVES, _bool_tree, max_leaves=6)


@SETTINGS
@given(text=NUM, records=RECORDS)
def test_numeric_expressions_agree(con: duckdb.DuckDBPyConnection, text: str, records: list[dict[str, Any]]) -> None:
    check(con, text, records)


@SETTINGS
@given(text=BOOL, records=RECORDS)
def test_boolean_expressions_agree(con: duckdb.DuckDBPyConnection, text: str, records: list[dict[str, Any]]) -> None:
    check(con, text, records)


# -- every operator on its own, on every interesting pair of values --------------------------------

EDGE = [None, 0, 0.0, 1, -1, 2.5, -0.75, 1e4]


@pytest.mark.parametrize("op", ["+", "-", "*", "/", "<", "<=", ">", ">=", "==", "!="])
def test_binary_operator_on_edge_values(con: duckdb.DuckDBPyConnection, op: str) -> None:
    records = []
    for a in EDGE:
        for b in EDGE:
            # x, y are DOUBLE columns; i, j BIGINT ones
            records.append({"x": None if a is None else float(a), "y": None if b is None else float(b),
                            "i": a if isinstance(a, int) else None, "j": b if isinstance(b, int) else None})
    check(con, f"x {op} y", records)
    check(con, f"i {op} j", records)
    check(con, f"i {op} y", records)


@pytest.mark.parametrize("func", ["abs", "sqrt", "log1p", "float", "-"])
def test_unary_function_on_edge_values(con: duckdb.DuckDBPyConnection, func: str) -> None:
    values = [None, 0.0, 1.0, -1.0, -0.5, -1.5, 2.25, 1e4, -1e4]
    text = "-x" if func == "-" else f"{func}(x)"
    check(con, text, [{"x": v} for v in values])
    if func in ("abs", "float", "-"):
        check(con, text.replace("x", "i"), [{"i": v} for v in [None, 0, 5, -5]])


def test_three_valued_logic_truth_tables(con: duckdb.DuckDBPyConnection) -> None:
    values = [True, False, None]
    records = [{"p": a, "q": b} for a in values for b in values]
    for text in ["p and q", "p or q", "not p", "not (p and q)", "p and not q", "coalesce(p, q)", "p == q"]:
        check(con, text, records)
    expr = Expr.parse("p and q")
    assert expr.evaluate({"p": False, "q": None}) is False
    assert expr.evaluate({"p": True, "q": None}) is None
    assert Expr.parse("p or q").evaluate({"p": True, "q": None}) is True
    assert Expr.parse("p or q").evaluate({"p": False, "q": None}) is None
    assert Expr.parse("not p").evaluate({"p": None}) is None


def test_hour_is_the_utc_hour(con: duckdb.DuckDBPyConnection) -> None:
    paris_evening = dt.datetime(2026, 3, 1, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    records = [{"ts": paris_evening}, {"ts": dt.datetime(2026, 3, 1, 0, 0, tzinfo=UTC)},
               {"ts": dt.datetime(2026, 6, 1, 5, 59, 59, 999999, tzinfo=dt.timezone(dt.timedelta(hours=-7)))},
               {"ts": None}]
    check(con, "hour(ts)", records)
    assert [Expr.parse("hour(ts)").evaluate(r) for r in records] == [22, 0, 12, None]
    check(con, "hour(ts) < 6", records)
    check(con, "epoch_seconds(ts)", records)


def test_hour_does_not_depend_on_the_session_zone(con: duckdb.DuckDBPyConnection) -> None:
    records = [{"ts": dt.datetime(2026, 3, 1, 23, 30, tzinfo=UTC)}]
    con.execute("SET TimeZone='Asia/Kolkata'")
    try:
        check(con, "hour(ts)", records)
    finally:
        con.execute("SET TimeZone='UTC'")


def test_documented_table(con: duckdb.DuckDBPyConnection) -> None:
    """The table of docs/semantics.md section 5, on both sides."""
    rows = [
        ("amount / mean_amount_1h", {"amount": 40.0, "mean_amount_1h": 30.0}, 40 / 30),
        ("amount / mean_amount_1h", {"amount": 40.0, "mean_amount_1h": None}, None),
        ("amount / mean_amount_1h", {"amount": 40.0, "mean_amount_1h": 0.0}, None),
        ("coalesce(mean_amount_1h, 0)", {"mean_amount_1h": None}, 0),
        ("amount > 100 or count_1h > 5", {"amount": None, "count_1h": 9}, True),
        ("amount > 100 and count_1h > 5", {"amount": None, "count_1h": 9}, None),
    ]
    for text, record, want in rows:
        expr = Expr.parse(text)
        assert agree(expr.evaluate(record), want), text
        cols = ", ".join(f"CAST({'NULL' if v is None else repr(v)} AS {'BIGINT' if isinstance(v, int) else 'DOUBLE'}) "
                         f"AS {k}" for k, v in record.items())
        ((sql_value,),) = con.execute(f"SELECT {expr.to_sql()} FROM (SELECT {cols})").fetchall()
        assert agree(sql_value, want), text


def test_parse_columns_and_rename() -> None:
    expr = Expr.parse("amount / coalesce(avg_amount, 1) + abs(hour(ts))")
    assert expr.columns() == {"amount", "avg_amount", "ts"}
    sql = expr.to_sql({"avg_amount": 'a."avg_amount"'})
    assert 'a."avg_amount"' in sql and '"amount"' in sql
    assert Expr.parse("a+b").text == "a + b"


# -- float literals and log1p: the two forms must not drift -------------------------------------

def test_float_literal_means_the_same_double_in_sql(con: duckdb.DuckDBPyConnection) -> None:
    """A constant like 0.1 is a double in Python; in SQL it must not become an exact DECIMAL."""
    check(con, "x * 0.1 == 0.3", [{"x": 3.0}])         # DOUBLE column: agrees
    check(con, "i * 0.1 > 0.3", [{"i": 3}])            # BIGINT column: DECIMAL arithmetic in SQL
    check(con, "0.1 + 0.2 == 0.3", [{}])


def test_log1p_agrees_for_small_arguments(con: duckdb.DuckDBPyConnection) -> None:
    """log1p exists for accuracy near 0; SQL ln(1 + x) loses it (and gives 0 for x < 1e-16)."""
    records = [{"x": v} for v in [1e-17, 1e-12, 1e-9, -1e-12]]
    check(con, "log1p(x) / x", records)
    check(con, "1 / log1p(x)", records)


# -- what is not allowed --------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "a.b", "a.__class__", "lambda x: x", "(lambda: 1)()", "a[0]", "a[1:2]", "foo(a)", "__import__('os')",
    "open('f')", "abs(a, b)", "sqrt()", "abs(x=a)", "a ** 2", "a % 2", "a // 2", "~a", "a if b else c",
    "[a]", "(a, b)", "{1: 2}", "{a}", "a < b < c", "a is None", "a in (1, 2)", "f'{a}'", "(a := 1)",
    "a +", "", "a b", "x.y(1)", "hour(ts).real", "coalesce(a)[0]", "a & b", "a << 1", "+a",
])
def test_disallowed_syntax_raises_definition_error(text: str) -> None:
    with pytest.raises(DefinitionError) as info:
        Expr.parse(text)
    assert info.value.fix


def test_coalesce_without_arguments_is_rejected() -> None:
    """coalesce() has no SQL form (COALESCE() is a syntax error), so parse must refuse it."""
    with pytest.raises(DefinitionError):
        Expr.parse("coalesce()")
