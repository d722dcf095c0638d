"""Every aggregation against hand-computed values (docs/semantics.md, sections 3 and 4).

The expected numbers below are written out literally, worked by hand from the contract; they are
not computed by ``tests/reference.py``. Each case runs on every plan that applies to it: the
``window`` plan only when the events carry no ``available_time`` (it must refuse otherwise), the
``join`` plan always, and ``auto``.
"""

from __future__ import annotations

import datetime as dt
import math

import pyarrow as pa
import pytest

import evenflow as ef
from evenflow.batch.engine import BatchEngine
from evenflow.batch.training import build

TS = pa.timestamp("us", tz="UTC")
DAY = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
ALL_PLANS = ["window", "join", "auto"]
BITEMPORAL_PLANS = ["join", "auto"]


def T(hh: int, mm: int = 0, ss: int = 0, us: int = 0) -> dt.datetime:
    """``HH:MM[:SS[.us]]`` on the test day, UTC."""
    return DAY + dt.timedelta(hours=hh, minutes=mm, seconds=ss, microseconds=us)


# -- helpers -------------------------------------------------------------------------------------

def _events_source(rows: list[tuple], *, available: bool, int_amount: bool = False) -> ef.Source:
    """rows: (card, ts, amount, merchant[, avail]) in arrival order."""
    cols = {
        "card": pa.array([r[0] for r in rows], pa.string()),
        "ts": pa.array([r[1] for r in rows], TS),
        "amount": pa.array([r[2] for r in rows], pa.int64() if int_amount else pa.float64()),
        "merchant": pa.array([r[3] for r in rows], pa.string()),
    }
    fields = {"card": ef.String(), "ts": ef.Timestamp(),
              "amount": ef.Int() if int_amount else ef.Float(), "merchant": ef.String()}
    if available:
        cols["avail"] = pa.array([r[4] for r in rows], TS)
        fields["avail"] = ef.Timestamp()
    return ef.source.frame(pa.table(cols), name="tx", key="card", event_time="ts",
                           available_time="avail" if available else None, schema=ef.Schema(**fields))


def at_events(features: list, rows: list[tuple], plan: str, *, available: bool = False,
              int_amount: bool = False) -> pa.Table:
    tx = _events_source(rows, available=available, int_amount=int_amount)
    fs = ef.FeatureSet("card", source=tx, features=features)
    eng = BatchEngine(ef.Pipeline(name="p", feature_sets=[fs]))
    try:
        return eng.features_at_events(fs, plan=plan)
    finally:
        eng.close()


def at_points(features: list, rows: list[tuple], points: list[tuple], plan: str, *,
              available: bool = False) -> pa.Table:
    """Training set at label rows ``(card, t, a)``; one output row per point, in point order."""
    tx = _events_source(rows, available=available)
    fs = ef.FeatureSet("card", source=tx, features=features)
    label_table = pa.table({
        "card": pa.array([p[0] for p in points], pa.string()),
        "ts": pa.array([p[1] for p in points], TS),
        "kt": pa.array([p[2] for p in points], TS),
        "y": pa.array([0] * len(points), pa.int64()),
    })
    labels = ef.source.frame(label_table, name="labels", key="card", event_time="ts",
                             schema=ef.Schema(card=ef.String(), ts=ef.Timestamp(), kt=ef.Timestamp(),
                                              y=ef.Int()))
    spec = ef.TrainingSetSpec(name="t", labels=labels, label="y", features=["card"],
                              split=ef.RandomSplit(test_size=0.01, stratify=False), knowledge_time="kt")
    ts = build(ef.Pipeline(name="p", feature_sets=[fs], training_set=spec), plan=plan)
    try:
        assert ts.table.num_rows == len(points)
        return ts.table
    finally:
        ts.engine.close()


def check_column(table: pa.Table, name: str, expected: list, *, integer: bool = False) -> None:
    got = table.column(name).to_pylist()
    assert len(got) == len(expected), name
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        where = f"{name}[{i}]: got {g!r}, expected {e!r}"
        if e is None:
            assert g is None, where
        elif isinstance(e, str):
            assert g == e, where
        else:
            assert g is not None, where
            assert g == pytest.approx(e, rel=1e-9, abs=1e-12), where
            if integer:
                assert isinstance(g, int) and not isinstance(g, bool), where + " (must be an integer)"


