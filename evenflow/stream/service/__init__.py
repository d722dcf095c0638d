"""The HTTP service (``evenflow serve``): event ingest, online feature reads, health, metrics.

One process runs one stream engine (the feature sets of one source). ``POST /v1/events`` runs
the records through the engine on the event loop, then hands their raw text to a *group commit*:
every ``commit_interval`` (default 100 ms) the events of all requests since the last commit land
in the bronze Delta table as one application transaction (the HTTP *offset* of an event is its
ingest number, so a restart continues the numbering from the committed offset), the batch's
quarantine rows follow, then the changed entity states, the engine meta and the checkpoint go to
the online store in one transaction (``docs/decisions/0004-exactly-once.md``). A durable request
(the default) is answered after the commit that holds its events, so an acknowledged event is
never lost. Reads evaluate the windows as of the read time.

Status codes of ``POST /v1/events`` (``docs/serving.md``, HTTP service): 200 all accepted (and
durable), 202 all accepted with ``?durable=false``, 207 some records quarantined, 400 every record
malformed, 422 every record rejected by the schema (or late), 413 body too large, 415 wrong
content type, 503 shutting down, overloaded or the lakehouse not writable in time.

>>> split_ndjson(b'{"a": 1}\\n\\n  {"a": 2}\\r\\n')
['{"a": 1}', '  {"a": 2}']
"""

from evenflow.stream.service.http import build_app, create_app, read_limited, register_serve
from evenflow.stream.service.ingest import HTTP_SOURCE, Service, load_artifacts, split_json, split_ndjson
from evenflow.stream.service.metrics import ServiceMetrics

__all__ = ["HTTP_SOURCE", "Service", "ServiceMetrics", "build_app", "create_app", "load_artifacts",
           "read_limited", "register_serve", "split_json", "split_ndjson"]
