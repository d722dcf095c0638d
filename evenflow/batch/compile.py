"""Feature sets to SQL: small pure functions, one plan per shape of query.

Two plans give the same values (the tests run both):

- ``window``: events and query points in one ordered stream per entity, aggregates as window
  functions over integer-microsecond ``RANGE`` frames. One sort, no join blow-up. Used when
  events carry no ``available_time`` distinct from ``event_time``.
- ``join``: each query point joins its entity's events inside the longest window with
  ``available_time <= a``, then aggregates with a ``FILTER`` per feature. Needed for bitemporal
  queries.

All times in the generated SQL are integer microseconds (``__t``), so window bounds are exact:
``t - W < event_time`` becomes ``RANGE BETWEEN W-1 PRECEDING``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from evenflow.core.features import Aggregate, Derived
from evenflow.core.sqltext import ident as q

Plan = Literal["window", "join"]


@dataclass(frozen=True)
class EventsShape:
    """How the prepared events table looks to the compiler."""

    table: str
    key: list[str]
    event_time: str
    available_time: str | None
    value_columns: list[str]
    #: integer columns: their sum stays an exact integer (docs/semantics.md)
    int_columns: frozenset[str] = frozenset()


def _frame(agg: Aggregate, *, points: bool = False) -> str:
    """The ORDER BY and frame of one aggregate's window.

    With query points, an unbounded window becomes a running ``ROWS`` frame over the stream
    ordered by time, then by which side of a tie the query point sits on (after the events at
    ``t`` for ``closed="right"``, before them for ``"left"``), then by arrival. Running frames
    are computed in one pass, where a ``RANGE`` frame with ``arg_max`` is not.
    """
    if points and agg.window_us is None:
        side = "__kr" if agg.closed == "right" else "__kl"
        return f"ORDER BY __t, {side}, __s ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"
    lower = "UNBOUNDED PRECEDING" if agg.window_us is None else f"{agg.window_us - 1} PRECEDING"
    upper = "CURRENT ROW" if agg.closed == "right" else "1 PRECEDING"
    return f"ORDER BY __t RANGE BETWEEN {lower} AND {upper}"


def _order_key(col: str, prefix: str = "") -> str:
    c = prefix + q(col)
    return (f"CASE WHEN {c} IS NOT NULL THEN struct_pack(t := {prefix}__t, s := {prefix}__s) END")


def _agg_call(agg: Aggregate, prefix: str = "", *, running: bool = False,
              ints: frozenset[str] = frozenset()) -> str:
    """The aggregate over the frame's event rows (query-point rows carry nulls).

    ``running``: the frame is ordered by (time, arrival) among events, so first/last are the
    frame's first/last non-null values.
    """
    col = prefix + q(agg.column) if agg.column else ""
    if running and agg.agg in ("first", "last"):
        return f"{agg.agg}_value({col} IGNORE NULLS)"
    match agg.agg:
        case "count":
            return f"count({col or prefix + '__ev'})"
        case "sum":
            return f"sum({col})" if agg.column in ints else f"sum(CAST({col} AS DOUBLE))"
        case "mean":
            return f"avg(CAST({col} AS DOUBLE))"
        case "min":
            return f"min({col})"
        case "max":
            return f"max({col})"
        case "std":
            return f"stddev_samp(CAST({col} AS DOUBLE))"
        case "var":
            return f"var_samp(CAST({col} AS DOUBLE))"
        case "first":
            return f"arg_min({col}, {_order_key(agg.column or '', prefix)})"
        case "last":
            return f"arg_max({col}, {_order_key(agg.column or '', prefix)})"
        case "distinct":
            return f"count(DISTINCT {col})"
        case "since_last":
            return f"max({prefix}__tev)"
    raise AssertionError(agg.agg)


def _finish(agg: Aggregate, raw: str, t: str, ints: frozenset[str] = frozenset()) -> str:
    if agg.agg == "sum":
        return f"COALESCE(CAST({raw} AS BIGINT), 0)" if agg.column in ints else f"COALESCE({raw}, 0.0)"
    if agg.agg == "since_last":
        return f"(({t} - {raw}) / 1e6)"
    return raw


def _event_rows(ev: EventsShape, *, with_qid: bool) -> str:
    cols = [*(q(k) for k in ev.key), *(q(c) for c in ev.value_columns)]
    qid = ", CAST(NULL AS BIGINT) AS __qid" if with_qid else ""
    return (f"SELECT {', '.join(cols)}, epoch_us({q(ev.event_time)}) AS __t, __seq AS __s, "
            f"1 AS __ev, epoch_us({q(ev.event_time)}) AS __tev{qid} FROM {ev.table}")


def window_sql(ev: EventsShape, aggs: list[Aggregate], points: str | None) -> str:
    """Aggregates by the window plan. Output: ``__qid`` and one column per aggregate.

    ``points`` is a table with ``__qid``, the key columns and ``__t`` (microseconds); without it
    the query points are the events themselves (``__qid`` = ``__seq``).
    """
    part = ", ".join(q(k) for k in ev.key)
    has_points = points is not None
    frames = sorted({_frame(a, points=has_points) for a in aggs})
    names = {f: f"w{i}" for i, f in enumerate(frames)}
    windows = ", ".join(f"{names[f]} AS (PARTITION BY {part} {f})" for f in frames)

    def call(a: Aggregate) -> str:
        frame = _frame(a, points=has_points)
        running = frame.endswith("CURRENT ROW") and "ROWS" in frame
        raw = f"{_agg_call(a, running=running, ints=ev.int_columns)} OVER {names[frame]}"
        return _finish(a, raw, "__t", ev.int_columns)

    selects = ", ".join(f"{call(a)} AS {q(a.name)}" for a in aggs)
    if points is None:
        return f"SELECT __s AS __qid, {selects} FROM ({_event_rows(ev, with_qid=False)}) AS u WINDOW {windows}"
    nulls = ", ".join(f"NULL AS {q(c)}" for c in ev.value_columns)
    keys = ", ".join(q(k) for k in ev.key)
    point_rows = (f"SELECT {keys}{', ' + nulls if nulls else ''}, __t, CAST(NULL AS BIGINT) AS __s, "
                  f"CAST(NULL AS INTEGER) AS __ev, CAST(NULL AS BIGINT) AS __tev, __qid, "
                  f"1 AS __kr, 0 AS __kl FROM {points}")
    event_rows = f"SELECT *, 0 AS __kr, 1 AS __kl FROM ({_event_rows(ev, with_qid=True)})"
    union = f"{event_rows} UNION ALL BY NAME {point_rows}"
    return (f"SELECT __qid, {selects} FROM ({union}) AS u WINDOW {windows} "
            f"QUALIFY __qid IS NOT NULL")


def join_sql(ev: EventsShape, aggs: list[Aggregate], points: str | None, *,
             bitemporal: bool = True, recent: bool = False) -> str:
    """Aggregates by the join plan. ``points`` needs ``__qid``, keys, ``__t``, ``__a``.

    ``bitemporal=False`` promises that ``available_time <= a`` excludes nothing (events known
    at their event time, every ``a >= t``), which drops that predicate.

    ``recent`` adds ``__recent``: how many events the point joined, all at or before its time.
    A point that joined one has history; only the others need looking up (``history_sql``).

    When every window is bounded, time buckets of the longest window's width join the hash key:
    a query point probes its own bucket and the one before, so it meets only the events of its
    window's neighbourhood, never its entity's whole history.
    """
    av = f"epoch_us({q(ev.available_time)})" if ev.available_time else f"epoch_us({q(ev.event_time)})"
    cols = [*(q(k) for k in ev.key), *(q(c) for c in ev.value_columns)]
    windows = [a.window_us for a in aggs]
    longest = None if any(w is None for w in windows) else max(w for w in windows if w is not None)
    bucket = f", epoch_us({q(ev.event_time)}) // {longest} AS __b" if longest else ""
    events = (f"SELECT {', '.join(cols)}, epoch_us({q(ev.event_time)}) AS __t, {av} AS __a, "
              f"__seq AS __s, 1 AS __ev, epoch_us({q(ev.event_time)}) AS __tev{bucket} FROM {ev.table}")
    keys = ", ".join(q(k) for k in ev.key)
    points_sql = points or f"(SELECT __s AS __qid, {keys}, __t, __a FROM ({events}))"
    on = " AND ".join(f"e.{q(k)} = p.{q(k)}" for k in ev.key)
    if longest:
        points_sql = (f"(SELECT __qid, {keys}, __t, __a, __t // {longest} - __k AS __b "
                      f"FROM {points_sql}, range(2) AS __r(__k))")
        on += f" AND e.__b = p.__b AND e.__t > p.__t - {longest}"
    selects = []
    for a in aggs:
        cond = []  # unmatched rows of the LEFT JOIN carry nulls, which every aggregate skips
        if a.window_us is not None and a.window_us != longest:
            cond.append(f"e.__t > p.__t - {a.window_us}")
        if a.closed == "left":
            cond.append("e.__t < p.__t")
        raw = _agg_call(a, "e.", ints=ev.int_columns)
        if cond:
            raw += f" FILTER (WHERE {' AND '.join(cond)})"
        selects.append(f"{_finish(a, raw, 'p.__t', ev.int_columns)} AS {q(a.name)}")
    if recent:
        selects.append("count(e.__ev) AS __recent")
    known = " AND e.__a <= p.__a" if bitemporal else ""
    return (f"SELECT p.__qid, {', '.join(selects)} FROM {points_sql} AS p "
            f"LEFT JOIN ({events}) AS e ON {on} AND e.__t <= p.__t{known} "
            f"GROUP BY p.__qid, p.__t")


def point_stats_sql(ev: EventsShape, points: str, longest: int | None, *, events_every: int = 1,
                    points_every: int = 1) -> str:
    """What the engine measures before computing features at ``points``, in one query.

    Columns: the (query point, event) pairs the bucketed join with buckets ``longest`` wide
    would form (its cost; 0 without ``longest``), the events and the query points.

    The pairs may be estimated on a sample: one event in ``events_every`` and one point in
    ``points_every``, picked by a hash of their position (the same sample on every run), the
    pairs among them scaled back up. Each sampled pair stands for ``events_every ·
    points_every`` pairs, whatever the skew, so a hot key still shows. The counts are exact.
    """
    counts = f"(SELECT count(*) FROM {ev.table}), (SELECT count(*) FROM {points})"
    if not longest:
        return f"SELECT 0, {counts}"
    keys = ", ".join(q(k) for k in ev.key)
    on = " AND ".join(f"e.{q(k)} = p.{q(k)}" for k in ev.key)
    et = f"epoch_us({q(ev.event_time)})"
    e_where = f" WHERE hash(__seq) % {events_every} = 0" if events_every > 1 else ""
    p_where = f" WHERE hash(__qid, 'point') % {points_every} = 0" if points_every > 1 else ""
    # each point probes its own bucket and the one before: an equi-join on (key, bucket)
    return (f"WITH e AS (SELECT {keys}, {et} // {longest} AS b, count(*) AS n FROM {ev.table}{e_where} "
            f"GROUP BY ALL), p AS (SELECT {keys}, __t // {longest} - __k AS b, count(*) AS n "
            f"FROM {points}, range(2) AS __r(__k){p_where} GROUP BY ALL) "
            f"SELECT (SELECT {events_every * points_every} * coalesce(sum(p.n * e.n), 0) "
            f"FROM p JOIN e ON {on} AND e.b = p.b), {counts}")


def history_sql(ev: EventsShape, points: str, *, few: bool = False) -> str:
    """How many of ``points`` have no event of their entity at or before their time.

    ``few``: the points are a small part of the entities, so only their entities' events are
    grouped (a semi-join first) instead of every entity's.
    """
    keys = ", ".join(q(k) for k in ev.key)
    events = f"{ev.table} AS e"
    if few:
        son = " AND ".join(f"e.{q(k)} = c.{q(k)}" for k in ev.key)
        events += f" SEMI JOIN (SELECT DISTINCT {keys} FROM {points}) AS c ON {son}"
    ekeys = ", ".join(f"e.{q(k)}" for k in ev.key)
    on = " AND ".join(f"f.{q(k)} = p.{q(k)}" for k in ev.key)
    return (f"SELECT count(*) FROM {points} AS p LEFT JOIN (SELECT {ekeys}, min(e.{q(ev.event_time)}) "
            f"AS first_t FROM {events} GROUP BY ALL) AS f ON {on} "
            f"WHERE f.first_t IS NULL OR epoch_us(f.first_t) > p.__t")


def derived_sql(aggregates_sql: str, record_sql: str, aggs: list[Aggregate],
                derived: list[Derived], keep: list[str], record_columns: set[str],
                carry: list[str] | None = None) -> str:
    """Join aggregates back to the record by ``__qid`` and add the row expressions.

    A name that is neither an aggregate nor a column of the record is null
    (docs/semantics.md, row expressions). ``carry``: more columns of the aggregates to keep.
    """
    agg_names = {a.name for a in aggs}
    rename = {name: f"a.{q(name)}" for name in agg_names}
    for d in derived:
        for name in d.parsed.columns() - agg_names - record_columns:
            rename[name] = "NULL"
    exprs = [f"{d.parsed.to_sql(rename)} AS {q(d.name)}" for d in derived]
    cols = ([f"r.{q(c)}" for c in keep] + [f"a.{q(a.name)}" for a in aggs] + exprs
            + [f"a.{q(c)}" for c in carry or []])
    return (f"SELECT r.__qid, {', '.join(cols)} FROM ({record_sql}) AS r "
            f"JOIN ({aggregates_sql}) AS a USING (__qid)")


#: Unbounded aggregates the ``asof`` path answers from running totals, and the totals each needs.
_STATS: dict[str, set[str]] = {"count": {"n"}, "sum": {"sum"}, "mean": {"sum", "n"}, "min": {"min"},
                               "max": {"max"}, "first": {"first"}, "last": {"last"}, "since_last": set()}
RUNNING = set(_STATS)


def asof_capable(agg: Aggregate) -> bool:
    return agg.window_us is None and agg.agg in RUNNING


def asof_sql(ev: EventsShape, aggs: list[Aggregate], points: str, nonnull: set[str]) -> str:
    """Unbounded aggregates at query points as running totals joined with ``ASOF``.

    Per (entity, time) the events are reduced to one row of step totals, ties broken by
    arrival; running totals over those rows are then looked up for each query point with the
    latest time ``<= t`` (``< t`` for ``closed="left"``). A column with nulls gets its own
    reduced table filtered to its non-null values; columns without nulls share one.
    """
    keys = [q(k) for k in ev.key]
    groups: dict[str | None, list[Aggregate]] = {}
    for a in aggs:
        f = a.column if a.column and a.column not in nonnull else None
        groups.setdefault(f, []).append(a)
    ctes, joins, selects = [], [], []
    for gi, (f, members) in enumerate(groups.items()):
        step, running = ["count(*) AS n"], ["sum(n) OVER w AS n"]
        needs: dict[str, set[str]] = {}
        for a in members:
            if a.column:
                needs.setdefault(a.column, set()).update(_STATS[a.agg])
        for col, stats in sorted(needs.items()):
            c = q(col)
            v = c if col in ev.int_columns else f"CAST({c} AS DOUBLE)"
            order = f"CASE WHEN {c} IS NOT NULL THEN __s END"
            reduce_by = {"sum": f"sum({v})", "min": f"min({c})", "max": f"max({c})",
                         "n": f"count({c})", "first": f"arg_min({c}, {order})",
                         "last": f"arg_max({c}, {order})"}
            run_by = {"sum": "sum({}) OVER w", "min": "min({}) OVER w", "max": "max({}) OVER w",
                      "n": "sum({}) OVER w", "first": "first_value({} IGNORE NULLS) OVER w",
                      "last": "last_value({} IGNORE NULLS) OVER w"}
            for stat in sorted(stats):
                name = q(f"{stat}_{col}")
                step.append(f"{reduce_by[stat]} AS {name}")
                running.append(f"{run_by[stat].format(name)} AS {name}")
        where = f" WHERE {q(f)} IS NOT NULL" if f else ""
        reduced = (f"SELECT {', '.join(keys)}, __t, {', '.join(step)} FROM ({_event_rows(ev, with_qid=False)})"
                   f"{where} GROUP BY {', '.join(keys)}, __t")
        if any(a.agg not in ("last", "since_last") for a in members):
            ctes.append(f"r{gi} AS (SELECT {', '.join(keys)}, __t, {', '.join(running)} FROM ({reduced}) "
                        f"WINDOW w AS (PARTITION BY {', '.join(keys)} ORDER BY __t ROWS UNBOUNDED PRECEDING))")
        else:
            # the latest (entity, time) row already holds the latest non-null values: no running pass
            ctes.append(f"r{gi} AS ({reduced})")
        for closed in sorted({a.closed for a in members}):
            alias = f"j{gi}{closed[0]}"
            op = ">=" if closed == "right" else ">"
            on = " AND ".join(f"p.{k} = {alias}.{k}" for k in keys)
            joins.append(f"ASOF LEFT JOIN r{gi} AS {alias} ON {on} AND p.__t {op} {alias}.__t")
            for a in (m for m in members if m.closed == closed):
                selects.append(f"{_running_value(a, alias, ev.int_columns)} AS {q(a.name)}")
    return (f"WITH {', '.join(ctes)} SELECT p.__qid, {', '.join(selects)} FROM {points} AS p "
            + " ".join(joins))


def _running_value(a: Aggregate, alias: str, ints: frozenset[str]) -> str:
    col = a.column or ""
    ref = f"{alias}.{q('{}_' + col)}" if col else ""
    match a.agg:
        case "count":
            return f"COALESCE(CAST({alias}.{q('n_' + col) if col else 'n'} AS BIGINT), 0)"
        case "sum":
            total = ref.format("sum")
            return f"COALESCE(CAST({total} AS BIGINT), 0)" if col in ints else f"COALESCE({total}, 0.0)"
        case "mean":
            return f"(CAST({ref.format('sum')} AS DOUBLE) / NULLIF({ref.format('n')}, 0))"
        case "min" | "max" | "first" | "last":
            return ref.format(a.agg)
        case "since_last":
            return f"((p.__t - {alias}.__t) / 1e6)"
    raise AssertionError(a.agg)
