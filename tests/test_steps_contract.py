"""The step contract, checked for every step class (in the style of River's estimator checks).

For every column step in ``evenflow.core.steps`` (found automatically, so a new step is covered
as soon as it exists), in every configuration we know of and for every column type it accepts:

- fit on a generated Arrow table (with nulls);
- for every record, ``transform_one(record, art)`` equals ``sql(art)`` evaluated by DuckDB over
  the same table (floats within 1e-12), including values never seen in fit;
- the artifact is plain JSON: a JSON round trip gives an equal artifact, identical SQL and
  identical one-record results;
- fitting is deterministic: twice on the same table, or on the rows in another order, gives the
  same artifact.
"""

from __future__ import annotations

import decimal
import inspect
import json
import math
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evenflow.core import steps as S
from evenflow.core.schema import REASONS
from evenflow.errors import DefinitionError

COLUMN = 'amount "x"'  # a name that needs quoting in SQL
OTHER = "other"        # a column the step must leave alone; also the row order
GROUP = "grp"          # the entity key stateful steps partition by

_COMMON: dict[str, Any] = {"deadline": None, "database": None, "derandomize": True,
                           "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
#: The SQL parity check gets the most examples; the cheaper properties fewer (runtime budget).
SETTINGS = settings(max_examples=15, **_COMMON)
LIGHT = settings(max_examples=8, **_COMMON)

# -- discovery ----------------------------------------------------------------------------------


def discover_step_classes() -> list[type[S._Step]]:
    """Every concrete column step: members of ColumnStep and any subclass of _Step."""
    found: dict[str, type[S._Step]] = {c.__name__: c for c in typing.get_args(S.ColumnStep)}
    todo = list(S._Step.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if not inspect.isabstract(cls):
            found.setdefault(cls.__name__, cls)
    for name, obj in vars(S).items():
        if inspect.isclass(obj) and issubclass(obj, S._Step) and obj is not S._Step:
            found.setdefault(name, obj)
    return sorted(found.values(), key=lambda c: c.__name__)


STEP_CLASSES = discover_step_classes()

# -- column types -------------------------------------------------------------------------------

ARROW_TYPES = {"float": pa.float64(), "int": pa.int64(), "str": pa.string(), "bool": pa.bool_()}
NUMERIC = ("float", "int")


def values(kind: str) -> st.SearchStrategy[Any]:
    """Values of one column type, biased towards repeats so counts, ties and modes happen."""
    if kind == "float":
        return st.one_of(st.sampled_from([0.0, 1.5, -2.25, 3.0, 10.0, 0.1]),
                         st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False))
    if kind == "int":
        return st.one_of(st.sampled_from([0, 1, 2, 3, -7]), st.integers(min_value=-10**9, max_value=10**9))
    if kind == "str":
        return st.one_of(st.sampled_from(["a", "b", "ecom", "", "O'Brien"]),
                         st.text(alphabet="abcXYZ019 '\",é_-", max_size=6))
    return st.booleans()


def column(kind: str, min_size: int = 1) -> st.SearchStrategy[list[Any]]:
    return st.lists(st.one_of(st.none(), values(kind)), min_size=min_size, max_size=40)


# -- configurations -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    cls: type[S._Step]
    kwargs: dict[str, Any]
    kinds: tuple[str, ...] = NUMERIC
    constant: dict[str, Any] = field(default_factory=dict)  # kind -> value= (for value-taking steps)

    def build(self, kind: str) -> S._Step:
        kwargs = dict(self.kwargs)
        if kind in self.constant:
            kwargs["value"] = self.constant[kind]
        # bound like the engines bind them: entity key and row order of the test table
        return self.cls(column=COLUMN, **kwargs).bind(key=[GROUP], order=[OTHER])

    @property
    def id(self) -> str:
        args = ",".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"{self.cls.__name__}({args})"


#: Known configurations, with the column types each accepts. Steps not listed here are still
#: tested: with every value of each of their Literal fields, and with no options at all.
KNOWN: dict[str, list[Config]] = {
    "Impute": [
        Config(S.Impute, {"strategy": "mean"}),
        Config(S.Impute, {"strategy": "median"}),
        Config(S.Impute, {"strategy": "mode"}, ("float", "int", "str")),
        Config(S.Impute, {"strategy": "constant"}, ("float", "int", "str", "bool"),
               constant={"float": -1.5, "int": 42, "str": "missing", "bool": False}),
    ],
    "Clip": [
        Config(S.Clip, {"lower": 0.0}),
        Config(S.Clip, {"upper": 2.5}),
        Config(S.Clip, {"lower": -3.0, "upper": 3.0}),
        Config(S.Clip, {"q": (0.05, 0.95)}),
        Config(S.Clip, {"q": (0.0, 1.0)}),
        Config(S.Clip, {"q": (0.25, 0.5), "lower": 0.0}),
    ],
    "Standardize": [Config(S.Standardize, {})],
    "Impute(last)": [
        Config(S.Impute, {"strategy": "last"}, ("float", "int", "str", "bool")),
        Config(S.Impute, {"strategy": "last", "indicator": True}, ("float", "str"),
               constant={"float": -1.5, "str": "none yet"}),
        Config(S.Impute, {"strategy": "median", "indicator": True}),
    ],
    "Outliers": [
        Config(S.Outliers, {"method": m, "action": a}) for m in ("iqr", "zscore", "mad", "quantile")
        for a in ("flag", "clip", "quarantine")
    ] + [Config(S.Outliers, {"method": "iqr", "k": 0.5, "action": "flag"}),
         Config(S.Outliers, {"method": "quantile", "q": (0.1, 0.6), "action": "quarantine"})],
    "Scale": [Config(S.Scale, {"method": m}) for m in ("standard", "minmax", "robust", "log1p")],
    "OneHot": [
        Config(S.OneHot, {}, ("str", "int", "float", "bool")),
        Config(S.OneHot, {"max_categories": 2, "min_count": 2}, ("str", "int")),
        Config(S.OneHot, {"max_categories": 0}, ("str",)),
    ],
    "FrequencyEncode": [Config(S.FrequencyEncode, {}, ("str", "int", "float", "bool"))],
    "TargetEncode": [
        Config(S.TargetEncode, {"label": OTHER}, ("str", "int", "float", "bool")),
        Config(S.TargetEncode, {"label": OTHER, "smoothing": 0.0}, ("str", "int")),
    ],
    "Encode": [
        Config(S.Encode, {}, ("str", "int", "float", "bool")),
        Config(S.Encode, {"min_count": 2}, ("str", "int")),
        Config(S.Encode, {"max_categories": 2}, ("str", "int")),
        Config(S.Encode, {"min_count": 2, "max_categories": 1}, ("str",)),
    ],
}


def _literal_variants(cls: type[S._Step]) -> Iterator[Config]:
    """One configuration per value of every Literal option (other than ``kind``)."""
    for name, info in cls.model_fields.items():
        if name in ("kind", "column") or typing.get_origin(info.annotation) is not Literal:
            continue
        for value in typing.get_args(info.annotation):
            yield Config(cls, {name: value})


def configurations() -> list[Config]:
    configs: list[Config] = []
    for cls in STEP_CLASSES:
        known = [c for name, group in KNOWN.items() if name.split("(")[0] == cls.__name__ for c in group]
        configs += known
        seen = {json.dumps(c.kwargs, sort_keys=True, default=str) for c in known}
        for extra in [Config(cls, {}), *_literal_variants(cls)]:
            if json.dumps(extra.kwargs, sort_keys=True, default=str) in seen:
                continue
            seen.add(json.dumps(extra.kwargs, sort_keys=True, default=str))
            try:
                extra.build("float")
            except (DefinitionError, ValueError):
                continue  # needs options only a KNOWN entry can give
            configs.append(extra)
    return configs


CONFIGS = configurations()
CASES = [pytest.param(c, kind, id=f"{c.id}-{kind}") for c in CONFIGS for kind in c.kinds]


def test_every_step_class_is_discovered_and_buildable() -> None:
    names = {c.__name__ for c in STEP_CLASSES}
    assert {"Impute", "Clip", "Standardize", "Encode", "Outliers", "Scale", "OneHot",
            "FrequencyEncode", "TargetEncode"} <= names
    assert {c.__name__ for c in typing.get_args(S.ColumnStep)} <= names
    covered = {c.cls.__name__ for c in CONFIGS}
    assert covered == names, f"no buildable configuration for {sorted(names - covered)}: add one to KNOWN"
    # every class is also reachable from the pipeline's StepType union
    step_union = typing.get_args(typing.get_args(S.StepType)[0])
    assert set(STEP_CLASSES) <= set(step_union)


# -- evaluation helpers -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    c = duckdb.connect()
    c.execute("SET TimeZone='UTC'")
    yield c
    c.close()


def make_table(kind: str, data: list[Any]) -> pa.Table:
    return pa.table({COLUMN: pa.array(data, ARROW_TYPES[kind]),
                     OTHER: pa.array(range(len(data)), pa.int64()),
                     GROUP: pa.array([i % 3 for i in range(len(data))], pa.int64())})


def sql_results(con: duckdb.DuckDBPyConnection, table: pa.Table, exprs: dict[str, str]) -> list[dict[str, Any]]:
    con.register("__contract", table)
    try:
        select = ", ".join(f'{e} AS "{i}"' for i, e in enumerate(exprs.values()))
        rows = con.execute(f'SELECT {select}, "{OTHER}" FROM __contract ORDER BY "{OTHER}"').fetchall()
    finally:
        con.unregister("__contract")
    return [dict(zip([*exprs, OTHER], row, strict=True)) for row in rows]


def same(a: Any, b: Any) -> bool:
    if isinstance(a, decimal.Decimal):
        a = float(a)
    if isinstance(b, decimal.Decimal):
        b = float(b)
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str) or isinstance(b, str):
        return type(a) is type(b) and a == b
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=1e-12)


