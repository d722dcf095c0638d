"""Contamination and leakage checks, run at every training-set build.

Each check returns one :class:`~evenflow.verify.findings.Finding` (its ``check`` names the finding
type). Row ids in ``rows`` are the label rows' record numbers (``__qid``: the labels source's
record numbers, the numbering the quarantine uses). The checks read plain Arrow tables, so each
can be run on its own; :func:`check_training_set` gathers their inputs from a build.

>>> import pyarrow as pa
>>> t = pa.table({"__row": [0, 1, 2], "split": ["train", "train", "test"],
...               "x": [1.0, 2.0, 1.0], "y": [0, 1, 0]})
>>> f = duplicate_rows_across_splits(t, ["x", "y"])
>>> f.passed, f.rows
(False, [2])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from evenflow.core.sqltext import ident as q
from evenflow.verify.findings import Finding, Severity, apply_accept, raise_for_findings
from evenflow.verify.neardup import NearDupOptions, near_duplicates

if TYPE_CHECKING:
    from evenflow.batch.training import TrainingSet
    from evenflow.core.pipeline import Pipeline

ROW = "__row"
AUC_BOUND = 0.99
MIN_CLASS_ROWS = 20  # fewer rows of a class make a perfect AUC too likely by chance
PIT_SAMPLE = 200
REL_TOL, ABS_TOL = 1e-6, 1e-9  # float sums in another order differ in the last digits
CHECKS = ("duplicate_rows_across_splits", "near_duplicate_text_across_splits", "entity_overlap",
          "temporal_overlap", "point_in_time", "target_leakage", "fit_outside_train",
          "label_before_features")


def _ids(table: pa.Table) -> list[int]:
    return [int(v) for v in table.column(ROW).to_pylist()]


def _evidence(table: pa.Table, columns: Sequence[str], limit: int = 20) -> list[dict[str, Any]]:
    cols = [c for c in dict.fromkeys([ROW, "split", *columns]) if c in table.column_names]
    return table.select(cols).slice(0, limit).to_pylist()


def _skipped(check: str, why: str) -> Finding:
    return Finding(check, "info", True, f"skipped: {why}")


_DB: duckdb.DuckDBPyConnection | None = None


def _sql(table: pa.Table, sql: str) -> pa.Table:
    """Run ``sql`` over ``table`` (named ``t``) on a private in-memory DuckDB.

    One database per process, a cursor per call: opening a database costs tens of
    milliseconds, which every small build would otherwise pay several times.
    """
    global _DB
    if _DB is None:
        _DB = duckdb.connect()
    con = _DB.cursor()
    try:
        con.register("t", table)
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()


# -- checks over the training set ----------------------------------------------------------------
def _no_signal_sql(table: pa.Table, features: Sequence[str], alias: str = "a") -> str:
    """SQL true for a row whose features are all null or zero: the vector of "no history"."""
    def empty(c: str) -> str:
        t = table.schema.field(c).type
        numeric = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
        col = f"{alias}.{q(c)}"
        return f"({col} IS NULL OR CAST({col} AS DOUBLE) = 0)" if numeric else f"{col} IS NULL"
    return " AND ".join(empty(c) for c in features) if features else "FALSE"


#: Repeats of train rows in up to this share of the test rows are a warning, above it an error.
DUPLICATE_SHARE = 0.001


def duplicate_rows_across_splits(table: pa.Table, columns: Sequence[str], *,
                                 features: Sequence[str] | None = None) -> Finding:
    """Test rows whose features and label exactly equal some train row's (nulls equal nulls).

    Rows whose ``features`` are all null or zero (entities without history) are not counted:
    that vector repeats in any split without carrying a record across. ``features`` defaults
    to all of ``columns`` but the last (the label).
    """
    check = "duplicate_rows_across_splits"
    if not columns:
        return _skipped(check, "no columns to compare")
    feats = list(columns[:-1]) if features is None else list(features)
    on = " AND ".join(f"a.{q(c)} IS NOT DISTINCT FROM b.{q(c)}" for c in columns)
    cols = ", ".join(q(c) for c in columns)
    found = _sql(table, f"WITH train AS (SELECT {cols}, min({ROW}) AS __train_row FROM t "
                        f"WHERE split = 'train' GROUP BY ALL) "
                        f"SELECT a.*, b.__train_row, {_no_signal_sql(table, feats)} AS __empty "
                        f"FROM t AS a JOIN train AS b ON {on} WHERE a.split = 'test' ORDER BY a.{ROW}")
    ignored = int(pc.sum(found.column("__empty")).as_py() or 0)
    found = found.filter(pc.invert(found.column("__empty")))
    n_test = int(pc.sum(pc.equal(table.column("split"), "test")).as_py() or 0)
    rows = _ids(found)
    note = f" ({ignored} more repeat only the all-null/zero feature vector, not counted)" if ignored else ""
    # A shared feature vector in a handful of test rows, or in a tiny share of many (a new
    # card's first round ATM amount at the same hour), is chance, not a record carried across:
    # those are reported as a warning, every row listed either way.
    allowed = int(DUPLICATE_SHARE * n_test)
    severity: Severity = "error" if n_test >= MIN_CLASS_ROWS and len(rows) > allowed else "warn"
    if rows and severity == "warn":
        note += (f"; a warning only: fewer than {MIN_CLASS_ROWS} test rows" if n_test < MIN_CLASS_ROWS
                 else f"; a warning only: at most {DUPLICATE_SHARE:.1%} of test rows")
    return Finding(check, severity, not rows,
                   (f"{len(rows)} of {n_test} test rows equal a train row on {len(columns)} "
                    "feature and label columns" if rows else "no test row repeats a train row") + note,
                   observed=len(rows), bound=allowed, rows=rows,
                   evidence=_evidence(found, ["__train_row", *columns]))


def near_duplicate_text_across_splits(table: pa.Table, text_columns: Sequence[str],
                                      options: NearDupOptions | None = None) -> Finding:
    """Test rows whose text (any listed column) is a near-duplicate of some train row's text."""
    check = "near_duplicate_text_across_splits"
    if not text_columns:
        return _skipped(check, "no text_columns listed on the training set")
    opts = options or NearDupOptions()
    split = np.asarray(table.column("split").to_pylist(), dtype=object)
    ids = np.asarray(_ids(table), dtype=np.int64)
    flagged: dict[int, dict[str, Any]] = {}
    for column in text_columns:
        texts = table.column(column).to_pylist()
        nd = near_duplicates(texts, threshold=opts.threshold, shingle_size=opts.shingle, unit=opts.unit,
                             num_perm=opts.num_perm, seed=opts.seed, lowercase=opts.lowercase,
                             recall_weight=opts.recall_weight)
        test_i, train_i, sim = nd.matches(split == "test", split == "train")
        for a, b, s in zip(test_i.tolist(), train_i.tolist(), sim.tolist(), strict=True):
            if int(ids[a]) not in flagged:
                flagged[int(ids[a])] = {ROW: int(ids[a]), "column": column, "train_row": int(ids[b]),
                                        "jaccard": round(s, 4), "test_text": texts[a],
                                        "train_text": texts[b]}
    rows = sorted(flagged)
    return Finding(check, "error", not rows,
                   f"{len(rows)} test rows have a near-duplicate text (Jaccard >= {opts.threshold}) "
                   f"in train, columns {', '.join(text_columns)}" if rows else
                   f"no near-duplicate text across splits in {', '.join(text_columns)}",
                   observed=len(rows), bound=0, rows=rows,
                   evidence=[flagged[r] for r in rows[:20]])


