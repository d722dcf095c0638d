"""Contracts evaluated in DuckDB SQL over a source's valid rows, never row by row in Python.

Row-level contracts find their failing rows with a few set-oriented statements (see
:func:`find_failures`): one scan for every allowed / matches / rule contract, one scan of key
hashes per uniqueness contract (sorted in NumPy), one window pass per monotonic sequence. The
dataset-level contracts share one aggregate query. Rows that break an ``error`` contract go to
quarantine with reason ``contract`` and step ``contract:<name>``; the valid-rows view of the
source is redefined without them, so the accounting still reconciles.

>>> import duckdb
>>> from evenflow.core import contracts as C
>>> con = duckdb.connect()
>>> _ = con.execute("CREATE TABLE v AS SELECT range AS __seq, range % 3 AS k FROM range(6)")
>>> found = find_failures(con, "v", [C.unique("k"), C.allowed("k", [0, 1])])
>>> con.sql(f"SELECT __seq FROM {found} ORDER BY 1").fetchall()
[(2,), (3,), (4,), (5,)]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import numpy as np

from evenflow.core.contracts import (
    Allowed,
    ContractError,
    Freshness,
    Matches,
    Monotonic,
    NullFraction,
    RowCount,
    Rule,
    Unique,
)
from evenflow.core.expr import Expr
from evenflow.core.sqltext import ident as q
from evenflow.core.sqltext import literal as lit
from evenflow.core.timeutil import parse_duration, parse_instant
from evenflow.errors import DefinitionError

#: Evidence rows kept per contract.
EVIDENCE = 20


@dataclass
class ContractResult:
    """The outcome of one contract on one source."""

    name: str
    kind: str
    severity: str
    level: str
    passed: bool
    observed: Any
    bound: str
    failing_rows: int = 0
    evidence: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        """One line for people: ``FAIL null_fraction_amount (error): observed 0.12, bound <= 0.05``."""
        shown = f"{self.observed:.6g}" if isinstance(self.observed, float) else str(self.observed)
        state = "ok" if self.passed else "FAIL"
        return f"{state} {self.name} ({self.severity}): observed {shown}, bound {self.bound}"


def _flag(c: Any) -> str:
    """A scalar row contract's failure flag over one row: TRUE when it fails.

    NULL passes: the flags are read only by ``WHERE``, ``CASE WHEN`` and ``FILTER``, which take
    TRUE alone. A bare ``NOT`` (no ``coalesce``) lets DuckDB push the negation into the
    comparisons, prune them by the column statistics and stop at the first false operand.
    """
    if isinstance(c, Allowed):
        values = ", ".join(lit(v) for v in c.values)
        return f"({q(c.column)} IS NOT NULL AND {q(c.column)} NOT IN ({values}))"
    if isinstance(c, Matches):
        return (f"({q(c.column)} IS NOT NULL AND "
                f"NOT regexp_full_match(CAST({q(c.column)} AS VARCHAR), {lit(c.pattern)}))")
    assert isinstance(c, Rule)
    cond = Expr.parse(c.expr).to_sql() if c.expr is not None else f"({c.sql})"
    return f"(NOT {cond})"


def _order(c: Monotonic) -> tuple[str, str]:
    """The comparison that fails a row against the previous value, and its words."""
    op = {("increasing", False): "<", ("increasing", True): "<=",
          ("decreasing", False): ">", ("decreasing", True): ">="}[(c.direction, c.strict)]
    word = ("not above" if c.strict else "below") if c.direction == "increasing" else \
        ("not below" if c.strict else "above")
    return op, word


def _detail(c: Any, i: int) -> str:
    """SQL for why a row fails, over the failing rows ``f`` (its columns and helper ``__w<i>``)."""
    def shown(k: str) -> str:
        return f"{lit(k + '=')} || coalesce(CAST(f.{q(k)} AS VARCHAR), 'null')"
    if isinstance(c, Unique):
        return " || ', ' || ".join(shown(k) for k in c.columns) + \
            f" || ' already seen at record ' || f.__w{i}"
    if isinstance(c, Allowed):
        return f"{shown(c.column)} || {lit(' is not one of ' + ', '.join(lit(v) for v in c.values))}"
    if isinstance(c, Matches):
        return f"{shown(c.column)} || {lit(' does not match ' + c.pattern)}"
    if isinstance(c, Monotonic):
        return f"{shown(c.column)} || {lit(' is ' + _order(c)[1] + ' the previous value ')} || f.__w{i}"
    return lit(f"breaks {c.expr or c.sql}")


def _check_sql(con: duckdb.DuckDBPyConnection, table: str, c: Any, sql: str) -> None:
    """Bind one contract's SQL alone, so a mistake names its contract (reads no rows)."""
    try:
        con.sql(f"SELECT {sql} FROM {q(table)} LIMIT 0").fetchall()
    except duckdb.Error as exc:
        first = str(exc).splitlines()[0]
        raise DefinitionError(f"contract {c.name!r} cannot be evaluated: {first}",
                              fix="check its columns, values and expression against the schema"
                              ) from None


