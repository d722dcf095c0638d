"""The stream engine: the same feature-set definitions, one record (or micro-batch) at a time.

For each record, in arrival order: parse, validate against the source's schema, check lateness
against the watermark, run the feature set's steps (dedup, then the fitted steps with their
artifacts, unchanged), check ``unique`` fields, add the event to its entity's window state, and
compute the features at the event's ``(t, a) = (event_time, available_time)``.

``emit="arrival"`` (the default, for real-time scoring) computes them from the events seen so far.
``emit="final"`` waits until the watermark passes the event, so that every event with
``event_time <= t`` that can still arrive has arrived; its values are then exactly the batch
engine's (``docs/semantics.md`` §4), whatever the micro-batch sizes. ``evenflow parity`` uses it.

>>> import evenflow as ef
>>> tx = ef.source.frame([], name="tx", key="card", event_time="ts",
...                      schema=ef.Schema(card=ef.String(), amount=ef.Float(), ts=ef.Timestamp()))
>>> fs = ef.FeatureSet("card", source=tx, features=[ef.count(window="1h"), ef.sum("amount", window="1h")])
>>> eng = StreamEngine(ef.Pipeline(name="p", sources={"tx": tx}, feature_sets=[fs]))
>>> r = eng.process([{"card": "c1", "amount": 5, "ts": "2026-03-01T10:00:00Z"},
...                  {"card": "c1", "amount": "x", "ts": "2026-03-01T10:01:00Z"},
...                  {"card": "c1", "amount": 7, "ts": "2026-03-01T10:30:00Z"}])
>>> [(o["count_1h"], o["sum_amount_1h"]) for o in r.outputs["card"]]
[(1, 5.0), (2, 12.0)]
>>> r.quarantined[0]["reason"], r.quarantined[0]["field"]
('wrong_type', 'amount')
>>> eng.read("card", "c1", at="2026-03-01T11:15:00Z")["count_1h"]     # 10:00 has left the window
1
"""

from __future__ import annotations

import heapq
import json
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from evenflow.core.features import FeatureSet
from evenflow.core.pipeline import Pipeline
from evenflow.core.source import Source
from evenflow.core.steps import Artifact, Dedup, RecordRejected
from evenflow.core.timeutil import parse_duration, parse_instant
from evenflow.core.timeutil import to_micros as instant_micros
from evenflow.errors import DefinitionError
from evenflow.stream.state import KeyState, compile_aggregates, evaluate, retire_plan
from evenflow.stream.validate import RecordValidator, to_micros

if TYPE_CHECKING:
    from evenflow.stream.vector import BatchResult

Key = tuple[Any, ...]
#: What a feature set does with a record it does not keep: a duplicate, or quarantine as
#: (reason, field, step, detail).
Rejection = str | tuple[str, str | None, str, str]


@dataclass
class StreamResult:
    """What one call to :meth:`StreamEngine.process` produced."""

    outputs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    records: int = 0

    def merge(self, other: StreamResult) -> None:
        for name, rows in other.outputs.items():
            self.outputs.setdefault(name, []).extend(rows)
        self.quarantined += other.quarantined
        self.duplicates += other.duplicates
        self.records += other.records


def state_id(feature_set: str, key: Key) -> str:
    """The online store's name for one entity's state: ``card|["c1"]``.

    >>> state_id("card", ("c1",))
    'card|["c1"]'
    """
    return f"{feature_set}|{json.dumps(list(key), separators=(',', ':'), default=str)}"


def payload_text(payload: Any) -> str:
    """The original record as JSON text (it arrived as text, or as a dict).

    >>> payload_text({"a": 1}), payload_text('{"a": 1}')
    ('{"a":1}', '{"a": 1}')
    """
    if isinstance(payload, str):
        return payload
    return json.dumps(payload, separators=(",", ":"), default=str)


def _as_micros(at: int | str | datetime | None) -> int:
    if at is None:
        return time.time_ns() // 1000
    if isinstance(at, int):
        return at
    return instant_micros(parse_instant(at))