def entity_overlap(table: pa.Table, by: Sequence[str]) -> Finding:
    """Rows (both splits) of entities present in train and test, when the split promised disjoint ones."""
    check = "entity_overlap"
    keys = ", ".join(q(k) for k in by)
    found = _sql(table, f"WITH e AS (SELECT {keys} FROM t GROUP BY ALL "
                        f"HAVING count(*) FILTER (WHERE split = 'train') > 0 "
                        f"AND count(*) FILTER (WHERE split = 'test') > 0) "
                        f"SELECT t.* FROM t SEMI JOIN e USING ({keys}) ORDER BY t.{ROW}")
    entities = _sql(found, f"SELECT {keys}, count(*) FILTER (WHERE split = 'train') AS train_rows, "
                           f"count(*) FILTER (WHERE split = 'test') AS test_rows FROM t GROUP BY ALL "
                           f"ORDER BY ALL LIMIT 20")
    n_ent = len(_sql(found, f"SELECT DISTINCT {keys} FROM t")) if found.num_rows else 0
    rows = _ids(found)
    return Finding(check, "error", not rows,
                   f"{n_ent} entities ({', '.join(by)}) are in both train and test ({len(rows)} rows)"
                   if rows else f"train and test share no {', '.join(by)}",
                   observed=n_ent, bound=0, rows=rows, evidence=entities.to_pylist())


