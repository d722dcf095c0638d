"""``StreamEngine.process_batch``: one micro-batch through validation, lateness, steps, windows
and row expressions, column by column."""

from __future__ import annotations

import gc
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from evenflow.core.expr import _compile
from evenflow.core.steps import Clip, Dedup, Impute, RecordRejected
from evenflow.errors import EvenflowError
from evenflow.stream.vector.columns import Col, constant
from evenflow.stream.vector.expressions import Unsupported, evaluate_columns
from evenflow.stream.vector.parse import validate
from evenflow.stream.vector.windows import Fallback, append_states, evaluate_all, gather, per_event

if TYPE_CHECKING:
    from evenflow.stream.engine import FeatureSetStream, StreamEngine, StreamResult


@dataclass
class BatchResult:
    """What one call to :meth:`StreamEngine.process_batch` produced.

    ``outputs`` holds one ``pyarrow.Table`` per feature set (one row per kept event, arrival
    order, the columns of ``process``'s rows); ``quarantined`` and ``duplicates`` are the same
    entries ``process`` gives.
    """

    outputs: dict[str, pa.Table]
    quarantined: list[dict[str, Any]]
    duplicates: list[dict[str, Any]]
    records: int
    fast: bool = True      # False when the whole batch took the per-record path
    #: per feature set: "vectorized", or "per-event" when its aggregates were evaluated event by
    #: event (out-of-order entity, late-known events, NaN, retired moments)
    aggregates: dict[str, str] = field(default_factory=dict)

    def rows(self, feature_set: str) -> list[dict[str, Any]]:
        """One feature set's output as ``process`` gives it: a list of dicts."""
        return self.outputs[feature_set].to_pylist()  # type: ignore[no-any-return]


def whole_batch_fallback(engine: StreamEngine) -> str | None:
    """Why the engine's configuration needs the per-record path for every batch, or None."""
    if engine.emit != "arrival":
        return "emit='final'"
    if engine.ttl is not None or engine.remember is not None:
        return "ttl= or remember="
    for fs in engine.sets.values():
        for step, _art in fs.steps:
            if isinstance(step, Dedup) and step.keep != "first":
                return "Dedup(keep='last')"
            if getattr(step, "stateful", False):
                return f"the stateful step {step.id}"
    return None


def _table(columns: dict[str, Col]) -> pa.Table:
    return pa.table({name: col.arrow() for name, col in columns.items()})


def _rows_table(rows: list[dict[str, Any]]) -> pa.Table:
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    return _table({name: Col.of_values([r.get(name) for r in rows]) for name in names})


def from_result(result: StreamResult) -> BatchResult:
    return BatchResult({name: _rows_table(rows) for name, rows in result.outputs.items()},
                       result.quarantined, result.duplicates, result.records, fast=False)