class FeatureSetStream:
    """The per-feature-set part of the engine: steps, dedup memory, entity states."""

    def __init__(self, fs: FeatureSet, key: list[str], source: Source, schema_fields: list[str],
                 artifacts: dict[str, Artifact], emit: str) -> None:
        self.fs = fs
        self.key = key
        self.event_time = source.event_time or ""
        self.emit = emit
        self.columns = sorted({a.column for a in fs.aggregates if a.column})
        self.aggs = compile_aggregates(fs.aggregates, self.columns)
        self.names = [a.name for a in fs.aggregates]
        self.derived = [(d.name, d.parsed.compiled()) for d in fs.derived]
        self.retire = retire_plan(self.aggs)
        self.longest = fs.longest_window_us()
        self.steps: list[tuple[Any, Artifact | None]] = []
        for step in fs.steps:
            if isinstance(step, Dedup):
                self.steps.append((step, None))
                continue
            if step.kind == "near_dedup":
                raise DefinitionError(
                    f"feature set {fs.name!r}: near-duplicate dedup ({step.id}) compares each "
                    "record with all others, which the stream engine does not do",
                    fix="keep NearDedup in batch pipelines (training sets, evenflow run, "
                        "evenflow transform) and serve a feature set without it, or use Dedup on a key")
            art_key = f"{fs.name}/{step.id}"
            if art_key not in artifacts:
                raise DefinitionError(
                    f"feature set {fs.name!r}: step {step.id} needs its fitted artifact {art_key!r}",
                    fix="pass the artifacts of a training set build (artifacts.json next to the "
                        "training set) so serving applies exactly what training fitted")
            self.steps.append((step, artifacts[art_key]))
        self.unique = [n for n in schema_fields if n in source.schema_.fields  # type: ignore[union-attr]
                       and source.schema_.fields[n].unique]  # type: ignore[union-attr]
        self.states: dict[Key, KeyState] = {}
        self.dirty: set[Key] = set()        # changed since the last checkpoint
        self.touched: set[Key] = set()      # changed since the last eviction
        self.seen: dict[str, dict[Any, tuple[Any, ...]]] = {}   # dedup id -> key -> (seq, t, entity)
        # Memory entries are tuples: (seq, t) per unique value, (seq, t, entity) per dedup key.
        # Tuples of atoms leave the garbage collector's tracking; lists would stay tracked.
        self.unique_seen: dict[str, dict[Any, tuple[int, int]]] = {n: {} for n in self.unique}
        # Memory entries changed since the last checkpoint, and all of them in arrival order
        # (to forget the oldest first): ("d", dedup id, key) or ("u", field, value).
        # (kind, name) -> keys changed since the last checkpoint
        self.memory_dirty: dict[tuple[str, str], set[Any]] = {}
        self.step_state: dict[str, dict[str, dict[str, Any]]] = {}   # step id -> entity -> state
        self.memory_order: deque[tuple[int, str, str, Any]] = deque()
        self.forgets = False     # memory_order is kept only when the engine has remember=

        self.pending: list[tuple[int, int, Key, dict[str, Any]]] = []
        self.cancelled: set[int] = set()

    # -- one record ------------------------------------------------------------------------------
    def accept(self, rec: dict[str, Any], seq: int, t: int, a: int, payload: Any,
               result: StreamResult) -> Rejection | None:
        """Steps, unique checks and state update; ``"duplicate"``, a quarantine entry, or None."""
        for step, artifact in self.steps:
            if artifact is None:
                if not self._dedup(step, rec, seq, t, payload, result):
                    return "duplicate"
            elif not step.stateful:
                try:
                    rec = step.transform_one(rec, artifact)
                except RecordRejected as exc:
                    return exc.reason, exc.field, exc.step, exc.message
            else:
                skey = step.state_key(rec, artifact)
                memory = self.step_state.setdefault(step.id, {})
                rec = step.transform_one(rec, artifact, state=memory.setdefault(skey, {}))
                self._dirty("s", step.id).add(skey)
        for name in self.unique:
            value = rec.get(name)
            if value is not None:
                first = self.unique_seen[name].setdefault(value, (seq, t))
                if first[0] != seq:
                    return ("not_unique", name, "schema.unique",
                            f"{name}={value} already seen at record {first[0]}")
                self._remember("u", name, value, t)
        entity = tuple(rec.get(k) for k in self.key)
        state = self.states.get(entity)
        if state is None:
            state = self.states[entity] = KeyState.empty(self.columns)
        state.add(t, seq, a, [rec.get(c) for c in self.columns])
        self.dirty.add(entity)
        self.touched.add(entity)
        if self.emit == "arrival":
            result.outputs.setdefault(self.fs.name, []).append(self.row(entity, rec, seq, t, a))
        else:
            heapq.heappush(self.pending, (t, seq, entity, {**rec, "__a": a}))
        return None

    def _dedup(self, step: Dedup, rec: dict[str, Any], seq: int, t: int, payload: Any,
               result: StreamResult) -> bool:
        cols = step.key or list(rec)
        dkey = tuple(rec.get(c) for c in cols)
        memory = self.seen.setdefault(step.id, {})
        kept = memory.get(dkey)
        if kept is None:
            memory[dkey] = (seq, t, tuple(rec.get(k) for k in self.key))
            self._remember("d", step.id, dkey, t)
            return True
        if step.keep == "first":
            result.duplicates.append({"feature_set": self.fs.name, "seq": seq, "kept": kept[0],
                                      "step": step.id, "payload": payload_text(payload)})
            return False
        # keep="last": the new arrival replaces the one kept so far.
        old_seq, _, old_entity = kept
        state = self.states.get(tuple(old_entity))
        if state is not None and state.remove(old_seq):
            self.dirty.add(tuple(old_entity))
        self.cancelled.add(old_seq)
        result.duplicates.append({"feature_set": self.fs.name, "seq": old_seq, "kept": seq,
                                  "step": step.id, "payload": None})
        memory[dkey] = (seq, t, tuple(rec.get(k) for k in self.key))
        self._remember("d", step.id, dkey, t)
        return True

    def _remember(self, kind: str, name: str, key: Any, t: int) -> None:
        self._dirty(kind, name).add(key)
        if self.forgets:
            self.memory_order.append((t, kind, name, key))

    def _dirty(self, kind: str, name: str) -> set[Any]:
        found = self.memory_dirty.get((kind, name))
        if found is None:
            found = self.memory_dirty[(kind, name)] = set()
        return found

    def _memory(self, kind: str, name: str) -> dict[Any, Any]:
        if kind == "s":
            return self.step_state.setdefault(name, {})
        return self.seen.setdefault(name, {}) if kind == "d" else self.unique_seen[name]

    def forget(self, horizon: int) -> None:
        """Drop dedup and unique memory of events older than ``horizon`` (event time)."""
        order = self.memory_order
        while order and order[0][0] < horizon:
            t, kind, name, key = order.popleft()
            memory = self._memory(kind, name)
            entry = memory.get(key)
            if entry is not None and entry[1] == t:   # not replaced by a later keep="last" record
                del memory[key]
                self._dirty(kind, name).add(key)

    def row(self, entity: Key, rec: dict[str, Any], seq: int, t: int, a: int) -> dict[str, Any]:
        values = evaluate(self.states.get(entity), self.aggs, t, a)
        row = dict(rec)
        row.pop("__a", None)
        row.update(zip(self.names, values, strict=True))
        if self.derived:   # over the record and the aggregates, not over each other
            derived = [(name, expr(row)) for name, expr in self.derived]
            row.update(derived)
        row["__seq"] = seq
        return row

    def finalize(self, watermark: int | None, result: StreamResult) -> None:
        """Emit pending events the watermark has passed (all of them when ``watermark`` is None)."""
        pending = self.pending
        out = result.outputs.setdefault(self.fs.name, [])
        while pending and (watermark is None or pending[0][0] < watermark):
            t, seq, entity, rec = heapq.heappop(pending)
            if seq in self.cancelled:
                self.cancelled.discard(seq)
                continue
            out.append(self.row(entity, rec, seq, t, rec["__a"]))

    def evict(self, watermark: int) -> None:
        # Strictly before any later query time: with only unbounded windows (longest 0), an
        # event at the watermark itself must stay live, or closed="left" would count it.
        reach = max(self.longest, 1)
        horizon = watermark - reach
        if self.pending:     # an event still waiting to be emitted needs its window
            horizon = min(horizon, self.pending[0][0] - reach)
        for entity in self.touched:
            state = self.states.get(entity)
            if state is not None:
                state.evict(horizon, retire=self.retire)
                if self.retire is None and not state.times:
                    del self.states[entity]
        self.touched.clear()

    def expire(self, idle_before: int) -> None:
        """Forget entities whose latest event is older than ``idle_before`` (the ``ttl``)."""
        for entity, state in list(self.states.items()):
            latest = state.times[-1] if state.times else (state.retired.latest if state.retired else None)
            if latest is None or latest < idle_before:
                del self.states[entity]
                self.dirty.add(entity)

    def read(self, entity: Key, at: int, record: dict[str, Any] | None = None) -> dict[str, Any]:
        """The entity's key columns and features as of ``at`` over its state in this engine."""
        row: dict[str, Any] = dict(zip(self.key, entity, strict=True))
        row.update(self.features_of(self.states.get(entity), entity, at, record))
        return row

    def features_of(self, state: KeyState | None, entity: Key, at: int,
                    record: dict[str, Any] | None = None) -> dict[str, Any]:
        """Every feature of one entity state as of ``at`` (the read time: ``t = a = at``).

        The one evaluation of an online read, whoever holds the state: this engine, the HTTP
        service, or a reader over the online store. Row expressions see the key columns, the
        aggregates and ``record`` (the record being scored, if any); one that needs a field the
        read does not have, or fails on its values, is null.
        """
        row = dict(zip(self.names, evaluate(state, self.aggs, at, at), strict=True))
        if self.derived:
            scope = {**(record or {}), **dict(zip(self.key, entity, strict=True)), **row}
            for name, expr in self.derived:
                try:
                    row[name] = expr(scope)
                except (TypeError, ValueError, ArithmeticError):
                    row[name] = None
        return row