def _long(items: list[tuple[int, str, str]], source: str, carry: list[str]) -> str:
    """(rule, flag, info) over ``source`` -> one row (__seq, __rule, __info, *carry) per failure."""
    cases = ", ".join(f"CASE WHEN {flag} THEN {{'r': {i}, 'info': CAST({info} AS VARCHAR)}} END"
                      for i, flag, info in items)
    where = " OR ".join(flag for _, flag, _ in items)
    cols = "".join(f", {q(k)}" for k in carry)
    return (f"SELECT __seq, __x.r AS __rule, __x.info AS __info{cols} FROM (SELECT __seq{cols}, "
            f"unnest(list_filter([{cases}], lambda x: x IS NOT NULL)) AS __x FROM {source} WHERE {where})")


def _insert(long: str, carry: list[str]) -> str:
    """``INSERT INTO long`` naming the columns a statement fills (the others stay NULL)."""
    return f"INSERT INTO {long} (__seq, __rule, __info{''.join(f', {q(k)}' for k in carry)}) "


def _columns(rules: list[Any]) -> list[str]:
    """The columns ``rules`` read, each once, in order."""
    return list(dict.fromkeys(k for c in rules for k in c.used_columns()))


def find_failures(con: duckdb.DuckDBPyConnection, table: str, rules: list[Any]) -> str:
    """The failing rows of ``rules`` over ``table``: a temp table with ``__seq``, per rule ``i`` a
    flag ``__f<i>`` and a helper text ``__w<i>`` (first record of a key, previous value), and the
    columns the rules read (:meth:`used_columns`).

    Each statement that finds failing rows keeps the columns their rules read as it goes, so the
    failing rows' values need no second pass over ``table`` (which may be a Parquet scan). A row
    carries the columns of every rule it fails; the others may be NULL.

    Scalar rules (allowed, matches, rule) share one scan. Each uniqueness contract sorts its
    keys' hashes; only when one repeats are rows compared by their keys (:func:`_unique`).
    Monotonic contracts with the same sequence share one window pass.
    """
    long = q(f"{table}__contract_long")
    used = _columns(rules)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {long} AS SELECT __seq, CAST(NULL AS INTEGER) AS __rule, "
                f"CAST(NULL AS VARCHAR) AS __info{''.join(f', {q(k)}' for k in used)} FROM {q(table)} LIMIT 0")
    scalar = [(i, _flag(c), "NULL") for i, c in enumerate(rules) if not isinstance(c, Unique | Monotonic)]
    for i, flag, _ in scalar:
        _check_sql(con, table, rules[i], flag)
    scalar = _by_distinct_values(con, table, rules, scalar)
    uniques = [(i, c) for i, c in enumerate(rules) if isinstance(c, Unique)]
    rows = con.sql(f"SELECT count(*) FROM {q(table)}").fetchall()[0][0] if uniques else 0
    # a uniqueness contract with few repeated hashes marks its candidate rows in the shared scan
    # (rule number len(rules) + i, a literal IN list of hashes), then compares only those rows
    fused: list[tuple[int, Unique]] = []
    marks: list[tuple[int, str, str]] = []
    for i, c in uniques:
        candidates = _unique(con, table, c, i, long, rows)
        if candidates is not None:
            fused.append((i, c))
            nonnull = " AND ".join(f"{q(k)} IS NOT NULL" for k in c.columns)
            hashes = ", ".join(f"{h}::UBIGINT" for h in candidates.tolist())
            marks.append((len(rules) + i, f"({nonnull} AND hash({', '.join(q(k) for k in c.columns)}) "
                                          f"IN ({hashes}))", "NULL"))
    if scalar or marks:
        carry = _columns([*(rules[i] for i, _, _ in scalar), *(c for _, c in fused)])
        con.execute(_insert(long, carry) + _long([*scalar, *marks], q(table), carry))
    for i, c in fused:
        cols = ", ".join(q(k) for k in c.columns)
        con.execute(_insert(long, c.columns) + f"SELECT __seq, {i}, CAST(__first AS VARCHAR), {cols} FROM ("
                    f"SELECT __seq, {cols}, min(__seq) OVER (PARTITION BY {cols}) AS __first FROM {long} "
                    f"WHERE __rule = {len(rules) + i}) WHERE __seq <> __first")
    sequences: dict[tuple[tuple[str, ...], str | None], list[int]] = {}
    for i, c in enumerate(rules):
        if isinstance(c, Monotonic):
            sequences.setdefault((tuple(c.by), c.order_by), []).append(i)
    for (by, order_by), members in sequences.items():
        _monotonic(con, table, [(i, rules[i]) for i in members], list(by), order_by, long)
    out = q(f"{table}__contract_failures")
    flags = ", ".join([*(f"bool_or(__rule = {i}) AS __f{i}, "
                         f"any_value(__info) FILTER (WHERE __rule = {i}) AS __w{i}" for i in range(len(rules))),
                       *(f"any_value({q(k)}) AS {q(k)}" for k in used)])
    con.execute(f"CREATE OR REPLACE TEMP TABLE {out} AS SELECT __seq, {flags} FROM {long} "
                f"WHERE __rule < {len(rules)} GROUP BY __seq")
    con.execute(f"DROP TABLE {long}")
    return out


