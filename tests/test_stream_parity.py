"""Property tests: the stream engine against the reference (``tests/reference.py``) and the batch engine.

Generated streams have a few keys, event times on a coarse grid (ties and events at exactly
``t - W`` are common), exact duplicate rows (dropped by a Dedup step, keep first or last), nulls,
optional ``available_time >= event_time``, and arrival out of event-time order but within the
allowed lateness. Values are grid multiples so float sums are exact in any order; every value is
compared with ``reference.same`` (docs/semantics.md §11, relative tolerance 1e-9).

The stream engine runs with ``emit="final"`` in random micro-batches; one record at a time must
give identical outputs, and so must a checkpoint round trip mid-stream (``dirty_states``/``meta``
into a fresh engine). Fitted steps get the batch engine's artifacts; their reference values are
computed over the batch engine's cleaned events.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import random
from typing import Any

import pyarrow as pa
import pytest
import reference  # tests/reference.py: the tests directory is on the path
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import evenflow as ef
from evenflow.batch.engine import BatchEngine
from evenflow.stream.engine import StreamEngine
from evenflow.stream.parity import check_parity, same, with_data

TS = pa.timestamp("us", tz="UTC")
BASE = int(dt.datetime(2026, 3, 2, 8, tzinfo=dt.UTC).timestamp()) * 1_000_000
MIN = 60 * 1_000_000
STEP = 10 * MIN
SLOTS = 24
KEYS = ["k1", "k2", "k3"]
MERCHANTS = ["m1", "m2", "m3", "m4"]

FAST = settings(max_examples=25, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
#: the engine-comparing tests build a DuckDB engine per example: fewer examples keep them fast
ENGINES = settings(max_examples=15, deadline=None, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
HEAVY = settings(max_examples=300, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _features(window: str | None, closed: str) -> list[ef.Aggregate]:
    kw = {"window": window, "closed": closed}
    return [ef.count(**kw), ef.count("amount", **kw), ef.sum("amount", **kw), ef.mean("amount", **kw),
            ef.min("amount", **kw), ef.max("amount", **kw), ef.std("amount", **kw),
            ef.var("amount", **kw), ef.first("amount", **kw), ef.last("amount", **kw),
            ef.distinct("merchant", **kw), ef.since_last(**kw), ef.sum("qty", **kw),
            ef.last("qty", **kw)]


CONFIGS = [(w, c) for w in ("30m", "2h", None) for c in ("right", "left")]
feature_lists = st.lists(st.sampled_from(CONFIGS), min_size=2, max_size=2, unique=True).map(
    lambda configs: [f for w, c in configs for f in _features(w, c)])
DERIVED = [ef.derive("hour_of", "hour(ts)"), ef.derive("ratio", "amount / (count_2h + 1)")]

amounts = st.one_of(st.none(), st.integers(-400, 400).map(lambda i: i * 0.25))
quantities = st.one_of(st.none(), st.integers(-5, 5))
merchants = st.one_of(st.none(), st.sampled_from(MERCHANTS))
scores = st.one_of(st.none(), st.integers(-40, 40).map(lambda i: i * 0.5))


@st.composite
def streams(draw: Any) -> dict[str, Any]:
    """Events in arrival order (``seq`` = position), each within the lateness of the ones before."""
    available = draw(st.booleans())
    lateness = draw(st.sampled_from([0, STEP, 3 * STEP, 12 * STEP]))
    base = draw(st.lists(st.fixed_dictionaries({
        "card": st.sampled_from(KEYS),
        "event_time": st.integers(0, SLOTS).map(lambda i: BASE + i * STEP),
        "amount": amounts, "qty": quantities, "merchant": merchants, "score": scores,
        "delay": st.sampled_from([0, 0, 1, 5 * MIN, 30 * MIN, 120 * MIN]),
    }), min_size=0, max_size=22))
    for i, e in enumerate(base):
        delay = e.pop("delay")
        e["available_time"] = e["event_time"] + delay if available else e["event_time"]
        e["txn"] = f"t{i}"
    if base:
        base += [dict(base[i]) for i in draw(st.lists(st.integers(0, len(base) - 1), max_size=4))]
    # Arrival: by event time plus a jitter within the lateness, so no event is late.
    jitter = draw(st.lists(st.integers(0, lateness // STEP), min_size=len(base), max_size=len(base)))
    ties = draw(st.permutations(range(len(base))))
    order = sorted(range(len(base)), key=lambda i: (base[i]["event_time"] + jitter[i] * STEP, ties[i]))
    events = [dict(base[i], seq=n) for n, i in enumerate(order)]
    return {"events": events, "available": available, "lateness": lateness}


def _iso(us: int) -> str:
    return (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us)).isoformat()


def _source(events: list[dict], available: bool) -> ef.Source:
    cols = {"txn": pa.array([e["txn"] for e in events], pa.string()),
            "card": pa.array([e["card"] for e in events], pa.string()),
            "ts": pa.array([e["event_time"] for e in events], TS),
            "amount": pa.array([e["amount"] for e in events], pa.float64()),
            "qty": pa.array([e["qty"] for e in events], pa.int64()),
            "merchant": pa.array([e["merchant"] for e in events], pa.string()),
            "score": pa.array([e["score"] for e in events], pa.float64())}
    fields: dict[str, Any] = {"txn": ef.String(), "card": ef.String(), "ts": ef.Timestamp(),
                              "amount": ef.Float(), "qty": ef.Int(), "merchant": ef.String(),
                              "score": ef.Float()}
    if available:
        cols["avail"] = pa.array([e["available_time"] for e in events], TS)
        fields["avail"] = ef.Timestamp()
    return ef.source.frame(pa.table(cols), name="tx", key="card", event_time="ts",
                           available_time="avail" if available else None, schema=ef.Schema(**fields))


def _record(e: dict, available: bool) -> dict[str, Any]:
    """The event as a producer sends it: JSON values, timestamps as ISO text."""
    rec = {"txn": e["txn"], "card": e["card"], "ts": _iso(e["event_time"]), "amount": e["amount"],
           "qty": e["qty"], "merchant": e["merchant"], "score": e["score"]}
    if available:
        rec["avail"] = _iso(e["available_time"])
    return rec


def _run(pipeline: ef.Pipeline, fs: str, records: list[dict], *, artifacts: dict | None, lateness: int,
         cuts: list[int], checkpoint_at: int | None = None) -> tuple[dict[int, dict], list[dict]]:
    """Outputs by record number and quarantine, feeding ``records`` in micro-batches cut at ``cuts``."""
    def engine() -> StreamEngine:
        return StreamEngine(pipeline, fs, artifacts=artifacts, lateness=lateness, emit="final")

    eng = engine()
    out: dict[int, dict] = {}
    quarantined: list[dict] = []
    bounds = [0, *sorted(set(cuts)), len(records)]
    for lo, hi in itertools.pairwise(bounds):
        if lo == checkpoint_at:
            states, meta = eng.dirty_states(), eng.meta()
            eng = engine()
            eng.load_states({k: v for k, v in states.items() if v is not None})
            eng.load_meta(meta)
        if hi <= lo:
            continue
        res = eng.process(records[lo:hi], seqs=range(lo, hi))
        quarantined += res.quarantined
        for row in res.outputs[fs]:
            assert row["__seq"] not in out, f"record {row['__seq']} emitted twice"
            out[row["__seq"]] = row
    for row in eng.flush().outputs[fs]:
        out[row["__seq"]] = row
    return out, quarantined


def _cleaned(eng: BatchEngine, ev: Any, available: bool) -> dict[int, dict]:
    """The batch engine's events after the steps, as reference events by record number."""
    a = "epoch_us(avail)" if available else "epoch_us(ts)"
    rows = eng.con.sql(f"SELECT __seq, card, epoch_us(ts), {a}, amount, qty, merchant, score "
                       f"FROM {ev.table}").fetchall()
    return {s: {"seq": s, "card": c, "event_time": t, "available_time": av, "amount": am, "qty": q,
                "merchant": m, "score": sc} for s, c, t, av, am, q, m, sc in rows}