class StreamEngine:
    """Runs feature sets of one source over a stream of records.

    ``lateness``: events up to this far behind the largest event time seen are still accepted
    (out of order); older ones are quarantined as ``late``. ``ttl``: an entity idle (no event)
    for longer is forgotten. ``remember``: how long (in event time, behind the watermark) dedup
    keys and ``unique`` values are remembered; default forever. ``artifacts``: fitted step
    artifacts of a training set build.
    """

    def __init__(self, pipeline: Pipeline, feature_sets: str | Sequence[str] | None = None, *,
                 artifacts: dict[str, Artifact] | None = None, lateness: str | int = "0s",
                 ttl: str | int | None = None, remember: str | int | None = None,
                 emit: Literal["arrival", "final"] = "arrival") -> None:
        if isinstance(feature_sets, str):
            feature_sets = [feature_sets]
        chosen = [pipeline.feature_set(n) for n in feature_sets] if feature_sets else \
            list(pipeline.feature_sets)
        if not chosen:
            raise DefinitionError(f"pipeline {pipeline.name!r} has no feature sets to serve")
        sources = {fs.source_name() for fs in chosen}
        if len(sources) > 1:
            raise DefinitionError(f"one stream engine reads one source; these feature sets read "
                                  f"{sorted(sources)}", fix="start one engine per source")
        self.pipeline = pipeline
        self.source = pipeline.source_of(chosen[0])
        if self.source.schema_ is None or not self.source.event_time:
            raise DefinitionError(f"source {self.source.name!r} needs a schema and an event_time "
                                  "to be streamed", fix="declare schema: and event_time: on it")
        schema = self.source.schema_
        required = {c for c in [*self.source.key, self.source.event_time,
                                self.source.available_time] if c}
        self.validator = RecordValidator(schema, required=required)
        self.lateness = 0 if lateness in (0, "0", "0s") else parse_duration(lateness)
        self.ttl = None if ttl is None else parse_duration(ttl)
        self.remember = None if remember is None else parse_duration(remember)
        self.next_sweep = -(2**63)
        self.emit = emit
        self.sets = {fs.name: FeatureSetStream(fs, pipeline.key_of(fs), self.source,
                                               list(schema.fields), dict(artifacts or {}), emit)
                     for fs in chosen}
        for fs_stream in self.sets.values():
            fs_stream.forgets = self.remember is not None
        self.seq = 0
        self.max_time: int | None = None
        self.counts = {"records": 0, "quarantined": 0}

    @property
    def watermark(self) -> int | None:
        """Largest event time seen minus the allowed lateness (µs), ``None`` before any event."""
        return None if self.max_time is None else self.max_time - self.lateness

    # -- processing ------------------------------------------------------------------------------
    def process(self, records: Iterable[dict[str, Any] | str | bytes], *,
                seqs: Iterable[int] | None = None) -> StreamResult:
        """Process one micro-batch in arrival order; see the module docstring.

        ``seqs`` gives each record's arrival number (a replay keeps the file's row numbers, so
        ties break as in the batch engine); by default records are numbered as they come.
        """
        result = StreamResult(outputs={name: [] for name in self.sets})
        if seqs is None:
            for record in records:
                self._one(record, result, self.seq)
        else:
            for record, seq in zip(records, seqs, strict=True):
                self._one(record, result, seq)
        self._end_batch(result)
        return result

    def process_batch(self, records: Sequence[dict[str, Any] | str | bytes], *,
                      seqs: Sequence[int] | None = None) -> BatchResult:
        """Process one micro-batch with NumPy: the vectorized path (``evenflow/stream/vector/``).

        The same records are kept, quarantined and deduplicated as by :meth:`process` with
        ``emit="arrival"``, and the same state is updated; each feature set's output is a
        ``pyarrow.Table``. Counts, first/last and min/max are identical; sums, means and
        variances agree within ``docs/semantics.md`` §11. Configurations the fast path does not
        cover take :meth:`process` (see the module).
        """
        from evenflow.stream.vector import process_batch
        return process_batch(self, records, seqs)

    def process_one(self, record: dict[str, Any] | str | bytes) -> StreamResult:
        """Process one record: the same as a micro-batch of one."""
        return self.process([record])

    def flush(self) -> StreamResult:
        """Emit every pending event (``emit="final"``): the end of a replay, or a shutdown."""
        result = StreamResult(outputs={name: [] for name in self.sets})
        for fs in self.sets.values():
            fs.finalize(None, result)
        return result

    def _quarantine(self, result: StreamResult, seq: int, payload: Any, reason: str, fld: str | None,
                    step: str, detail: str) -> None:
        self.counts["quarantined"] += 1
        result.quarantined.append({"seq": seq, "payload": payload_text(payload), "reason": reason, "field": fld,
                                   "step": step, "detail": detail})

    def _one(self, record: dict[str, Any] | str | bytes, result: StreamResult, seq: int) -> None:
        self.seq = max(self.seq, seq + 1)
        self.counts["records"] += 1
        result.records += 1
        payload: Any
        if isinstance(record, (str, bytes)):
            payload = record.decode("utf-8", "replace") if isinstance(record, bytes) else record
            try:
                record = json.loads(payload)
            except ValueError as exc:
                self._quarantine(result, seq, payload, "malformed_record", None, "read",
                                 f"not JSON: {exc}")
                return
            if not isinstance(record, dict):
                self._quarantine(result, seq, payload, "malformed_record", None, "read",
                                 "not a JSON object")
                return
        else:
            payload = record     # turned into text only if it is quarantined or a duplicate
        typed, failure = self.validator.check(record)
        if typed is None:
            assert failure is not None
            self._quarantine(result, seq, payload, failure[0], failure[1], "schema", failure[2])
            return
        t = to_micros(typed[self.source.event_time])  # type: ignore[index]
        avail = self.source.available_time
        a = to_micros(typed[avail]) if avail and typed.get(avail) is not None else t
        watermark = self.watermark
        if watermark is not None and t < watermark:
            self._quarantine(result, seq, payload, "late", self.source.event_time, "watermark",
                             f"event_time is {(watermark - t) / 1e6:g} s behind the watermark")
            return
        for fs in self.sets.values():
            outcome = fs.accept(typed, seq, t, a, payload, result)   # steps copy, never mutate
            if isinstance(outcome, tuple):
                reason, fld, step, detail = outcome
                self._quarantine(result, seq, payload, reason, fld, step, detail)
                break
        if self.max_time is None or t > self.max_time:
            self.max_time = t
            if self.remember is not None:   # per record, so any micro-batch split agrees
                for fs in self.sets.values():
                    fs.forget(t - self.lateness - self.remember)
            # Idle entities are swept when the watermark has moved on by a sixteenth of the
            # ttl: per record, like the memory above, so any micro-batch split agrees.
            if self.ttl is not None and t - self.lateness >= self.next_sweep:
                for fs in self.sets.values():
                    fs.expire(t - self.lateness - self.ttl)
                self.next_sweep = t - self.lateness + max(self.ttl // 16, 1)
            if self.emit == "final":
                for fs in self.sets.values():
                    fs.finalize(self.watermark, result)

    def _end_batch(self, result: StreamResult) -> None:
        if self.watermark is None:
            return
        for fs in self.sets.values():
            fs.evict(self.watermark)

    # -- online reads ----------------------------------------------------------------------------
    def read(self, feature_set: str, key: Any, at: int | str | datetime | None = None,
             record: dict[str, Any] | None = None) -> dict[str, Any]:
        """Features of one entity as of ``at`` (default now): windows expire at read time too."""
        fs = self._set(feature_set)
        return fs.read(key if isinstance(key, tuple) else (key,), _as_micros(at), record)

    def read_many(self, feature_set: str, keys: Iterable[Any],
                  at: int | str | datetime | None = None) -> list[dict[str, Any]]:
        fs = self._set(feature_set)
        t = _as_micros(at)
        return [fs.read(k if isinstance(k, tuple) else (k,), t) for k in keys]

    def _set(self, name: str) -> FeatureSetStream:
        try:
            return self.sets[name]
        except KeyError:
            raise DefinitionError(f"no feature set {name!r} in this engine",
                                  fix=f"one of: {', '.join(self.sets)}") from None

    # -- state for the online store and checkpoints --------------------------------------------
    def dirty_states(self) -> dict[str, bytes | None]:
        """Entity states changed since the last call, as msgpack blobs (``None``: forgotten).

        Dedup keys and ``unique`` values remembered since the last call come too, one entry
        each (``card|~d|dedup:transaction_id|["t1"]``), so a checkpoint writes what changed,
        never the whole memory.
        """
        # Packers made once per call (packb would build one per blob), as KeyState.to_blob packs.
        msgpack = _msgpack()
        pack_state = msgpack.Packer(use_bin_type=True).pack
        pack = msgpack.Packer(use_bin_type=True, default=_wire_value).pack
        out: dict[str, bytes | None] = {}
        for name, fs in self.sets.items():
            for entity in fs.dirty:
                state = fs.states.get(entity)
                out[state_id(name, entity)] = None if state is None else pack_state(state.to_wire())
            fs.dirty.clear()
            for (kind, what), keys in fs.memory_dirty.items():
                memory = fs._memory(kind, what)
                prefix = f"{name}|~{kind}|{what}|"
                for key in keys:
                    entry = memory.get(key)
                    text = _key_text(key if kind == "d" else (key,))
                    out[prefix + text] = None if entry is None else pack(entry)
            fs.memory_dirty.clear()
        return out

    def load_states(self, blobs: dict[str, bytes]) -> None:
        """Restore entity states (and dedup/unique memory) written by :meth:`dirty_states`."""
        msgpack = _msgpack()
        for sid, blob in blobs.items():
            name, _, key = sid.partition("|")
            fs = self.sets.get(name)
            if fs is None or blob is None:
                continue
            if key.startswith("~"):
                kind, what, text = key[1:].split("|", 2)
                value = _key_from_text(text)
                entry = msgpack.unpackb(blob, raw=False, strict_map_key=False,
                                        object_hook=_unwire_value)
                if kind == "s":       # a stateful step's per-entity state: never forgotten by time
                    fs._memory(kind, what)[value[0]] = entry
                    continue
                if kind == "d":
                    entry = (entry[0], entry[1], tuple(entry[2]))
                    fs._memory(kind, what)[value] = entry
                else:
                    entry = tuple(entry)
                    fs._memory(kind, what)[value[0]] = entry
                    value = value[0]
                if fs.forgets:
                    fs.memory_order.append((entry[1], kind, what, value))
                continue
            fs.states[tuple(json.loads(key))] = KeyState.from_blob(blob)
        for fs in self.sets.values():
            fs.memory_order = deque(sorted(fs.memory_order, key=lambda m: m[0]))

    def meta(self) -> bytes:
        """The engine's own state: watermark, arrival counter, counts, events awaiting emission."""
        data = {"seq": self.seq, "max_time": self.max_time, "counts": self.counts,
                "next_sweep": self.next_sweep,
                "sets": {name: {"pending": [[t, s, list(e), r] for t, s, e, r in fs.pending]}
                         for name, fs in self.sets.items()}}
        return _msgpack().packb(data, use_bin_type=True, default=_wire_value)

    def load_meta(self, blob: bytes) -> None:
        data = _msgpack().unpackb(blob, raw=False, strict_map_key=False, object_hook=_unwire_value)
        self.seq, self.max_time, self.counts = data["seq"], data["max_time"], data["counts"]
        self.next_sweep = data.get("next_sweep", self.next_sweep)
        for name, saved in data["sets"].items():
            fs = self.sets.get(name)
            if fs is None:
                continue
            fs.pending = [(t, s, tuple(e), r) for t, s, e, r in saved["pending"]]
            heapq.heapify(fs.pending)


def _key_text(key: tuple[Any, ...]) -> str:
    """A dedup key or unique value as JSON text that reads back to the same typed values.

    >>> _key_text(("t1", 7)), _key_text((1.5, None))
    ('["t1",7]', '[1.5,null]')
    """
    if all((type(v) is str and v.isascii() and v.isprintable() and '"' not in v and "\\" not in v)
           or type(v) is int for v in key):     # what json.dumps would write, without it
        return "[" + ",".join(f'"{v}"' if type(v) is str else str(v) for v in key) + "]"
    return json.dumps([{"__evenflow_ts": to_micros(v)} if isinstance(v, datetime) else v
                       for v in key], separators=(",", ":"))


def _key_from_text(text: str) -> tuple[Any, ...]:
    return tuple(_unwire_value(v) if isinstance(v, dict) else v for v in json.loads(text))


def _wire_value(value: Any) -> Any:
    """Timestamps in pending records and dedup keys survive the meta blob as timestamps."""
    if isinstance(value, datetime):
        return {"__evenflow_ts": to_micros(value)}
    return str(value)


def _unwire_value(obj: dict[Any, Any]) -> Any:
    if len(obj) == 1 and "__evenflow_ts" in obj:
        return _EPOCH + timedelta(microseconds=obj["__evenflow_ts"])
    return obj


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _msgpack() -> Any:
    try:
        import msgpack
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        from evenflow.errors import EvenflowError
        raise EvenflowError("the online store needs msgpack",
                            fix='pip install "evenflow[serve]"') from exc
    return msgpack
