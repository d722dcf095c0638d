"""Point-in-time training sets: label rows as query points, split, fitted on train only.

Every label row comes back (with nulls where nothing was known); a row is never joined to an
event that happened, or became known, after its query point.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import pyarrow as pa

from evenflow.batch import compile as C
from evenflow.batch.engine import BatchEngine, PreparedEvents
from evenflow.core.features import FeatureSet
from evenflow.core.pipeline import Output, Pipeline, TrainingSetSpec
from evenflow.core.source import Source
from evenflow.core.split import GroupSplit, RandomSplit, SplitType, TimeSplit
from evenflow.core.steps import Artifact, Dedup, StepType, TargetEncode, select_list
from evenflow.core.timeutil import format_duration, parse_duration, parse_instant, to_micros
from evenflow.errors import DefinitionError
from evenflow.quality.validate import lit, q
from evenflow.verify.leakage import check_training_set, record_fit_scope
from evenflow.verify.neardup import NearDedup

SPLITS = ("train", "test")


@dataclass
class TrainingSet:
    """The result of :func:`build`: the table, its card and what it was fitted with."""

    name: str
    table: pa.Table
    card: dict[str, Any]
    artifacts: dict[str, Artifact]
    fingerprint: str
    feature_columns: list[str]
    label: str
    engine: BatchEngine = field(repr=False)
    sql: str = field(repr=False, default="")
    #: contamination and leakage findings of the build (evenflow.verify.leakage), for checks.json
    findings: list[Any] = field(repr=False, default_factory=list)

    def write(self, output: Output | None = None, **options: str) -> dict[str, str]:
        """Publish to the warehouse, Parquet, Delta and the dataset card (see ``publish``).

        ``options`` override fields of the pipeline's :class:`Output` (``directory=``,
        ``warehouse=``, ``lakehouse=``).
        """
        from evenflow.batch.publish import write_training_set

        target = (output or Output()).model_copy(update=options)
        return write_training_set(self, target)

    def split(self, name: str) -> pa.Table:
        import pyarrow.compute as pc

        return self.table.filter(pc.equal(self.table.column("split"), name))

    def class_weights(self) -> dict[Any, float]:
        """Balanced class weights ``n / (classes · n_c)`` learned on the train split."""
        from evenflow.verify.resample import class_weights

        return class_weights(self.split("train").column(self.label))

    def with_sample_weight(self, column: str = "sample_weight") -> TrainingSet:
        """A copy with a ``column`` of each row's class weight (weights from the train split;
        a label never seen in train gets 1.0)."""
        import dataclasses

        weights = self.class_weights()
        values = [weights.get(v, 1.0) for v in self.table.column(self.label).to_pylist()]
        return dataclasses.replace(self, table=self.table.append_column(column, pa.array(values, pa.float64())))

    def resample(self, method: Literal["under", "over", "smote"], *, seed: int = 0,
                 sampling_strategy: float | str = "auto", k_neighbors: int = 5) -> TrainingSet:
        """A copy with the train split resampled (see :class:`evenflow.core.steps.Resample`);
        test rows are untouched."""
        import dataclasses

        from evenflow.core.steps import Resample
        from evenflow.verify.resample import resample_table

        spec = Resample(method=method, seed=seed, sampling_strategy=sampling_strategy,
                        k_neighbors=k_neighbors)
        table, info = resample_table(self.table, self.feature_columns, self.label, spec)
        card = {**self.card, "quality_steps": {**self.card.get("quality_steps", {}), "resample": info}}
        return dataclasses.replace(self, table=table, card=card)

    def xy(self, name: str) -> tuple[Any, Any]:
        """Features and label of one split as NumPy arrays (floats; nulls become NaN)."""
        import numpy as np

        part = self.split(name)
        x = np.column_stack([part.column(c).cast(pa.float64()).to_numpy(zero_copy_only=False)
                             for c in self.feature_columns]) if self.feature_columns else \
            np.empty((part.num_rows, 0))
        return x, part.column(self.label).to_numpy(zero_copy_only=False)


def _split_sql(spec: TrainingSetSpec, longest_us: int, t_col: str) -> tuple[str, dict[str, Any]]:
    """SQL giving ``__split`` (train/test/held_gap/held_label_late) over the points table."""
    split = spec.split
    info: dict[str, Any] = {"kind": split.kind}
    if isinstance(split, TimeSplit):
        gap_us = parse_duration(split.gap) if split.gap else longest_us
        test_from = to_micros(parse_instant(split.test_from))
        cutoff = test_from - gap_us
        lat = (f"epoch_us({q(spec.label_available_time)})" if spec.label_available_time else "__t")
        info.update(test_from=split.test_from, gap=format_duration(gap_us) if gap_us else "0s",
                    train_before=datetime.fromtimestamp(cutoff / 1e6, UTC).isoformat())
        return (f"CASE WHEN __t >= {test_from} THEN 'test' WHEN __t >= {cutoff} THEN 'held_gap' "
                f"WHEN {lat} >= {cutoff} THEN 'held_label_late' ELSE 'train' END"), info
    if isinstance(split, GroupSplit):
        keys = ", ".join(f"CAST({q(k)} AS VARCHAR)" for k in split.by)
        bucket = (f"(CAST(('0x' || substr(md5(concat_ws(chr(31), {lit(str(split.seed))}, {keys})), 1, 8)) "
                  f"AS BIGINT) / 4294967296.0)")
        info.update(by=split.by, test_size=split.test_size, seed=split.seed)
        return f"CASE WHEN {bucket} < {split.test_size} THEN 'test' ELSE 'train' END", info
    assert isinstance(split, RandomSplit)
    part = f"PARTITION BY {q(spec.label)}" if split.stratify else ""
    order = f"md5_number_lower(concat_ws(chr(31), {lit(str(split.seed))}, CAST(__qid AS VARCHAR)))"
    info.update(test_size=split.test_size, seed=split.seed, stratify=split.stratify)
    return (f"CASE WHEN row_number() OVER ({part} ORDER BY {order}) <= "
            f"round(count(*) OVER ({part}) * {split.test_size}) THEN 'test' ELSE 'train' END"), info


def training_set(labels: Source, label: str, features: list[FeatureSet], split: SplitType, *,
                 name: str = "training_set", time: str | None = None,
                 knowledge_time: str | None = None, label_available_time: str | None = None,
                 steps: list[StepType] | None = None, memory_limit: str = "3GB") -> TrainingSet:
    """Build a point-in-time training set straight from Python objects.

    >>> import datetime as dt, pyarrow as pa, evenflow as ef
    >>> t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    >>> ev = ef.source.frame(pa.table({"card": ["a", "a"], "ts": [t0, t0 + dt.timedelta(hours=2)]}),
    ...                      name="ev", key="card", event_time="ts")
    >>> lab = ef.source.frame(pa.table({"card": ["a", "a"], "ts": [t0, t0 + dt.timedelta(hours=3)],
    ...                                 "y": [0, 1]}), name="labels", key="card", event_time="ts")
    >>> ts = ef.training_set(lab, "y", [ef.FeatureSet("card", source=ev, features=[ef.count(window="1d")])],
    ...                      ef.RandomSplit(test_size=0.5, stratify=False))
    >>> sorted(ts.table.column("card__count_1d").to_pylist())
    [1, 2]
    """
    spec = TrainingSetSpec(name=name, labels=labels, label=label, features=list(features), split=split,
                           time=time, knowledge_time=knowledge_time,
                           label_available_time=label_available_time, steps=steps or [])
    pipeline = Pipeline(name=name, training_set=spec)
    return build(pipeline, engine=BatchEngine(pipeline, memory_limit=memory_limit))


def build(pipeline: Pipeline, *, engine: BatchEngine | None = None,
          plan: Literal["auto", "window", "join"] = "auto") -> TrainingSet:
    """Build the pipeline's training set (see ``docs/semantics.md``, query points and splits)."""
    spec = pipeline.training_set
    if spec is None:
        raise DefinitionError(f"pipeline {pipeline.name!r} has no training_set",
                              fix="add a training_set: section (labels, label, features, split)")
    eng = engine or BatchEngine(pipeline)
    con = eng.con
    labels_name = spec.labels if isinstance(spec.labels, str) else spec.labels.name
    labels = eng.load_source(labels_name)
    t_col = spec.time or labels.source.event_time
    if not t_col:
        raise DefinitionError("the training set needs the label rows' observation time",
                              fix="set time: on training_set or event_time: on the labels source")
    for column in [spec.label, t_col, spec.knowledge_time, spec.label_available_time]:
        if column and column not in labels.schema.fields:
            raise DefinitionError(f"training set uses column {column!r}, which the labels source "
                                  f"{labels_name!r} does not have", field=column,
                                  fix=f"its columns: {', '.join(labels.schema.fields)}")
    sets = [fs if isinstance(fs, FeatureSet) else pipeline.feature_set(fs) for fs in spec.features]
    longest = max((fs.longest_window_us() for fs in sets), default=0)
    split_expr, split_info = _split_sql(spec, longest, t_col)
    a_expr = f"epoch_us({q(spec.knowledge_time)})" if spec.knowledge_time else "__t"
    label_cols = list(labels.schema.fields)
    with eng.stage("split label rows"):
        con.execute(f"CREATE OR REPLACE TABLE __points AS SELECT *, {a_expr} AS __a, "
                    f"{split_expr} AS __split FROM (SELECT *, __seq AS __qid, "
                    f"epoch_us({q(t_col)}) AS __t FROM {q(labels.table)} "
                    f"WHERE {q(spec.label)} IS NOT NULL)")
    missing_label = labels.rows_in - labels.quarantined - eng._count("__points")
    train = con.sql("SELECT min(__t), max(__t) FROM __points WHERE __split = 'train'").fetchall()[0]
    if train[1] is None:
        raise DefinitionError("the split leaves no training rows",
                              fix="move test_from later, shorten the gap, or check the label times")
    artifacts: dict[str, Artifact] = {}
    joins, feature_columns, card_sets = [], [], []
    for fs in sets:
        fit_where = _event_fit_where(pipeline, fs, spec, train[1], split_info)
        ev = eng.prepare(fs, fit_where=fit_where)
        record_fit_scope(con, ev.artifacts, fs.steps, fs.name, q(ev.loaded.table), fit_where,
                         f"epoch_us({q(ev.event_time)})")
        artifacts.update(ev.artifacts)
        missing = [k for k in ev.key if k not in label_cols]
        if missing:
            raise DefinitionError(f"feature set {fs.name!r} is keyed by {ev.key}, but the label rows "
                                  f"lack {missing}", field=missing[0],
                                  fix="add the key column(s) to the labels source")
        with eng.stage(f"features {fs.name} at label times"):
            table, no_history = _features_at_points(eng, ev, plan)
        prefix = f"{fs.name}__"
        cols = [f"f.{q(name)} AS {q(prefix + name)}" for name in fs.feature_names]
        feature_columns += [prefix + name for name in fs.feature_names]
        joins.append((table, cols))
        card_sets.append({"name": fs.name, "key": ev.key, "features": fs.feature_names,
                          "rows_without_history": no_history, **ev.accounting()})
    select = [f"p.{q(c)}" for c in label_cols if c not in ("__seq",)]
    from_sql = "__points AS p"
    for i, (table, cols) in enumerate(joins):
        select += [c.replace("f.", f"f{i}.", 1) for c in cols]
        from_sql += f" LEFT JOIN {q(table)} AS f{i} ON f{i}.__qid = p.__qid"
    body = (f"SELECT {', '.join(select)}, p.__split AS split, p.__qid AS __qid FROM {from_sql} "
            f"WHERE p.__split IN ('train', 'test')")
    con.execute(f"CREATE OR REPLACE TABLE __ts0 AS {body}")
    current, quality = _apply_steps(eng, spec, labels.source, t_col, feature_columns, artifacts)
    final_sql = f"SELECT * EXCLUDE (__qid) FROM {current} ORDER BY __qid"
    con.execute(f"CREATE OR REPLACE TABLE __training_set AS {final_sql}")
    result = con.sql("SELECT * FROM __training_set").to_arrow_table()
    if spec.resample is not None:
        from evenflow.verify.resample import resample_table

        result, quality["resample"] = resample_table(result, feature_columns, spec.label, spec.resample)
        con.register("__resampled", result)
        con.execute("CREATE OR REPLACE TABLE __training_set AS SELECT * FROM __resampled")
        con.unregister("__resampled")
    fingerprint = pipeline.fingerprint(artifacts)
    card = _card(eng, spec, pipeline, result, split_info, card_sets, fingerprint, artifacts,
                 feature_columns, missing_label)
    card["quality_steps"] = quality
    ts = TrainingSet(spec.name, result, card, artifacts, fingerprint, feature_columns, spec.label,
                     eng, final_sql)
    check_training_set(ts, pipeline)  # contamination and leakage; raises FindingsError
    return ts