def _check_against(got: dict[int, dict], want: dict[int, dict], names: list[str], label: str,
                   int_valued: set[str]) -> None:
    assert sorted(got) == sorted(want), f"{label}: records {sorted(got)} vs {sorted(want)}"
    bad = []
    for seq in sorted(want):
        for f in names:
            g, w = got[seq][f], want[seq][f]
            ok = same(g, w) and (g is None or f not in int_valued or type(g) is int)
            if not ok:
                bad.append(f"record {seq}: {f} = {g!r}, {label} {w!r}")
    assert not bad, f"{len(bad)} mismatches against {label}:\n" + "\n".join(bad[:15])


def _identical(x: dict | None, y: dict | None) -> bool:
    """Equal rows; floats within §11 (NaN equal to NaN: a standardized constant column).

    Not bit-identical: batch boundaries decide when events retire into exact rationals, and
    unbounded var/std then differ from the two-pass float value in the last bit (heavy profile).
    """
    if x is None or y is None or x.keys() != y.keys():
        return False
    return all(a == b or same(a, b) or (isinstance(a, float) and isinstance(b, float) and a != a and b != b)
               for a, b in ((x[k], y[k]) for k in x))


def _scenario(stream: dict, feats: list, steps: list, rnd: random.Random, *,
              derived: bool = True) -> None:
    events, available, lateness = stream["events"], stream["available"], stream["lateness"]
    features = [*feats, *(DERIVED if derived and any(f.name == "count_2h" for f in feats) else [])]
    fs = ef.FeatureSet("fs", source=_source(events, available), steps=steps, features=features)
    pipeline = ef.Pipeline(name="p", feature_sets=[fs])
    batch = BatchEngine(pipeline)
    try:
        ev = batch.prepare(fs)
        rows = batch.con.sql(batch.features_sql(ev)).to_arrow_table().to_pylist()
        seqs = [r[0] for r in batch.con.sql(f"SELECT __seq FROM {ev.table} ORDER BY __seq").fetchall()]
        batch_rows = dict(zip(seqs, rows, strict=True))
        cleaned = _cleaned(batch, ev, available)
        batch_dups = {r[0] for r in batch.con.sql("SELECT record FROM __duplicates").fetchall()}
        artifacts = ev.artifacts
    finally:
        batch.close()
    records = [_record(e, available) for e in events]
    n = len(records)
    cuts = sorted(rnd.sample(range(1, n), min(n - 1, rnd.randint(0, 5)))) if n > 1 else []
    got, quarantined = _run(pipeline, "fs", records, artifacts=artifacts, lateness=lateness, cuts=cuts)
    assert quarantined == [], f"nothing is late or invalid here: {quarantined}"
    assert set(range(n)) - set(got) == batch_dups, "the same records are dropped as duplicates"
    int_valued = {a.name for a in fs.aggregates
                  if a.agg in ("count", "distinct") or (a.column == "qty" and a.agg in ("sum", "last"))}
    names = fs.feature_names
    _check_against(got, batch_rows, names, "batch engine", int_valued)
    # the reference, over the cleaned events, at each event's (t, a)
    by_key: dict[str, list[dict]] = {}
    for e in cleaned.values():
        by_key.setdefault(e["card"], []).append(e)
    points = [{"key": cleaned[s]["card"], "t": cleaned[s]["event_time"], "a": cleaned[s]["available_time"]}
              for s in sorted(cleaned)]
    want = dict(zip(sorted(cleaned), reference.features_at(fs.aggregates, by_key, points), strict=True))
    _check_against(got, want, [a.name for a in fs.aggregates], "reference", int_valued)
    # one record at a time, and a checkpoint round trip, give identical outputs
    one, _ = _run(pipeline, "fs", records, artifacts=artifacts, lateness=lateness, cuts=list(range(1, n)))
    diff = [(s, one.get(s), got[s]) for s in got if not _identical(one.get(s), got[s])]
    assert not diff and one.keys() == got.keys(), f"one record at a time differs: {diff[:3]}"
    if n > 1:
        at = rnd.randint(1, n - 1)
        resumed, _ = _run(pipeline, "fs", records, artifacts=artifacts, lateness=lateness,
                          cuts=[*cuts, at], checkpoint_at=at)
        diff = [(s, resumed.get(s), got[s]) for s in got if not _identical(resumed.get(s), got[s])]
        assert not diff, f"checkpoint at record {at} changes outputs: {diff[:3]}"