def process_batch(engine: StreamEngine, records: Sequence[dict[str, Any] | str | bytes],
                  seqs: Sequence[int] | None) -> BatchResult:
    """See :meth:`StreamEngine.process_batch`.

    The cyclic garbage collector is paused for the batch: the batch creates no reference
    cycles (reference counting frees all of it), and without the pause Python runs a
    collection every few hundred allocations, each scanning the young objects and, every
    hundredth time, the whole window state and dedup memory. At the end, one collection of the
    young generation scans what the batch allocated, once.
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        return _process_batch(engine, records, seqs)
    finally:
        if paused:
            gc.enable()
            gc.collect(0)      # the batch's young objects, once, here rather than later


def _process_batch(engine: StreamEngine, records: Sequence[dict[str, Any] | str | bytes],
                   seqs: Sequence[int] | None) -> BatchResult:
    from evenflow.stream.engine import payload_text

    n = len(records)
    seq_list = list(range(engine.seq, engine.seq + n)) if seqs is None else list(seqs)
    if len(seq_list) != n:
        raise EvenflowError(f"process_batch got {n} records but {len(seq_list)} seqs",
                            fix="pass one arrival number per record, or no seqs at all")
    if whole_batch_fallback(engine) is not None or n == 0:
        return from_result(engine.process(records, seqs=seq_list))
    quarantined: list[dict[str, Any]] = []
    duplicates: list[dict[str, Any]] = []
    failures: dict[int, tuple[str, str | None, str, str]] = {}
    payloads: list[Any] = list(records)
    dicts: list[dict[str, Any]] = []
    for i, record in enumerate(records):
        if isinstance(record, (str, bytes)):
            text = record.decode("utf-8", "replace") if isinstance(record, bytes) else record
            payloads[i] = text
            try:
                record = json.loads(text)
            except ValueError as exc:
                failures[i] = ("malformed_record", None, "read", f"not JSON: {exc}")
                record = {}
            else:
                if not isinstance(record, dict):
                    failures[i] = ("malformed_record", None, "read", "not a JSON object")
                    record = {}
        dicts.append(record)
    seq_arr = np.array(seq_list, np.int64)
    cols, valid, bad = validate(engine, dicts)
    for i in failures:
        valid[i] = False
    for i, (why, where, detail) in bad.items():
        if i not in failures:
            failures[i] = (why, where, "schema", detail)
    src = engine.source
    t = cols[src.event_time].data  # type: ignore[index]
    avail = src.available_time
    if avail:
        a_col = cols[avail]
        a = np.where(a_col.nulls(), t, a_col.data)
    else:
        a = t
    # Lateness: the watermark before each record is the running maximum of earlier valid times.
    start = -(2**63) if engine.max_time is None else engine.max_time
    running = np.maximum.accumulate(np.where(valid, t, -(2**63)))
    before = np.concatenate([[start], np.maximum(running[:-1], start)]) if n else running
    seen_any = before > -(2**63)
    late = valid & seen_any & (t < before - engine.lateness)
    for i in np.flatnonzero(late).tolist():
        w = int(before[i]) - engine.lateness
        failures[i] = ("late", src.event_time, "watermark",
                       f"event_time is {(w - int(t[i])) / 1e6:g} s behind the watermark")
    alive = valid & ~late
    counted = valid & ~late       # records that move the watermark
    top = engine.max_time
    if counted.any():
        latest = int(t[counted].max())
        top = latest if top is None else max(top, latest)
    watermark = None if top is None else top - engine.lateness
    outputs: dict[str, pa.Table] = {}
    paths: dict[str, str] = {}
    for name, fs in engine.sets.items():
        kept, fs_cols = _steps(fs, cols, alive, seq_arr, t, payloads, failures, duplicates)
        alive &= ~np.isin(np.arange(n), list(failures))
        horizon = None if watermark is None else watermark - max(fs.longest, 1)
        outputs[name], paths[name] = _features(fs, fs_cols, kept, seq_arr, t, a, horizon)
    # Quarantine entries in arrival order, like process.
    for i in sorted(failures):
        reason, fld, step_id, detail = failures[i]
        quarantined.append({"seq": seq_list[i], "payload": payload_text(payloads[i]), "reason": reason,
                            "field": fld, "step": step_id, "detail": detail})
    engine.counts["records"] += n
    engine.counts["quarantined"] += len(quarantined)
    engine.seq = max(engine.seq, max(seq_list) + 1)
    engine.max_time = top
    duplicates.sort(key=lambda d: d["_at"])
    for d in duplicates:
        del d["_at"]
    result = BatchResult(outputs, quarantined, duplicates, n, aggregates=paths)
    if engine.watermark is not None:
        for fs in engine.sets.values():
            fs.evict(engine.watermark)
    return result


def _steps(fs: FeatureSetStream, cols: dict[str, Col], alive: np.ndarray, seqs: np.ndarray,
           t: np.ndarray, payloads: list[Any], failures: dict[int, Any],
           duplicates: list[dict[str, Any]]) -> tuple[np.ndarray, dict[str, Col]]:
    """Run the feature set's steps and unique checks; the rows it keeps and their columns."""
    from evenflow.stream.engine import payload_text

    idx = np.flatnonzero(alive)
    cur = dict(cols) if len(idx) == len(alive) else {name: col.take(idx) for name, col in cols.items()}
    keep = np.ones(len(idx), bool)
    seq_l = seqs[idx].tolist()
    t_l = t[idx].tolist()
    for step, artifact in fs.steps:
        live = np.flatnonzero(keep)
        if isinstance(step, Dedup):
            if len(live) == 0:
                continue
            names = step.key or list(cur)
            values = [cur[c].values() if c in cur else [None] * len(keep) for c in names]
            keys = list(zip(*values, strict=True))
            codes, uniq = _entity_codes([cur[k] for k in fs.key], len(keep))
            ents = list(map(uniq.__getitem__, codes.tolist()))     # one tuple per entity
            memory = fs.seen.setdefault(step.id, {})
            new = _first_seen(memory, keys, live)
            fresh = np.flatnonzero(new)
            new_keys, new_seqs, new_ts, new_ents = _pick_all(fresh, keys, seq_l, t_l, ents)
            memory.update(zip(new_keys, zip(new_seqs, new_ts, new_ents, strict=True), strict=True))
            _remember_all(fs, "d", step.id, new_keys, new_ts)
            for j in np.flatnonzero(~new & keep).tolist():
                keep[j] = False
                duplicates.append({"feature_set": fs.fs.name, "seq": seq_l[j],
                                   "kept": memory[keys[j]][0], "step": step.id,
                                   "payload": payload_text(payloads[idx[j]]), "_at": int(idx[j])})
            continue
        assert artifact is not None
        col = cur.get(step.column)
        if isinstance(step, Impute) and not step.indicator and col is not None and \
                col.kind == "float" and type(artifact["value"]) is float:
            assert col.null is not None
            data = np.where(col.null, float(artifact["value"]), col.data)
            cur[step.column] = Col("float", data, np.zeros(len(data), bool))
            continue
        if isinstance(step, Clip) and col is not None and col.kind == "float":
            assert col.null is not None
            data = col.data
            if artifact["lower"] is not None:
                data = np.maximum(data, float(artifact["lower"]))
            if artifact["upper"] is not None:
                data = np.minimum(data, float(artifact["upper"]))
            cur[step.column] = Col("float", data, col.null)
            continue
        # Any other fitted step: its one-record form, record by record.
        names = list(cur)
        columns = [cur[c].values() for c in names]
        rows: list[dict[str, Any] | None] = [None] * len(keep)
        for j in live.tolist():
            rec = {c: columns[k][j] for k, c in enumerate(names)}
            try:
                rows[j] = step.transform_one(rec, artifact)
            except RecordRejected as exc:
                keep[j] = False
                failures[int(idx[j])] = (exc.reason, exc.field, exc.step, exc.message)
        out_names: dict[str, None] = dict.fromkeys(names)
        for row in rows:
            if row is not None:
                out_names.update(dict.fromkeys(row))
        cur = {c: Col.of_values([None if r is None else r.get(c) for r in rows]) for c in out_names}
    for name in fs.unique:
        memory = fs.unique_seen[name]
        values = cur[name].values()
        checked = keep & ~cur[name].nulls()
        new = _first_seen(memory, values, np.flatnonzero(checked))
        new_values, new_seqs, new_ts = _pick_all(np.flatnonzero(new), values, seq_l, t_l)
        memory.update(zip(new_values, zip(new_seqs, new_ts, strict=True), strict=True))
        _remember_all(fs, "u", name, new_values, new_ts)
        for j in np.flatnonzero(checked & ~new).tolist():
            first = memory[values[j]]
            if first[0] == seq_l[j]:      # this very record, seen before a restart
                _remember_all(fs, "u", name, [values[j]], [t_l[j]])
                continue
            keep[j] = False
            failures[int(idx[j])] = ("not_unique", name, "schema.unique",
                                     f"{name}={values[j]} already seen at record {first[0]}")
    # A record quarantined by a later unique field stays in the earlier fields' memory, as in
    # process; it is not kept.
    sel = np.flatnonzero(keep)
    if len(sel) == len(keep):
        return idx, cur
    return idx[sel], {name: col.take(sel) for name, col in cur.items()}