REJECTED = "<rejected>"


def run_one(step: S._Step, record: dict[str, Any], art: S.Artifact,
            states: dict[str, dict[str, Any]]) -> dict[str, Any] | str:
    """The stream form: ``transform_one`` with per-entity state, or REJECTED for a quarantine."""
    try:
        if step.stateful:
            assert isinstance(step, S.Impute)
            state = states.setdefault(step.state_key(record, art), {})
            return step.transform_one(record, art, state)
        return step.transform_one(record, art)
    except S.RecordRejected as exc:
        assert exc.reason in REASONS and exc.step == step.id and exc.field == step.column
        return REJECTED


def fit_or_none(step: S._Step, table: pa.Table) -> S.Artifact | None:
    """The artifact, or None when fitting rightly refuses a column with no values."""
    try:
        return step.fit(table)
    except DefinitionError:
        assert step.learns, f"{step!r} learns nothing, so it must fit on any column"
        assert table.column(COLUMN).null_count == table.num_rows, "fit refused a column that has values"
        return None


# -- the contract -------------------------------------------------------------------------------


@pytest.mark.parametrize(("config", "kind"), CASES)
def test_transform_one_equals_sql(config: Config, kind: str, con: duckdb.DuckDBPyConnection) -> None:
    step = config.build(kind)

    @SETTINGS
    @given(fit_data=column(kind), unseen=column(kind, min_size=0))
    def check(fit_data: list[Any], unseen: list[Any]) -> None:
        art = fit_or_none(step, make_table(kind, fit_data))
        if art is None:
            return
        table = make_table(kind, fit_data + unseen)  # records seen in fit, and others
        exprs = step.sql(art)
        assert step.output in exprs
        assert set(step.adds(art)) == set(exprs) - {step.column}
        reject = step.reject_sql(art)
        if reject is not None:
            exprs = {**exprs, "__reject": reject[0], "__detail": reject[1]}
        by_sql = sql_results(con, table, exprs)
        states: dict[str, dict[str, Any]] = {}
        for record, sql_row in zip(table.to_pylist(), by_sql, strict=True):  # in row order
            one = run_one(step, dict(record), art, states)
            if reject is not None:
                assert (one == REJECTED) is sql_row.pop("__reject"), f"{step!r} on {record[COLUMN]!r}"
                assert (sql_row.pop("__detail") is not None) or record[COLUMN] is None
                if one == REJECTED:
                    continue
            assert isinstance(one, dict)
            assert one[OTHER] == record[OTHER], "transform_one changed another column"
            assert set(one) == set(record) | set(exprs) - {"__reject", "__detail"}
            for out in step.sql(art):
                assert same(one[out], sql_row[out]), (
                    f"{step!r} on {record[COLUMN]!r}: transform_one gives {one[out]!r}, "
                    f"SQL {exprs[out]} gives {sql_row[out]!r} (artifact {art})")

    check()


