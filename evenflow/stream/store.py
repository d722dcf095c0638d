"""Online stores: where the stream engine's per-entity state lives between processes.

The store keeps one state blob per entity (the window's events, as the engine serializes
them), the engine's meta blob (watermark, next arrival number, dedup memory) and the number of
the last committed micro-batch (the *checkpoint*). :meth:`OnlineStore.commit` writes all three
atomically, so a crash leaves the store at one batch boundary or the next, never between.

A reader (the HTTP service) loads the blobs of the keys it is asked about and evaluates them as
of the read time with the engine's own code (:class:`OnlineReader`), so window expiry applies at
read time too.

>>> store = MemoryStore()
>>> store.commit({'card|["c1"]': b"s1", 'card|["c2"]': b"s2"}, meta=b"m", checkpoint=1)
>>> store.commit({'card|["c2"]': None}, meta=b"m2", checkpoint=2)   # None: an idle key is gone
>>> store.get_many(['card|["c1"]', 'card|["c2"]']), store.checkpoint(), store.meta(), store.size()
([b's1', None], 2, b'm2', 1)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from evenflow.errors import EvenflowError, MissingExtraError

#: An entity's state id, as the engine names it (``card|["c1"]``: feature set and key).
Key = str


class OnlineStore(Protocol):
    """Per-entity state blobs, the engine meta blob and the checkpoint, committed together."""

    def commit(self, states: Mapping[Key, bytes | None], *, meta: bytes, checkpoint: int) -> None:
        """Write changed states (``None`` deletes one), the meta and the checkpoint atomically."""
        ...

    def checkpoint(self) -> int | None:
        """The last committed batch number, ``None`` for an empty store."""
        ...

    def meta(self) -> bytes | None: ...

    def get_many(self, keys: Sequence[Key]) -> list[bytes | None]:
        """The state blobs of ``keys`` (``None`` where a key has none), in one round trip."""
        ...

    def load_all(self) -> dict[Key, bytes]:
        """Every entity's state (a restarting runner warms its engine with it)."""
        ...

    def size(self) -> int:
        """Number of entities held."""
        ...

    def clear(self) -> None: ...


class MemoryStore:
    """The default store: a dict in the runner's process (lost when it stops)."""

    def __init__(self) -> None:
        self._states: dict[Key, bytes] = {}
        self._meta: bytes | None = None
        self._checkpoint: int | None = None

    def commit(self, states: Mapping[Key, bytes | None], *, meta: bytes, checkpoint: int) -> None:
        for key, blob in states.items():
            if blob is None:
                self._states.pop(key, None)
            else:
                self._states[key] = blob
        self._meta, self._checkpoint = meta, checkpoint

    def checkpoint(self) -> int | None:
        return self._checkpoint

    def meta(self) -> bytes | None:
        return self._meta

    def get_many(self, keys: Sequence[Key]) -> list[bytes | None]:
        return [self._states.get(k) for k in keys]

    def load_all(self) -> dict[Key, bytes]:
        return dict(self._states)

    def size(self) -> int:
        return len(self._states)

    def clear(self) -> None:
        self.__init__()  # type: ignore[misc]