# -- the main stream ------------------------------------------------------------------------------
#
# seq  card  event_time  amount  merchant
#  0   c1    09:00       10      m1
#  1   c1    09:30       null    m2
#  2   c2    09:45       1000    m9      another key: never counts for c1
#  3   c1    10:00       20      m1
#  4   c1    10:00       30      m3      ties with seq 3
#  5   c1    10:20       40      m1
#
# At every event (t = event_time, a = t), W = 1h:
#   right (t-1h, t]:  0:{0}  1:{0,1}  2:{2}  3:{1,3,4} (09:00 = t-W is out)  4:{1,3,4}  5:{1,3,4,5}
#   left  (t-1h, t):  0:{}   1:{0}    2:{}   3:{1}                           4:{1}      5:{1,3,4}
#   None, right:      0:{0}  1:{0,1}  2:{2}  3:{0,1,3,4}  4:{0,1,3,4}  5:{0,1,3,4,5}
#   None, left:       0:{}   1:{0}    2:{}   3:{0,1}      4:{0,1}      5:{0,1,3,4}

MAIN = [
    ("c1", T(9), 10.0, "m1"),
    ("c1", T(9, 30), None, "m2"),
    ("c2", T(9, 45), 1000.0, "m9"),
    ("c1", T(10), 20.0, "m1"),
    ("c1", T(10), 30.0, "m3"),
    ("c1", T(10, 20), 40.0, "m1"),
]

