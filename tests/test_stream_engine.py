"""The stream engine's own behaviour: steps on the stream, memory checkpoints, lateness, bad input.

Parity with the batch engine and the reference over generated streams is in
``test_stream_parity.py``; these are the cases that need a specific set-up.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import evenflow as ef
from evenflow.batch.engine import BatchEngine
from evenflow.stream.engine import StreamEngine, _key_from_text, _key_text


def _pipeline(rows: list[dict], steps: list, features: list, **fields: object) -> ef.Pipeline:
    schema = ef.Schema(id=ef.String(unique=True), card=ef.String(), amount=ef.Float(),
                       ts=ef.Timestamp(), **fields)
    tx = ef.source.frame(pa.Table.from_pylist(rows), name="tx", key="card", event_time="ts",
                         schema=schema)
    return ef.Pipeline(name="p", sources={"tx": tx},
                       feature_sets=[ef.FeatureSet("card", source=tx, steps=steps, features=features)])


def _rows(n: int) -> list[dict]:
    return [{"id": f"t{i}", "card": f"c{i % 2}",
             "amount": None if i % 3 == 0 else float(i * (100 if i in (7, 20) else 1)),
             "ts": f"2026-03-01T10:{i:02d}:00Z"} for i in range(n)]


def test_fitted_and_stateful_steps_agree_with_batch_and_quarantine_outliers() -> None:
    rows = _rows(30)
    p = _pipeline(rows, [ef.Impute("amount", "last", value=0.0),
                         ef.Outliers("amount", method="iqr", k=1.5, action="quarantine")],
                  [ef.sum("amount", window="1h"), ef.last("amount")])
    eng = BatchEngine(p)
    ev = eng.prepare(p.feature_set("card"))
    batch = eng.con.sql(eng.features_sql(ev)).to_arrow_table().to_pylist()
    stream = StreamEngine(p, artifacts=ev.artifacts, emit="final")
    result = stream.process(rows)
    out = sorted(result.outputs["card"] + stream.flush().outputs["card"], key=lambda r: r["__seq"])
    # 700 and 2000 are outliers, and so is the null after 700 once "last" fills it with 700
    assert [(q["seq"], q["reason"], q["step"]) for q in result.quarantined] == \
        [(r["record"], r["reason"], r["step"]) for r in eng.quarantine().to_pylist()]
    assert [q["seq"] for q in result.quarantined] == [7, 9, 20]
    assert len(out) == len(batch) == 27
    for b, s in zip(batch, out, strict=True):
        assert s["sum_amount_1h"] == pytest.approx(b["sum_amount_1h"], rel=1e-12)
        assert s["last_amount"] == b["last_amount"]


def test_learned_step_without_artifacts_is_refused_with_the_fix() -> None:
    p = _pipeline(_rows(3), [ef.Impute("amount", "median")], [ef.count(window="1h")])
    with pytest.raises(ef.DefinitionError, match="artifact") as err:
        StreamEngine(p)
    assert "training set" in str(err.value)


def test_checkpoint_round_trip_carries_dedup_and_unique_memory_and_forgets_after_remember() -> None:
    rows = [{"id": f"t{i % 7}", "card": f"c{i % 3}", "amount": float(i),
             "ts": f"2026-03-01T10:{i:02d}:00Z"} for i in range(20)]
    p = _pipeline(rows, [ef.Dedup("id")], [ef.count(window="1h"), ef.since_last()])
    first = StreamEngine(p, remember="5m")
    first.process(rows[:10])
    second = StreamEngine(p, remember="5m")
    second.load_states(first.dirty_states())
    second.load_meta(first.meta())
    a, b = first.process(rows[10:]), second.process(rows[10:])
    assert a.outputs == b.outputs and a.duplicates == b.duplicates
    # ids repeat every 7 minutes but are remembered for 5: nothing is a duplicate
    assert not a.duplicates
    forever = StreamEngine(p)
    assert len(forever.process(rows).duplicates) == 13


def test_late_events_malformed_json_and_schema_errors_are_quarantined_not_raised() -> None:
    p = _pipeline([], [], [ef.count(window="1h")])
    eng = StreamEngine(p, lateness="2m")
    result = eng.process([
        {"id": "a", "card": "c", "amount": 1, "ts": "2026-03-01T10:10:00Z"},
        {"id": "b", "card": "c", "amount": 1, "ts": "2026-03-01T10:09:00Z"},   # inside lateness
        {"id": "c", "card": "c", "amount": 1, "ts": "2026-03-01T10:07:00Z"},   # behind watermark
        '{"id": "d", "card": ',                                              # not JSON
        "[1, 2]",                                                            # not an object
        {"id": "e", "card": "c", "amount": "lots", "ts": "2026-03-01T10:11:00Z"},
        {"id": "a", "card": "c", "amount": 1, "ts": "2026-03-01T10:12:00Z"},   # id is unique
    ])
    reasons = [(q["reason"], q["field"]) for q in result.quarantined]
    assert reasons == [("late", "ts"), ("malformed_record", None), ("malformed_record", None),
                       ("wrong_type", "amount"), ("not_unique", "id")]
    assert [o["count_1h"] for o in result.outputs["card"]] == [1, 1]   # 10:10 is after 10:09
    assert result.records == 7 == len(result.outputs["card"]) + len(result.quarantined)


def test_reads_expire_windows_at_read_time_and_ttl_forgets_idle_entities() -> None:
    p = _pipeline([], [], [ef.count(window="1h"), ef.count()])
    eng = StreamEngine(p, ttl="1d")
    eng.process([{"id": "a", "card": "c1", "amount": 1, "ts": "2026-03-01T10:00:00Z"}])
    assert eng.read("card", "c1", at="2026-03-01T10:30:00Z")["count_1h"] == 1
    assert eng.read("card", "c1", at="2026-03-01T11:00:00Z")["count_1h"] == 0
    assert eng.read("card", "c1", at="2026-03-01T11:00:00Z")["count"] == 1
    eng.process([{"id": "b", "card": "c2", "amount": 1, "ts": "2026-03-03T10:00:00Z"}])
    assert eng.read("card", "c1", at="2026-03-03T10:00:00Z")["count"] == 0   # idle > 1 day
    assert eng.read("card", "c2", at="2026-03-03T10:00:00Z")["count"] == 1


def test_near_dedup_is_refused_on_the_stream_with_the_fix() -> None:
    from evenflow.verify.neardup import NearDedup

    p = _pipeline([], [NearDedup("id", threshold=0.8)], [ef.count(window="1h")])
    with pytest.raises(ef.DefinitionError, match="near-duplicate") as err:
        StreamEngine(p)
    assert "batch" in str(err.value)


@settings(max_examples=300, deadline=None, database=None)
@given(key=st.tuples(st.one_of(st.text(max_size=6), st.integers(), st.booleans(), st.none(),
                               st.floats(allow_nan=False, allow_infinity=False)),
                     st.one_of(st.text(alphabet="ab\"\\\t é", max_size=4), st.integers())))
def test_memory_key_text_is_the_json_of_the_key(key):
    """The checkpoint's name for a dedup key: the fast path writes exactly what json.dumps does."""
    assert _key_text(key) == json.dumps(list(key), separators=(",", ":"))
    assert _key_from_text(_key_text(key)) == key