@ENGINES
@given(stream=streams(), feats=feature_lists, keep=st.sampled_from(["first", "last"]),
       seed=st.integers(0, 2**16))
def test_stream_matches_reference_and_batch(stream, feats, keep, seed):
    _scenario(stream, feats, [ef.Dedup(key=["txn"], keep=keep)], random.Random(seed))


FITTED = [ef.count(window="2h"), ef.sum("amount", window="2h"), ef.mean("amount"),
          ef.max("amount", window="30m", closed="left"), ef.last("score"), ef.min("score", window="2h"),
          ef.first("score", window="30m"), ef.distinct("merchant", window="2h"),
          ef.last("merchant", closed="left")]


@ENGINES
@given(stream=streams(), seed=st.integers(0, 2**16))
def test_fitted_steps_with_artifacts_match(stream, seed):
    # the steps are fitted on the events: at least one value for each fitted column
    stream["events"] = [dict(e, amount=e["amount"] if e["amount"] is not None else 1.5,
                             score=e["score"] if e["score"] is not None else -2.0)
                        if e["txn"] == "t0" else e for e in stream["events"]]
    assume(stream["events"])
    steps = [ef.Dedup(key=["txn"]), ef.Impute("amount", strategy="median"),
             ef.Clip("amount", q=(0.1, 0.9)), ef.Standardize("score"), ef.Encode("merchant")]
    _scenario(stream, FITTED, steps, random.Random(seed), derived=False)