# (feature, expected value at each row of MAIN, integer result?)
MAIN_CASES = [
    # count()
    (ef.count(window="1h"), [1, 2, 1, 3, 3, 4], True),
    (ef.count(window="1h", closed="left"), [0, 1, 0, 1, 1, 3], True),
    (ef.count(), [1, 2, 1, 4, 4, 5], True),
    (ef.count(closed="left"), [0, 1, 0, 2, 2, 4], True),
    # count(col): nulls skipped
    (ef.count("amount", window="1h"), [1, 1, 1, 2, 2, 3], True),
    (ef.count("amount", window="1h", closed="left"), [0, 1, 0, 0, 0, 2], True),
    (ef.count("amount"), [1, 1, 1, 3, 3, 4], True),
    # sum: 0 on an empty window (and on a window holding only nulls)
    (ef.sum("amount", window="1h"), [10.0, 10.0, 1000.0, 50.0, 50.0, 90.0], False),
    (ef.sum("amount", window="1h", closed="left"), [0, 10.0, 0, 0, 0, 50.0], False),
    (ef.sum("amount"), [10.0, 10.0, 1000.0, 60.0, 60.0, 100.0], False),
    (ef.sum("amount", closed="left"), [0, 10.0, 0, 10.0, 10.0, 60.0], False),
    # mean: null when empty
    (ef.mean("amount", window="1h"), [10.0, 10.0, 1000.0, 25.0, 25.0, 30.0], False),
    (ef.mean("amount", window="1h", closed="left"), [None, 10.0, None, None, None, 25.0], False),
    (ef.mean("amount"), [10.0, 10.0, 1000.0, 20.0, 20.0, 25.0], False),
    # min / max
    (ef.min("amount", window="1h"), [10.0, 10.0, 1000.0, 20.0, 20.0, 20.0], False),
    (ef.min("amount", window="1h", closed="left"), [None, 10.0, None, None, None, 20.0], False),
    (ef.min("amount"), [10.0, 10.0, 1000.0, 10.0, 10.0, 10.0], False),
    (ef.max("amount", window="1h"), [10.0, 10.0, 1000.0, 30.0, 30.0, 40.0], False),
    (ef.max("amount", window="1h", closed="left"), [None, 10.0, None, None, None, 30.0], False),
    (ef.max("amount", closed="left"), [None, 10.0, None, 10.0, 10.0, 30.0], False),
    # var / std: sample statistics, null with fewer than 2 values
    # {20, 30}: 50;  {20, 30, 40}: 100;  {10, 20, 30}: 100;  {10, 20, 30, 40}: 500/3
    (ef.var("amount", window="1h"), [None, None, None, 50.0, 50.0, 100.0], False),
    (ef.var("amount", window="1h", closed="left"), [None, None, None, None, None, 50.0], False),
    (ef.var("amount"), [None, None, None, 100.0, 100.0, 166.66666666666666], False),
    (ef.std("amount", window="1h"), [None, None, None, 7.0710678118654755, 7.0710678118654755, 10.0],
     False),
    (ef.std("amount", window="1h", closed="left"), [None, None, None, None, None, 7.0710678118654755],
     False),
    (ef.std("amount"), [None, None, None, 10.0, 10.0, 12.909944487358056], False),
    # first / last: non-null values only, ties (seqs 3 and 4 at 10:00) by arrival order
    (ef.first("amount", window="1h"), [10.0, 10.0, 1000.0, 20.0, 20.0, 20.0], False),
    (ef.first("amount", window="1h", closed="left"), [None, 10.0, None, None, None, 20.0], False),
    (ef.first("amount"), [10.0, 10.0, 1000.0, 10.0, 10.0, 10.0], False),
    (ef.last("amount", window="1h"), [10.0, 10.0, 1000.0, 30.0, 30.0, 40.0], False),
    (ef.last("amount", window="1h", closed="left"), [None, 10.0, None, None, None, 30.0], False),
    (ef.last("amount", closed="left"), [None, 10.0, None, 10.0, 10.0, 30.0], False),
    # distinct: 0 when empty; over merchant (never null) and over amount (null skipped)
    (ef.distinct("merchant", window="1h"), [1, 2, 1, 3, 3, 3], True),
    (ef.distinct("merchant", window="1h", closed="left"), [0, 1, 0, 1, 1, 3], True),
    (ef.distinct("merchant"), [1, 2, 1, 3, 3, 3], True),
    (ef.distinct("amount", window="1h"), [1, 1, 1, 2, 2, 3], True),
    (ef.distinct("amount", window="1h", closed="left"), [0, 1, 0, 0, 0, 2], True),
    # since_last: defaults to closed="left"; null when no qualifying event; nulls in amount irrelevant
    (ef.since_last(window="1h"), [None, 1800.0, None, 1800.0, 1800.0, 1200.0], False),
    (ef.since_last(), [None, 1800.0, None, 1800.0, 1800.0, 1200.0], False),
    # 30m, left: at 09:30 the event at 09:00 = t - W is out; at 10:00 the one at 09:30 is out
    (ef.since_last(window="30m"), [None, None, None, None, None, 1200.0], False),
    (ef.since_last(window="1h", closed="right"), [0.0, 0.0, 0.0, 0.0, 0.0, 0.0], False),
]


def test_default_names():
    assert ef.count(window="1h").name == "count_1h"
    assert ef.count(window="1h", closed="left").name == "count_1h_before"
    assert ef.sum("amount", window="1h").name == "sum_amount_1h"
    assert ef.sum("amount", window="1h", closed="left").name == "sum_amount_1h_before"
    assert ef.since_last().name == "since_last_before"
    assert ef.since_last().closed == "left"
    assert ef.mean("amount").closed == "right"
    assert ef.count("amount", window="60m").name == "count_amount_1h"


@pytest.mark.parametrize("plan", ALL_PLANS)
def test_every_aggregation_at_events(plan):
    out = at_events([f for f, _, _ in MAIN_CASES], MAIN, plan)
    # input order and the event's own columns come back
    assert out.column("card").to_pylist() == [r[0] for r in MAIN]
    assert out.column("amount").to_pylist() == [r[2] for r in MAIN]
    for feature, expected, integer in MAIN_CASES:
        check_column(out, feature.name, expected, integer=integer)