def temporal_overlap(table: pa.Table, time: str, gap_us: int, *, promised: bool) -> Finding:
    """Test rows earlier than the last train time plus the gap.

    An error when the split promised time order (a time split); otherwise reported as info.
    """
    check = "temporal_overlap"
    last = _sql(table, f"SELECT max(epoch_us({q(time)})) AS m FROM t WHERE split = 'train'")
    last_us = last.column("m")[0].as_py()
    if last_us is None:
        return _skipped(check, "no train rows")
    bound_us = int(last_us) + int(gap_us)
    found = _sql(table, f"SELECT * FROM t WHERE split = 'test' AND epoch_us({q(time)}) < {bound_us} "
                        f"ORDER BY {ROW}")
    rows = _ids(found)
    bound = pa.scalar(bound_us, pa.timestamp("us", tz="UTC")).as_py()
    severity: Severity = "error" if promised else "info"
    what = "" if promised else " (the split does not promise time order)"
    return Finding(check, severity, not rows,
                   f"{len(rows)} test rows are earlier than the last train time plus the gap "
                   f"({bound.isoformat()}){what}" if rows else
                   "every test row is at or after the last train time plus the gap",
                   observed=len(rows), bound=f"test rows >= {bound.isoformat()}", rows=rows,
                   evidence=_evidence(found, [time]))