@pytest.mark.parametrize(("config", "kind"), CASES)
def test_artifact_json_round_trip(config: Config, kind: str, con: duckdb.DuckDBPyConnection) -> None:
    step = config.build(kind)

    @LIGHT
    @given(data=column(kind))
    def check(data: list[Any]) -> None:
        table = make_table(kind, data)
        art = fit_or_none(step, table)
        if art is None:
            return
        text = json.dumps(art, allow_nan=False)  # strict JSON: no NaN/Infinity
        back = json.loads(text)
        assert back == art
        assert json.dumps(back, allow_nan=False, sort_keys=True) == json.dumps(art, allow_nan=False, sort_keys=True)
        assert step.sql(back) == step.sql(art)
        states_a: dict[str, dict[str, Any]] = {}
        states_b: dict[str, dict[str, Any]] = {}
        for record in table.to_pylist():
            a, b = run_one(step, dict(record), art, states_a), run_one(step, dict(record), back, states_b)
            assert a == b
            if isinstance(a, dict) and isinstance(b, dict):
                assert all(type(a[k]) is type(b[k]) for k in a)
        assert json.loads(json.dumps(states_a, default=str)) == json.loads(json.dumps(states_b, default=str))

    check()


@pytest.mark.parametrize(("config", "kind"), CASES)
def test_fit_is_deterministic_and_order_free(config: Config, kind: str) -> None:
    step = config.build(kind)

    @LIGHT
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        rows = data.draw(column(kind))
        # whole rows move together: steps that fit on several columns keep their pairs
        shuffled = data.draw(st.permutations(range(len(rows))))
        first = fit_or_none(step, make_table(kind, rows))
        if first is None:
            return
        assert step.fit(make_table(kind, rows)) == first
        assert config.build(kind).fit(make_table(kind, rows)) == first
        assert step.fit(make_table(kind, rows).take(list(shuffled))) == first

    check()