@pytest.mark.parametrize("plan", ALL_PLANS)
def test_every_aggregation_at_query_points(plan):
    # A label row at each event's (t, a = t) must get exactly the values at that event; a label
    # row for a key without events gets the empty-window values.
    points = [(card, ts, ts) for card, ts, _, _ in MAIN] + [("c9", T(10), T(10))]
    out = at_points([f for f, _, _ in MAIN_CASES], MAIN, points, plan)
    assert out.column("card").to_pylist() == [p[0] for p in points]
    for feature, expected, integer in MAIN_CASES:
        empty = 0 if feature.agg in ("count", "distinct", "sum") else None
        check_column(out, "card__" + feature.name, [*expected, empty], integer=integer)


# -- ties and arrival order -----------------------------------------------------------------------
#
# seq  card  event_time  amount  merchant
#  0   c1    10:00       30      b
#  1   c1    09:10       5       a       arrives late, happened first
#  2   c1    10:00       20      a       ties with seq 0, arrives after it
#  3   c1    10:00       null    c       ties too; null, so never first/last
#
# W = 30m at 10:00 (seqs 0, 2, 3): (09:30, 10:00] -> {0, 2, 3}; at 09:10 -> {1}.
# first by (event_time, seq) = seq 0 -> 30 (not the smaller value 20); last = seq 2 -> 20 (seq 3 is null).
# No window at 10:00: {0, 1, 2, 3}: first = seq 1 (earliest event_time) -> 5; last = seq 2 -> 20.

TIES = [
    ("c1", T(10), 30.0, "b"),
    ("c1", T(9, 10), 5.0, "a"),
    ("c1", T(10), 20.0, "a"),
    ("c1", T(10), None, "c"),
]

TIES_CASES = [
    (ef.first("amount", window="30m"), [30.0, 5.0, 30.0, 30.0], False),
    (ef.last("amount", window="30m"), [20.0, 5.0, 20.0, 20.0], False),
    (ef.first("amount"), [5.0, 5.0, 5.0, 5.0], False),
    (ef.last("amount"), [20.0, 5.0, 20.0, 20.0], False),
    (ef.first("amount", window="30m", closed="left"), [None, None, None, None], False),
    (ef.last("amount", closed="left"), [5.0, None, 5.0, 5.0], False),
    # every tied event sees the others (closed right, all available at t)
    (ef.count(window="30m"), [3, 1, 3, 3], True),
    (ef.count("amount", window="30m"), [2, 1, 2, 2], True),
    (ef.count(window="30m", closed="left"), [0, 0, 0, 0], True),
    (ef.sum("amount", window="30m"), [50.0, 5.0, 50.0, 50.0], False),
    (ef.min("amount", window="30m"), [20.0, 5.0, 20.0, 20.0], False),
    (ef.max("amount", window="30m"), [30.0, 5.0, 30.0, 30.0], False),
    (ef.distinct("merchant", window="30m"), [3, 1, 3, 3], True),
    (ef.distinct("merchant", window="30m", closed="left"), [0, 0, 0, 0], True),
    (ef.since_last(), [3000.0, None, 3000.0, 3000.0], False),
    (ef.since_last(closed="right"), [0.0, 0.0, 0.0, 0.0], False),
]


@pytest.mark.parametrize("plan", ALL_PLANS)
def test_ties_and_arrival_order_at_events(plan):
    out = at_events([f for f, _, _ in TIES_CASES], TIES, plan)
    for feature, expected, integer in TIES_CASES:
        check_column(out, feature.name, expected, integer=integer)


@pytest.mark.parametrize("plan", ALL_PLANS)
def test_ties_at_query_points(plan):
    # A label row at exactly 10:00 sees all three tied events with closed="right", none with "left";
    # a label row at 10:00 with a = 10:00 and one with a later knowledge time give the same values
    # (no available_time: every event is known at its event_time).
    feats = [ef.first("amount", window="30m"), ef.last("amount", window="30m"),
             ef.count(window="30m"), ef.count(window="30m", closed="left"), ef.since_last()]
    out = at_points(feats, TIES, [("c1", T(10), T(10)), ("c1", T(10), T(11)), ("c1", T(9, 10), T(9, 10))],
                    plan)
    check_column(out, "card__first_amount_30m", [30.0, 30.0, 5.0])
    check_column(out, "card__last_amount_30m", [20.0, 20.0, 5.0])
    check_column(out, "card__count_30m", [3, 3, 1], integer=True)
    check_column(out, "card__count_30m_before", [0, 0, 0], integer=True)
    check_column(out, "card__since_last_before", [3000.0, 3000.0, None])


