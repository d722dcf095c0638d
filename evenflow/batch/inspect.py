"""The SQL a feature set compiles to, shown without reading any data."""

from __future__ import annotations

from evenflow.batch import compile as C
from evenflow.core.features import FeatureSet
from evenflow.core.pipeline import Pipeline


def plan_sql(pipeline: Pipeline, fs: FeatureSet) -> str:
    """The features-at-every-event query for ``fs`` over its prepared events table."""
    source = pipeline.source_of(fs)
    key = pipeline.key_of(fs)
    fields = list(source.schema_.fields) if source.schema_ else ["<columns as read>"]
    values = [c for c in fields if c not in key and c != source.event_time]
    shape = C.EventsShape(C.q(f"ev__{fs.name}"), key, source.event_time or "<event_time>",
                          source.available_time, values)
    plan = "join" if source.available_time else "window"
    build = C.join_sql if plan == "join" else C.window_sql
    aggs = build(shape, fs.aggregates, None) if fs.aggregates else f"SELECT __seq AS __qid FROM {shape.table}"
    body = C.derived_sql(aggs, f"SELECT *, __seq AS __qid FROM {shape.table}", fs.aggregates,
                         fs.derived, [*key, shape.event_time, *values], set(fields))
    return f"-- plan: {plan}\n" + _pretty(body)


def _pretty(sql: str) -> str:
    for word in (" FROM ", " WINDOW ", " LEFT JOIN ", " JOIN ", " GROUP BY ", " QUALIFY ",
                 " UNION ALL BY NAME ", " WHERE "):
        sql = sql.replace(word, "\n" + word.strip() + " ")
    return sql
