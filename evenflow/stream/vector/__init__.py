"""The stream engine's vectorized micro-batch path: :meth:`StreamEngine.process_batch`.

Same definitions, same state, same records out as :meth:`StreamEngine.process` with
``emit="arrival"``, but each stage runs over the whole micro-batch with NumPy instead of record
by record in Python:

- **Validation** types each field as a column. A value that is not of the plain JSON type (a
  number for a float, text in the strict ISO 8601 form for a timestamp, ...) or that breaks a
  rule sends its record through the per-record validator, so reasons, fields and typed values
  are exactly those of ``process``.
- **Lateness** is a running maximum over the batch.
- **Steps** run in their declared order: dedup and ``unique`` with the same memory as
  ``process``; ``Impute`` and ``Clip`` as column operations; any other fitted step record by
  record with its ``transform_one``.
- **Aggregates** are computed for every event at once over its entity's window state plus the
  batch's earlier events of that entity (``docs/semantics.md`` §13): counts, first and last
  exactly; sums, means and variances with a sequential sum per window rather than ``fsum``, so
  they agree with ``process`` within the tolerance of ``docs/semantics.md`` §11, not
  bit for bit.
- **Row expressions** are evaluated on columns, with SQL null semantics.

The output of each feature set is a ``pyarrow.Table`` with one row per kept event, in arrival
order. The engine's state (entity windows, dedup and unique memory, watermark) is the same
object ``process`` updates, so the two can be mixed freely, and checkpoints, reads and the
online store work unchanged.

What the fast path does not cover falls back, exactly, to the per-record code:
- the whole batch, when the engine uses ``emit="final"``, ``ttl``, ``remember``, a stateful
  step (``Impute(..., "last")``) or ``Dedup(keep="last")``;
- the aggregates of one feature set for one batch, when an entity's events arrive out of
  ``(event_time, seq)`` order, when events become available after their event time, when a
  float column holds NaN, or when an unbounded aggregate other than ``count`` and
  ``since_last`` must combine retired events.
"""

from evenflow.stream.vector.batch import BatchResult, process_batch, whole_batch_fallback
from evenflow.stream.vector.columns import Col
from evenflow.stream.vector.parse import parse_timestamps, validate

__all__ = ["BatchResult", "Col", "parse_timestamps", "process_batch", "validate",
           "whole_batch_fallback"]
