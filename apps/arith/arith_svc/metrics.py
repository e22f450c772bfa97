"""Prometheus metrics of one add-svc/sub-svc instance (prometheus-client), served on GET /metrics.

    http_requests_total{instance_id, route, method, status}                counter
    http_request_duration_seconds{instance_id, route, method, status}      histogram, seconds

and, only when the instance traces (tracing.py; created with the tracer, each series from 0):

    tracing_spans_exported_total{instance_id}                              counter, spans Zipkin accepted
    tracing_spans_dropped_total{instance_id, reason}                       counter, spans lost: queue_full,
                                                                           export_failed, export_timeout, shutdown

``route`` is the Flask rule that matched (/api/v1/execute, /health, /metrics, /admin/faults) or
"other" (unknown paths: the label keeps a bounded number of values); ``instance_id`` is the instance's
id (INSTANCE_ID), so every series says which instance it counts wherever it is scraped from.
The duration runs from the app's first look at the request to the response it built.

One worker process (the lab's setting): the counters live in the process, next to its process_* metrics
(CPU seconds, resident memory). Several granian workers: prometheus-client's multi-process mode. The
main process points PROMETHEUS_MULTIPROC_DIR at an empty directory before the workers start
(server.py), each worker writes its counts to its own files there, and /metrics, whichever worker
answers it, adds them up; process_* metrics are then left out (they would describe one worker only). The
tracing counters follow the same rule: each worker's export thread counts its own spans, /metrics shows the sum.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client import multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .config import MULTIPROC_ENV

LABELS = ("instance_id", "route", "method", "status")
# One upstream call takes about 0.3 ms of the app's time; the buckets start below that and reach the
# seconds that latency faults add.
BUCKETS = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Why a span never reached Zipkin (tracing.py): the export queue was full, Zipkin (or the sidecar) refused or failed
# the batch, did not answer within the export timeout, or the span ended after the worker's tracer shut down.
DROP_REASONS = ("queue_full", "export_failed", "export_timeout", "shutdown")


class Metrics:
    """The instance's request counter and latency histogram, and their exposition."""

    def __init__(self, instance_id: str):
        self.instance_id = instance_id
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        # Multi-process: the values are in the directory's files, not in a registry of this process.
        own = self._own = None if self.multiprocess else CollectorRegistry()
        self.requests = Counter("http_requests_total", "HTTP requests answered, by route, method and status",
                                LABELS, registry=own)
        self.duration = Histogram("http_request_duration_seconds", "Time to answer an HTTP request",
                                  LABELS, buckets=BUCKETS, registry=own)
        if self.multiprocess:
            self.registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(self.registry)
        else:
            self.registry = own
            ProcessCollector(registry=own)
        self._children = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            values = (self.instance_id, route, method, str(status))
            children = self._children[key] = (self.requests.labels(*values), self.duration.labels(*values))
        children[0].inc()
        children[1].observe(seconds)

    def tracing_counters(self) -> "TracingCounters":
        """The span export's counters (only a traced instance has them on /metrics)."""
        return TracingCounters(self.instance_id, self._own)

    def render(self) -> tuple[bytes, str]:
        """(body, content type) of the text exposition format."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class TracingCounters:
    """Spans exported and dropped, counted from the export thread (prometheus-client's values are thread-safe).
    Every series is created at once, at 0, so that a rate over them has a start."""

    def __init__(self, instance_id: str, registry: CollectorRegistry | None):
        exported = Counter("tracing_spans_exported_total", "Spans sent to Zipkin and accepted by it",
                           ("instance_id",), registry=registry)
        dropped = Counter("tracing_spans_dropped_total", "Spans lost instead of delaying requests, by reason",
                          ("instance_id", "reason"), registry=registry)
        self._exported = exported.labels(instance_id)
        self._dropped = {reason: dropped.labels(instance_id, reason) for reason in DROP_REASONS}

    def exported(self, count: int) -> None:
        self._exported.inc(count)

    def dropped(self, count: int, reason: str) -> None:
        self._dropped[reason].inc(count)