def _apply_steps(eng: BatchEngine, spec: TrainingSetSpec, labels: Source, t_col: str,
                 feature_columns: list[str], artifacts: dict[str, Artifact]) -> tuple[str, dict[str, Any]]:
    """The training-set steps over ``__ts0``, fitted on the train split: the last relation's name,
    and what the steps quarantined (per step and split). Columns the steps add become features."""
    con, current = eng.con, "__ts0"
    quarantined: dict[str, dict[str, int]] = {}
    for i, raw_step in enumerate(spec.steps):
        if isinstance(raw_step, (Dedup, NearDedup)):
            raise DefinitionError("Dedup belongs on a feature set, not on the training set",
                                  fix="move it to the feature set's steps")
        step = raw_step.bind(key=list(labels.key or []), order=[t_col, "__qid"])
        cols = ", ".join(q(c) for c in step.fit_columns)
        if isinstance(step, TargetEncode):
            cols += f", {step.fold_sql('__qid')} AS __fold"
        art = step.fit(con.sql(f"SELECT {cols} FROM {current} WHERE split = 'train'").to_arrow_table())
        artifacts[f"training_set/{step.id}"] = art
        reject = step.reject_sql(art)
        if reject is not None:
            kept = f"__ts{i + 1}__kept"
            con.execute(f"CREATE OR REPLACE TEMP TABLE {kept}__m AS SELECT *, COALESCE({reject[0]}, "
                        f"FALSE) AS __rejected FROM {current}")
            con.execute(f"INSERT INTO __quarantine SELECT {lit(labels.name)}, 'training_set', __qid, "
                        f"CAST(to_json(m) AS VARCHAR), 'outlier', {lit(step.column)}, {lit(step.id)}, "
                        f"{reject[1]} FROM (SELECT * EXCLUDE (__rejected) FROM {kept}__m "
                        "WHERE __rejected) m")
            quarantined[step.id] = {s: int(n) for s, n in con.sql(
                f"SELECT split, count(*) FILTER (WHERE __rejected) FROM {kept}__m GROUP BY 1 "
                "ORDER BY 1").fetchall()}
            con.execute(f"CREATE OR REPLACE TEMP VIEW {kept} AS SELECT * EXCLUDE (__rejected) "
                        f"FROM {kept}__m WHERE NOT __rejected")
            current = kept
        columns = list(con.sql(f"SELECT * FROM {current} LIMIT 0").columns)
        exprs = step.sql(art)
        if isinstance(step, TargetEncode):
            # train rows get the out-of-fold value; test rows the whole-train mapping
            oof = step.train_sql(art, "__qid")
            exprs = {c: f"CASE WHEN split = 'train' THEN {oof[c]} ELSE {e} END" for c, e in exprs.items()}
        con.execute(f"CREATE OR REPLACE TEMP VIEW __ts{i + 1} AS SELECT "
                    f"{select_list(exprs, columns)} FROM {current}")
        feature_columns += [c for c in exprs if c not in columns]
        current = f"__ts{i + 1}"
    return current, {"quarantined": quarantined}