@pytest.mark.parametrize("cls", STEP_CLASSES, ids=lambda c: c.__name__)
def test_fit_needs_the_column(cls: type[S._Step]) -> None:
    steps = [c.build(c.kinds[0]) for c in CONFIGS if c.cls is cls]
    learning = [s for s in steps if s.learns]
    if not learning:
        pytest.skip("learns nothing in any configuration")
    step = learning[0]
    with pytest.raises(DefinitionError) as info:
        step.fit(pa.table({"something_else": [1.0, 2.0]}))
    assert info.value.field == COLUMN


# -- the documented examples (docs/semantics.md section 6) ---------------------------------------


def _through_sql(con: duckdb.DuckDBPyConnection, step: S._Step, art: S.Artifact, data: list[Any]) -> list[Any]:
    table = pa.table({step.column: data, OTHER: list(range(len(data)))})
    con.register("__ex", table)
    try:
        expr = step.sql(art)[step.output]
        rows = con.sql(f'SELECT {expr} FROM __ex ORDER BY "{OTHER}"').fetchall()
    finally:
        con.unregister("__ex")
    # a fitted float is a DOUBLE in SQL: an integer column imputed or clipped with it must not
    # turn DECIMAL (decimal.Decimal), which the stream engine never produces
    assert not any(isinstance(r[0], decimal.Decimal) for r in rows), rows[:3]
    return [r[0] for r in rows]


