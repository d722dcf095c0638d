"""No leakage: events a label row could not have known never change its features.

For a fixed set of label rows ``(card, t, a)``, build the training set; then add events that are
in every label row's future — for each label row of the event's key, ``event_time > t`` or
``available_time > a`` — for keys that have label rows, keys that have none and brand-new keys,
inserted anywhere in the arrival order. Every feature value (aggregates and derived features) of
every label row must stay the same (docs/semantics.md, sections 3 and 4).
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import evenflow as ef
from evenflow.batch.engine import BatchEngine
from evenflow.batch.training import build

TS = pa.timestamp("us", tz="UTC")
BASE = int(dt.datetime(2026, 3, 2, 8, tzinfo=dt.UTC).timestamp()) * 1_000_000
MIN = 60 * 1_000_000
STEP = 10 * MIN
SLOTS = 24
KEYS = ["k1", "k2", "k3"]

SETTINGS = settings(max_examples=30, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

FEATURES = [
    ef.count(window="1h"),
    ef.count(window="1h", closed="left"),
    ef.sum("amount", window="1h"),
    ef.mean("amount", window="2h"),
    ef.std("amount", window="2h"),
    ef.min("amount", closed="left"),
    ef.first("amount", window="1h"),
    ef.last("amount"),
    ef.distinct("merchant", window="30m"),
    ef.since_last(),
    ef.derive("avg_1h", "sum_amount_1h / count_1h"),
    ef.derive("z", "(last_amount - mean_amount_2h) / coalesce(std_amount_2h, 1)"),
    ef.derive("busy", "count_1h_before > 1 or since_last_before < 1200"),
    ef.derive("h", "hour(ts) + coalesce(since_last_before, 0) / 3600"),
]
FEATURE_COLUMNS = [f"fs__{f.name}" for f in FEATURES]

amounts = st.one_of(st.none(), st.integers(-400, 400).map(lambda i: i * 0.25))
merchants = st.one_of(st.none(), st.sampled_from(["m1", "m2", "m3"]))
grid_times = st.integers(0, SLOTS).map(lambda i: BASE + i * STEP)
delays = st.sampled_from([0, 0, 1, 5 * MIN, 10 * MIN, 30 * MIN, 2 * 60 * MIN])
later = st.sampled_from([1, 1, 5 * MIN, 10 * MIN, 30 * MIN, 60 * MIN, 3 * 60 * MIN])


@st.composite
def cases(draw, *, available: bool, early_knowledge: bool) -> tuple[list[dict], list[dict], list[dict]]:
    """(base events, label rows, events with future ones inserted); events in arrival order."""
    base = draw(st.lists(st.fixed_dictionaries({
        "card": st.sampled_from(KEYS), "event_time": grid_times, "amount": amounts,
        "merchant": merchants, "delay": delays}), max_size=20))
    for e in base:
        d = e.pop("delay")
        e["available_time"] = e["event_time"] + (d if available else 0)

    knowledge = [0, 0, 1, 10 * MIN, 60 * MIN]
    if early_knowledge:
        knowledge += [-1, -10 * MIN, -30 * MIN, -60 * MIN, -2 * 60 * MIN]
    labels = draw(st.lists(st.fixed_dictionaries({
        "card": st.sampled_from([*KEYS, "k_none"]),
        "t": st.tuples(st.integers(0, SLOTS), st.sampled_from([0, 0, 1, -1])).map(
            lambda p: BASE + p[0] * STEP + p[1]),
        "da": st.sampled_from(knowledge)}), min_size=1, max_size=10))
    for r in labels:
        r["a"] = r["t"] + r.pop("da")

    drafts = draw(st.lists(st.fixed_dictionaries({
        "card": st.sampled_from([*KEYS, "k_none", "k_new"]), "event_time": grid_times,
        "amount": amounts, "merchant": merchants, "delay": delays, "later": later,
        "late_event": st.booleans()}), min_size=1, max_size=10))
    extras = []
    for d in drafts:
        rows = [r for r in labels if r["card"] == d["card"]]
        et = d["event_time"]
        if available and not d["late_event"]:
            # keep the event time; make it known only after every label row that could see it
            seen_by = [r["a"] for r in rows if et <= r["t"]]
            av = max([et + d["delay"], *(a + d["later"] for a in seen_by)])
        else:
            # move the event after every label row's t (or, when a < t, after a: still unknown)
            bound = max((min(r["t"], r["a"]) for r in rows), default=None)
            if bound is not None and et <= bound:
                et = bound + d["later"]
            av = et + (d["delay"] if available else 0)
        extras.append({"card": d["card"], "event_time": et, "available_time": av,
                       "amount": d["amount"], "merchant": d["merchant"]})
    # insert the extras anywhere, keeping the base events' own arrival order
    positions = draw(st.lists(st.integers(0, len(base)), min_size=len(extras), max_size=len(extras)))
    order = sorted([((j, 1), e) for j, e in enumerate(base)] +
                   [((p, 0), e) for p, e in zip(positions, extras, strict=True)], key=lambda x: x[0])
    return base, labels, [e for _, e in order]


def _pipeline(events: list[dict], labels: list[dict], available: bool) -> ef.Pipeline:
    cols = {
        "card": pa.array([e["card"] for e in events], pa.string()),
        "ts": pa.array([e["event_time"] for e in events], TS),
        "amount": pa.array([e["amount"] for e in events], pa.float64()),
        "merchant": pa.array([e["merchant"] for e in events], pa.string()),
    }
    fields = {"card": ef.String(), "ts": ef.Timestamp(), "amount": ef.Float(), "merchant": ef.String()}
    if available:
        cols["avail"] = pa.array([e["available_time"] for e in events], TS)
        fields["avail"] = ef.Timestamp()
    tx = ef.source.frame(pa.table(cols), name="tx", key="card", event_time="ts",
                         available_time="avail" if available else None, schema=ef.Schema(**fields))
    fs = ef.FeatureSet("fs", source=tx, features=FEATURES)
    label_table = pa.table({
        "card": pa.array([r["card"] for r in labels], pa.string()),
        "ts": pa.array([r["t"] for r in labels], TS),
        "kt": pa.array([r["a"] for r in labels], TS),
        "y": pa.array([i % 2 for i in range(len(labels))], pa.int64()),
    })
    lab = ef.source.frame(label_table, name="labels", key="card", event_time="ts",
                          schema=ef.Schema(card=ef.String(), ts=ef.Timestamp(), kt=ef.Timestamp(),
                                           y=ef.Int()))
    spec = ef.TrainingSetSpec(name="t", labels=lab, label="y", features=["fs"], knowledge_time="kt",
                              split=ef.RandomSplit(test_size=0.01, stratify=False))
    return ef.Pipeline(name="p", feature_sets=[fs], training_set=spec)


def _same(x, y) -> bool:
    if x is None or y is None:
        return x is None and y is None
    if isinstance(x, float) or isinstance(y, float):
        return abs(x - y) <= 1e-12 + 1e-9 * max(abs(x), abs(y))
    return x == y


def _features(events, labels, available, plans) -> dict[str, list[dict] | None]:
    """Feature rows per plan (None when the plan refused the data)."""
    pipeline = _pipeline(events, labels, available)
    eng = BatchEngine(pipeline)
    out: dict[str, list[dict] | None] = {}
    try:
        for plan in plans:
            try:
                table = build(pipeline, engine=eng, plan=plan).table
            except ef.DefinitionError:
                if plan != "window":
                    raise
                out[plan] = None
                continue
            assert table.num_rows == len(labels), plan
            out[plan] = table.select(["card", "ts", "kt", *FEATURE_COLUMNS]).to_pylist()
    finally:
        eng.close()
    return out


def _assert_no_leak(base, labels, extended, available, plans):
    before = _features(base, labels, available, plans)
    after = _features(extended, labels, available, plans)
    for plan in plans:
        if plan == "window" and (before[plan] is None or after[plan] is None):
            assert before[plan] is None and after[plan] is None, "window plan refused only one input"
            continue
        changed = []
        for i, (b, a) in enumerate(zip(before[plan], after[plan], strict=True)):
            assert (b["card"], b["ts"], b["kt"]) == (a["card"], a["ts"], a["kt"])
            for col in FEATURE_COLUMNS:
                if not _same(b[col], a[col]):
                    changed.append(f"label row {i} ({b['card']}, t={b['ts']}, a={b['kt']}): "
                                   f"{col} {b[col]!r} -> {a[col]!r}")
        assert not changed, (f"plan={plan}: future events changed {len(changed)} feature values:\n"
                             + "\n".join(changed[:12]))


@SETTINGS
@given(case=cases(available=True, early_knowledge=True))
def test_no_leak_with_available_time(case):
    # bitemporal events: only the join plan applies (and "auto" picks it)
    base, labels, extended = case
    _assert_no_leak(base, labels, extended, True, ["join"])


@SETTINGS
@given(case=cases(available=False, early_knowledge=False))
def test_no_leak_without_available_time(case):
    # knowledge time at or after the observation time: both plans apply
    base, labels, extended = case
    _assert_no_leak(base, labels, extended, False, ["window", "join"])


# One event of k1 at 08:10; a label row observed at 08:20 but known at 08:00. With no
# available_time the event is known from 08:10, after a, so it must not count.
_EARLY_BASE: list[dict] = []
_EARLY_LABELS = [{"card": "k1", "t": BASE + 2 * STEP, "a": BASE}]
_EARLY_EXTENDED = [{"card": "k1", "event_time": BASE + STEP, "available_time": BASE + STEP,
                    "amount": 5.0, "merchant": "m1"}]


@SETTINGS
@example(case=(_EARLY_BASE, _EARLY_LABELS, _EARLY_EXTENDED))
@given(case=cases(available=False, early_knowledge=True))
def test_no_leak_when_knowledge_time_precedes_observation_time(case):
    # a < t, no available_time: events in (a, t] are not yet known. "auto" must honour a; the
    # window plan cannot, so it may refuse such label rows, but never return leaked values.
    base, labels, extended = case
    _assert_no_leak(base, labels, extended, False, ["join", "auto", "window"])