def _event_fit_where(pipeline: Pipeline, fs: FeatureSet, spec: TrainingSetSpec, train_max_t: int,
                     split_info: dict[str, Any]) -> str:
    """Which events the feature set's learned steps may be fitted on: those of the train split."""
    source = pipeline.source_of(fs)
    et = f"epoch_us({q(source.event_time or '')})"
    if split_info["kind"] == "time":
        cutoff = to_micros(parse_instant(split_info["train_before"]))
        return f"{et} < {cutoff}"
    where = f"{et} <= {train_max_t}"
    split = spec.split
    if isinstance(split, GroupSplit) and source.schema_ and all(b in source.schema_.fields for b in split.by):
        keys = ", ".join(q(b) for b in split.by)
        where += f" AND ({keys}) IN (SELECT ({keys}) FROM __points WHERE __split = 'train')"
    return where


def _features_at_points(eng: BatchEngine, ev: PreparedEvents, plan: Literal["auto", "window", "join"]
                        ) -> tuple[str, int]:
    """Features of ``ev`` at ``__points``: the table's name and the rows without history."""
    fs = ev.feature_set
    keys = ", ".join(q(k) for k in ev.key)
    points = f"(SELECT __qid, {keys}, __t, __a FROM __points)"
    # The window plan ignores a; it is exact when every event is known at its event time and
    # every query's knowledge time is at or after its valid time (then a excludes nothing).
    late_knowledge = eng.con.sql("SELECT count(*) FROM __points WHERE __a < __t").fetchall()[0][0]
    window_ok = ev.available_time is None and late_knowledge == 0
    if plan == "window" and not window_ok:
        raise DefinitionError("the window plan cannot honour available_time or a knowledge time "
                              "earlier than the observation time", fix="use plan='join' or 'auto'")
    chosen: Literal["auto", "window", "join"] = plan if window_ok else "join"
    # measured before the features: the bucketed join's cost, when the plan is to be chosen
    longest = eng.cost_window(ev, points, chosen)
    stats = eng.point_stats(ev, points, longest=longest) if longest else None
    aggs_sql = eng.aggregates_sql(ev, points, chosen, stats=stats, recent=True)
    recent = "__recent" in eng.con.sql(f"SELECT * FROM ({aggs_sql}) LIMIT 0").columns
    if fs.derived:
        columns = {r[0] for r in eng.con.sql("DESCRIBE __points").fetchall()}
        sql = C.derived_sql(aggs_sql, "SELECT * FROM __points", fs.aggregates, fs.derived, [], columns,
                            carry=["__recent"] if recent else [])
    else:
        sql = aggs_sql
    table = f"__feat__{fs.name}"
    eng.con.execute(f"CREATE OR REPLACE TABLE {q(table)} AS {sql}")
    if not recent:
        return table, eng.rows_without_history(ev, points)
    # A point that joined an event at or before its time has history; look up only the others.
    others = (f"(SELECT p.* FROM {points} AS p JOIN {q(table)} AS f USING (__qid) "
              "WHERE f.__recent = 0)")
    return table, eng.rows_without_history(ev, others, few=True)