class RedisStore:
    """State blobs in Redis: ``{prefix}:e:{key}`` per entity, ``{prefix}:meta``, ``{prefix}:checkpoint``.

    A commit is one ``MULTI``/``EXEC`` transaction (states, meta and checkpoint together); reads
    of many keys are one ``MGET``. ``ttl_s`` gives every written state a Redis expiry, so keys
    that stay idle that long leave the store by themselves.
    """

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", prefix: str = "evenflow", *,
                 ttl_s: int | None = None) -> None:
        try:
            import redis
        except ImportError as exc:  # pragma: no cover - extra not installed
            raise MissingExtraError("redis", "serve") from exc
        self.prefix, self.ttl_s = prefix, ttl_s
        self.redis: Any = redis.Redis.from_url(url)  # untyped: replies are bytes here
        try:
            self.redis.ping()
        except redis.ConnectionError as exc:
            raise EvenflowError(f"cannot reach Redis at {url}: {exc}",
                                fix="start Redis (make services) or pass the right URL") from None

    def _entity(self, key: Key) -> str:
        return f"{self.prefix}:e:{key}"

    def commit(self, states: Mapping[Key, bytes | None], *, meta: bytes, checkpoint: int) -> None:
        pipe = self.redis.pipeline(transaction=True)
        live = {self._entity(k): v for k, v in states.items() if v is not None}
        dead = [self._entity(k) for k, v in states.items() if v is None]
        if live:
            if self.ttl_s is None:
                pipe.mset(live)
            else:
                for name, blob in live.items():
                    pipe.set(name, blob, ex=self.ttl_s)
        if dead:
            pipe.delete(*dead)
        pipe.set(f"{self.prefix}:meta", meta)
        pipe.set(f"{self.prefix}:checkpoint", checkpoint)
        pipe.execute()

    def checkpoint(self) -> int | None:
        value = self.redis.get(f"{self.prefix}:checkpoint")
        return None if value is None else int(value)

    def meta(self) -> bytes | None:
        value: Any = self.redis.get(f"{self.prefix}:meta")
        return value

    def get_many(self, keys: Sequence[Key]) -> list[bytes | None]:
        if not keys:
            return []
        return list(self.redis.mget([self._entity(k) for k in keys]))

    def _names(self) -> list[bytes]:
        return list(self.redis.scan_iter(match=f"{self.prefix}:e:*", count=1000))

    def load_all(self) -> dict[Key, bytes]:
        out: dict[Key, bytes] = {}
        names = self._names()
        head = len(f"{self.prefix}:e:")
        for i in range(0, len(names), 5000):
            chunk = names[i:i + 5000]
            for name, blob in zip(chunk, self.redis.mget(chunk), strict=True):
                if blob is not None:  # expired between SCAN and MGET
                    out[name.decode()[head:]] = blob
        return out

    def size(self) -> int:
        return len(self._names())

    def clear(self) -> None:
        names = [*self._names(), f"{self.prefix}:meta", f"{self.prefix}:checkpoint"]
        for i in range(0, len(names), 5000):
            self.redis.delete(*names[i:i + 5000])


class OnlineReader:
    """Feature reads for a process that does not run the stream (the HTTP service, a scorer).

    Reads the state blobs of the requested keys from the store (one ``MGET`` with Redis) and
    evaluates them as of the read time with the feature set's own evaluation
    (``FeatureSetStream.features_of``, the same as the engine's reads). Thread-safe: it keeps
    no state between calls.
    """

    def __init__(self, pipeline: Any, feature_set: str, store: OnlineStore, *,
                 artifacts: Any = None) -> None:
        from evenflow.stream.engine import StreamEngine

        # The feature set's compiled plan, built once (about a millisecond, as much as a read);
        # states are read per call and never kept, so an expired key is never answered.
        self._plan = StreamEngine(pipeline, feature_set, artifacts=artifacts).sets[feature_set]
        self.feature_set, self.store = feature_set, store

    def read_many(self, keys: Sequence[Any], at: int | str | None = None) -> list[dict[str, Any]]:
        """Feature values of entity ``keys`` (a value, or a tuple for a composite key) as of
        ``at`` (UTC microseconds or ISO text; default now)."""
        from evenflow.stream.engine import _as_micros, state_id
        from evenflow.stream.state import KeyState

        entities = [k if isinstance(k, tuple) else (k,) for k in keys]
        blobs = self.store.get_many([state_id(self.feature_set, e) for e in entities])
        t = _as_micros(at)
        fs = self._plan
        return [{**dict(zip(fs.key, e, strict=True)),
                 **fs.features_of(None if b is None else KeyState.from_blob(b), e, t)}
                for e, b in zip(entities, blobs, strict=True)]

    def read(self, key: Any, at: int | str | None = None) -> dict[str, Any]:
        return self.read_many([key], at=at)[0]