#: Key hashes sorted per pass of a uniqueness check (8 bytes each): bounds its memory.
HASHES_PER_PASS = 1 << 24


def _repeated_hashes(con: duckdb.DuckDBPyConnection, table: str, cols: str, nonnull: str,
                     rows: int) -> tuple[np.ndarray, int]:
    """The 64-bit hashes of the keys ``cols`` that occur more than once over ``table``, and how
    many rows have one of them.

    Equal keys hash alike (DuckDB's ``hash`` is the one its GROUP BY uses: -0.0 and 0.0, NaNs,
    alike), so every repeated key's hash is here; a rare collision of two distinct keys may add
    one more, which the exact pass drops. Sorting the hashes costs a fraction of a hash
    aggregate over the keys themselves; with more than ``HASHES_PER_PASS`` rows, the hashes are
    split by residue and sorted a part at a time.
    """
    parts = max(1, -(-rows // HASHES_PER_PASS))
    found, hit = [], 0
    for part in range(parts):
        only = f" WHERE __h % {parts} = {part}" if parts > 1 else ""
        h = con.sql(f"SELECT __h FROM (SELECT hash({cols}) AS __h FROM {q(table)} WHERE {nonnull}){only}"
                    ).fetchnumpy()["__h"]
        h.sort()
        same = h[1:] == h[:-1]
        repeated = h[1:][same]  # sorted: a hash k times here repeats k - 1 times
        found.append(repeated[np.r_[True, repeated[1:] != repeated[:-1]]] if len(repeated) else repeated)
        hit += len(repeated) + len(found[-1])  # the rows of the repeated hashes
    return np.concatenate(found), hit


#: Rows read to tell whether a text column has few distinct values.
SAMPLE = 100_000
#: Failing values a contract decided on distinct values may have and still be an ``IN`` list.
IN_LIST = 1000


def _by_distinct_values(con: duckdb.DuckDBPyConnection, table: str, rules: list[Any],
                        scalar: list[tuple[int, str, str]]) -> list[tuple[int, str, str]]:
    """The scalar flags, with allowed / matches contracts on a text column of few distinct values
    decided on those values instead of on every row.

    Such a contract's verdict on a row depends on the row's value alone. When a sample of the
    rows shows at most one distinct value in two, the column's distinct values are collected
    (one hash aggregate, a fraction of the cost of a regex or a long ``NOT IN`` on every row) and
    the contracts are evaluated on them. In the scan, a contract then becomes ``IN (its failing
    values)``, or drops out when no value fails. A column whose values are too many or not
    plain text keeps its per-row flags. (Text columns carry no collation here, so two distinct
    values are two different strings.)
    """
    per_value = [i for i, _, _ in scalar if isinstance(rules[i], Allowed | Matches)]
    rel = con.sql(f"FROM {q(table)}")  # bound, not run: the column types
    text = {k for k, t in zip(rel.columns, rel.types, strict=True) if str(t) == "VARCHAR"}
    columns = list(dict.fromkeys(rules[i].column for i in per_value if rules[i].column in text))
    if not columns:
        return scalar
    sampled = con.sql("SELECT count(*), " + ", ".join(f"count(DISTINCT {q(k)})" for k in columns)
                      + f" FROM (SELECT {', '.join(q(k) for k in columns)} FROM {q(table)} LIMIT {SAMPLE})"
                      ).fetchall()[0]
    few = [k for k, d in zip(columns, sampled[1:], strict=True) if d * 2 <= sampled[0]]
    flags = {i: flag for i, flag, _ in scalar}
    for k in few:
        members = [i for i in per_value if rules[i].column == k]
        failing = con.sql("SELECT " + ", ".join(f"list({q(k)}) FILTER (WHERE {flags[i]})[:{IN_LIST + 1}]"
                                                for i in members)
                          + f" FROM (SELECT DISTINCT {q(k)} FROM {q(table)} WHERE {q(k)} IS NOT NULL)"
                          ).fetchall()[0]
        for i, values in zip(members, failing, strict=True):
            if not values:
                del flags[i]
            elif len(values) <= IN_LIST and all("\x00" not in v for v in values):
                flags[i] = f"({q(k)} IS NOT NULL AND {q(k)} IN ({', '.join(lit(v) for v in values)}))"
    return [(i, flags[i], info) for i, _, info in scalar if i in flags]


def _unique(con: duckdb.DuckDBPyConnection, table: str, c: Unique, i: int, long: str,
            rows: int) -> np.ndarray | None:
    """Rows whose key an earlier row already had, with that earlier row's ``__seq``.

    The keys' hashes find the candidates (:func:`_repeated_hashes`): a clean key costs one scan
    and one sort. When few rows share a hash, only they are compared by their keys; when many
    do (a key that mostly repeats), one hash aggregate over all rows finds the repeated keys.
    At most ``IN_LIST`` repeated hashes are returned instead, for the caller to mark their rows
    in the shared scan of the scalar rules (which may read the key columns anyway) and compare
    only those rows.
    """
    cols = ", ".join(q(k) for k in c.columns)
    _check_sql(con, table, c, cols)
    nonnull = " AND ".join(f"{q(k)} IS NOT NULL" for k in c.columns)
    candidates, hit = _repeated_hashes(con, table, cols, nonnull, rows)
    if not hit:
        return None
    if hit <= rows // 8 and len(candidates) <= IN_LIST:
        return candidates
    if hit > rows // 8:
        repeated = q(f"{table}__repeated_{i}")
        on = " AND ".join(f"t.{q(k)} = d.{q(k)}" for k in c.columns)
        con.execute(f"CREATE OR REPLACE TEMP TABLE {repeated} AS SELECT {cols}, min(__seq) AS __first "
                    f"FROM {q(table)} WHERE {nonnull} GROUP BY ALL HAVING count(*) > 1")
        con.execute(_insert(long, c.columns) + f"SELECT t.__seq, {i}, CAST(d.__first AS VARCHAR), "
                    f"{', '.join(f't.{q(k)}' for k in c.columns)} "
                    f"FROM {q(table)} t JOIN {repeated} d ON {on} WHERE t.__seq <> d.__first")
        con.execute(f"DROP TABLE {repeated}")
        return None
    con.execute(_insert(long, c.columns) + f"SELECT __seq, {i}, CAST(__first AS VARCHAR), {cols} FROM ("
                f"SELECT __seq, {cols}, min(__seq) OVER (PARTITION BY {cols}) AS __first FROM {q(table)} "
                f"WHERE {nonnull} AND hash({cols}) IN (SELECT unnest($1::UBIGINT[]))) "
                f"WHERE __seq <> __first", [candidates.tolist()])
    return None


def _monotonic(con: duckdb.DuckDBPyConnection, table: str, members: list[tuple[int, Monotonic]],
               by: list[str], order_by: str | None, long: str) -> None:
    """One window pass for the contracts that share a sequence.

    In input order without entities, the rows are read in the order they were stored (``OVER
    ()``, streamed, no sort) and that order is checked on the way (``__seq`` only grows); if it
    ever did not, the pass is redone with an explicit sort.
    """
    part = f"PARTITION BY {', '.join(q(b) for b in by)} " if by else ""
    order = f"ORDER BY {q(order_by)}, __seq" if order_by else "ORDER BY __seq"
    streamed = not by and not order_by
    for _, c in members:
        _check_sql(con, table, c, f"lag({q(c.column)}) OVER ({part}{order})")
    columns = list(dict.fromkeys(c.column for _, c in members))
    carry = _columns([c for _, c in members])  # the columns, then the entity and order columns
    cols = ", ".join(q(k) for k in carry)
    # the previous non-null value; a column without nulls takes the plain previous value, which
    # is the same and several times cheaper to find
    nulls = con.sql("SELECT " + ", ".join(f"count(*) > count({q(k)})" for k in columns)
                    + f" FROM {q(table)}").fetchall()[0]
    skip = {k: " IGNORE NULLS" if has else "" for k, has in zip(columns, nulls, strict=True)}
    for sort in ([False, True] if streamed else [True]):
        spec = f"{part}{order}" if sort else ""
        lags = ", ".join(f"lag({q(c.column)}{skip[c.column]}) OVER ({spec}) AS __p{i}" for i, c in members)
        items = [(i, f"({q(c.column)} IS NOT NULL AND __p{i} IS NOT NULL AND {q(c.column)} "
                     f"{_order(c)[0]} __p{i})", f"__p{i}") for i, c in members]
        source = f"(SELECT __seq, {cols}, {lags}{'' if sort else ', lag(__seq) OVER () AS __ps'} FROM {q(table)})"
        if sort:
            con.execute(_insert(long, carry) + _long(items, source, carry))
            return
        trial = q(f"{table}__contract_seq")
        con.execute(f"CREATE OR REPLACE TEMP TABLE {trial} AS "
                    f"SELECT * FROM ({_long([*items, (-1, '__ps > __seq', 'NULL')], source, carry)})")
        in_order = not con.sql(f"SELECT count(*) FROM {trial} WHERE __rule = -1").fetchall()[0][0]
        if in_order:
            con.execute(_insert(long, carry) + f"SELECT * FROM {trial}")
        con.execute(f"DROP TABLE {trial}")
        if in_order:
            return


def _dataset(con: duckdb.DuckDBPyConnection, table: str, rules: list[Any], now: datetime
             ) -> list[ContractResult]:
    """The dataset-level rules, measured by one query (a scalar subquery per measure)."""
    items = ["count(*)"]
    for c in rules:
        if isinstance(c, NullFraction):
            items.append(f"count(*) - count({q(c.column)})")
        elif isinstance(c, Freshness):
            _check_sql(con, table, c, f"epoch_us({q(c.column)})")
            items.append(f"max({q(c.column)})")
    # one scalar subquery per measure: alone, a max (and a count without nulls) is answered from
    # the Parquet statistics, while in one aggregate with the null counts it reads the column
    values = con.sql("SELECT " + ", ".join(f"(SELECT {m} FROM {q(table)})" for m in items)).fetchall()[0]
    rows, results = int(values[0]), []
    it = iter(values[1:])  # the measured values, in the order of ``rules``
    for c in rules:
        evidence: list[dict[str, Any]] = []
        if isinstance(c, RowCount):
            observed: Any = rows
            ok = (c.ge is None or rows >= c.ge) and (c.le is None or rows <= c.le)
            bound = _range(c.ge, c.le)
        elif isinstance(c, NullFraction):
            nulls = int(next(it))
            observed = nulls / rows if rows else 0.0
            ok = (c.ge is None or observed >= c.ge) and (c.le is None or observed <= c.le)
            bound = _range(c.ge, c.le)
            if not ok and nulls:
                evidence = _rows(con, f"SELECT __seq AS record FROM {q(table)} WHERE "
                                      f"{q(c.column)} IS NULL ORDER BY __seq LIMIT {EVIDENCE}")
        else:
            assert isinstance(c, Freshness)
            latest = next(it)
            reference = parse_instant(c.reference) if c.reference else now
            oldest_ok = reference - timedelta(microseconds=parse_duration(c.within))
            observed = latest.astimezone(UTC).isoformat() if latest is not None else None
            ok = latest is not None and latest >= oldest_ok
            bound = f">= {oldest_ok.isoformat()} ({c.within} before {reference.isoformat()})"
            if not ok and latest is not None:
                evidence = _rows(con, f"SELECT __seq AS record, {q(c.column)} FROM {q(table)} "
                                      f"WHERE {q(c.column)} = {lit(observed)}::TIMESTAMPTZ "
                                      f"ORDER BY __seq LIMIT 1")
        results.append(ContractResult(c.name, c.kind, c.severity, "dataset", ok, observed, bound,
                                      0, evidence))
    return results


def _range(ge: float | None, le: float | None) -> str:
    return " and ".join([*([f">= {ge}"] if ge is not None else []), *([f"<= {le}"] if le is not None else [])])


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    rel = con.sql(sql)
    return [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in zip(rel.columns, r, strict=True)}
            for r in rel.fetchall()]


def evaluate_contracts(con: duckdb.DuckDBPyConnection, *, source: str, contracts: list[Any],
                       table: str, raw: str, payload: str, now: datetime | None = None
                       ) -> list[ContractResult]:
    """Check ``contracts`` on the valid rows ``table`` (a view with ``__seq``) of ``source``.

    Rows failing an ``error`` row-level contract are written to ``__quarantine`` (``payload`` is
    SQL over the raw table aliased ``r``) and ``table`` is redefined without them. Raises
    :class:`ContractError` when an ``error`` contract fails at dataset level.
    """
    now = now or datetime.now(UTC)
    row_rules = [c for c in contracts if c.level == "row"]
    results: dict[str, ContractResult] = {}
    if row_rules:
        # the failing rows with the columns their rules read, found without a second pass
        failures = find_failures(con, table, row_rules)
        counts = con.sql("SELECT " + ", ".join(f"coalesce(count_if(__f{i}), 0)" for i in range(len(row_rules)))
                         + f" FROM {failures}").fetchall()[0]
        details = [_detail(c, i) for i, c in enumerate(row_rules)]
        for i, (c, n) in enumerate(zip(row_rules, counts, strict=True)):
            cols = ", ".join(f"f.{q(k)}" for k in c.used_columns())
            evidence = _rows(con, f"SELECT f.__seq AS record{', ' + cols if cols else ''}, "
                                  f"{details[i]} AS detail FROM {failures} f "
                                  f"WHERE f.__f{i} ORDER BY f.__seq LIMIT {EVIDENCE}") if n else []
            limit = c.max_failures or 0
            bound = f"<= {limit} failing rows"
            results[c.name] = ContractResult(c.name, c.kind, c.severity, "row", int(n) <= limit,
                                             int(n), bound, int(n), evidence)
        _quarantine(con, source, row_rules, failures, table, raw, payload, details)
    for r in _dataset(con, table, [c for c in contracts if c.level == "dataset"], now):
        results[r.name] = r
    ordered = [results[c.name] for c in contracts]
    stopping = [r for r, c in zip(ordered, contracts, strict=True) if not r.passed and
                c.severity == "error" and (c.level == "dataset" or c.max_failures is not None)]
    if stopping:
        raise ContractError(f"source {source!r}: " + "; ".join(
            f"contract {r.name} failed: observed {r.line().split('observed ', 1)[1]}" for r in stopping),
            results=ordered, field=stopping[0].name,
            fix="fix the data upstream, or relax the bound, or declare the contract severity='warn'")
    return ordered


def _quarantine(con: duckdb.DuckDBPyConnection, source: str, rules: list[Any], failures: str,
                table: str, raw: str, payload: str, details: list[str]) -> None:
    """Send rows failing an ``error`` rule to quarantine; redefine ``table`` without them."""
    errors = [i for i, c in enumerate(rules) if c.severity == "error"]
    if not errors:
        return
    # a row is quarantined once, under the first error rule it breaks (declaration order);
    # the others it breaks are listed in the detail
    def first(part: Callable[[int], str]) -> str:
        return "CASE " + " ".join(f"WHEN f.__f{i} THEN {part(i)}" for i in errors) + " END"

    fields = first(lambda i: lit(",".join(rules[i].used_columns())))
    step = first(lambda i: lit(f"contract:{rules[i].name}"))
    detail = first(lambda i: f"{lit(rules[i].name + ': ')} || {details[i]}")
    also = "concat_ws(', ', " + ", ".join(f"CASE WHEN f.__f{i} THEN {lit(rules[i].name)} END"
                                           for i in errors) + ")"
    any_error = " OR ".join(f"f.__f{i}" for i in errors)
    con.execute(
        f"INSERT INTO __quarantine SELECT {lit(source)}, NULL, f.__seq, {payload}, 'contract', "
        f"{fields}, {step}, {detail} || CASE WHEN {also} LIKE '%, %' THEN ' (breaks: ' || {also} "
        f"|| ')' ELSE '' END FROM {failures} f "
        f"JOIN {q(raw)} r USING (__seq) WHERE {any_error} ORDER BY f.__seq")
    valid = f"{table}__valid"
    con.execute(f"ALTER VIEW {q(table)} RENAME TO {q(valid)}")
    con.execute(f"CREATE VIEW {q(table)} AS SELECT * FROM {q(valid)} WHERE __seq NOT IN "
                f"(SELECT __seq FROM {failures} f WHERE {any_error})")
