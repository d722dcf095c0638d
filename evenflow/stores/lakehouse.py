"""Delta Lake tables: raw landing (bronze), curated outputs, and the quarantine.

>>> import tempfile, pyarrow as pa
>>> d = tempfile.mkdtemp()
>>> write_delta(f"{d}/t", pa.table({"x": [1, 2]}))
0
>>> read_delta(f"{d}/t").num_rows
2
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, write_deltalake


def write_delta(path: str | Path, data: pa.Table | pa.RecordBatchReader, *,
                mode: Literal["append", "overwrite"] = "append",
                metadata: dict[str, str] | None = None) -> int:
    """Write Arrow data as a Delta commit; return the new table version."""
    Path(path).mkdir(parents=True, exist_ok=True)
    props = CommitProperties(custom_metadata=metadata) if metadata else None
    kwargs: dict[str, Any] = {"mode": mode, "commit_properties": props}
    if mode == "overwrite":
        kwargs["schema_mode"] = "overwrite"
    write_deltalake(str(path), data, **kwargs)
    return int(DeltaTable(str(path)).version())


def read_delta(path: str | Path, version: int | None = None) -> pa.Table:
    table = DeltaTable(str(path), version=version)
    return table.to_pyarrow_table()


def land_raw(path: str | Path, raw: pa.RecordBatchReader, *, source: str, run_id: str) -> int:
    """Land a source's records as read (bronze): ``_run_id``, ``_source``, ``_record`` (the
    record's position in the input) and every field as text, one Delta commit per run."""
    return write_delta(path, raw, mode="overwrite", metadata={"run_id": run_id, "source": source})
