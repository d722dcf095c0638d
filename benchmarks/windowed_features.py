"""Benchmark: windowed features at label times — evenflow vs hand-written DuckDB SQL vs pandas.

Eight features of a card at each label row's time t: count, sum, mean and (sample) std of
``amount`` over the windows (t - 1h, t] and (t - 7d, t] (docs/semantics.md, section 3: empty
window → count and sum 0, mean and std null; std null when fewer than 2 values).

Data (generated once, seeded, into benchmarks/data/): events (card_id, ts, amount) over ~90
days, card activity Zipf-like (weight of the card of rank k ∝ k^-skew), event times at whole
seconds, amounts log-normal in cents; label rows (card_id, ts, y): 65 % at random microsecond
times (mostly between events), 25 % exactly at an event of the card, 5 % exactly 1h after one
and 5 % exactly 7d after one (window-boundary cases), 0.5 % for cards with no events at all.

Implementations, each run in its own child process (peak RSS is the child's own):

- ``evenflow``        — ``evenflow.batch.training.build`` of a Pipeline (parquet sources, a
  FeatureSet of the 8 aggregates, RandomSplit), BatchEngine(memory_limit, threads). Whole build
  timed; its stages are timed through the engine's Reporter hook ("features card at label
  times" is the feature computation alone, on the already loaded tables).
- ``sql_window``      — hand SQL: UNION ALL of events and label points, window functions over
  integer-microsecond RANGE frames (W-1 PRECEDING), QUALIFY label rows, ORDER BY label row.
- ``sql_join``        — hand SQL: labels LEFT JOIN events of the card in (t-7d, t],
  GROUP BY label row, FILTER per window.
  Both hand SQL variants run ``:parquet`` (read the Parquet files, end to end) and ``:memory``
  (the files loaded into DuckDB tables first, untimed: comparable with evenflow's feature stage).
- ``pandas``          — pandas + NumPy, vectorized: events sorted by (card, ts),
  ``np.searchsorted`` for the window bounds, the window contents gathered and reduced with
  ``np.add.reduceat`` (two-pass mean/variance, as exact as the SQL engines).
- ``pandas_loop``     — pandas as many users write it: group by card, a Python loop over the
  card's label rows, ``searchsorted`` + slice + ``sum``/``std(ddof=1)`` per window.
- ``pandas_naive``    — the common wrong approach: ``groupby(card).rolling("1h"/"7D", on="ts")``
  at the events, then ``merge_asof`` to the label times. Only its error rate is meaningful.

Every implementation's values are checked against the others before anything is timed.

    python benchmarks/windowed_features.py --events 10000000 --labels 1000000 --cards 200000
    python benchmarks/windowed_features.py --quick          # ~200k events, < 1 minute

Results: a markdown table on stdout and benchmarks/results/windowed_features.json (merged by
scale, so runs at several sizes accumulate).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
if os.environ.get("WF_EVENFLOW_SNAPSHOT"):  # the driver's frozen copy of evenflow/ (--pin-evenflow)
    sys.path.insert(0, os.environ["WF_EVENFLOW_SNAPSHOT"])

from common import fmt_mb, fmt_ratio, fmt_seconds, markdown_table, median, run_child, write_result  # noqa: E402

H_US = 3_600_000_000
D7_US = 7 * 86_400_000_000
WINDOWS = {"1h": H_US, "7d": D7_US}
AGGS = ("count", "sum", "mean", "std")
NAMES = [f"count_{w}" if a == "count" else f"{a}_amount_{w}" for w in WINDOWS for a in AGGS]
COUNT_NAMES = [n for n in NAMES if n.startswith("count_")]
START_US = 1_767_225_600 * 1_000_000  # 2026-01-01T00:00:00Z
REL_TOL, ABS_TOL = 1e-9, 1e-12  # docs/semantics.md, section 11

DATA_DIR = HERE / "data"
RESULTS = HERE / "results" / "windowed_features.json"


# ------------------------------------------------------------------------------------- data
def dataset_dir(events: int, labels: int, cards: int, days: int, seed: int, skew: float) -> Path:
    return DATA_DIR / f"wf_e{events}_l{labels}_c{cards}_d{days}_s{seed}_z{skew:g}"


def generate(out: Path, n_events: int, n_labels: int, n_cards: int, days: int, seed: int,
             skew: float) -> None:
    """Write events.parquet and labels.parquet (once; skipped when both exist)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if (out / "events.parquet").exists() and (out / "labels.parquet").exists():
        return
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    weight = np.arange(1, n_cards + 1, dtype=np.float64) ** -skew
    weight = (weight / weight.sum())[rng.permutation(n_cards)]
    names = pa.array([f"c{i:07d}" for i in range(n_cards)])
    ev_card = rng.choice(n_cards, size=n_events, p=weight)
    ev_t = START_US + rng.integers(0, days * 86_400, n_events) * 1_000_000
    amount = np.round(rng.lognormal(3.3, 1.1, n_events), 2)
    order = np.argsort(ev_t, kind="stable")  # a log: rows in time order
    ev_card, ev_t, amount = ev_card[order], ev_t[order], amount[order]
    events = pa.table({"card_id": names.take(pa.array(ev_card)),
                       "ts": pa.array(ev_t, pa.timestamp("us", tz="UTC")),
                       "amount": pa.array(amount, pa.float64())})
    pq.write_table(events, out / "events.parquet.tmp", row_group_size=1 << 20)

    kind = rng.choice(4, size=n_labels, p=[0.65, 0.25, 0.05, 0.05])
    lab_card = rng.choice(n_cards, size=n_labels, p=weight)
    lab_t = START_US + rng.integers(0, days * 86_400 * 1_000_000, n_labels)
    pick = rng.integers(0, n_events, n_labels)
    at_event = kind > 0
    lab_card[at_event] = ev_card[pick[at_event]]
    shift = np.select([kind == 1, kind == 2, kind == 3], [0, H_US, D7_US], 0)
    lab_t[at_event] = ev_t[pick[at_event]] + shift[at_event]
    card_names = np.asarray(names.take(pa.array(lab_card)).to_pylist(), dtype=object)
    unseen = rng.random(n_labels) < 0.005
    card_names[unseen] = [f"n{i:07d}" for i in range(int(unseen.sum()))]
    labels = pa.table({"card_id": pa.array(card_names, pa.string()),
                       "ts": pa.array(lab_t, pa.timestamp("us", tz="UTC")),
                       "y": pa.array((rng.random(n_labels) < 0.02).astype(np.int64))})
    pq.write_table(labels, out / "labels.parquet.tmp", row_group_size=1 << 20)
    os.replace(out / "events.parquet.tmp", out / "events.parquet")
    os.replace(out / "labels.parquet.tmp", out / "labels.parquet")
    print(f"generated {out} in {time.perf_counter() - t0:.1f}s", flush=True)