def _card(eng: BatchEngine, spec: TrainingSetSpec, pipeline: Pipeline, table: pa.Table,
          split_info: dict[str, Any], sets: list[dict[str, Any]], fingerprint: str,
          artifacts: dict[str, Artifact], feature_columns: list[str], missing_label: int) -> dict[str, Any]:
    con = eng.con
    counts = dict(con.sql("SELECT __split, count(*) FROM __points GROUP BY 1").fetchall())
    balance: dict[str, dict[str, int]] = {}
    for split, value, n in con.sql(
            f"SELECT split, CAST({q(spec.label)} AS VARCHAR), count(*) FROM __training_set "
            "GROUP BY ALL ORDER BY ALL").fetchall():
        balance.setdefault(split, {})[value] = int(n)
    versions = {name: loaded.version for name, loaded in eng._loaded.items()}
    return {
        "name": spec.name,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_id": eng.run_id,
        "pipeline": pipeline.name,
        "fingerprint": fingerprint,
        "label": spec.label,
        "rows": {s: int(counts.get(s, 0)) for s in SPLITS},
        "held_out": {k.removeprefix("held_"): int(v) for k, v in counts.items() if k.startswith("held_")},
        "label_rows_without_label": missing_label,
        "label_balance": balance,
        "split": split_info,
        "features": feature_columns,
        "feature_sets": sets,
        "source_versions": versions,
        "quarantine": eng.quarantine_counts(),
        # per source, every contract's result (name, kind, severity, passed, observed, bound, ...)
        "contracts": {name: [r.as_dict() for r in loaded.contracts]
                      for name, loaded in eng._loaded.items() if loaded.contracts},
        "artifacts": artifacts,
        "columns": table.column_names,
    }