def label_before_features(table: pa.Table, time: str, label_time: str | None) -> Finding:
    """Rows whose label time is earlier than the time their features are computed at."""
    check = "label_before_features"
    if not label_time:
        return _skipped(check, "no label_available_time: each label's time is its row's time")
    found = _sql(table, f"SELECT * FROM t WHERE {q(label_time)} < {q(time)} ORDER BY {ROW}")
    rows = _ids(found)
    return Finding(check, "error", not rows,
                   f"{len(rows)} rows have {label_time} earlier than {time}, the time of their "
                   "features" if rows else f"every {label_time} is at or after {time}",
                   observed=len(rows), bound=0, rows=rows, evidence=_evidence(found, [time, label_time]))


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of ``scores`` for binary ``labels`` (ties count half; NaN scores rank lowest).

    >>> auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    0.75
    """
    s = np.where(np.isnan(scores), -np.inf, scores)
    # average ranks (1-based) with ties sharing their mean rank; NumPy only (scipy.stats is slow to import)
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    starts = np.flatnonzero(np.concatenate([[True], sorted_s[1:] != sorted_s[:-1]]))
    ends = np.append(starts[1:], len(s))
    group_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(len(s), dtype=np.float64)
    ranks[order] = np.repeat(group_rank, ends - starts)
    pos = labels.astype(bool)
    n1, n0 = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def target_leakage(table: pa.Table, label: str, columns: Sequence[str]) -> Finding:
    """A column identical to the label, or one numeric column alone with ROC AUC >= 0.99."""
    check = "target_leakage"
    y_col = table.column(label)
    y_text = pc.cast(y_col, pa.string())
    values = pc.unique(y_col.drop_null()).to_pylist()
    counts = pc.value_counts(y_col.drop_null()).field("counts").to_pylist()
    # a tiny or constant label equals some column by chance; require enough rows per class
    enough = len(values) >= 2 and (min(counts) if len(values) == 2 else sum(counts)) >= MIN_CLASS_ROWS
    head = min(table.num_rows, 1024)  # a column that differs early is rejected before the full compare
    identical = [c for c in table.column_names if enough and c not in (label, ROW, "split")
                 and table.column(c).null_count == y_col.null_count
                 and pc.all(pc.fill_null(pc.equal(pc.cast(table.column(c).slice(0, head), pa.string()),
                                                  y_text.slice(0, head)), True)).as_py() is not False
                 and pc.all(pc.fill_null(pc.equal(pc.cast(table.column(c), pa.string()), y_text),
                                         True)).as_py() is not False
                 and pc.all(pc.equal(pc.is_null(table.column(c)), pc.is_null(y_col))).as_py()]
    leaks: list[dict[str, Any]] = [{"column": c, "reason": "identical to the label"} for c in identical]
    observed: dict[str, float] = {}
    note = "" if enough else f"; skipped: fewer than {MIN_CLASS_ROWS} rows per label value"
    if len(values) == 2 and enough:
        y = np.asarray(pc.equal(y_col, max(values)).to_numpy(zero_copy_only=False), dtype=object)
        keep = np.asarray(y_col.is_valid().to_numpy(zero_copy_only=False))
        y = y[keep].astype(bool)
        if min(int(y.sum()), int((~y).sum())) < MIN_CLASS_ROWS:
            note = f"; AUC not computed: fewer than {MIN_CLASS_ROWS} rows in a class"
        else:
            for c in columns:
                col = table.column(c)
                if c in identical or not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
                                          or pa.types.is_boolean(col.type)):
                    continue
                x = col.cast(pa.float64()).to_numpy(zero_copy_only=False)[keep]
                a = auc(np.asarray(x, dtype=np.float64), y)
                strength = max(a, 1 - a)
                observed[c] = round(strength, 6)
                if strength >= AUC_BOUND:
                    leaks.append({"column": c, "reason": f"ROC AUC {a:.4f} on its own", "auc": a})
    elif enough:
        note = f"; AUC not computed: the label has {len(values)} distinct values, not 2"
    names = [leak["column"] for leak in leaks]
    top = max(observed.values(), default=None)
    return Finding(check, "error", not leaks,
                   (f"columns that give away the label: {', '.join(names)}" if leaks else
                    f"no column equals the label; highest single-column AUC {top}") + note,
                   observed={"leaking": names, "max_auc": top}, bound={"auc": AUC_BOUND},
                   evidence=leaks)


def _close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            return True
        return math.isclose(float(a), float(b), rel_tol=REL_TOL, abs_tol=ABS_TOL)
    return bool(a == b)


# -- point-in-time recomputation -----------------------------------------------------------------
_PLAIN = {"sum": "sum", "mean": "avg", "min": "min", "max": "max", "var": "var_samp",
          "std": "stddev_samp", "count": "count"}


def _recompute_sql(events: str, key: list[str], event_time: str, available_time: str | None,
                   aggs: Sequence[Any], points: str) -> str:
    """Aggregates at ``points`` straight from the definition in docs/semantics.md section 3.

    One grouped join with a FILTER per aggregate; independent of the build's window/asof/join
    plans on purpose.
    """
    et = f"epoch_us(e.{q(event_time)})"
    at = f"epoch_us(e.{q(available_time)})" if available_time else et
    on = " AND ".join(f"e.{q(k)} = p.{q(k)}" for k in key)
    exprs = []
    for a in aggs:
        cond = [f"{at} <= p.__a", f"{et} < p.__t" if a.closed == "left" else f"{et} <= p.__t"]
        if a.window_us is not None:
            cond.append(f"{et} > p.__t - {int(a.window_us)}")
        col = f"e.{q(a.column)}" if a.column else None
        where = " AND ".join(cond + ([f"{col} IS NOT NULL"] if col else []))
        if a.agg == "count":
            expr = f"count({col or 'e.__seq'}) FILTER (WHERE {where})"
        elif a.agg == "sum":
            expr = f"COALESCE(sum({col}) FILTER (WHERE {where}), 0)"
        elif a.agg == "distinct":
            expr = f"count(DISTINCT {col}) FILTER (WHERE {where})"
        elif a.agg == "first":
            expr = f"first({col} ORDER BY {et}, e.__seq) FILTER (WHERE {where})"
        elif a.agg == "last":
            expr = f"first({col} ORDER BY {et} DESC, e.__seq DESC) FILTER (WHERE {where})"
        elif a.agg == "since_last":
            expr = f"(any_value(p.__t) - max({et}) FILTER (WHERE {where})) / 1e6"
        else:
            expr = f"{_PLAIN[a.agg]}({col}) FILTER (WHERE {where})"
        exprs.append(f"{expr} AS {q(a.name)}")
    return (f"SELECT p.__qid, {', '.join(exprs)} FROM {points} AS p LEFT JOIN {events} AS e "
            f"ON {on} AND {et} <= p.__t GROUP BY p.__qid")


def point_in_time(con: duckdb.DuckDBPyConnection, feature_sets: Sequence[Any], keys: dict[str, list[str]],
                  times: dict[str, tuple[str, str | None]], built: str, *,
                  sample: int = PIT_SAMPLE, seed: int = 0) -> Finding:
    """Recompute a sample of feature values from the cleaned events and compare with the build.

    ``built`` is a relation with ``__qid``, ``__t``, ``__a``, the label row's columns and the
    built feature columns (``<feature set>__<feature>``). Derived features are re-evaluated in
    Python (``Expr.evaluate``) over the recomputed aggregates and the label row.
    """
    check = "point_in_time"
    points = (f"(SELECT * FROM {built} ORDER BY hash(__qid + {int(seed)}), __qid "
              f"LIMIT {int(sample)})")
    con.execute(f"CREATE OR REPLACE TEMP TABLE __pit_points AS {points}")
    rows_checked = int(con.sql("SELECT count(*) FROM __pit_points").fetchall()[0][0])
    mismatches: list[dict[str, Any]] = []
    compared, skipped = 0, []
    for fs in feature_sets:
        events = f"ev__{fs.name}"
        exists = con.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name = ? UNION ALL "
                         "SELECT count(*) FROM duckdb_views() WHERE view_name = ?",
                         params=[events, events]).fetchall()
        if not any(n for (n,) in exists):
            skipped.append(f"{fs.name} (no prepared events table)")
            continue
        et, avail = times[fs.name]
        aggs = fs.aggregates
        fresh: dict[int, dict[str, Any]] = {}
        if aggs:
            sql = _recompute_sql(q(events), keys[fs.name], et, avail, aggs, "__pit_points")
            for rec in con.sql(sql).to_arrow_table().to_pylist():
                fresh[int(rec.pop("__qid"))] = rec
        base = con.sql("SELECT * FROM __pit_points ORDER BY __qid").to_arrow_table().to_pylist()
        for row in base:
            qid = int(row["__qid"])
            values = fresh.get(qid, {a.name: None for a in aggs})
            for d in fs.derived:
                record = {**{k: v for k, v in row.items() if not k.startswith("__")}, **values}
                for name in d.parsed.columns():
                    record.setdefault(name, None)
                try:
                    values[d.name] = d.parsed.evaluate(record)
                except Exception as exc:
                    skipped.append(f"{fs.name}__{d.name} ({type(exc).__name__})")
                    values[d.name] = row.get(f"{fs.name}__{d.name}")
            for name, value in values.items():
                column = f"{fs.name}__{name}"
                if column not in row:
                    continue
                compared += 1
                if not _close(row[column], value):
                    mismatches.append({ROW: qid, "feature": column, "built": row[column],
                                       "recomputed": value})
    rows = sorted({m[ROW] for m in mismatches})
    note = f"; not recomputed: {', '.join(sorted(set(skipped)))}" if skipped else ""
    return Finding(check, "error", not mismatches,
                   (f"{len(mismatches)} of {compared} sampled feature values differ from a "
                    f"recomputation with only the data available at label time ({len(rows)} rows)"
                    if mismatches else f"{compared} feature values at {rows_checked} sampled label "
                                       "rows match a recomputation from the events known then") + note,
                   observed=len(mismatches), bound=0, rows=rows, evidence=mismatches[:20])


# -- at every build ------------------------------------------------------------------------------
def record_fit_scope(con: duckdb.DuckDBPyConnection, artifacts: dict[str, Any], steps: Sequence[Any],
                     prefix: str, relation: str, where: str | None, time_sql: str) -> None:
    """Record in each learned step's artifact what it was fitted on (``artifact["fit_scope"]``).

    Called by the build where it fits: ``where`` is the filter the fit used (None: all rows).
    """
    w = f" WHERE {where}" if where else ""
    n, last = con.sql(f"SELECT count(*), max({time_sql}) FROM {relation}{w}").fetchall()[0]
    for step in steps:
        art = artifacts.get(f"{prefix}/{step.id}")
        if isinstance(art, dict) and getattr(step, "learns", False):
            art["fit_scope"] = {"scope": "train" if where else "all", "filter": where,
                                "rows": int(n), "max_time_us": None if last is None else int(last)}


def fit_outside_train(artifacts: dict[str, Any], learned: Sequence[str], *, train_until_us: int) -> Finding:
    """Learned steps whose recorded fit scope is not the train split, or reaches past its end.

    Each learned artifact must carry ``fit_scope`` with ``scope == "train"`` and ``max_time_us``
    (the newest row it was fitted on) no later than ``train_until_us``.
    """
    check = "fit_outside_train"
    bad: list[dict[str, Any]] = []
    for key in learned:
        meta = (artifacts.get(key) or {}).get("fit_scope")
        if not isinstance(meta, dict):
            bad.append({"artifact": key, "problem": "no fit_scope recorded"})
        elif meta.get("scope") != "train":
            bad.append({"artifact": key, "problem": f"fitted on {meta.get('scope')!r} rows", **meta})
        elif meta.get("max_time_us") is not None and int(meta["max_time_us"]) > train_until_us:
            bad.append({"artifact": key, "problem": "fitted on rows after the end of the train split",
                        **meta, "train_until_us": train_until_us})
    return Finding(check, "error", not bad,
                   f"{len(bad)} learned steps were fitted outside the train split: "
                   + ", ".join(b["artifact"] for b in bad) if bad else
                   f"all {len(learned)} learned steps were fitted on the train split only",
                   observed=len(bad), bound=0, evidence=bad)


def _row_ids(ts: TrainingSet) -> pa.Array:
    """The label record number of each row of ``ts.table`` (its position when rows were resampled)."""
    con = ts.engine.con
    marker = "SELECT * EXCLUDE (__qid) FROM "
    if ts.sql.startswith(marker):
        ids = con.sql("SELECT __qid FROM " + ts.sql[len(marker):]).to_arrow_table().column(0)
        if len(ids) == ts.table.num_rows:
            return ids.combine_chunks().cast(pa.int64())
    return pa.array(range(ts.table.num_rows), pa.int64())


def run_checks(ts: TrainingSet, pipeline: Pipeline) -> list[Finding]:
    """Every contamination and leakage check on a freshly built training set."""
    from evenflow.core.features import FeatureSet
    from evenflow.core.split import GroupSplit, TimeSplit
    from evenflow.core.timeutil import parse_duration, parse_instant, to_micros
    from evenflow.errors import DefinitionError

    spec = pipeline.training_set
    assert spec is not None
    con = ts.engine.con
    labels = pipeline.sources[spec.labels if isinstance(spec.labels, str) else spec.labels.name]
    t_col = spec.time or labels.event_time or ""
    table = ts.table.append_column(ROW, _row_ids(ts))
    for column in spec.text_columns:
        if column not in table.column_names:
            raise DefinitionError(f"text_columns lists {column!r}, which the training set does not "
                                  "have", field=column, fix=f"its columns: {', '.join(ts.table.column_names)}")
    split = spec.split
    findings = [duplicate_rows_across_splits(table, [*ts.feature_columns, spec.label]),
                near_duplicate_text_across_splits(table, spec.text_columns)]
    findings.append(entity_overlap(table, split.by) if isinstance(split, GroupSplit) else
                    _skipped("entity_overlap", f"a {split.kind} split does not promise disjoint entities"))
    gap = parse_duration(ts.card["split"]["gap"]) if isinstance(split, TimeSplit) else 0
    findings.append(temporal_overlap(table, t_col, gap, promised=isinstance(split, TimeSplit)))
    sets = [fs if isinstance(fs, FeatureSet) else pipeline.feature_set(fs) for fs in spec.features]
    keys = {fs.name: pipeline.key_of(fs) for fs in sets}
    times = {fs.name: (pipeline.source_of(fs).event_time or "", pipeline.source_of(fs).available_time)
             for fs in sets}
    a_sql = f"epoch_us({q(spec.knowledge_time)})" if spec.knowledge_time else f"epoch_us({q(t_col)})"
    built = f"(SELECT *, epoch_us({q(t_col)}) AS __t, {a_sql} AS __a FROM __ts0)"
    findings.append(point_in_time(con, sets, keys, times, built))
    passthrough = [c for c in ts.table.column_names
                   if c not in {spec.label, "split", t_col, spec.knowledge_time, spec.label_available_time,
                                *(labels.key or []), *ts.feature_columns}]
    findings.append(target_leakage(table, spec.label, [*ts.feature_columns, *passthrough]))
    # the train split ends: time split, before its cutoff; otherwise at its last row's time
    train_until = (to_micros(parse_instant(ts.card["split"]["train_before"])) - 1
                   if isinstance(split, TimeSplit) else
                   int(con.sql(f"SELECT max(epoch_us({q(t_col)})) FROM __ts0 WHERE split = 'train'")
                       .fetchall()[0][0]))
    ts_steps = {f"training_set/{s.id}": s for s in spec.steps}
    record_fit_scope(con, ts.artifacts, list(ts_steps.values()), "training_set", "__ts0",
                     "split = 'train'", f"epoch_us({q(t_col)})")
    learned = [f"{fs.name}/{s.id}" for fs in sets for s in fs.steps if getattr(s, "learns", False)]
    learned += [k for k, s in ts_steps.items() if getattr(s, "learns", False) and k in ts.artifacts]
    findings.append(fit_outside_train(ts.artifacts, learned, train_until_us=train_until))
    findings.append(label_before_features(table, t_col, spec.label_available_time))
    return findings


def check_training_set(ts: TrainingSet, pipeline: Pipeline) -> list[Finding]:
    """The build's hook: run the checks, keep them on ``ts``, fail on unaccepted errors.

    Findings go to ``ts.findings`` (written as ``checks.json``) and a summary without rows to
    ``ts.card["checks"]``; then :class:`~evenflow.verify.findings.FindingsError` is raised for
    error-level findings that ``accept`` does not name.
    """
    spec = pipeline.training_set
    findings = apply_accept(run_checks(ts, pipeline), spec.accept if spec else [])
    ts.findings = findings
    ts.card["checks"] = [{**{k: v for k, v in f.to_dict().items() if k not in ("rows", "evidence")},
                          "rows": len(f.rows)} for f in findings]
    raise_for_findings(findings)
    return findings