# ------------------------------------------------------------------------- implementations
# Each returns (features: dict name -> numpy array in label-row order, info: dict); the timed
# part ends when the result is in memory. ``ctx`` has paths, threads, memory_limit, profile.

Impl = Callable[[dict[str, Any]], tuple[dict[str, np.ndarray], dict[str, Any]]]


class TimingReporter:
    """evenflow's Reporter hook: records the duration of each named stage of a build."""

    def __init__(self) -> None:
        self.stages: list[tuple[str, float]] = []

    @contextlib.contextmanager
    def stage(self, name: str, *, total: int | None = None) -> Iterator[Callable[[float], None]]:
        t0 = time.perf_counter()
        try:
            yield lambda percent: None  # progress updates are ignored
        finally:
            self.stages.append((name, time.perf_counter() - t0))


class RecordingConnection:
    """Stands in for the engine's DuckDB connection: times every statement build() runs."""

    def __init__(self, con: Any) -> None:
        self._con = con
        self.log: list[tuple[str, float]] = []

    def execute(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self._con.execute(sql, *args, **kwargs)
        finally:
            self.log.append((sql, time.perf_counter() - t0))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


def run_evenflow(ctx: dict[str, Any], plan: str = "auto", *, retrieval: bool = False
                 ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """evenflow's ``build()`` (validation, split, card), or with ``retrieval`` its
    ``features_at()``: the same features at the same rows, without the training-set extras,
    which is what the hand-written SQL computes."""
    import evenflow as ef
    from evenflow.batch.engine import BatchEngine
    from evenflow.batch.training import build

    t0, c0 = time.perf_counter(), time.process_time()
    events = ef.source.parquet(
        ctx["events"], name="events", key="card_id", event_time="ts",
        schema=ef.Schema(card_id=ef.String(nullable=False), ts=ef.Timestamp(), amount=ef.Float()))
    labels = ef.source.parquet(
        ctx["labels"], name="labels", key="card_id", event_time="ts",
        schema=ef.Schema(card_id=ef.String(nullable=False), ts=ef.Timestamp(),
                         y=ef.Int(nullable=False)))
    features = []
    for w in WINDOWS:
        features += [ef.count(window=w), ef.sum("amount", window=w), ef.mean("amount", window=w),
                     ef.std("amount", window=w)]
    card = ef.FeatureSet("card", source=events, features=features)
    pipeline = ef.Pipeline(name="bench", feature_sets=[card], training_set=ef.TrainingSetSpec(
        name="bench", labels=labels, label="y", features=["card"],
        split=ef.RandomSplit(test_size=0.2, seed=0),
        # Generated cards often have a single event in both windows; such rows repeat across the
        # splits by chance. The check still runs (its time counts); only its verdict is accepted.
        accept=["duplicate_rows_across_splits"]))
    reporter = TimingReporter()
    engine = BatchEngine(pipeline, memory_limit=ctx["memory_limit"], threads=ctx["threads"],
                         temp_directory=ctx["spill"], reporter=reporter)
    recorder = RecordingConnection(engine.con)
    engine.con = recorder
    if retrieval:
        from evenflow.batch.retrieval import features_at

        table = features_at(labels, [card], engine=engine, plan=plan)  # type: ignore[arg-type]
        feature_columns = [c for c in table.column_names if c.startswith("card__")]
    else:
        ts = build(pipeline, engine=engine, plan=plan)  # type: ignore[arg-type]
        table = ts.table
        feature_columns = ts.feature_columns
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0

    stages = {name: round(s, 3) for name, s in reporter.stages}
    info: dict[str, Any] = {"seconds": seconds, "cpu_seconds": cpu, "stages": stages, "rows": table.num_rows,
                            "columns": table.column_names}
    feature_stage = [s for n, s in reporter.stages if n.startswith("features ")]
    info["feature_seconds"] = feature_stage[0] if feature_stage else None
    assert [c for c in NAMES] == [c.removeprefix("card__") for c in feature_columns], feature_columns
    out = {name: table.column(f"card__{name}").to_numpy(zero_copy_only=False) for name in NAMES}
    slowest = sorted(recorder.log, key=lambda x: -x[1])[:6]
    info["slowest_statements"] = [{"seconds": round(sec, 3), "sql": sql[:160]} for sql, sec in slowest]
    info["evenflow_path"] = str(Path(ef.__file__).parent)
    if ctx.get("profile"):
        feature_sql = [sql for sql, _ in recorder.log if sql.startswith('CREATE OR REPLACE TABLE "__feat__')]
        if feature_sql:
            sql = feature_sql[-1].replace('"__feat__card"', '"__feat_again"', 1)
            info["feature_sql"] = sql
            t1 = time.perf_counter()
            plan = engine.con.sql(f"EXPLAIN ANALYZE {sql}").fetchall()
            info["feature_sql_rerun_seconds"] = time.perf_counter() - t1
            Path(ctx["profile"]).write_text(sql + "\n\n" + "\n".join(str(r[1]) for r in plan))
    engine.close()
    return out, info


def _duckdb(ctx: dict[str, Any]) -> Any:
    import duckdb

    con = duckdb.connect(config={"preserve_insertion_order": True})
    con.execute("SET TimeZone='UTC'")
    con.execute(f"SET memory_limit='{ctx['memory_limit']}'")
    con.execute(f"SET temp_directory='{ctx['spill']}'")
    con.execute(f"SET threads={int(ctx['threads'])}")
    return con


def sql_window(events: str, labels: str) -> str:
    """Events and label points in one ordered stream per card; RANGE frames on epoch µs."""
    sel = []
    for w in WINDOWS:
        sel += [f"count(amount) OVER w{w} AS count_{w}",
                f"coalesce(sum(amount) OVER w{w}, 0.0) AS sum_amount_{w}",
                f"avg(amount) OVER w{w} AS mean_amount_{w}",
                f"stddev_samp(amount) OVER w{w} AS std_amount_{w}"]
    wins = ", ".join(f"w{w} AS (PARTITION BY card_id ORDER BY t RANGE BETWEEN {us - 1} PRECEDING "
                     "AND CURRENT ROW)" for w, us in WINDOWS.items())
    return f"""
WITH u AS (
  SELECT card_id, epoch_us(ts) AS t, amount, CAST(NULL AS BIGINT) AS qid,
         CAST(NULL AS TIMESTAMPTZ) AS ts, CAST(NULL AS BIGINT) AS y FROM {events}
  UNION ALL
  SELECT card_id, epoch_us(ts), CAST(NULL AS DOUBLE), qid, ts, y FROM {labels}
)
SELECT qid, card_id, ts, y, {', '.join(sel)}
FROM u WINDOW {wins}
QUALIFY qid IS NOT NULL
ORDER BY qid"""


def _join_aggregates() -> str:
    sel = []
    for w, us in WINDOWS.items():
        f = "" if us == max(WINDOWS.values()) else f" FILTER (WHERE e.t > l.t - {us})"
        sel += [f"count(e.amount){f} AS count_{w}",
                f"coalesce(sum(e.amount){f}, 0.0) AS sum_amount_{w}",
                f"avg(e.amount){f} AS mean_amount_{w}",
                f"stddev_samp(e.amount){f} AS std_amount_{w}"]
    return ", ".join(sel)


def sql_join(events: str, labels: str) -> str:
    """Each label row joins its card's events in (t - 7d, t]; one FILTER per window."""
    longest = max(WINDOWS.values())
    return f"""
WITH e AS (SELECT card_id, epoch_us(ts) AS t, amount FROM {events}),
l AS (SELECT qid, card_id, ts, y, epoch_us(ts) AS t FROM {labels}),
f AS (
  SELECT l.qid, {_join_aggregates()}
  FROM l LEFT JOIN e ON e.card_id = l.card_id AND e.t <= l.t AND e.t > l.t - {longest}
  GROUP BY l.qid
)
SELECT l.qid, l.card_id, l.ts, l.y, f.* EXCLUDE (qid) FROM l JOIN f USING (qid) ORDER BY l.qid"""


def sql_bucket(events: str, labels: str, bucket_us: int = D7_US) -> str:
    """The join, with time buckets in the hash key: an event of bucket b = t // B can only be
    in the window (t - W, t] of a label whose bucket is b .. b + ceil(W/B); each label row
    probes those buckets, so the hash join no longer pairs a label with all of its card's
    events (its whole history) but only with those of the last ceil(W/B) + 1 buckets."""
    longest = max(WINDOWS.values())
    extra = -(-longest // bucket_us)
    return f"""
WITH e AS (SELECT card_id, epoch_us(ts) AS t, amount, epoch_us(ts) // {bucket_us} AS b FROM {events}),
l AS (SELECT qid, card_id, ts, y, epoch_us(ts) AS t FROM {labels}),
lb AS (SELECT qid, card_id, t, t // {bucket_us} - k AS b FROM l, range({extra + 1}) AS r(k)),
f AS (
  SELECT l.qid, {_join_aggregates()}
  FROM lb AS l LEFT JOIN e ON e.card_id = l.card_id AND e.b = l.b
    AND e.t <= l.t AND e.t > l.t - {longest}
  GROUP BY l.qid
)
SELECT l.qid, l.card_id, l.ts, l.y, f.* EXCLUDE (qid) FROM l JOIN f USING (qid) ORDER BY l.qid"""


def _run_sql(ctx: dict[str, Any], make: Callable[[str, str], str], source: str
             ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    ev_scan = f"read_parquet('{ctx['events']}')"
    lb_scan = (f"(SELECT *, file_row_number AS qid FROM read_parquet('{ctx['labels']}', "
               "file_row_number = true))")
    info: dict[str, Any] = {}
    if source == "memory":
        con = _duckdb(ctx)
        t0 = time.perf_counter()
        con.execute(f"CREATE TABLE events AS SELECT * FROM {ev_scan}")
        con.execute(f"CREATE TABLE labels AS SELECT * FROM {lb_scan}")
        info["load_seconds"] = time.perf_counter() - t0
        sql = make("events", "labels")
        t0, c0 = time.perf_counter(), time.process_time()
    else:
        t0, c0 = time.perf_counter(), time.process_time()
        con = _duckdb(ctx)
        sql = make(ev_scan, lb_scan)
    table = con.sql(sql).to_arrow_table()
    info["seconds"] = time.perf_counter() - t0
    info["cpu_seconds"] = time.process_time() - c0
    info["rows"] = table.num_rows
    qid = table.column("qid").to_numpy()
    if not np.array_equal(qid, np.arange(len(qid))):
        raise AssertionError("hand SQL lost or reordered label rows")
    out = {name: table.column(name).to_numpy(zero_copy_only=False) for name in NAMES}
    if ctx.get("profile"):
        plan = con.sql(f"EXPLAIN ANALYZE {sql}").fetchall()
        Path(ctx["profile"]).write_text(sql + "\n\n" + "\n".join(str(r[1]) for r in plan))
    info["sql"] = sql
    con.close()
    return out, info


def _read_pandas(ctx: dict[str, Any]) -> tuple[Any, Any]:
    import pandas as pd

    ev = pd.read_parquet(ctx["events"])
    lb = pd.read_parquet(ctx["labels"])
    return ev, lb


def _micros(series: Any) -> np.ndarray:
    return np.asarray(series.dt.as_unit("us").array.asi8, dtype=np.int64)


def run_pandas(ctx: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Vectorized: searchsorted bounds over (card, ts)-sorted events, gathered windows."""
    import pandas as pd

    t0, c0 = time.perf_counter(), time.process_time()
    ev, lb = _read_pandas(ctx)
    codes, cards = pd.factorize(ev["card_id"])
    lcodes = cards.get_indexer(lb["card_id"])  # -1: card without events
    t, lt = _micros(ev["ts"]), _micros(lb["ts"])
    longest = max(WINDOWS.values())
    base = min(int(t.min()), int(lt.min())) - longest
    span = max(int(t.max()), int(lt.max())) - base + 1
    if (len(cards) + 1) * span >= 2**63:
        raise OverflowError("card count x time span does not fit one int64 sort key")
    key = codes.astype(np.int64) * span + (t - base)
    order = np.argsort(key, kind="stable")
    key, amount = key[order], ev["amount"].to_numpy(dtype=np.float64)[order]
    lkey = np.where(lcodes >= 0, lcodes.astype(np.int64) * span + (lt - base), -1)
    hi = np.searchsorted(key, lkey, side="right")
    out: dict[str, np.ndarray] = {}
    for w, us in WINDOWS.items():
        lo = np.searchsorted(key, np.where(lcodes >= 0, lkey - us, -1), side="right")
        n = hi - lo
        total = int(n.sum())
        seg = np.cumsum(n) - n  # start of each label's window in the gathered array
        idx = np.arange(total, dtype=np.int64) + np.repeat(lo - seg, n)
        vals = amount[idx]
        full = n > 0
        sums = np.zeros(len(n))
        sums[full] = np.add.reduceat(vals, seg[full])
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(full, sums / n, np.nan)
            dev = vals - np.repeat(mean[full], n[full])
            m2 = np.zeros(len(n))
            m2[full] = np.add.reduceat(dev * dev, seg[full])
            std = np.where(n >= 2, np.sqrt(m2 / (n - 1)), np.nan)
        out[f"count_{w}"], out[f"sum_amount_{w}"] = n.astype(np.int64), sums
        out[f"mean_amount_{w}"], out[f"std_amount_{w}"] = mean, std
    return out, {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0, "rows": len(lb)}


def run_pandas_loop(ctx: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """As many users write it: per card, a loop over its label rows, slice and aggregate."""
    t0, c0 = time.perf_counter(), time.process_time()
    ev, lb = _read_pandas(ctx)
    ev = ev.sort_values(["card_id", "ts"], kind="stable")
    t_all, a_all = _micros(ev["ts"]), ev["amount"].to_numpy(dtype=np.float64)
    spans = {card: (int(pos[0]), int(pos[-1]) + 1)
             for card, pos in ev.groupby("card_id", sort=False).indices.items()}
    lt = _micros(lb["ts"])
    n_lab = len(lb)
    out = {name: (np.zeros(n_lab, np.int64) if name in COUNT_NAMES else np.full(n_lab, np.nan))
           for name in NAMES}
    for w in WINDOWS:
        out[f"sum_amount_{w}"][:] = 0.0
    for card, rows in lb.groupby("card_id", sort=False).indices.items():
        if card not in spans:
            continue
        s, e = spans[card]
        t, a = t_all[s:e], a_all[s:e]
        for i in rows:
            hi = int(np.searchsorted(t, lt[i], side="right"))
            for w, us in WINDOWS.items():
                lo = int(np.searchsorted(t, lt[i] - us, side="right"))
                n = hi - lo
                out[f"count_{w}"][i] = n
                if n:
                    win = a[lo:hi]
                    total = win.sum()
                    out[f"sum_amount_{w}"][i] = total
                    out[f"mean_amount_{w}"][i] = total / n
                    if n > 1:
                        out[f"std_amount_{w}"][i] = win.std(ddof=1)
    return out, {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0, "rows": n_lab}


def run_pandas_naive(ctx: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The usual shortcut (wrong between events): rolling at events, then merge_asof."""
    import pandas as pd

    t0, c0 = time.perf_counter(), time.process_time()
    ev, lb = _read_pandas(ctx)
    ev = ev.sort_values(["card_id", "ts"], kind="stable").reset_index(drop=True)
    for w, offset in (("1h", "1h"), ("7d", "7D")):
        r = ev.groupby("card_id", sort=False).rolling(offset, on="ts")["amount"]
        # indexed by (card_id, ts), in the frame's (card, ts) order: the groups come sorted
        agg = r.agg(["count", "sum", "mean", "std"])
        assert (agg.index.get_level_values(0) == ev["card_id"]).all()
        ev[f"count_{w}"] = agg["count"].to_numpy()
        for a in ("sum", "mean", "std"):
            ev[f"{a}_amount_{w}"] = agg[a].to_numpy()
    left = lb.assign(qid=np.arange(len(lb))).sort_values("ts", kind="stable")
    right = ev.sort_values("ts", kind="stable")[["card_id", "ts", *NAMES]]
    merged = pd.merge_asof(left, right, on="ts", by="card_id", direction="backward")
    merged = merged.sort_values("qid")
    out = {}
    for name in NAMES:
        col = merged[name].to_numpy(dtype=np.float64)
        if name.startswith(("count_", "sum_")):
            col = np.nan_to_num(col, nan=0.0)  # generous: no earlier event → 0
        out[name] = col.astype(np.int64) if name in COUNT_NAMES else col
    return out, {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0, "rows": len(merged)}


IMPLS: dict[str, Impl] = {
    "evenflow": run_evenflow,
    "evenflow:join": lambda ctx: run_evenflow(ctx, "join"),
    "evenflow:features_at": lambda ctx: run_evenflow(ctx, "auto", retrieval=True),
    "sql_window:parquet": lambda ctx: _run_sql(ctx, sql_window, "parquet"),
    "sql_window:memory": lambda ctx: _run_sql(ctx, sql_window, "memory"),
    "sql_join:parquet": lambda ctx: _run_sql(ctx, sql_join, "parquet"),
    "sql_join:memory": lambda ctx: _run_sql(ctx, sql_join, "memory"),
    "sql_bucket:parquet": lambda ctx: _run_sql(ctx, sql_bucket, "parquet"),
    "sql_bucket:memory": lambda ctx: _run_sql(ctx, sql_bucket, "memory"),
    "pandas": run_pandas,
    "pandas_loop": run_pandas_loop,
    "pandas_naive": run_pandas_naive,
}
CORRECT = [k for k in IMPLS if k != "pandas_naive"]
QUICK = ["evenflow", "evenflow:join", "evenflow:features_at", "sql_window:memory", "sql_join:parquet", "sql_bucket:parquet",
         "sql_bucket:memory", "pandas", "pandas_loop", "pandas_naive"]


def worker(args: argparse.Namespace) -> None:
    spill = tempfile.mkdtemp(prefix="wf-spill-")
    ctx = {"events": args.events_path, "labels": args.labels_path, "threads": args.threads,
           "memory_limit": args.memory_limit, "spill": spill, "profile": args.profile_out}
    try:
        out, info = IMPLS[args.worker](ctx)
    finally:
        shutil.rmtree(spill, ignore_errors=True)
    if args.check_out:
        import pyarrow as pa
        import pyarrow.parquet as pq

        cols = {name: pa.array(out[name], from_pandas=True) for name in NAMES}
        pq.write_table(pa.table(cols), args.check_out)
    write_result(args.result_file, info)


# ------------------------------------------------------------------------------ checking
def load_check(path: Path) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return {n: table.column(n).to_numpy(zero_copy_only=False).astype(
        np.int64 if n in COUNT_NAMES else np.float64) for n in NAMES}


def compare(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict[str, Any]:
    """Cells that disagree (semantics.md section 11: isclose rel 1e-9, abs 1e-12; counts equal;
    null where and only where the other is null) and the largest relative difference."""
    per: dict[str, Any] = {}
    bad_rows = np.zeros(len(ref[NAMES[0]]), dtype=bool)
    for n in NAMES:
        a, b = ref[n], got[n]
        if len(a) != len(b):
            raise AssertionError(f"{n}: {len(b)} rows, expected {len(a)}")
        if n in COUNT_NAMES:
            bad = a != b
            per[n] = {"bad": int(bad.sum()), "max_rel_diff": 0.0 if not bad.any() else
                      float(np.max(np.abs(a[bad] - b[bad]) / np.maximum(np.abs(a[bad]), 1)))}
        else:
            na, nb = np.isnan(a), np.isnan(b)
            both = ~na & ~nb
            diff = np.abs(a[both] - b[both])
            scale = np.maximum(np.abs(a[both]), np.abs(b[both]))
            close = diff <= np.maximum(REL_TOL * scale, ABS_TOL)
            bad = na != nb
            bad[np.flatnonzero(both)[~close]] = True
            with np.errstate(invalid="ignore", divide="ignore"):
                rel = np.where(scale > 0, diff / scale, 0.0)
            per[n] = {"bad": int(bad.sum()), "null_mismatch": int((na != nb).sum()),
                      "max_rel_diff": float(rel.max()) if rel.size else 0.0,
                      "max_abs_diff": float(diff.max()) if diff.size else 0.0}
        bad_rows |= bad
    cells = len(bad_rows) * len(NAMES)
    total_bad = sum(v["bad"] for v in per.values())
    return {"features": per, "bad_cells": total_bad, "cells": cells,
            "bad_cell_fraction": total_bad / cells, "bad_rows": int(bad_rows.sum()),
            "bad_row_fraction": float(bad_rows.mean()),
            "max_rel_diff": max(v["max_rel_diff"] for v in per.values())}


def reference_spot_check(events: Path, labels: Path, got: dict[str, np.ndarray], sample: int,
                         seed: int) -> dict[str, Any]:
    """Recompute ``sample`` label rows with tests/reference.py (plain Python, fsum, two-pass)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from tests.reference import evaluate, same

    lb = pq.read_table(labels)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(lb.num_rows, size=min(sample, lb.num_rows), replace=False))
    cards = pc.take(lb.column("card_id"), rows).to_pylist()
    times = pc.take(lb.column("ts"), rows).cast("int64").to_pylist()
    ev = pq.read_table(events, filters=[("card_id", "in", sorted(set(cards)))])
    by_card: dict[str, list[dict[str, Any]]] = {}
    for seq, (c, t, a) in enumerate(zip(ev.column("card_id").to_pylist(),
                                        ev.column("ts").cast("int64").to_pylist(),
                                        ev.column("amount").to_pylist(), strict=True)):
        by_card.setdefault(c, []).append({"event_time": t, "seq": seq, "amount": a})
    bad = []
    for row, c, t in zip(rows.tolist(), cards, times, strict=True):
        for w, us in WINDOWS.items():
            for agg in AGGS:
                name = f"count_{w}" if agg == "count" else f"{agg}_amount_{w}"
                want = evaluate(agg, None if agg == "count" else "amount", us, "right",
                                by_card.get(c, []), t=t, a=t)
                value = got[name][row]
                have = None if isinstance(value, float) and math.isnan(value) else value.item()
                if not same(want, have):
                    bad.append({"row": row, "feature": name, "want": want, "have": have})
    return {"rows": len(rows), "bad": len(bad), "examples": bad[:5]}


# -------------------------------------------------------------------------------- driver
def snapshot_evenflow() -> tuple[str, dict[str, str]]:
    """Copy evenflow/ aside so every child of this run imports the same code, however the
    working tree changes meanwhile; return its directory and a digest of each source file."""
    import hashlib

    root = tempfile.mkdtemp(prefix="wf-evenflow-")
    shutil.copytree(REPO / "evenflow", Path(root) / "evenflow",
                    ignore=shutil.ignore_patterns("__pycache__"))
    digests = {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()[:12]
               for f in sorted(Path(root).rglob("*.py"))}
    return root, digests


def child_argv(args: argparse.Namespace, impl: str, paths: dict[str, Path], **extra: Any) -> list[str]:
    argv = [str(Path(__file__).resolve()), "--worker", impl, "--events-path", str(paths["events"]),
            "--labels-path", str(paths["labels"]), "--threads", str(args.threads),
            "--memory-limit", args.memory_limit]
    for k, v in extra.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    return argv


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--labels", type=int, default=1_000_000)
    ap.add_argument("--cards", type=int, default=200_000)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--skew", type=float, default=0.5, help="card weight ∝ rank^-skew (0: uniform)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--runs", type=int, default=3,
                    help="timed runs per implementation (median); 0: report the check runs' times")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--memory-limit", default="1500MB")
    ap.add_argument("--impls", default=None,
                    help=f"comma list of {', '.join(IMPLS)} (default: all; --quick: {','.join(QUICK)})")
    ap.add_argument("--time-impls", default=None,
                    help="implementations to time (default: all correct ones given in --impls)")
    ap.add_argument("--quick", action="store_true",
                    help="200k events, 20k labels, 4k cards; times taken from the check runs")
    ap.add_argument("--profile", action="store_true",
                    help="EXPLAIN ANALYZE the SQL in the check runs (benchmarks/data/.../profile_*.txt)")
    ap.add_argument("--spot-check", type=int, default=300, help="label rows checked with tests/reference.py")
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--merge", action="store_true",
                    help="update only this run's implementations in the results of the same scale")
    ap.add_argument("--no-pin-evenflow", action="store_true",
                    help="let children import evenflow/ from the working tree at each start "
                         "(default: a copy taken when the run starts)")
    # child-process mode
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--events-path", help=argparse.SUPPRESS)
    ap.add_argument("--labels-path", help=argparse.SUPPRESS)
    ap.add_argument("--check-out", help=argparse.SUPPRESS)
    ap.add_argument("--profile-out", help=argparse.SUPPRESS)
    ap.add_argument("--result-file", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return
    if args.quick:
        args.events, args.labels, args.cards, args.runs = 200_000, 20_000, 4_000, 0
        args.impls = args.impls or ",".join(QUICK)
    args.impls = args.impls or ",".join(IMPLS)

    impls = [i for i in args.impls.split(",") if i]
    unknown = set(impls) - set(IMPLS)
    if unknown:
        ap.error(f"unknown implementation(s): {sorted(unknown)}")
    timed = [i for i in (args.time_impls.split(",") if args.time_impls is not None else impls)
             if i in CORRECT and i in impls]
    ddir = dataset_dir(args.events, args.labels, args.cards, args.days, args.seed, args.skew)
    generate(ddir, args.events, args.labels, args.cards, args.days, args.seed, args.skew)
    paths = {"events": ddir / "events.parquet", "labels": ddir / "labels.parquet"}
    scale = f"{args.events}x{args.labels}x{args.cards}"
    t_start = time.perf_counter()
    snapshot, digests = (None, {}) if args.no_pin_evenflow else snapshot_evenflow()
    if snapshot:
        os.environ["WF_EVENFLOW_SNAPSHOT"] = snapshot

    # 1. correctness: one run of each, values compared before anything is timed
    check_runs: dict[str, dict[str, Any]] = {}
    outputs: dict[str, dict[str, np.ndarray]] = {}
    for impl in impls:
        out_path = ddir / f"check_{impl.replace(':', '_')}.parquet"
        extra: dict[str, Any] = {"check_out": out_path}
        if args.profile and impl.startswith(("evenflow", "sql_")):
            extra["profile_out"] = ddir / f"profile_{impl.replace(':', '_')}.txt"
        res = run_child(child_argv(args, impl, paths, **extra))
        check_runs[impl] = res
        outputs[impl] = load_check(out_path)
        print(f"[check] {impl}: {res['seconds']:.2f}s, peak RSS {fmt_mb(res['peak_rss_bytes'])} MB",
              flush=True)
    ref_name = "pandas" if "pandas" in outputs else next(i for i in impls if i in CORRECT)
    checks = {impl: {"against": ref_name, **compare(outputs[ref_name], outputs[impl])}
              for impl in impls if impl != ref_name}
    if "evenflow" in outputs:
        for impl in impls:
            if impl.startswith("sql_"):
                checks[f"evenflow vs {impl}"] = {"against": impl,
                                                 **compare(outputs[impl], outputs["evenflow"])}
    spot = reference_spot_check(paths["events"], paths["labels"], outputs[ref_name],
                                args.spot_check, args.seed) if args.spot_check else None
    for name, c in checks.items():
        print(f"[check] {name.split(' vs ')[0]} vs {c['against']}: {c['bad_cells']} bad cells of {c['cells']}, "
              f"max rel diff {c['max_rel_diff']:.3g}", flush=True)
    if spot:
        print(f"[check] {ref_name} vs tests/reference.py on {spot['rows']} rows: {spot['bad']} bad",
              flush=True)
    wrong = [i for i in impls if i in CORRECT and i != ref_name and checks[i]["bad_cells"]]
    if wrong or (spot and spot["bad"]):
        print(f"VALUES DISAGREE: {wrong} {spot}", flush=True)

    del outputs  # the driver's memory is not the children's, but keep the machine quiet

    # 2. timing: runs interleaved across implementations (the machine is shared and noisy)
    timings: dict[str, list[dict[str, Any]]] = {i: [] for i in timed}
    if args.runs == 0:
        timings = {i: [check_runs[i]] for i in timed}
    for r in range(args.runs):
        for impl in timed:
            res = run_child(child_argv(args, impl, paths))
            timings[impl].append(res)
            print(f"[run {r + 1}/{args.runs}] {impl}: {res['seconds']:.2f}s"
                  + (f" (features {res['feature_seconds']:.2f}s)" if res.get("feature_seconds") else "")
                  + f", peak RSS {fmt_mb(res['peak_rss_bytes'])} MB", flush=True)

    summary = summarize(timings, check_runs, checks)
    result = {
        "scale": {"events": args.events, "labels": args.labels, "cards": args.cards,
                  "days": args.days, "skew": args.skew, "seed": args.seed},
        "config": {"threads": args.threads, "memory_limit": args.memory_limit, "runs": args.runs},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "total_seconds": time.perf_counter() - t_start,
        "environment": environment(),
        "evenflow_sources": digests,
        "reference": ref_name,
        "checks": checks,
        "spot_check": spot,
        "summary": summary,
        "runs": {i: [strip(r) for r in rs] for i, rs in timings.items()},
        "check_runs": {i: strip(r) for i, r in check_runs.items()},
    }
    save(Path(args.results), scale, result, merge=args.merge)
    if snapshot:
        shutil.rmtree(snapshot, ignore_errors=True)
    print()
    print(report(result))


def strip(res: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in res.items() if k not in ("columns",)}


def summarize(timings: dict[str, list[dict[str, Any]]], check_runs: dict[str, dict[str, Any]],
              checks: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any] = {}
    for impl, rs in timings.items():
        if not rs:
            continue
        s[impl] = {"median_seconds": median([r["seconds"] for r in rs]),
                   "min_seconds": min(r["seconds"] for r in rs),
                   "all_seconds": [round(r["seconds"], 3) for r in rs],
                   "peak_rss_bytes": max(r["peak_rss_bytes"] for r in rs),
                   "sampled_peak_rss_bytes": max(r["sampled_peak_rss_bytes"] for r in rs)}
        if all(r.get("cpu_seconds") is not None for r in rs):  # process CPU time, every thread
            s[impl]["median_cpu_seconds"] = median([r["cpu_seconds"] for r in rs])
            s[impl]["all_cpu_seconds"] = [round(r["cpu_seconds"], 3) for r in rs]
        if rs[0].get("feature_seconds") is not None:
            s[impl]["median_feature_seconds"] = median([r["feature_seconds"] for r in rs])
            stages: dict[str, list[float]] = {}
            for r in rs:
                for name, sec in r["stages"].items():
                    stages.setdefault(name, []).append(sec)
            s[impl]["median_stages"] = {k: median(v) for k, v in stages.items()}
    if "pandas_naive" in check_runs:
        s["pandas_naive"] = {"check_run_seconds": check_runs["pandas_naive"]["seconds"],
                             "peak_rss_bytes": check_runs["pandas_naive"]["peak_rss_bytes"],
                             "error": {k: checks["pandas_naive"][k] for k in
                                       ("bad_cell_fraction", "bad_row_fraction", "bad_cells")},
                             "bad_cells_by_feature": {n: v["bad"] for n, v in
                                                      checks["pandas_naive"]["features"].items()}}

    def med(name: str, key: str = "median_seconds") -> float | None:
        return s.get(name, {}).get(key)

    ratios: dict[str, Any] = {}

    def best(suffix: str) -> tuple[str, float] | None:
        found = [(n, med(n)) for n in timings if n.startswith("sql_") and n.endswith(suffix)]
        found = [(n, v) for n, v in found if v]
        return min(found, key=lambda x: x[1]) if found else None  # type: ignore[return-value]

    best_parquet, best_memory = best(":parquet"), best(":memory")
    for ef in ("evenflow", "evenflow:join", "evenflow:features_at"):
        build_s, feature_s = med(ef), med(ef, "median_feature_seconds")
        if build_s and best_parquet:
            ratios[f"{ef} build / best hand SQL from Parquet ({best_parquet[0]})"] = build_s / best_parquet[1]
            build_cpu, hand_cpu = med(ef, "median_cpu_seconds"), med(best_parquet[0], "median_cpu_seconds")
            if build_cpu and hand_cpu:
                ratios[f"{ef} build / best hand SQL from Parquet ({best_parquet[0]}), CPU time"] = (
                    build_cpu / hand_cpu)
        if feature_s and best_memory:
            ratios[f"{ef} feature stage / best hand SQL on loaded tables ({best_memory[0]})"] = (
                feature_s / best_memory[1])
        for p in ("pandas", "pandas_loop"):
            if build_s and med(p):
                ratios[f"{p} / {ef} build"] = med(p) / build_s
                p_cpu, ef_cpu = med(p, "median_cpu_seconds"), med(ef, "median_cpu_seconds")
                if p_cpu and ef_cpu:
                    ratios[f"{p} / {ef} build, CPU time"] = p_cpu / ef_cpu
    s["ratios"] = ratios
    return s


def environment() -> dict[str, Any]:
    import duckdb
    import pandas as pd
    import psutil

    return {"python": platform.python_version(), "duckdb": duckdb.__version__,
            "pandas": pd.__version__, "numpy": np.__version__, "cpus": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "load_avg_at_end": os.getloadavg()}


def save(path: Path, scale: str, result: dict[str, Any], *, merge: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            data = {}
    data.setdefault("benchmark", "windowed_features")
    by_scale = data.setdefault("by_scale", {})
    if merge and scale in by_scale:
        old = by_scale[scale]
        for key in ("checks", "runs", "check_runs", "summary"):
            old.setdefault(key, {}).update({k: v for k, v in result[key].items()
                                            if not (k == "ratios" and not v)})
        old.setdefault("merged", []).append({k: result[k] for k in ("command", "finished",
                                                                    "evenflow_sources", "spot_check")})
    else:
        by_scale[scale] = result
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def report(result: dict[str, Any]) -> str:
    s, sc = result["summary"], result["scale"]
    lines = [f"## Windowed features at label times: {sc['events']:,} events, {sc['labels']:,} "
             f"labels, {sc['cards']:,} cards ({result['config']['threads']} threads, DuckDB "
             f"memory_limit {result['config']['memory_limit']}, "
             + (f"median of {result['config']['runs']} runs)" if result['config']['runs']
                else "times of the single check run)"), ""]
    rows = []
    for impl, v in s.items():
        if impl in ("ratios", "pandas_naive"):
            continue
        check = result["checks"].get(impl)
        agree = "reference" if impl == result["reference"] else (
            f"{check['bad_cells']} bad cells, max rel diff {check['max_rel_diff']:.1e}" if check else "—")
        rows.append([impl, fmt_seconds(v["median_seconds"]), fmt_seconds(v.get("median_cpu_seconds")),
                     fmt_seconds(v.get("median_feature_seconds")),
                     fmt_mb(v["peak_rss_bytes"]), agree])
    if "pandas_naive" in s:
        n = s["pandas_naive"]
        rows.append(["pandas_naive (WRONG)", f"({fmt_seconds(n['check_run_seconds'])})", "—", "—",
                     fmt_mb(n["peak_rss_bytes"]),
                     f"{n['error']['bad_cell_fraction']:.1%} of cells, "
                     f"{n['error']['bad_row_fraction']:.1%} of rows wrong"])
    lines.append(markdown_table(["implementation", "seconds", "CPU s", "feature part (s)", "peak RSS (MB)",
                                 "values vs reference"], rows))
    lines.append("")
    for k, v in s["ratios"].items():
        lines.append(f"- {k}: **{fmt_ratio(v)}**")
    if "evenflow" in s and "median_stages" in s["evenflow"]:
        stages = ", ".join(f"{k} {v:.2f}s" for k, v in s["evenflow"]["median_stages"].items())
        lines.append(f"- evenflow build stages (median): {stages}")
    if result.get("spot_check"):
        sp = result["spot_check"]
        lines.append(f"- reference ({result['reference']}) vs tests/reference.py on {sp['rows']} "
                     f"random label rows: {sp['bad']} disagreements")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