def _pick_all(rows: np.ndarray, *lists: list[Any]) -> list[list[Any]]:
    """``[lst[j] for j in rows]`` for each list (the lists themselves when rows is all of them)."""
    if lists and len(rows) == len(lists[0]):
        return list(lists)
    picked = rows.tolist()
    return [[lst[j] for j in picked] for lst in lists]


def _entity_codes(keys: list[Col], n: int) -> tuple[np.ndarray, list[tuple[Any, ...]]]:
    """Each record's entity number (in order of first appearance) and the entity keys."""
    if len(keys) == 1 and keys[0].kind == "obj" and n:
        try:    # one text key: Arrow's hash table, one tuple per entity rather than per record
            encoded = pa.array(keys[0].data, pa.string()).dictionary_encode()
            if encoded.null_count == 0:
                return (np.asarray(encoded.indices, np.int64),
                        [(v,) for v in encoded.dictionary.to_pylist()])
        except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeEncodeError):
            pass
    index: dict[tuple[Any, ...], int] = {}
    rows = zip(*[k.values() for k in keys], strict=True)
    codes = np.fromiter((index.setdefault(e, len(index)) for e in rows), np.int64, n)
    return codes, list(index)


def _first_seen(memory: dict[Any, Any], keys: list[Any], live: np.ndarray) -> np.ndarray:
    """Which ``live`` positions hold a key seen neither in ``memory`` nor earlier in the batch."""
    new = np.zeros(len(keys), bool)
    if len(live) == 0:
        return new
    lookup = keys if len(live) == len(keys) else [keys[j] for j in live.tolist()]
    m = len(lookup)
    known = np.array(list(map(memory.__contains__, lookup)), bool)
    # Each key's first position: later positions are overwritten by earlier ones.
    first_at = dict(zip(reversed(lookup), range(m - 1, -1, -1), strict=True))
    first = np.zeros(m, bool)
    first[np.fromiter(first_at.values(), np.int64, len(first_at))] = True
    new[live] = first & ~known
    return new