@pytest.mark.slow
@HEAVY
@given(stream=streams(), feats=feature_lists, keep=st.sampled_from(["first", "last"]),
       seed=st.integers(0, 2**16))
def test_stream_matches_reference_and_batch_heavy(stream, feats, keep, seed):
    _scenario(stream, feats, [ef.Dedup(key=["txn"], keep=keep)], random.Random(seed))


# -- online reads and late events -------------------------------------------------------------

READ_FEATURES = [f for w, c in [("30m", "right"), ("2h", "left"), (None, "right"), (None, "left")]
                 for f in _features(w, c)]


@FAST
@given(stream=streams(), offsets=st.lists(st.tuples(st.sampled_from([*KEYS, "k_none"]),
                                                     st.integers(0, 6 * 60 * MIN)), min_size=1, max_size=8))
def test_online_reads_at_later_times_match_reference(stream, offsets):
    events, available, lateness = stream["events"], stream["available"], stream["lateness"]
    fs = ef.FeatureSet("fs", source=_source(events, available), features=READ_FEATURES)
    eng = StreamEngine(ef.Pipeline(name="p", feature_sets=[fs]), "fs", lateness=lateness, emit="final")
    eng.process([_record(e, available) for e in events], seqs=range(len(events)))
    eng.flush()
    start = eng.max_time if eng.max_time is not None else BASE
    by_key: dict[str, list[dict]] = {}
    for e in events:
        by_key.setdefault(e["card"], []).append(e)
    for key, offset in offsets:
        at = start + offset
        got = eng.read("fs", key, at=at)
        want = reference.features_at(fs.aggregates, by_key, [{"key": key, "t": at, "a": at}])[0]
        bad = {n: (got[n], w) for n, w in want.items() if not same(got[n], w)}
        assert not bad, f"read {key} at +{offset / MIN:g} min: {bad}"


