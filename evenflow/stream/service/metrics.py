"""Prometheus metrics of the HTTP service."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from evenflow.stream.engine import StreamResult
    from evenflow.stream.service.ingest import Service
    from evenflow.stream.vector import BatchResult


class ServiceMetrics:
    """Prometheus metrics of one service, in its own registry (several apps can share a process)."""

    def __init__(self, service: Service) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = CollectorRegistry()
        self.events_in = Counter("evenflow_events_in", "records received by POST /v1/events",
                                 registry=r)
        self.events_out = Counter("evenflow_events_out", "feature rows the engine emitted",
                                  ["feature_set"], registry=r)
        self.quarantined = Counter("evenflow_events_quarantined", "records quarantined, by reason "
                                   "code", ["reason"], registry=r)
        self.duplicates = Counter("evenflow_events_duplicate", "records a dedup step dropped",
                                  registry=r)
        self.landed = Counter("evenflow_events_landed", "records committed to bronze", registry=r)
        self.commits = Counter("evenflow_commits", "group commits (bronze, quarantine, store)",
                               registry=r)
        fast = (.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1.0)
        self.processing = Histogram("evenflow_processing_seconds", "engine time per ingest request",
                                    buckets=fast, registry=r)
        self.event_processing = Histogram(
            "evenflow_event_processing_seconds", "engine time per record (request time / records)",
            buckets=(.000005, .00001, .000025, .00005, .0001, .00025, .0005, .001, .005), registry=r)
        self.reads = Histogram("evenflow_feature_read_seconds", "time to answer a feature read",
                               ["kind"], buckets=fast, registry=r)
        self.commit_seconds = Histogram("evenflow_commit_seconds", "time to land one group commit",
                                        buckets=(.01, .025, .05, .1, .25, .5, 1, 2.5, 5), registry=r)

        def lag() -> float:
            wm = service.engine.watermark
            return float("nan") if wm is None else time.time() - wm / 1e6

        def age() -> float:
            return float("nan") if service.last_commit is None else time.time() - service.last_commit

        Gauge("evenflow_watermark_lag_seconds", "wall clock minus the watermark",
              registry=r).set_function(lag)
        # Counted in the engine, which holds the same entities as the store after each commit
        # (the store also keeps dedup memory, so its own size counts more than entities).
        Gauge("evenflow_online_store_entities", "entities with window state",
              registry=r).set_function(lambda: sum(len(fs.states) for fs in service.engine.sets.values()))
        Gauge("evenflow_pending_events", "records processed, waiting for the next commit",
              registry=r).set_function(lambda: service.pending)
        Gauge("evenflow_last_commit_age_seconds", "seconds since the last group commit",
              registry=r).set_function(age)

    def processed(self, result: StreamResult | BatchResult, seconds: float, records: int) -> None:
        self.events_in.inc(records)
        self.processing.observe(seconds)
        if records:
            self.event_processing.observe(seconds / records)
        for name, rows in result.outputs.items():
            if rows:
                self.events_out.labels(feature_set=name).inc(len(rows))
        for row in result.quarantined:
            self.quarantined.labels(reason=row["reason"]).inc()
        if result.duplicates:
            self.duplicates.inc(len(result.duplicates))

    def committed(self, events: int, seconds: float) -> None:
        self.commits.inc()
        self.landed.inc(events)
        self.commit_seconds.observe(seconds)
