"""The engine's plan choice at query points: every path gives the same values."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

import evenflow as ef
from evenflow.batch import compile as C
from evenflow.batch.engine import BatchEngine
from evenflow.batch.training import build

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _tables(hot: bool, seed: int = 0) -> tuple[pa.Table, pa.Table]:
    rng = np.random.default_rng(seed)
    n, m = 3000, 600
    cards = ["hot"] * n if hot else [f"c{i}" for i in rng.integers(0, 300, n)]
    ev = pa.table({
        "card": cards,
        "ts": pa.array([T0 + dt.timedelta(seconds=int(s)) for s in rng.integers(0, 3 * 86400, n)],
                       pa.timestamp("us", tz="UTC")),
        "amount": [None if i % 11 == 0 else float(v) for i, v in enumerate(rng.integers(0, 400, n) / 4)],
    })
    lab = pa.table({
        "card": ["hot"] * m if hot else [f"c{i}" for i in rng.integers(0, 300, m)],
        "ts": pa.array([T0 + dt.timedelta(seconds=int(s)) for s in rng.integers(0, 3 * 86400, m)],
                       pa.timestamp("us", tz="UTC")),
        "y": [int(v) for v in rng.integers(0, 2, m)],
    })
    return ev, lab


FEATURES = [ef.count(window="1h"), ef.sum("amount", window="1d"), ef.std("amount", window="1d"),
            ef.mean("amount", window="2h", closed="left"), ef.last("amount"), ef.count(),
            ef.first("amount"), ef.since_last(), ef.max("amount"), ef.distinct("amount")]


def _build(ev: pa.Table, lab: pa.Table, plan: str) -> pa.Table:
    tx = ef.source.frame(ev, name="tx", key="card", event_time="ts")
    lb = ef.source.frame(lab, name="labels", key="card", event_time="ts")
    fs = ef.FeatureSet("card", source=tx, features=FEATURES)
    spec = ef.TrainingSetSpec(name="t", labels=lb, label="y", features=[fs],
                              split=ef.RandomSplit(stratify=False))
    return build(ef.Pipeline(name="p", training_set=spec), plan=plan).table  # type: ignore[arg-type]


def _same(a: pa.Table, b: pa.Table) -> None:
    for name in a.column_names:
        for x, y in zip(a.column(name).to_pylist(), b.column(name).to_pylist(), strict=True):
            if isinstance(x, float) and isinstance(y, float):
                assert abs(x - y) <= 1e-9 * max(abs(x), abs(y), 1e-3), (name, x, y)
            else:
                assert x == y, (name, x, y)


def test_hot_key_falls_back_from_the_join_and_agrees() -> None:
    ev, lab = _tables(hot=True)
    tx = ef.source.frame(ev, name="tx", key="card", event_time="ts")
    fs = ef.FeatureSet("card", source=tx, features=FEATURES)
    eng = BatchEngine(ef.Pipeline(name="p", feature_sets=[fs]))
    prepared = eng.prepare(fs)
    eng.con.register("pts_arrow", lab)
    eng.con.execute("CREATE TABLE pts AS SELECT row_number() OVER () AS __qid, card, epoch_us(ts) AS __t, "
                    "epoch_us(ts) AS __a FROM pts_arrow")
    bounded = [a for a in FEATURES if a.window_us is not None]
    assert not eng._join_is_cheap(eng._shape(prepared), bounded, "pts")  # 1 key: the join would pair too much
    _same(_build(ev, lab, "auto"), _build(ev, lab, "join"))


def test_spread_keys_take_the_bucketed_join_and_agree() -> None:
    ev, lab = _tables(hot=False)
    tx = ef.source.frame(ev, name="tx", key="card", event_time="ts")
    fs = ef.FeatureSet("card", source=tx, features=FEATURES)
    eng = BatchEngine(ef.Pipeline(name="p", feature_sets=[fs]))
    eng.prepare(fs)
    eng.con.register("pts_arrow", lab)
    eng.con.execute("CREATE TABLE pts AS SELECT row_number() OVER () AS __qid, card, epoch_us(ts) AS __t, "
                    "epoch_us(ts) AS __a FROM pts_arrow")
    sql = eng.aggregates_sql(eng.prepare(fs), "pts", "auto")
    assert "ASOF LEFT JOIN" in sql and "__b" in sql  # running totals and buckets both in play
    _same(_build(ev, lab, "auto"), _build(ev, lab, "join"))
    _same(_build(ev, lab, "window"), _build(ev, lab, "join"))


def test_bucket_width_is_the_longest_window() -> None:
    shape = C.EventsShape("ev", ["card"], "ts", None, ["amount"])
    sql = C.join_sql(shape, [ef.count(window="1h"), ef.count(window="1d")], "pts")
    assert "// 86400000000" in sql and "range(2)" in sql


def _points_engine(hot: bool) -> tuple[BatchEngine, C.EventsShape]:
    ev, lab = _tables(hot=hot)
    tx = ef.source.frame(ev, name="tx", key="card", event_time="ts")
    fs = ef.FeatureSet("card", source=tx, features=FEATURES)
    eng = BatchEngine(ef.Pipeline(name="p", feature_sets=[fs]))
    shape = eng._shape(eng.prepare(fs))
    eng.con.register("pts_arrow", lab)
    eng.con.execute("CREATE TABLE pts AS SELECT row_number() OVER () AS __qid, card, epoch_us(ts) AS __t, "
                    "epoch_us(ts) AS __a FROM pts_arrow")
    return eng, shape


def test_sampled_join_cost_is_close_to_the_exact_count_and_still_sees_a_hot_key() -> None:
    bounded = [a for a in FEATURES if a.window_us is not None]
    longest = max(a.window_us or 0 for a in bounded)
    for hot in (False, True):
        eng, shape = _points_engine(hot)
        exact = eng._point_stats(shape, "pts", longest)
        eng.COST_SAMPLE_EVENTS, eng.COST_SAMPLE_POINTS = 300, 150  # every 10th event, 4th point
        sampled = eng._point_stats(shape, "pts", longest)
        assert (sampled.events, sampled.points) == (exact.events, exact.points)  # counts stay exact
        assert sampled.pairs != exact.pairs and abs(sampled.pairs - exact.pairs) <= 0.25 * exact.pairs
        assert eng._join_is_cheap(shape, bounded, "pts", stats=sampled) is (not hot)


def test_rows_without_history_counts_points_before_their_entity_s_first_event() -> None:
    eng, shape = _points_engine(hot=False)
    prepared = eng.prepare(eng.pipeline.feature_sets[0])
    want = eng.con.sql(f"SELECT count(*) FROM pts p WHERE NOT EXISTS (SELECT 1 FROM {shape.table} e "
                       "WHERE e.card = p.card AND epoch_us(e.ts) <= p.__t)").fetchall()[0][0]
    assert want > 0
    assert eng.rows_without_history(prepared, "pts") == want
    assert eng.rows_without_history(prepared, "pts", few=True) == want
    # only the points that joined no event are looked up, and they give the same count
    bounded = [a for a in FEATURES if a.window_us is not None]
    for sql in (eng.aggregates_sql(prepared, "pts", "join", recent=True),  # the whole history
                C.join_sql(shape, bounded, "pts", bitemporal=False, recent=True)):  # buckets of 1d
        eng.con.execute(f"CREATE OR REPLACE TABLE feat AS {sql}")
        others = "(SELECT p.* FROM pts p JOIN feat f USING (__qid) WHERE f.__recent = 0)"
        assert eng.rows_without_history(prepared, others, few=True) == want