def test_documented_examples(con: duckdb.DuckDBPyConnection) -> None:
    x = pa.table({"x": [1.0, None, 3.0, 10.0]})
    assert S.Impute("x", "median").fit(x) == {"value": 3.0}
    assert S.Impute("x", "mean").fit(x) == {"value": 14.0 / 3}
    assert S.Impute("x", "mode").fit(pa.table({"x": [5, 3, 3, 5, 7]})) == {"value": 3}
    assert S.Impute("x", "median").fit(pa.table({"x": [4.0, 1.0, None, 3.0, 2.0]})) == {"value": 2.5}

    clip = S.Clip("x", q=(0, 0.75))
    art = clip.fit(pa.table({"x": [1.0, 2.0, 3.0, 4.0, 100.0]}))
    assert art == {"lower": 1.0, "upper": 4.0}
    assert clip.transform_one({"x": 100.0}, art) == {"x": 4.0}
    assert _through_sql(con, clip, art, [100.0, None, 0.5]) == [4.0, None, 1.0]
    # an integer column with a fitted float: DOUBLE in SQL, as the stream's Python floats
    imp = S.Impute("x", "median")
    art = imp.fit(pa.table({"x": [4, 1, None, 3, 2]}))
    assert art == {"value": 2.5}
    assert _through_sql(con, imp, art, [7, None]) == [7.0, 2.5]
    assert _through_sql(con, clip, {"lower": 1.0, "upper": 4.0}, [100, None, 0]) == [4.0, None, 1.0]

    std = S.Standardize("x")
    art = std.fit(pa.table({"x": [2.0, 4.0, None, 6.0]}))
    assert art == {"mean": 4.0, "std": 2.0}
    assert std.transform_one({"x": 8.0}, art) == {"x": 2.0}
    assert std.fit(pa.table({"x": [5.0, 5.0]})) == {"mean": 5.0, "std": 1.0}   # std 0 -> 1
    assert std.fit(pa.table({"x": [5.0]})) == {"mean": 5.0, "std": 1.0}        # one value -> 1

    enc = S.Encode("x")
    art = enc.fit(pa.table({"x": ["b", "a", "b", "c", None]}))
    assert art == {"vocabulary": ["b", "a", "c"]}
    codes = [enc.transform_one({"x": v}, art)["x"] for v in ["b", "a", "c", "z", None]]
    assert codes == [1, 2, 3, 0, 0]
    assert _through_sql(con, enc, art, ["b", "a", "c", "z", None]) == codes
    assert S.Encode("x", min_count=2).fit(pa.table({"x": ["b", "a", "b", "c", None]})) == {"vocabulary": ["b"]}
    assert enc.sql({"vocabulary": []}) == {"x": "CAST(0 AS BIGINT)"}


def test_constant_impute_learns_nothing_and_needs_a_value() -> None:
    step = S.Impute("x", "constant", value=0)
    assert not step.learns
    assert step.fit(pa.table({"x": pa.array([None, None], pa.float64())})) == {"value": 0}
    with pytest.raises(DefinitionError):
        S.Impute("x", "constant")
    with pytest.raises(DefinitionError):
        S.Clip("x")
    with pytest.raises(DefinitionError):
        S.Clip("x", q=(0.9, 0.1))
