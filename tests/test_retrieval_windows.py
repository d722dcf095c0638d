"""``features_at`` with bounded windows: every SQL plan against the plain-Python reference.

The bucketed join, the window plan and the plan the engine chooses must return every valid
query row in input order with the same values and the same ``rows_without_history``, which the
join counts from the points that joined no event. Generated events have ties (one key, one
time, several arrivals), nulls, events exactly on window bounds and, in one variant, an
``available_time``; generated query rows repeat (key, time) pairs, sit on event times and on
bounds, come before a key's first event, on keys with no events, and include an invalid row,
so the ids of the valid ones have a gap.
"""

from __future__ import annotations

import pyarrow as pa
import reference  # tests/reference.py: the tests directory is on the path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pit_rows import BASE, KEYS, STEP, TS, query_rows

import evenflow as ef
from evenflow.batch.retrieval import features_at

SETTINGS = settings(max_examples=40, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

FEATURES = [
    *(f(window=w) for f in (ef.count,) for w in ("20m", "1h")),
    *(f("amount", window=w) for f in (ef.sum, ef.mean, ef.std, ef.var) for w in ("20m", "1h")),
    ef.mean("amount", window="20m", closed="left"), ef.count(window="1h", closed="left"),
    ef.sum("qty", window="1h"), ef.mean("qty", window="1h"), ef.std("qty", window="20m"),
]


@st.composite
def event_rows(draw) -> list[dict]:
    rows = draw(st.lists(st.fixed_dictionaries({
        "card": st.sampled_from(KEYS),
        "event_time": st.integers(0, 12).map(lambda i: BASE + i * STEP),
        "delay": st.sampled_from([0, 0, STEP, 7 * STEP]),
        "amount": st.one_of(st.none(), st.integers(-400, 400).map(lambda i: i * 0.25)),
        "qty": st.one_of(st.none(), st.integers(-5, 5)),
    }), min_size=0, max_size=30))
    return [dict(e, seq=i, available_time=e["event_time"] + e["delay"]) for i, e in enumerate(rows)]


def _events(rows: list[dict], bitemporal: bool) -> ef.Source:
    table = pa.table({
        "card": pa.array([e["card"] for e in rows], pa.string()),
        "ts": pa.array([e["event_time"] for e in rows], TS),
        "seen": pa.array([e["available_time"] for e in rows], TS),
        "amount": pa.array([e["amount"] for e in rows], pa.float64()),
        "qty": pa.array([e["qty"] for e in rows], pa.int64()),
    })
    schema = ef.Schema(card=ef.String(), ts=ef.Timestamp(), seen=ef.Timestamp(), amount=ef.Float(),
                       qty=ef.Int())
    return ef.source.frame(table, name="tx", key="card", event_time="ts", schema=schema,
                           available_time="seen" if bitemporal else None)


def _points(rows: list[dict]) -> ef.Source:
    # an invalid row (null key) in the middle: the valid rows' ids are not contiguous
    cards = [r["card"] for r in rows]
    times = [r["t"] for r in rows]
    middle = len(rows) // 2
    table = pa.table({"card": pa.array([*cards[:middle], None, *cards[middle:]], pa.string()),
                      "ts": pa.array([*times[:middle], BASE, *times[middle:]], TS),
                      "row": pa.array([*range(middle), -1, *range(middle, len(rows))], pa.int64())})
    return ef.source.frame(table, name="rows", key="card", event_time="ts",
                           schema=ef.Schema(card=ef.String(nullable=False), ts=ef.Timestamp(),
                                            row=ef.Int()))


@SETTINGS
@given(events=event_rows(), queries=query_rows(), bitemporal=st.booleans())
def test_windows_at_query_rows_match_the_reference_by_every_plan(events, queries, bitemporal):
    fs = ef.FeatureSet("fs", source=_events(events, bitemporal), features=FEATURES)
    points = _points(queries)
    plans = ("auto", "join") if bitemporal else ("auto", "window", "join")
    out = {plan: features_at(points, [fs], plan=plan) for plan in plans}  # type: ignore[arg-type]
    by_key: dict[str, list[dict]] = {}
    for e in events:
        ev = {k: v for k, v in e.items() if k != "available_time" or bitemporal}
        by_key.setdefault(e["card"], []).append(ev)
    want = reference.features_at(FEATURES, by_key, [{"key": r["card"], "t": r["t"]} for r in queries])
    # history: an event at or before the row's time, whenever it became known
    no_history = sum(1 for r in queries if not any(e["event_time"] <= r["t"] for e in by_key.get(r["card"], [])))
    for plan, table in out.items():
        got = table.to_pylist()
        assert [r["row"] for r in got] == list(range(len(queries))), plan  # every valid row, in order
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            for f in FEATURES:
                assert reference.same(g["fs__" + f.name], w[f.name]), (plan, i, f.name, g, w)
        assert table.schema.metadata[b"rows_without_history"] == f'{{"fs": {no_history}}}'.encode(), plan
        assert table.schema == out["auto"].schema, plan


def test_two_feature_sets_and_a_row_expression():
    events = pa.table({"card": ["a", "a", "b", "a"], "ts": pa.array([BASE, BASE + STEP, BASE, BASE + STEP], TS),
                       "amount": [1.0, 2.0, 5.0, None]})
    tx = ef.source.frame(events, name="tx", key="card", event_time="ts")
    by_card = ef.FeatureSet("card", source=tx, features=[ef.sum("amount", window="1h"),
                                                         ef.mean("amount", window="20m"),
                                                         ef.derive("twice", "sum_amount_1h * 2")])
    recent = ef.FeatureSet("recent", source=tx, features=[ef.count(window="20m"), ef.since_last(closed="right")])
    rows = ef.source.frame(pa.table({"card": ["b", "a", "c", "a"],
                                     "ts": pa.array([BASE, BASE + STEP, BASE, BASE - 1], TS)}),
                           name="rows", key="card", event_time="ts")
    for plan in ("auto", "window", "join"):
        out = features_at(rows, [by_card, recent], plan=plan)  # type: ignore[arg-type]
        assert out.column("card__sum_amount_1h").to_pylist() == [5.0, 3.0, 0.0, 0.0], plan
        assert out.column("card__twice").to_pylist() == [10.0, 6.0, 0.0, 0.0], plan
        assert out.column("card__mean_amount_20m").to_pylist() == [5.0, 1.5, None, None], plan
        assert out.column("recent__count_20m").to_pylist() == [1, 3, 0, 0], plan
        assert out.column("recent__since_last").to_pylist() == [0.0, 0.0, None, None], plan
        assert out.schema.metadata[b"rows_without_history"] == b'{"card": 2, "recent": 2}', plan