# -- window bounds, exactly --------------------------------------------------------------------------

@pytest.mark.parametrize("plan", ALL_PLANS)
def test_lower_bound_is_exclusive_to_the_microsecond(plan):
    rows = [
        ("c1", T(9), 1.0, "x"),                  # exactly t - W: out
        ("c1", T(9, 0, 0, 1), 2.0, "y"),         # t - W + 1us: in
        ("c1", T(9, 59, 59, 999_999), 4.0, "z"),  # t - 1us: in, also for closed="left"
        ("c1", T(10), 8.0, "w"),                 # t: in for right only
    ]
    feats = [ef.sum("amount", window="1h"), ef.sum("amount", window="1h", closed="left"),
             ef.count(window="1us"), ef.count(window="1us", closed="left")]
    out = at_events(feats, rows, plan)
    # at 09:00:00.000001 the 1h window is (08:00:00.000001, 09:00:00.000001]: 09:00 is in
    check_column(out, "sum_amount_1h", [1.0, 3.0, 7.0, 14.0])
    check_column(out, "sum_amount_1h_before", [0, 1.0, 3.0, 6.0])
    check_column(out, "count_1us", [1, 1, 1, 1], integer=True)
    check_column(out, "count_1us_before", [0, 0, 0, 0], integer=True)
    pts = at_points(feats, rows, [("c1", T(10), T(10)), ("c1", T(10, 0, 0, 1), T(10, 0, 0, 1))], plan)
    check_column(pts, "card__sum_amount_1h", [14.0, 12.0])
    check_column(pts, "card__sum_amount_1h_before", [6.0, 12.0])


# -- empty windows and keys without history -----------------------------------------------------------

EVERY_AGG_1H = [
    ef.count(window="1h"), ef.count("amount", window="1h"), ef.sum("amount", window="1h"),
    ef.mean("amount", window="1h"), ef.min("amount", window="1h"), ef.max("amount", window="1h"),
    ef.std("amount", window="1h"), ef.var("amount", window="1h"), ef.first("amount", window="1h"),
    ef.last("amount", window="1h"), ef.distinct("merchant", window="1h"), ef.since_last(window="1h"),
]
EMPTY = {"count_1h": 0, "count_amount_1h": 0, "sum_amount_1h": 0, "mean_amount_1h": None,
         "min_amount_1h": None, "max_amount_1h": None, "std_amount_1h": None, "var_amount_1h": None,
         "first_amount_1h": None, "last_amount_1h": None, "distinct_merchant_1h": 0,
         "since_last_1h_before": None}


@pytest.mark.parametrize("plan", ALL_PLANS)
def test_empty_windows_at_query_points(plan):
    rows = [("c1", T(9), 10.0, "m1"), ("c2", T(10), 5.0, "m2")]
    points = [
        ("c1", T(8), T(8)),        # before any event of c1
        ("c1", T(10), T(10)),      # c1's only event is at t - W: out
        ("c3", T(10), T(10)),      # a key with no events at all
    ]
    out = at_points(EVERY_AGG_1H, rows, points, plan)
    assert out.num_rows == 3
    for name, value in EMPTY.items():
        check_column(out, "card__" + name, [value] * 3,
                     integer=name.startswith(("count", "distinct")))


@pytest.mark.parametrize("plan", ALL_PLANS)
def test_one_value_and_only_nulls(plan):
    rows = [("c1", T(9), None, "m1"), ("c1", T(9, 10), 7.5, "m1"), ("c1", T(9, 20), None, "m2")]
    out = at_events(EVERY_AGG_1H, rows, plan)
    check_column(out, "count_1h", [1, 2, 3], integer=True)
    check_column(out, "count_amount_1h", [0, 1, 1], integer=True)
    check_column(out, "sum_amount_1h", [0, 7.5, 7.5])
    check_column(out, "mean_amount_1h", [None, 7.5, 7.5])
    check_column(out, "min_amount_1h", [None, 7.5, 7.5])
    check_column(out, "max_amount_1h", [None, 7.5, 7.5])
    check_column(out, "std_amount_1h", [None, None, None])     # n < 2
    check_column(out, "var_amount_1h", [None, None, None])
    check_column(out, "first_amount_1h", [None, 7.5, 7.5])
    check_column(out, "last_amount_1h", [None, 7.5, 7.5])      # the null at 09:20 is skipped
    check_column(out, "distinct_merchant_1h", [1, 1, 2], integer=True)
    check_column(out, "since_last_1h_before", [None, 600.0, 600.0])