@FAST
@given(stream=streams(), behind=st.integers(1, 3 * 60 * MIN))
def test_late_events_are_quarantined_and_change_nothing(stream, behind):
    events, available, lateness = stream["events"], stream["available"], stream["lateness"]
    if not events:
        return
    fs = ef.FeatureSet("fs", source=_source(events, available), features=READ_FEATURES)
    eng = StreamEngine(ef.Pipeline(name="p", feature_sets=[fs]), "fs", lateness=lateness, emit="final")
    eng.process([_record(e, available) for e in events], seqs=range(len(events)))
    watermark = eng.watermark
    assert watermark is not None
    late = dict(events[0], event_time=watermark - behind, available_time=watermark - behind, txn="late")
    before = eng.read("fs", late["card"], at=watermark + 1)
    res = eng.process([_record(late, available)], seqs=[len(events)])
    assert [(q["reason"], q["field"], q["step"]) for q in res.quarantined] == [("late", "ts", "watermark")]
    assert json.loads(res.quarantined[0]["payload"])["txn"] == "late"
    emitted = res.outputs["fs"] + eng.flush().outputs["fs"]
    assert all(row["__seq"] != len(events) for row in emitted)
    assert eng.read("fs", late["card"], at=watermark + 1) == before


# -- per-record validation agrees with the batch SQL validation ---------------------------------

SCHEMA = ef.Schema(id=ef.String(nullable=False, regex="r[0-9]+"), card=ef.String(nullable=False),
                   ts=ef.Timestamp(), n=ef.Int(ge=0, le=100), x=ef.Float(gt=-1.0, lt=1e6),
                   ok=ef.Bool(), kind=ef.String(allowed=["a", "b"]))
GOOD = {"id": "r1", "card": "c1", "ts": "2026-03-01T10:00:00Z", "n": 3, "x": 1.5, "ok": True, "kind": "a"}
BAD_VALUES = {
    "id": [None, "x1", "r", 12, "r12"],
    "card": [None, "", "c2", 7, "ç1", True],
    "ts": [None, "2026-03-01T10:00:00", "yesterday", "2026-03-01 10:00:00+01", "2026-13-01T00:00:00Z",
           "2026-03-01", 1772000000, "2026-03-01T10:00:00.123456+05:30"],
    "n": [None, -1, 101, "7", "1.5", 2.0, "x", True, 100],
    "x": [None, -1.0, -0.5, "2e3", "nan", "abc", 1e6, 3, True, False, -1],
    "ok": [None, "true", "T", "0", "yes", "No", " true", "on", 1, 2],
    "kind": [None, "c", "A", "b", 1],
}


@st.composite
def bad_records(draw: Any) -> list[dict]:
    out = []
    for _ in range(draw(st.integers(1, 12))):
        rec = dict(GOOD, id=f"r{len(out)}")
        for name in draw(st.lists(st.sampled_from(sorted(BAD_VALUES)), min_size=0, max_size=3, unique=True)):
            if draw(st.integers(0, 9)) == 0:
                rec.pop(name)
            else:
                rec[name] = draw(st.sampled_from(BAD_VALUES[name]))
        out.append(rec)
    return out