def card_markdown(card: dict[str, Any]) -> str:
    """The dataset card for people."""
    lines = [f"# Dataset card: {card['name']}", "",
             f"- pipeline `{card['pipeline']}`, fingerprint `{card['fingerprint']}`",
             f"- created {card['created_at']} (run `{card['run_id']}`)",
             f"- label `{card['label']}`; split `{json.dumps(card['split'])}`", "",
             "## Rows", "", "| split | rows | label balance |", "|---|---|---|"]
    for split in SPLITS:
        bal = ", ".join(f"{k}: {v}" for k, v in card["label_balance"].get(split, {}).items())
        lines.append(f"| {split} | {card['rows'][split]} | {bal} |")
    for reason, n in card["held_out"].items():
        lines.append(f"| held out ({reason}) | {n} | |")
    lines += ["", "## Features", ""]
    for fs in card["feature_sets"]:
        lines.append(f"- **{fs['name']}** (key {', '.join(fs['key'])}): {', '.join(fs['features'])}; "
                     f"{fs['rows_without_history']} label rows had no history")
    lines += ["", "## Nothing lost", "", "| feature set | source | input | output | quarantined | "
              "duplicates | reconciles |", "|---|---|---|---|---|---|---|"]
    for fs in card["feature_sets"]:
        lines.append(f"| {fs['name']} | {fs['source']} | {fs['input']} | {fs['output']} | "
                     f"{fs['quarantined']} | {fs['duplicates']} | {fs['reconciles']} |")
    lines += ["", "Quarantine by reason: " + (", ".join(f"{k}: {v}" for k, v in card["quarantine"].items())
                                              or "none"), "", "## Source versions", ""]
    for name, version in card["source_versions"].items():
        lines.append(f"- {name}: " + ", ".join(f"{k}={v}" for k, v in version.items()))
    return "\n".join(lines) + "\n"