@pytest.mark.parametrize("plan", ALL_PLANS)
def test_equal_values_have_zero_variance(plan):
    rows = [("c1", T(9), 2.5, "m"), ("c1", T(9, 1), 2.5, "m"), ("c1", T(9, 2), 2.5, "m")]
    out = at_events([ef.var("amount"), ef.std("amount"), ef.distinct("amount"), ef.mean("amount")],
                    rows, plan)
    check_column(out, "var_amount", [None, 0.0, 0.0])
    check_column(out, "std_amount", [None, 0.0, 0.0])
    check_column(out, "distinct_amount", [1, 1, 1], integer=True)
    check_column(out, "mean_amount", [2.5, 2.5, 2.5])


@pytest.mark.parametrize("plan", ALL_PLANS)
def test_custom_names(plan):
    out = at_events([ef.sum("amount", window="1h", name="spend"), ef.since_last(name="gap")], MAIN, plan)
    check_column(out, "spend", [10.0, 10.0, 1000.0, 50.0, 50.0, 90.0])
    check_column(out, "gap", [None, 1800.0, None, 1800.0, 1800.0, 1200.0])


# -- Int columns ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("plan", ALL_PLANS)
def test_int_column_aggregates(plan):
    rows = [("c1", T(9), 3, "a"), ("c1", T(9, 10), None, "a"), ("c1", T(9, 20), 4, "a")]
    out = at_events([ef.min("amount"), ef.max("amount"), ef.first("amount"), ef.last("amount"),
                     ef.mean("amount"), ef.count("amount")], rows, plan, int_amount=True)
    check_column(out, "min_amount", [3, 3, 3], integer=True)
    check_column(out, "max_amount", [3, 3, 4], integer=True)
    check_column(out, "first_amount", [3, 3, 3], integer=True)
    check_column(out, "last_amount", [3, 3, 4], integer=True)
    check_column(out, "mean_amount", [3.0, 3.0, 3.5])
    check_column(out, "count_amount", [1, 1, 2], integer=True)


@pytest.mark.parametrize("plan", ALL_PLANS)
def test_sum_of_int_column_is_an_exact_integer(plan):
    # docs/semantics.md: sum(col) is "integer for an Int column", and integer results must be equal.
    # 2**53 + 1 is not representable as a double, so a float sum gives 9007199254740992.
    rows = [("c1", T(9), 2**53, "a"), ("c1", T(9, 10), 1, "a"), ("c1", T(9, 20), None, "a")]
    out = at_events([ef.sum("amount"), ef.sum("amount", closed="left")], rows, plan, int_amount=True)
    got = out.column("sum_amount").to_pylist()
    assert got == [9007199254740992, 9007199254740993, 9007199254740993]
    assert all(type(v) is int for v in got), f"sum of an Int column must be an integer, got {got!r}"
    before = out.column("sum_amount_before").to_pylist()
    assert before == [0, 9007199254740992, 9007199254740993]
    assert all(type(v) is int for v in before), before


# -- available_time ------------------------------------------------------------------------------------------
#
# The worked example of docs/semantics.md (entity c1, W = 1h), plus a c2 event that never counts:
#
# seq  event_time  available_time  amount  merchant
#  0   09:00       09:00           10      m1
#  1   09:30       09:30           null    m2
#  2   10:00       10:00           20      m1
#  3   10:00       10:05           30      m3
#  4   10:20       12:00           40      m1

