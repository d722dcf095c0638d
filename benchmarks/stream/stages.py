"""Per-stage timers for the stream engine, patched around its functions from the outside.

The engine files are not touched: the timers wrap the functions the engine looks up at call time
(the validator's ``check``, module globals of ``evenflow.stream.engine``, class attributes of the
state and step classes) and :meth:`StageTimers.restore` puts the originals back. Each wrapper
costs two ``perf_counter_ns`` calls, which the report states next to the split. Stages do not
nest: a timed function called inside another stage (``json.dumps`` of the state ids inside
``dirty_states``) counts toward the outer one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import evenflow.stream.engine as engine_mod
from evenflow.core.steps import Clip, Impute
from evenflow.stream.engine import FeatureSetStream, StreamEngine
from evenflow.stream.state import KeyState


class StageTimers:
    """Wraps the engine's stages with timers; ``report(total)`` gives each stage's share."""

    def __init__(self, eng: StreamEngine) -> None:
        self.ns: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self._undo: list[Callable[[], None]] = []
        self.active = False
        clock = time.perf_counter_ns

        def timed(stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
            self.ns.setdefault(stage, 0)
            self.calls.setdefault(stage, 0)

            def wrapper(*args: Any, **kwargs: Any) -> Any:
                if self.active:                  # inside another stage: that stage owns the time
                    return fn(*args, **kwargs)
                self.active = True
                t0 = clock()
                try:
                    return fn(*args, **kwargs)
                finally:
                    self.ns[stage] += clock() - t0
                    self.calls[stage] += 1
                    self.active = False
            return wrapper

        def patch(owner: Any, name: str, stage: str) -> None:
            original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
            setattr(owner, name, timed(stage, getattr(owner, name)))
            if isinstance(owner, type) or owner is engine_mod:
                self._undo.append(lambda: setattr(owner, name, original))

        patch(eng.validator, "check", "validation (schema typing and rules)")
        patch(engine_mod, "to_micros", "event time to µs")
        patch(engine_mod, "evaluate", "evaluation (12 aggregates over the window slices)")
        patch(KeyState, "add", "state update (insert into the window lists)")
        patch(FeatureSetStream, "_dedup", "steps: dedup")
        patch(Impute, "transform_one", "steps: impute + clip (fitted artifacts)")
        patch(Clip, "transform_one", "steps: impute + clip (fitted artifacts)")
        patch(FeatureSetStream, "evict", "eviction at batch end")
        patch(eng, "dirty_states", "store: dirty_states (msgpack of changed entities)")
        shim = SimpleNamespace(dumps=timed("payload JSON text (json.dumps of each record)", json.dumps),
                               loads=json.loads)
        engine_mod.json = shim  # type: ignore[assignment]
        self._undo.append(lambda: setattr(engine_mod, "json", json))
        for fs in eng.sets.values():
            fs.derived = [(name, timed("derived features (3 row expressions)", fn))
                          for name, fn in fs.derived]

    def restore(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()

    def report(self, total_ns: int) -> list[dict[str, Any]]:
        """Each stage's seconds, share of the total and calls; the rest is the engine's glue."""
        rows = [{"stage": s, "seconds": ns / 1e9, "share": ns / total_ns, "calls": self.calls[s]}
                for s, ns in sorted(self.ns.items(), key=lambda kv: -kv[1])]
        rest = total_ns - sum(self.ns.values())
        rows.append({"stage": "rest: record copies, unique check, output rows, bookkeeping",
                     "seconds": rest / 1e9, "share": rest / total_ns, "calls": None})
        rows.append({"stage": "total (with timers)", "seconds": total_ns / 1e9, "share": 1.0,
                     "calls": sum(self.calls.values())})
        return rows
