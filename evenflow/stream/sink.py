"""Exactly-once Delta sinks for the stream: raw events (bronze) and the quarantine.

Each micro-batch ``n`` of a runner lands as one Delta commit that carries, in the same atomic
commit, a Delta *application transaction* ``(app_id, version=n)`` and the last source offset the
batch covers (commit metadata ``evenflow.offset``). :meth:`BronzeSink.committed` reads both back,
so a restarted runner knows exactly which batch and offset were landed, and landing batch ``n``
twice is refused (:meth:`BronzeSink.append` returns ``None`` for a batch already committed).

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> sink = BronzeSink(f"{d}/bronze", "demo")
>>> sink.committed()
Committed(batch=None, offset=None)
>>> rows = [RawEvent('{"a": 1}', "s", "1-0"), RawEvent("not json", "s", "1-1")]
>>> sink.append(rows, batch=1, offset="1-1")
0
>>> sink.committed()
Committed(batch=1, offset='1-1')
>>> sink.append(rows, batch=1, offset="1-1") is None    # already landed: nothing written
True
>>> [r.payload for r in sink.batch_events(1)]
['{"a": 1}', 'not json']
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

#: Commit-metadata keys written with every batch (read back by ``committed``).
META_APP = "evenflow.app_id"
META_BATCH = "evenflow.batch"
META_OFFSET = "evenflow.offset"

BRONZE_SCHEMA = pa.schema([
    ("payload", pa.string()),          # the record exactly as received (JSON text, CSV line)
    ("source", pa.string()),           # stream or file it came from
    ("offset", pa.string()),           # its position there: stream entry ID or line number
    ("ingest_time", pa.timestamp("us", tz="UTC")),
    ("app_id", pa.string()),           # the runner that landed it (one table may hold several)
    ("batch", pa.int64()),             # the runner's micro-batch number (= Delta txn version)
])

QUARANTINE_SCHEMA = pa.schema([
    ("payload", pa.string()),
    ("reason", pa.string()),           # a code of evenflow.core.schema.REASONS
    ("field", pa.string()),
    ("step", pa.string()),
    ("detail", pa.string()),
    ("source", pa.string()),
    ("offset", pa.string()),
    ("seq", pa.int64()),
    ("app_id", pa.string()),
    ("batch", pa.int64()),
])


DUPLICATES_SCHEMA = pa.schema([
    ("payload", pa.string()),          # the dropped record (null when keep="last" dropped an
    ("seq", pa.int64()),               # event of an earlier batch: bronze has it by offset)
    ("kept", pa.int64()),              # arrival number of the record kept instead
    ("step", pa.string()),
    ("feature_set", pa.string()),
    ("source", pa.string()),
    ("offset", pa.string()),
    ("app_id", pa.string()),
    ("batch", pa.int64()),
])

_TEXT = {"payload", "reason", "field", "step", "detail", "source", "offset", "feature_set"}


class RawEvent(NamedTuple):
    """One record as received: its text, where it came from and its position there."""

    payload: str
    source: str
    offset: str


class Committed(NamedTuple):
    """The last batch a sink committed for its app id, and the source offset it covered."""

    batch: int | None
    offset: str | None


@dataclass
class _DeltaTxnSink:
    """A Delta table written one batch per commit, each commit an application transaction."""

    path: str
    app_id: str
    schema: pa.Schema

    def __post_init__(self) -> None:
        self.path = str(self.path)
        # The writer's own view of the table and of its last batch, kept between appends: opening
        # the table again for every batch replays a log that grows with every commit.
        self._writer: DeltaTable | None = None
        self._last: int | None = None

    def _table(self) -> DeltaTable | None:
        if not (Path(self.path) / "_delta_log").exists():
            return None
        return DeltaTable(self.path)

    def committed_batch(self) -> int | None:
        """The last batch number committed by this app id, from the Delta transaction log."""
        table = self._table()
        if table is None:
            return None
        version = table.transaction_version(self.app_id)
        return None if version is None else int(version)

    def _write(self, table: pa.Table, *, batch: int, metadata: dict[str, str]) -> int | None:
        if self._writer is None:
            self._writer = self._table()
            self._last = None if self._writer is None else \
                self._writer.transaction_version(self.app_id)
        if self._last is not None and batch <= self._last:
            return None  # landed before a crash: writing it again would duplicate rows
        Path(self.path).mkdir(parents=True, exist_ok=True)
        props = CommitProperties(app_transactions=[Transaction(self.app_id, batch)],
                                 custom_metadata={META_APP: self.app_id, META_BATCH: str(batch),
                                                  **metadata})
        write_deltalake(self._writer if self._writer is not None else self.path, table,
                        mode="append", commit_properties=props)
        if self._writer is None:
            self._writer = DeltaTable(self.path)
        self._last = batch
        return int(self._writer.version())

    def read_batch(self, batch: int) -> pa.Table:
        """Rows this app id landed in ``batch`` (uses file statistics to skip other batches)."""
        table = self._table()
        if table is None:
            return self.schema.empty_table()
        data = table.to_pyarrow_dataset().to_table(
            filter=(pc.field("batch") == batch) & (pc.field("app_id") == self.app_id))
        return data

    def read(self) -> pa.Table:
        """The whole table in landing order (batch by batch; a stable sort keeps each batch's
        order, which Delta's file listing does not)."""
        table = self._table()
        if table is None:
            return self.schema.empty_table()
        return table.to_pyarrow_table().sort_by([("batch", "ascending")])


class BronzeSink(_DeltaTxnSink):
    """Raw events, landed exactly once per batch with the source offset they reach."""

    def __init__(self, path: str | Path, app_id: str) -> None:
        super().__init__(str(path), app_id, BRONZE_SCHEMA)

    def append(self, events: Sequence[RawEvent], *, batch: int, offset: str,
               ingest_time_us: int | None = None) -> int | None:
        """Land ``events`` as batch ``batch`` reaching source ``offset``.

        Returns the new Delta version, or ``None`` when this app id already committed the batch.
        """
        now = ingest_time_us if ingest_time_us is not None else time.time_ns() // 1000
        n = len(events)
        table = pa.table({
            "payload": pa.array([e.payload for e in events], pa.string()),
            "source": pa.array([e.source for e in events], pa.string()),
            "offset": pa.array([e.offset for e in events], pa.string()),
            "ingest_time": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
            "app_id": pa.array([self.app_id] * n, pa.string()),
            "batch": pa.array([batch] * n, pa.int64()),
        }, schema=BRONZE_SCHEMA)
        return self._write(table, batch=batch, metadata={META_OFFSET: offset})

    def committed(self) -> Committed:
        """The last committed batch of this app id and the source offset it covered."""
        table = self._table()
        batch = self.committed_batch()
        if table is None or batch is None:
            return Committed(None, None)
        # The offset lives in the commit info of the commit that set the transaction; walk the
        # history newest first and stop at it (other app ids may share the table).
        step, seen = 64, 0
        while True:
            history = table.history(seen + step)
            for info in history[seen:]:
                if info.get(META_APP) == self.app_id and info.get(META_BATCH) == str(batch):
                    return Committed(batch, info.get(META_OFFSET))
            if len(history) < seen + step:
                # The commit's info is gone (log cleanup): the batch's rows still say how far
                # it reached.
                offsets = self.read_batch(batch).column("offset").to_pylist()
                return Committed(batch, offsets[-1] if offsets else None)
            seen += step

    def batch_events(self, batch: int) -> list[RawEvent]:
        """The events of ``batch`` in their landing order, to re-apply after a crash."""
        rows = self.read_batch(batch).select(["payload", "source", "offset"]).to_pylist()
        return [RawEvent(r["payload"], r["source"], r["offset"]) for r in rows]


class _RowSink(_DeltaTxnSink):
    def append(self, rows: Sequence[dict[str, Any]], *, batch: int) -> int | None:
        """Land ``rows`` (dicts with the schema's columns; others ignored) for ``batch``.

        An empty batch still commits, so the transaction version keeps up with bronze and a
        restart can tell whether this batch's rows are landed.
        """
        cols: dict[str, list[Any]] = {name: [] for name in self.schema.names}
        for row in rows:
            for name in self.schema.names:
                value = row.get(name)
                if name in _TEXT and value is not None and not isinstance(value, str):
                    value = str(value)
                cols[name].append(value)
        cols["app_id"] = [self.app_id] * len(rows)
        cols["batch"] = [batch] * len(rows)
        return self._write(pa.table(cols, schema=self.schema), batch=batch, metadata={})


class QuarantineSink(_RowSink):
    """Quarantined records of a stream: original payload, reason code, field, step, detail."""

    def __init__(self, path: str | Path, app_id: str) -> None:
        super().__init__(str(path), app_id, QUARANTINE_SCHEMA)


class DuplicatesSink(_RowSink):
    """The duplicates log of a stream: each record a dedup step dropped, and the one it kept."""

    def __init__(self, path: str | Path, app_id: str) -> None:
        super().__init__(str(path), app_id, DUPLICATES_SCHEMA)