WORKED = [
    ("c1", T(9), 10.0, "m1", T(9)),
    ("c1", T(9, 30), None, "m2", T(9, 30)),
    ("c1", T(10), 20.0, "m1", T(10)),
    ("c2", T(10), 500.0, "m9", T(10)),
    ("c1", T(10), 30.0, "m3", T(10, 5)),
    ("c1", T(10, 20), 40.0, "m1", T(12)),
]


@pytest.mark.parametrize("plan", BITEMPORAL_PLANS)
def test_worked_example_at_every_event(plan):
    # section 4, "At every event": t = event_time, a = available_time
    feats = [ef.count(window="1h"), ef.count(window="1h", closed="left"), ef.since_last(),
             ef.last("amount", window="1h"), ef.sum("amount", window="1h"),
             ef.distinct("merchant", window="1h")]
    out = at_events(feats, WORKED, plan, available=True)
    assert out.column("card").to_pylist() == ["c1", "c1", "c1", "c2", "c1", "c1"]
    check_column(out, "count_1h", [1, 2, 2, 1, 3, 4], integer=True)
    check_column(out, "count_1h_before", [0, 1, 1, 0, 1, 3], integer=True)
    check_column(out, "since_last_before", [None, 1800.0, 1800.0, None, 1800.0, 1200.0])
    # at seq 2, seq 3 (same event_time) is not yet available: last is seq 2's own 20
    check_column(out, "last_amount_1h", [10.0, 10.0, 20.0, 500.0, 30.0, 40.0])
    check_column(out, "sum_amount_1h", [10.0, 10.0, 20.0, 500.0, 50.0, 90.0])
    check_column(out, "distinct_merchant_1h", [1, 2, 2, 1, 3, 3], integer=True)


def test_window_plan_refuses_available_time():
    with pytest.raises(ef.DefinitionError):
        at_events([ef.count(window="1h")], WORKED, "window", available=True)
    with pytest.raises(ef.DefinitionError):
        at_points([ef.count(window="1h")], WORKED, [("c1", T(10), T(10))], "window", available=True)


def _agg_row(suffix: str, window: str | None, closed: str) -> list:
    """All twelve aggregations of the worked example's table with one window and closed."""
    kw = {"window": window, "closed": closed}
    return [ef.count(**kw, name=f"n{suffix}"), ef.count("amount", **kw, name=f"na{suffix}"),
            ef.sum("amount", **kw, name=f"sum{suffix}"), ef.mean("amount", **kw, name=f"mean{suffix}"),
            ef.min("amount", **kw, name=f"min{suffix}"), ef.max("amount", **kw, name=f"max{suffix}"),
            ef.var("amount", **kw, name=f"var{suffix}"), ef.std("amount", **kw, name=f"std{suffix}"),
            ef.first("amount", **kw, name=f"first{suffix}"), ef.last("amount", **kw, name=f"last{suffix}"),
            ef.distinct("merchant", **kw, name=f"distinct{suffix}"),
            ef.since_last(**kw, name=f"since{suffix}")]


STATS = ["n", "na", "sum", "mean", "min", "max", "var", "std", "first", "last", "distinct", "since"]
S50, S100, S500_3 = 7.0710678118654755, 10.0, 12.909944487358056

# The table of section 3: (case, suffix, t, a, values in STATS order)
WORKED_TABLE = [
    ("A", "_r", T(10), T(10), [2, 1, 20.0, 20.0, 20.0, 20.0, None, None, 20.0, 20.0, 2, 0.0]),
    ("B", "_r", T(10), T(10, 5), [3, 2, 50.0, 25.0, 20.0, 30.0, 50.0, S50, 20.0, 30.0, 3, 0.0]),
    ("C", "_l", T(10), T(10, 5), [1, 0, 0, None, None, None, None, None, None, None, 1, 1800.0]),
    ("D", "_r", T(10, 30), T(10, 30), [2, 2, 50.0, 25.0, 20.0, 30.0, 50.0, S50, 20.0, 30.0, 2, 1800.0]),
    ("E", "_r", T(10, 30), T(12), [3, 3, 90.0, 30.0, 20.0, 40.0, 100.0, S100, 20.0, 40.0, 2, 600.0]),
    ("F", "_all", T(10, 30), T(12),
     [5, 4, 100.0, 25.0, 10.0, 40.0, 166.66666666666666, S500_3, 10.0, 40.0, 3, 600.0]),
    ("G", "_r", T(8), T(8), [0, 0, 0, None, None, None, None, None, None, None, 0, None]),
]
INTEGER_STATS = {"n", "na", "distinct"}


