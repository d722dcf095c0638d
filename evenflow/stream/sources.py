"""Where a runner's events come from: a Redis Stream with a consumer group, or a file replay.

Every record carries its source offset (stream entry ID, line number), so the exactly-once
sink can commit the offset a batch reaches and a restart can skip what is already landed.
A record that is not a record never stops a source: a CSV line with the wrong number of fields or
a stream entry without its data field is decoded as a quarantine entry with reason
``malformed_record``; JSON text goes to the engine as is, which quarantines invalid JSON with the
same reason and keeps the text as the payload.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "ev.ndjson"
>>> _ = p.write_text('{"card_id": "c1"}\\nnot json\\n')
>>> src = FileReplaySource(p)
>>> [e.offset for e in src.read(10, 0)], src.exhausted
(['1', '2'], True)
>>> c = p.with_suffix(".csv")
>>> _ = c.write_text("card_id,amount\\nc1,5\\nc2,5,extra\\n")
>>> src = FileReplaySource(c)
>>> [src.decode(e) for e in src.read(10, 0)][1][1]["reason"]
'malformed_record'
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from evenflow.errors import MissingExtraError, SourceError
from evenflow.stream.sink import RawEvent

#: ``(record, None)``: a record for the engine, as JSON text (the engine parses it and keeps the
#: text as the payload) or as a dict; ``(None, entry)``: a quarantine entry, nothing to process.
Decoded = tuple[dict[str, Any] | str | None, dict[str, Any] | None]


class EventSource(Protocol):
    """What the runner needs from a source of events."""

    name: str

    def read(self, count: int, block_ms: int) -> list[RawEvent]:
        """Up to ``count`` events in offset order; wait at most ``block_ms`` when none is ready."""
        ...

    def ack(self, offsets: Sequence[str]) -> None:
        """Tell the source these offsets are committed (after the commit, never before)."""
        ...

    def offset_key(self, offset: str) -> tuple[int, ...]:
        """A sortable form of an offset: ``a <= b`` as positions in the source."""
        ...

    def decode(self, event: RawEvent) -> Decoded:
        """``(record, None)`` for a record, ``(None, quarantine entry)`` for a malformed one."""
        ...

    @property
    def exhausted(self) -> bool:
        """True when no event will ever come again (end of a file); never for a stream."""
        ...

    def close(self) -> None: ...


def malformed(event: RawEvent, detail: str) -> dict[str, Any]:
    """The quarantine entry of a record that cannot be read at all."""
    return {"payload": event.payload, "reason": "malformed_record", "field": None, "step": "read",
            "detail": f"{event.source} at {event.offset}: {detail}", "source": event.source,
            "offset": event.offset, "seq": None}


def stream_id_key(entry_id: str) -> tuple[int, ...]:
    """``"1700000000000-3"`` → ``(1700000000000, 3)``: Redis stream IDs in their order.

    >>> stream_id_key("5-10") > stream_id_key("5-9")
    True
    """
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class RedisStreamSource:
    """Entries of a Redis Stream read through a consumer group.

    Each entry holds one record as JSON text in its ``field`` (default ``data``); an entry
    without that field is read as a flat record of its fields (values as text). After a
    crash the consumer first re-reads its own pending entries (delivered, never acknowledged:
    ``XREADGROUP ... 0``), then, with ``claim_idle_ms``, takes over entries left pending by other
    consumers of the group idle that long (``XAUTOCLAIM``), then reads new ones (``>``).
    Acknowledgement (``XACK``) happens only when the runner calls :meth:`ack` after its commit.
    """

    def __init__(self, url: str, stream: str, group: str, consumer: str, *, field: str = "data",
                 claim_idle_ms: int | None = None) -> None:
        try:
            import redis
        except ImportError as exc:  # pragma: no cover - extra not installed
            raise MissingExtraError("redis", "serve") from exc
        self.name = stream
        self.stream, self.group, self.consumer, self.field = stream, group, consumer, field
        self.claim_idle_ms = claim_idle_ms
        self.redis: Any = redis.Redis.from_url(url)  # untyped: replies are bytes here
        try:
            self.redis.xgroup_create(stream, group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise SourceError(f"cannot create consumer group {group!r} on {stream!r}: {exc}",
                                  fix="check that the key is a stream") from None
        except redis.ConnectionError as exc:
            raise SourceError(f"cannot reach Redis at {url}: {exc}",
                              fix="start Redis or pass the right --redis-url") from None
        self._pending_cursor: str | None = "0"   # None once own pending entries are re-read
        self._claim_cursor: str | None = "0-0" if claim_idle_ms is not None else None

    def _events(self, entries: Iterable[tuple[Any, Any]]) -> list[RawEvent]:
        out = []
        for entry_id, fields in entries:
            eid = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            if not fields:
                # Pending but trimmed from the stream: keep a trace instead of losing it silently.
                out.append(RawEvent("", self.stream, eid))
                continue
            value = fields.get(self.field.encode(), fields.get(self.field))
            if value is None:
                # No data field: the entry's fields are the record (``XADD s * card_id c1 ...``),
                # values as text, which the engine types like a CSV line's.
                text = json.dumps({_text(k): _text(v) for k, v in fields.items()},
                                  ensure_ascii=False)
                out.append(RawEvent(text, self.stream, eid))
            else:
                out.append(RawEvent(_text(value), self.stream, eid))
        return out

    def read(self, count: int, block_ms: int) -> list[RawEvent]:
        if self._pending_cursor is not None:
            resp = self.redis.xreadgroup(self.group, self.consumer,
                                         {self.stream: self._pending_cursor}, count=count)
            entries = resp[0][1] if resp else []
            if entries:
                last = entries[-1][0]
                self._pending_cursor = last.decode() if isinstance(last, bytes) else str(last)
                return self._events(entries)
            self._pending_cursor = None
        if self._claim_cursor is not None:
            cursor, entries, *_ = self.redis.xautoclaim(
                self.stream, self.group, self.consumer, self.claim_idle_ms or 0,
                start_id=self._claim_cursor, count=count)
            cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
            self._claim_cursor = None if cursor == "0-0" else cursor
            if entries:
                return self._events(entries)
        resp = self.redis.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=count,
                                     block=block_ms if block_ms > 0 else None)
        return self._events(resp[0][1]) if resp else []

    def ack(self, offsets: Sequence[str]) -> None:
        for i in range(0, len(offsets), 10_000):
            self.redis.xack(self.stream, self.group, *offsets[i:i + 10_000])

    def offset_key(self, offset: str) -> tuple[int, ...]:
        return stream_id_key(offset)

    def decode(self, event: RawEvent) -> Decoded:
        if event.payload == "":
            return None, malformed(event, "entry was deleted from the stream before it was "
                                          "processed; keep the stream longer (MAXLEN)")
        return event.payload, None

    def pending(self) -> int:
        """Entries of the group delivered but not acknowledged."""
        return int(self.redis.xpending(self.stream, self.group)["pending"])

    @property
    def exhausted(self) -> bool:
        return False

    def close(self) -> None:
        self.redis.close()


class FileReplaySource:
    """An NDJSON or CSV file replayed in file order; the offset is the line number (1-based).

    CSV payloads are the raw lines; records map the header's names to the values as text, an
    empty value read as null. Quoted values may not span lines (one record per line).
    """

    def __init__(self, path: str | Path, *, fmt: str | None = None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise SourceError("file not found", file=str(path), fix="pass an NDJSON or CSV file")
        self.name = str(self.path)
        self.format = fmt or ("csv" if self.path.suffix.lower() == ".csv" else "ndjson")
        self._file = self.path.open(encoding="utf-8", errors="replace", newline="")
        self._line = 0
        self._header: list[str] | None = None
        self._done = False
        if self.format == "csv":
            first = self._file.readline()
            self._line = 1
            self._header = next(csv.reader([first.rstrip("\r\n")]), [])

    def read(self, count: int, block_ms: int) -> list[RawEvent]:
        out: list[RawEvent] = []
        while len(out) < count:
            line = self._file.readline()
            if not line:
                self._done = True
                break
            self._line += 1
            text = line.rstrip("\r\n")
            if text.strip():
                out.append(RawEvent(text, self.name, str(self._line)))
        return out

    def read_all(self) -> list[RawEvent]:
        out: list[RawEvent] = []
        while batch := self.read(10_000, 0):
            out.extend(batch)
        return out

    def ack(self, offsets: Sequence[str]) -> None:
        """Nothing to tell a file; the committed offset in the sink is the resume point."""

    def offset_key(self, offset: str) -> tuple[int, ...]:
        return (int(offset),)

    def decode(self, event: RawEvent) -> Decoded:
        if self._header is None:
            return event.payload, None
        values = next(csv.reader(io.StringIO(event.payload)), [])
        if len(values) != len(self._header):
            return None, malformed(event, f"{len(values)} fields, the header has "
                                          f"{len(self._header)}; quote values that hold commas")
        return {k: (v if v != "" else None) for k, v in zip(self._header, values, strict=True)}, None

    @property
    def exhausted(self) -> bool:
        return self._done

    def close(self) -> None:
        self._file.close()
