"""The lookup plan (evenflow.batch.lookup) against the SQL plans and the plain-Python reference.

Generated feature tables have ties (one key, one time, several arrivals), nulls in every value
column, exact duplicate rows and shuffled arrival order; generated query rows repeat
(key, time) pairs, sit exactly on event times, before a key's first event, and on keys with no
events. ``features_at`` must return the same table (values, types, order, metadata) by every
plan.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import reference  # tests/reference.py: the tests directory is on the path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pit_rows import BASE, KEYS, STEP, TS, query_rows

import evenflow as ef
from evenflow.batch.lookup import AsOfIndex, lookup_capable
from evenflow.batch.retrieval import features_at

SETTINGS = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

#: every first/last the lookup plan answers, over a Float, an Int and a String column
FEATURES = [ef.last(c, closed=cl) for c in ("amount", "qty", "merchant") for cl in ("right", "left")] + \
    [ef.first(c, closed=cl) for c in ("amount", "qty", "merchant") for cl in ("right", "left")]


@st.composite
def feature_rows(draw) -> list[dict]:
    base = draw(st.lists(st.fixed_dictionaries({
        "card": st.sampled_from(KEYS),
        "event_time": st.integers(0, 12).map(lambda i: BASE + i * STEP),
        "amount": st.one_of(st.none(), st.integers(-400, 400).map(lambda i: i * 0.25)),
        "qty": st.one_of(st.none(), st.integers(-5, 5)),
        "merchant": st.one_of(st.none(), st.sampled_from(["m1", "m2", "m3"])),
    }), min_size=0, max_size=30))
    if base:  # exact duplicates
        base += [dict(base[i]) for i in draw(st.lists(st.integers(0, len(base) - 1), max_size=4))]
    rows = draw(st.permutations(base))
    return [dict(e, seq=i) for i, e in enumerate(rows)]


def _events(rows: list[dict]) -> ef.Source:
    table = pa.table({
        "card": pa.array([e["card"] for e in rows], pa.string()),
        "ts": pa.array([e["event_time"] for e in rows], TS),
        "amount": pa.array([e["amount"] for e in rows], pa.float64()),
        "qty": pa.array([e["qty"] for e in rows], pa.int64()),
        "merchant": pa.array([e["merchant"] for e in rows], pa.string()),
    })
    schema = ef.Schema(card=ef.String(), ts=ef.Timestamp(), amount=ef.Float(), qty=ef.Int(),
                       merchant=ef.String())
    return ef.source.frame(table, name="tx", key="card", event_time="ts", schema=schema)


def _points(rows: list[dict]) -> ef.Source:
    table = pa.table({"card": pa.array([r["card"] for r in rows], pa.string()),
                      "ts": pa.array([r["t"] for r in rows], TS),
                      "row": pa.array(range(len(rows)), pa.int64())})
    return ef.source.frame(table, name="rows", key="card", event_time="ts")


def _by_plan(points: ef.Source, sets: list[ef.FeatureSet], **kw) -> dict[str, pa.Table]:
    return {plan: features_at(points, sets, plan=plan, **kw) for plan in ("lookup", "auto", "window", "join")}


@SETTINGS
@given(events=feature_rows(), queries=query_rows())
def test_lookup_matches_sql_plans_and_reference(events, queries):
    fs = ef.FeatureSet("fs", source=_events(events), features=FEATURES)
    out = _by_plan(_points(queries), [fs])
    for plan in ("auto", "window", "join"):
        assert out["lookup"].equals(out[plan], check_metadata=True), plan
    by_key: dict[str, list[dict]] = {}
    for e in events:
        by_key.setdefault(e["card"], []).append(e)
    want = reference.features_at(FEATURES, by_key, [{"key": r["card"], "t": r["t"]} for r in queries])
    got = out["lookup"].to_pylist()
    assert [r["row"] for r in got] == list(range(len(queries)))  # every row, in input order
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        for f in FEATURES:
            assert reference.same(g["fs__" + f.name], w[f.name]), (i, f.name, g, w)
    no_history = sum(1 for r in queries if not any(e["event_time"] <= r["t"] for e in by_key.get(r["card"], [])))
    assert out["lookup"].schema.metadata[b"rows_without_history"] == f'{{"fs": {no_history}}}'.encode()


def _frame(**columns) -> pa.Table:
    return pa.table(columns)


def _t(*minutes: int | None) -> pa.Array:
    return pa.array([None if m is None else BASE + m * 60_000_000 for m in minutes], TS)


def test_two_column_key_null_times_and_several_feature_sets():
    events = _frame(shop=["s1", "s1", "s2", "s1", "s2"], till=[1, 2, 1, 1, None],
                    ts=_t(0, 5, 5, 10, 1), price=[1.0, 2.0, 3.0, None, 9.0],
                    seen=_t(0, 5, 5, 10, 1))
    src = ef.source.frame(events, name="ev", key=["shop", "till"], event_time="ts")
    # keyed by row, so the feature key (shop, till) and the time may be null
    points = ef.source.frame(_frame(row=[0, 1, 2, 3, 4, 5], shop=["s1", "s1", "s2", "s2", None, "s1"],
                                    till=[1, 1, 1, None, 1, 1], at=_t(10, None, 7, 7, 7, 4)),
                             name="q", key="row", schema=ef.Schema(
                                 row=ef.Int(), shop=ef.String(), till=ef.Int(), at=ef.Timestamp()))
    sets = [ef.FeatureSet("a", source=src, features=[ef.last("price"), ef.first("price", closed="left")]),
            ef.FeatureSet("b", source=src, features=[ef.last("seen", closed="left")])]
    out = _by_plan(points, sets, time="at")
    for plan in ("auto", "window", "join"):
        assert out["lookup"].equals(out[plan], check_metadata=True), plan
    assert out["lookup"].column("a__last_price").to_pylist() == [1.0, None, 3.0, None, None, 1.0]


def test_knowledge_time_before_the_row_time_leaves_the_lookup():
    src = ef.source.frame(_frame(card=["a", "a"], ts=_t(0, 5), v=[1.0, 2.0]), name="ev", key="card",
                          event_time="ts")
    points = ef.source.frame(_frame(card=["a", "a"], ts=_t(6, 6), known=_t(6, 3)), name="q", key="card",
                             event_time="ts")
    fs = ef.FeatureSet("f", source=src, features=[ef.last("v")])
    with pytest.raises(ef.DefinitionError, match="knowledge time"):
        features_at(points, [fs], knowledge_time="known", plan="lookup")
    # auto takes the join plan, which honours a
    auto = features_at(points, [fs], knowledge_time="known")
    assert auto.equals(features_at(points, [fs], knowledge_time="known", plan="join"))
    # the event at minute 5 is known from minute 5 on (available_time defaults to event_time)
    assert auto.column("f__last_v").to_pylist() == [2.0, 1.0]
    late = ef.source.frame(_frame(card=["a"], ts=_t(6), known=_t(9)), name="q", key="card", event_time="ts")
    assert features_at(late, [fs], knowledge_time="known", plan="lookup").equals(
        features_at(late, [fs], knowledge_time="known", plan="window"))


def test_lookup_answers_first_and_last_over_all_history_only():
    src = ef.source.frame(_frame(card=["a"], ts=_t(0), v=[1.0], seen=_t(0)), name="ev", key="card",
                          event_time="ts")
    delayed = ef.source.frame(_frame(card=["a"], ts=_t(0), v=[1.0], seen=_t(0)), name="ev2", key="card",
                              event_time="ts", available_time="seen")
    assert lookup_capable(ef.FeatureSet("f", source=src, features=[ef.last("v"), ef.first("v")]), None)
    refused = [
        ef.FeatureSet("f", source=src, features=[ef.last("v", window="1h")]),
        ef.FeatureSet("f", source=src, features=[ef.last("v"), ef.count()]),
        ef.FeatureSet("f", source=src, features=[ef.last("v"), ef.Derived(name="d", expr="last_v * 2")]),
    ]
    for fs in refused:
        assert not lookup_capable(fs, None)
    assert not lookup_capable(ef.FeatureSet("f", source=delayed, features=[ef.last("v")]), "seen")
    points = ef.source.frame(_frame(card=["a"], ts=_t(1)), name="q", key="card", event_time="ts")
    with pytest.raises(ef.DefinitionError, match="lookup plan"):
        features_at(points, [refused[1]], plan="lookup")


def test_quarantined_rows_and_no_events():
    events = ef.source.frame(_frame(card=["a", "b"], ts=_t(0, 1), v=[-1.0, 2.0]), name="ev", key="card",
                             event_time="ts", schema=ef.Schema(card=ef.String(), ts=ef.Timestamp(),
                                                               v=ef.Float(ge=0)))
    points = ef.source.frame(_frame(card=["a", None, "b"], ts=_t(5, 5, 5)), name="q", key="card",
                             event_time="ts")
    fs = ef.FeatureSet("f", source=events, features=[ef.last("v")])
    out = _by_plan(points, [fs])
    assert out["lookup"].column("f__last_v").to_pylist() == [None, 2.0]  # a's only row was invalid
    for plan in ("window", "join"):
        assert out["lookup"].equals(out[plan], check_metadata=True)
    nothing = ef.source.frame(_frame(card=["a"], ts=_t(0), v=[-1.0]), name="ev", key="card",
                              event_time="ts", schema=ef.Schema(card=ef.String(), ts=ef.Timestamp(),
                                                                v=ef.Float(ge=0)))
    empty = _by_plan(points, [ef.FeatureSet("f", source=nothing, features=[ef.last("v")])])
    assert empty["lookup"].equals(empty["window"], check_metadata=True)
    assert empty["lookup"].column("f__last_v").null_count == 2


def _brute(entity, t, seq, q_entity, q_t, closed, which):
    rows = []
    for e, x in zip(q_entity, q_t, strict=True):
        ok = [i for i in range(len(t)) if entity[i] == e and (t[i] <= x if closed == "right" else t[i] < x)]
        if which == "first":
            mine = [i for i in range(len(t)) if entity[i] == e]
            best = min(mine, key=lambda i: (t[i], seq[i])) if mine else None
            rows.append(best if best is not None and best in ok else None)
        else:
            rows.append(max(ok, key=lambda i: (t[i], seq[i])) if ok else None)
    return rows


@settings(max_examples=300, deadline=None, database=None)
@given(data=st.data(), wide=st.booleans())
def test_index_against_brute_force(data, wide):
    """Both key layouts (times shifted, or ranked when entity * span would overflow) and ties."""
    times = st.sampled_from([-4 * 10**18, -5, 0, 3, 4 * 10**18]) if wide else st.integers(0, 6)
    n = data.draw(st.integers(0, 12))
    entity = np.array(data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), dtype=np.int64)
    t = np.array(data.draw(st.lists(times, min_size=n, max_size=n)), dtype=np.int64)
    seq = np.array(data.draw(st.permutations(list(range(n)))), dtype=np.int64)
    m = data.draw(st.integers(1, 10))
    q_entity = np.array(data.draw(st.lists(st.integers(0, 4), min_size=m, max_size=m)), dtype=np.int64)
    q_t = np.array(data.draw(st.lists(times, min_size=m, max_size=m)), dtype=np.int64)
    index = AsOfIndex.build(entity, t, seq, entities=5)
    assert (index.ranks is not None) == (n > 0 and 5 * (int(t.max()) - int(t.min()) + 2) > np.iinfo(np.int64).max)
    for closed in ("right", "left"):
        for which in ("last", "first"):
            match = index.match(q_entity, q_t, closed=closed)
            rows = match.last() if which == "last" else match.first()
            got = [int(r) if f else None for r, f in zip(rows, match.found, strict=True)]
            assert got == _brute(entity, t, seq, q_entity, q_t, closed, which), (closed, which)
    assert index.has(q_entity).tolist() == [e in set(entity.tolist()) for e in q_entity.tolist()]


def test_two_column_key_pairs_that_never_occur():
    """Each part of the key is known, the pair is not: no history."""
    src = ef.source.frame(_frame(a=["x1", "x2", "x3"], b=[1, 2, 3], ts=_t(0, 0, 0), v=[1.0, 2.0, 3.0]),
                          name="ev", key=["a", "b"], event_time="ts")
    points = ef.source.frame(_frame(a=["x1", "x1", "x2", "x3", "x9"], b=[1, 2, 2, 1, 1], ts=_t(1, 1, 1, 1, 1)),
                             name="q", key=["a", "b"], event_time="ts")
    out = _by_plan(points, [ef.FeatureSet("f", source=src, features=[ef.last("v")])])
    assert out["lookup"].column("f__last_v").to_pylist() == [1.0, None, 2.0, None, None]
    assert out["lookup"].equals(out["window"], check_metadata=True)
    assert out["lookup"].schema.metadata[b"rows_without_history"] == b'{"f": 3}'


def test_no_valid_query_rows_and_mixed_feature_sets():
    src = ef.source.frame(_frame(card=["a", "a"], ts=_t(0, 5), v=[1.0, 2.0]), name="ev", key="card",
                          event_time="ts")
    lookup = ef.FeatureSet("l", source=src, features=[ef.last("v")])
    windowed = ef.FeatureSet("w", source=src, features=[ef.count(window="1h")])
    none_valid = ef.source.frame(_frame(card=[None], ts=_t(1)), name="q", key="card", event_time="ts")
    out = features_at(none_valid, [lookup], plan="lookup")
    assert out.num_rows == 0 and out.equals(features_at(none_valid, [lookup], plan="window"))
    # one set the lookup cannot answer: the whole call takes the SQL plans, same values
    points = ef.source.frame(_frame(card=["a", "a", "b"], ts=_t(5, 4, 5)), name="q", key="card",
                             event_time="ts")
    mixed = features_at(points, [lookup, windowed])
    assert mixed.equals(features_at(points, [lookup, windowed], plan="window"), check_metadata=True)
    assert mixed.column("l__last_v").to_pylist() == [2.0, 1.0, None]
    assert mixed.column("w__count_1h").to_pylist() == [2, 1, 0]


def test_keys_the_lookup_leaves_to_sql():
    """Float keys (0.0 equals -0.0 in SQL) and key types that differ between the two sides."""
    src = ef.source.frame(_frame(k=[0.0, 1.5], ts=_t(0, 0), v=[1.0, 2.0]), name="ev", key="k", event_time="ts")
    points = ef.source.frame(_frame(k=[-0.0, 1.5], ts=_t(1, 1)), name="q", key="k", event_time="ts")
    fs = ef.FeatureSet("f", source=src, features=[ef.last("v")])
    assert features_at(points, [fs]).column("f__last_v").to_pylist() == [1.0, 2.0]
    with pytest.raises(ef.DefinitionError, match="key types"):
        features_at(points, [fs], plan="lookup")
    ints = ef.source.frame(_frame(k=pa.array([1, 2], pa.int32()), ts=_t(0, 0), v=[1.0, 2.0]), name="ev",
                           key="k", event_time="ts", schema=ef.Schema(k=ef.Int(), ts=ef.Timestamp(), v=ef.Float()))
    texts = ef.source.frame(_frame(k=["1", "2"], ts=_t(1, 1)), name="q", key="k", event_time="ts")
    fs = ef.FeatureSet("f", source=ints, features=[ef.last("v")])
    with pytest.raises(ef.DefinitionError, match="key types"):
        features_at(texts, [fs], plan="lookup")