@settings(max_examples=20, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(records=bad_records())
def test_record_validation_agrees_with_batch_sql(records, tmp_path):
    path = tmp_path / f"bad_{random.getrandbits(32)}.ndjson"
    lines = [json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n")
    src = ef.source.ndjson(str(path), name="ev", key="card", event_time="ts", schema=SCHEMA)
    fs = ef.FeatureSet("fs", source=src, features=[ef.count()])
    pipeline = ef.Pipeline(name="p", feature_sets=[fs])
    eng = BatchEngine(pipeline)
    try:
        eng.load_source("ev")
        batch = {int(r): (reason, fld) for r, reason, fld in eng.con.sql(
            "SELECT record, reason, field FROM __quarantine").fetchall()}
    finally:
        eng.close()
    stream = StreamEngine(pipeline, "fs", lateness="3650d")
    res = stream.process(lines, seqs=range(len(lines)))
    got = {q["seq"]: (q["reason"], q["field"]) for q in res.quarantined}
    assert got == batch, "\n".join(f"record {i} {lines[i]}: batch {batch.get(i)}, stream {got.get(i)}"
                                   for i in range(len(lines)) if batch.get(i) != got.get(i))


# -- evenflow parity on a file ------------------------------------------------------------------

def test_check_parity_on_a_csv_file_and_the_cli(tmp_path):
    from typer.testing import CliRunner

    from evenflow.cli import app

    rows = ["txn,card,ts,amount,merchant"]
    rnd = random.Random(4)
    for i in range(300):
        t = BASE + rnd.randint(0, 48) * STEP + rnd.choice([0, 0, 1])
        amount = "" if rnd.random() < 0.1 else f"{rnd.randint(-40, 400) * 0.25}"
        rows.append(f"t{i},c{rnd.randint(1, 6)},{_iso(t)},{amount},m{rnd.randint(1, 4)}")
    rows += ["t5,c1,2026-03-02T09:00:00Z,1.0,m1", "tx,c1,not-a-time,1.0,m1", "ty,,2026-03-02T09:00:00Z,2,m1"]
    data = tmp_path / "events.csv"
    data.write_text("\n".join(rows) + "\n")
    yaml = tmp_path / "p.yaml"
    yaml.write_text("""
name: p
sources:
  tx:
    format: csv
    path: elsewhere.csv
    key: card
    event_time: ts
    schema:
      txn: {type: string, unique: true}
      card: {type: string, nullable: false}
      ts: {type: timestamp}
      amount: {type: float, ge: 0}
      merchant: {type: string}
feature_sets:
  - name: card
    source: tx
    steps: [{kind: impute, column: amount, strategy: median}]
    features:
      - {agg: count, window: 1h}
      - {agg: sum, column: amount, window: 2h}
      - {agg: std, column: amount}
      - {agg: var, column: amount, window: 3h}
      - {agg: since_last, closed: left}
      - {agg: distinct, column: merchant, window: 1d}
      - {name: share, expr: "amount / (sum_amount_2h + 1)"}
  - name: merchant
    source: tx
    key: [merchant]
    steps: [{kind: dedup, key: [card, ts]}]
    features:
      - {agg: count, window: 30m, closed: left}
      - {agg: mean, column: amount, window: 1h}
""")
    p = with_data(ef.Pipeline.load(yaml), data)
    report = check_parity(p, samples=50, seed=1)
    assert report.ok, report.mismatches[:5]
    negative = sum(1 for r in rows[1:301] if r.split(",")[3].startswith("-"))
    assert report.quarantined == negative + 3 and report.reads == 100   # + not_unique, 2 schema
    assert report.events == 2 * (303 - report.quarantined) - report.duplicates
    result = CliRunner().invoke(app, ["parity", str(yaml), "--data", str(data), "--samples", "20"])
    assert result.exit_code == 0, result.output
    assert "parity holds" in result.output
    result = CliRunner().invoke(app, ["parity", str(yaml), "--data", str(tmp_path / "nope.csv")])
    assert result.exit_code == 2 and "not found" in " ".join(result.output.split())


def test_parity_reports_a_mismatch_and_exits_1(tmp_path, monkeypatch):
    """A stream engine that disagrees (one aggregate forced off by 1) is caught, with exit code 1."""
    from typer.testing import CliRunner

    from evenflow.cli import app
    from evenflow.stream import state

    data = tmp_path / "e.ndjson"
    data.write_text("".join(json.dumps({"card": f"c{i % 3}", "ts": _iso(BASE + i * MIN), "x": i}) + "\n"
                            for i in range(30)))
    yaml = tmp_path / "p.yaml"
    yaml.write_text("name: p\nsources:\n  e: {format: ndjson, path: e.ndjson, key: card, event_time: ts,"
                    " schema: {card: {type: string}, ts: {type: timestamp}, x: {type: int}}}\n"
                    "feature_sets:\n  - {name: card, source: e, features: [{agg: sum, column: x, window: 1h}]}\n")
    real = state.evaluate

    def off_by_one(*args: Any) -> list[Any]:
        return [v + 1 if isinstance(v, int) else v for v in real(*args)]

    monkeypatch.setattr("evenflow.stream.engine.evaluate", off_by_one)
    result = CliRunner().invoke(app, ["parity", str(yaml), "--samples", "5"])
    assert result.exit_code == 1, result.output
    assert "mismatches" in result.output and "sum_x_1h" in result.output


def test_checkpoint_keeps_timestamps_in_pending_records_and_dedup_memory():
    """Regression (found by the property test): meta() wrote datetimes with ``str``, so after
    load_meta a pending record's timestamp was text (``hour(ts)`` crashed at flush) and a Dedup
    key holding a timestamp no longer matched (the duplicate was kept)."""
    tx = ef.source.frame([], name="tx", key="card", event_time="ts",
                         schema=ef.Schema(card=ef.String(), ts=ef.Timestamp()))
    fs = ef.FeatureSet("card", source=tx, steps=[ef.Dedup(key=["card", "ts"])],
                       features=[ef.count(), ef.derive("h", "hour(ts)")])
    p = ef.Pipeline(name="p", feature_sets=[fs])
    first = StreamEngine(p, emit="final")
    first.process([{"card": "c1", "ts": "2026-03-01T10:00:00Z"}])
    resumed = StreamEngine(p, emit="final")
    resumed.load_states({k: v for k, v in first.dirty_states().items() if v is not None})
    resumed.load_meta(first.meta())
    again = resumed.process([{"card": "c1", "ts": "2026-03-01T10:00:00Z"}])
    assert [d["seq"] for d in again.duplicates] == [1]
    rows = resumed.flush().outputs["card"]
    assert rows == [{"card": "c1", "ts": dt.datetime(2026, 3, 1, 10, tzinfo=dt.UTC), "count": 1, "h": 10,
                     "__seq": 0}]


@pytest.mark.parametrize("emit", ["final", "arrival"])
def test_unbounded_left_closed_does_not_count_events_at_the_watermark(emit):
    """Regression (found by the property test): with only unbounded windows, eviction retired
    events at the watermark itself, and retired events count whatever the query time, so
    ``count(closed="left")`` at that same time counted them (stream 1, batch 0)."""
    tx = ef.source.frame([], name="tx", key="card", event_time="ts",
                         schema=ef.Schema(card=ef.String(), ts=ef.Timestamp()))
    fs = ef.FeatureSet("card", source=tx, features=[ef.count(closed="left"), ef.since_last(closed="left")])
    eng = StreamEngine(ef.Pipeline(name="p", feature_sets=[fs]), emit=emit)
    first = eng.process([{"card": "c1", "ts": "2026-03-01T10:00:00Z"}])
    second = eng.process([{"card": "c1", "ts": "2026-03-01T10:00:00Z"}])   # a tie, not late
    rows = first.outputs["card"] + second.outputs["card"] + eng.flush().outputs["card"]
    assert [(r["count_before"], r["since_last_before"]) for r in rows] == [(0, None), (0, None)]
    assert eng.read("card", "c1", at="2026-03-01T10:00:00Z")["count_before"] == 0
    assert eng.read("card", "c1", at="2026-03-01T10:00:01Z")["count_before"] == 2


TS_PIECES = st.tuples(
    st.sampled_from(["2026-03-01", "2026-02-30", "0001-01-01", "9999-12-31", "2026-3-01", "20260301"]),
    st.sampled_from(["T", " ", "t", ""]),
    st.sampled_from(["10:00:00", "23:59:60", "24:00:00", "10:00", "7:00:00", "10:00:00"]),
    st.sampled_from(["", ".1", ".123456", ".1234567", ".", ".12a"]),
    st.sampled_from(["Z", "z", "+00:00", "-05:30", "+14:00", "+23:59", "+0530", "+05", " Z", "", "+5:00"]),
    st.sampled_from(["", " ", "\n"]),
)


@settings(max_examples=400, deadline=None, database=None)
@given(pieces=TS_PIECES, tz=st.sampled_from([None, "Europe/Paris"]))
def test_timestamp_fast_path_equals_the_strict_parser(pieces, tz):
    from evenflow.stream.validate import _parse_text, parse_timestamp

    text = "".join(pieces)
    assert parse_timestamp(text, tz) == _parse_text(text.strip(), tz), text