@pytest.mark.parametrize("plan", BITEMPORAL_PLANS)
def test_worked_example_table_at_query_points(plan):
    feats = _agg_row("_r", "1h", "right") + _agg_row("_l", "1h", "left") + _agg_row("_all", None, "right")
    points = [("c1", t, a) for _, _, t, a, _ in WORKED_TABLE]
    out = at_points(feats, WORKED, points, plan, available=True)
    rows = out.to_pylist()
    for i, (case, suffix, _, _, values) in enumerate(WORKED_TABLE):
        for stat, expected in zip(STATS, values, strict=True):
            got = rows[i][f"card__{stat}{suffix}"]
            where = f"case {case}, {stat}: got {got!r}, expected {expected!r}"
            if expected is None:
                assert got is None, where
            else:
                assert got == pytest.approx(expected, rel=1e-9, abs=1e-12), where
                if stat in INTEGER_STATS:
                    assert type(got) is int, where


@pytest.mark.parametrize("plan", BITEMPORAL_PLANS)
def test_training_row_knowledge_time(plan):
    # section 4: a label row observed at 10:20 gets count_1h = 3 with a = t, and 4 with a = 12:00
    out = at_points([ef.count(window="1h"), ef.last("amount", window="1h")], WORKED,
                    [("c1", T(10, 20), T(10, 20)), ("c1", T(10, 20), T(12)), ("c1", T(10, 20), T(10, 4))],
                    plan, available=True)
    check_column(out, "card__count_1h", [3, 4, 2], integer=True)
    # a = 10:04: seq 3 (available 10:05) is not known yet, so the last amount is seq 2's
    check_column(out, "card__last_amount_1h", [30.0, 40.0, 20.0])


@pytest.mark.parametrize("plan", ALL_PLANS)
def test_knowledge_time_without_available_time(plan):
    # No available_time: every event is available at its event_time. The formula holds for any
    # (t, a) and no engine clamps a (section 3), so with a < t the events in (a, t] are not known.
    rows = [("c1", T(9), 10.0, "m1"), ("c1", T(9, 30), 20.0, "m2"), ("c1", T(10), 30.0, "m3")]
    feats = [ef.count(window="2h"), ef.sum("amount", window="2h"), ef.last("amount", window="2h")]
    points = [("c1", T(10), T(12)), ("c1", T(10), T(10)), ("c1", T(10), T(9, 15))]
    try:
        out = at_points(feats, rows, points, plan)
    except ef.DefinitionError:
        # refusing the pair is acceptable for the window plan, which cannot honour a; never for auto
        assert plan == "window"
        return
    check_column(out, "card__count_2h", [3, 3, 1], integer=True)
    check_column(out, "card__sum_amount_2h", [60.0, 60.0, 10.0])
    check_column(out, "card__last_amount_2h", [30.0, 30.0, 10.0])


@pytest.mark.parametrize("plan", BITEMPORAL_PLANS)
def test_available_time_before_event_time(plan):
    # available_time < event_time is allowed (a forecast); the event still needs event_time <= t
    rows = [("c1", T(10), 1.0, "a", T(9)), ("c1", T(11), 2.0, "b", T(9))]
    out = at_points([ef.sum("amount"), ef.count(closed="left")], rows,
                    [("c1", T(10), T(10)), ("c1", T(10, 30), T(10, 30)), ("c1", T(11), T(11))],
                    plan, available=True)
    check_column(out, "card__sum_amount", [1.0, 1.0, 3.0])
    check_column(out, "card__count_before", [0, 1, 1], integer=True)


def test_float_literals_used_above():
    # guard against typos in the hand-written constants
    assert math.isclose(S50, math.sqrt(50)) and math.isclose(S500_3, math.sqrt(500 / 3))
    assert math.isclose(166.66666666666666, 500 / 3)
