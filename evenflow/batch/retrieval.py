"""Point-in-time features for any query rows: batch scoring and historical retrieval.

Each query row is a point (t, a) for one entity. Every query row comes back, in input order,
with nulls where nothing was known, including rows that repeat an (entity, time) pair. The
result's schema metadata says how many rows had no history per feature set.

>>> import datetime as dt, json, pyarrow as pa, evenflow as ef
>>> t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
>>> feats = ef.source.frame(pa.table({"card": ["a"], "ts": [t0], "score": [0.5]}),
...                         name="feats", key="card", event_time="ts")
>>> fs = ef.FeatureSet("card", source=feats, features=[ef.last("score")])
>>> rows = ef.source.frame(pa.table({"card": ["a", "a", "b"],
...     "ts": [t0 - dt.timedelta(hours=1), t0, t0]}), name="rows", key="card", event_time="ts")
>>> out = features_at(rows, [fs])
>>> out.column("card__last_score").to_pylist()
[None, 0.5, None]
>>> json.loads(out.schema.metadata[b"rows_without_history"])
{'card': 2}
"""

from __future__ import annotations

import json
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from evenflow.batch.engine import BatchEngine, LoadedSource, PreparedEvents
from evenflow.batch.lookup import lookup_capable, lookup_features
from evenflow.batch.training import _features_at_points
from evenflow.core.features import FeatureSet
from evenflow.core.pipeline import Pipeline
from evenflow.core.source import Source
from evenflow.core.steps import Artifact
from evenflow.errors import DefinitionError
from evenflow.quality.validate import q


def features_at(points: Source, feature_sets: list[FeatureSet], *, time: str | None = None,
                knowledge_time: str | None = None, artifacts: dict[str, Artifact] | None = None,
                plan: Literal["auto", "lookup", "window", "join"] = "auto", memory_limit: str = "3GB",
                threads: int | None = None, engine: BatchEngine | None = None) -> pa.Table:
    """Features of ``feature_sets`` as of each row of ``points`` (t = ``time``, a = ``knowledge_time``).

    Learned steps use ``artifacts`` (a training set's) when given; otherwise they are fitted on
    all the events, which is right for exploration and wrong for evaluation.

    ``plan="auto"`` takes the lookup plan (``evenflow.batch.lookup``) when every feature set
    has only first/last over all history, no row expressions, no ``available_time``, and no
    knowledge time is before its row's time; the SQL plans otherwise. ``"lookup"``, ``"window"``
    and ``"join"`` force one (docs/decisions/0008-lookup-plan.md).
    """
    pipeline = Pipeline(name="features_at", sources={points.name: points}, feature_sets=feature_sets)
    eng = engine or BatchEngine(pipeline, memory_limit=memory_limit, threads=threads)
    loaded = eng.load_source(points.name)
    t_col = time or points.event_time
    if not t_col:
        raise DefinitionError("the query rows need a time column",
                              fix="pass time= or declare event_time on the points source")
    for column in (t_col, knowledge_time):
        if column and column not in loaded.schema.fields:
            raise DefinitionError(f"query rows have no column {column!r}", field=column,
                                  fix=f"their columns: {', '.join(loaded.schema.fields)}")
    prepared = []
    for fs in feature_sets:
        ev = eng.prepare(fs, artifacts=artifacts)
        missing = [k for k in ev.key if k not in loaded.schema.fields]
        if missing:
            raise DefinitionError(f"feature set {fs.name!r} is keyed by {ev.key}, but the query rows "
                                  f"lack {missing}", field=missing[0])
        prepared.append(ev)
    capable = all(lookup_capable(ev.feature_set, ev.available_time) for ev in prepared)
    if plan == "lookup" and not capable:
        raise DefinitionError("the lookup plan answers first/last over all history only, without "
                              "row expressions or available_time", fix="use plan='auto'")
    if plan in ("auto", "lookup") and capable:
        result = _by_lookup(eng, loaded, prepared, t_col, knowledge_time, plan)
        if result is not None:
            return result
    a_expr = f"epoch_us({q(knowledge_time)})" if knowledge_time else "__t"
    eng.con.execute(f"CREATE OR REPLACE TABLE __points AS SELECT *, __qid_ AS __qid, __t_ AS __t, "
                    f"{a_expr.replace('__t', '__t_')} AS __a FROM (SELECT *, __seq AS __qid_, "
                    f"epoch_us({q(t_col)}) AS __t_ FROM {q(loaded.table)})")
    select = [f"p.{q(c)}" for c in loaded.schema.fields]
    joins, without = "", {}
    sql_plan: Literal["auto", "window", "join"] = "auto" if plan == "lookup" else plan
    for i, ev in enumerate(prepared):
        fs = ev.feature_set
        with eng.stage(f"features {fs.name} at query rows"):
            table, without[fs.name] = _features_at_points(eng, ev, sql_plan)
        select += [f"f{i}.{q(n)} AS {q(f'{fs.name}__{n}')}" for n in fs.feature_names]
        joins += f" LEFT JOIN {q(table)} AS f{i} ON f{i}.__qid = p.__qid"
    result = eng.con.sql(f"SELECT {', '.join(select)} FROM __points AS p{joins} "
                         f"ORDER BY p.__qid").to_arrow_table()
    return _with_counts(result, without)


def _with_counts(result: pa.Table, without: dict[str, int]) -> pa.Table:
    return result.replace_schema_metadata({b"rows_without_history": json.dumps(without).encode()})


def _by_lookup(eng: BatchEngine, loaded: LoadedSource, prepared: list[PreparedEvents], t_col: str,
               knowledge_time: str | None, plan: str) -> pa.Table | None:
    """The query rows with every feature set's columns by the lookup plan (evenflow.batch.lookup).

    None when the SQL plans must answer: a knowledge time before its row's time, or key types
    that differ between the query rows and the events, or float keys.
    """
    fields = list(loaded.schema.fields)
    extra = f", epoch_us({q(knowledge_time)}) AS __a" if knowledge_time else ""
    rows = eng.con.sql(f"SELECT {', '.join(q(c) for c in fields)}, epoch_us({q(t_col)}) AS __t, "
                       f"__seq AS __s{extra} FROM {q(loaded.table)}").to_arrow_table()
    seq = rows.column("__s").to_numpy()
    if len(seq) > 1 and not bool((seq[1:] > seq[:-1]).all()):
        rows = rows.take(pa.array(np.argsort(seq, kind="stable")))
    # the lookup ignores a; exact only when no row's knowledge time is before its time
    if knowledge_time and pc.sum(pc.less(rows.column("__a"), rows.column("__t"))).as_py():
        if plan == "lookup":
            raise DefinitionError("the lookup plan cannot honour a knowledge time earlier than "
                                  "the observation time", fix="use plan='auto'")
        return None
    points = rows.select([*dict.fromkeys(k for ev in prepared for k in ev.key), "__t"])
    result = rows.select(fields)
    without: dict[str, int] = {}
    for ev in prepared:
        fs = ev.feature_set
        with eng.stage(f"features {fs.name} at query rows"):
            found = lookup_features(eng.con, ev, points)
        if found is None:
            if plan == "lookup":
                raise DefinitionError(f"feature set {fs.name!r}: the key types of the query rows "
                                      "and the events differ, or are floats", fix="use plan='auto'")
            return None
        columns, without[fs.name] = found
        for a in fs.aggregates:
            result = result.append_column(f"{fs.name}__{a.name}", columns[a.name])
    return _with_counts(result, without)