def _remember_all(fs: FeatureSetStream, kind: str, name: str, keys: list[Any], times: list[int]) -> None:
    """``FeatureSetStream._remember`` for many keys at once (arrival order)."""
    fs._dirty(kind, name).update(keys)
    if fs.forgets:
        fs.memory_order.extend((t, kind, name, k) for t, k in zip(times, keys, strict=True))


def _features(fs: FeatureSetStream, cols: dict[str, Col], kept: np.ndarray, seqs: np.ndarray,
              t_all: np.ndarray, a_all: np.ndarray, horizon: int | None) -> tuple[pa.Table, str]:
    n = len(kept)
    t = t_all[kept]
    a = a_all[kept]
    seq = seqs[kept]
    codes, entities = _entity_codes([cols[k] for k in fs.key], n)
    order = np.argsort(codes, kind="stable")
    value_cols = [cols[c] if c in cols else constant(None, n) for c in fs.columns]
    agg_cols: list[Col] | None = None
    if n and (a == t).all():
        try:
            g = gather(fs, entities, codes[order], t[order], seq[order], a[order],
                        [c.take(order) for c in value_cols])
            agg_cols = evaluate_all(fs, g, order)
        except Fallback:
            agg_cols = None
    path = "vectorized"
    if agg_cols is not None:
        append_states(fs, g, entities, horizon)
    else:
        path = "per-event"
        agg_cols = per_event(fs, [entities[c] for c in codes.tolist()], t, seq, a, value_cols)
    out = dict(cols)
    for name, col in zip(fs.names, agg_cols, strict=True):
        out[name] = col
    if fs.derived:
        env = dict(out)
        derived: dict[str, Col] = {}
        for d in fs.fs.derived:
            try:
                derived[d.name] = evaluate_columns(d.parsed.tree, env, n)
            except Unsupported:
                fn = _compile(d.parsed.tree)
                names = list(env)
                columns = [env[c].values() for c in names]
                derived[d.name] = Col.of_values(
                    [fn(dict(zip(names, row, strict=True))) for row in zip(*columns, strict=True)])
        out.update(derived)
    out["__seq"] = Col("int", seq, np.zeros(n, bool))
    return _table(out), path
