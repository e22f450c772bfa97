"""Distributed tracing of add-svc/sub-svc (OpenTelemetry): a SERVER span per request, sent to Zipkin in the background.

On only where the environment names a Zipkin endpoint (OTEL_EXPORTER_ZIPKIN_ENDPOINT: in the lab, the instance's
sidecar upstream to Zipkin, http://127.0.0.<n>:19411/api/v2/spans); without it app.py never imports this module
and the app runs exactly as untraced. The lab sets OpenTelemetry's standard variables, and the SDK reads them itself:

    OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES   the resource: service.name, service.instance.id, service.version
                                                  (else add-svc/sub-svc, the instance id, APP_VERSION if set)
    OTEL_TRACES_SAMPLER(_ARG)                     parentbased_traceidratio: a request with a traceparent follows its
                                                  caller's decision, one without is a new trace kept at that ratio
    OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_SCHEDULE_DELAY   the batch processor's bounded queue and its send interval
    OTEL_BSP_EXPORT_TIMEOUT                       (ms) the SDK leaves it unused (1.45); here it is the exporter's
                                                  HTTP timeout, unless OTEL_EXPORTER_ZIPKIN_TIMEOUT (s) is set

The span of a request is made here with OpenTelemetry's API, not by an instrumentation library: Flask's and WSGI's
added about 0.2 ms of CPU to a request left out of the trace and 0.4 ms to a sampled one (the request itself takes
about 0.27 ms with granian), this about 0.01-0.04 ms and 0.1 ms, export included (apps/README.md). A WSGI middleware
around the Flask app (app.wsgi_app; the admin port's server goes through it too) reads the request's W3C traceparent
(and tracestate) from the environ with the TraceContext propagator and starts a SERVER span, the child of that
context, before Flask sees the request; the span ends when Flask has answered (teardown included), whatever
happened: so it covers the answers the app's own hooks give (the admin port's 404s), injected latency and faults,
and exceptions. Its name is "<METHOD> <route>" ("GET /api/v1/execute"; a path no route matches: the method alone),
with only a few attributes: mesh.instance = the instance id, http.request.method, http.route and
http.response.status_code (these two when the app answers: the route from the request Werkzeug keeps in the environ,
the status the app gives); a 5xx answer gets the error status, described by what the app says (TRACE_ERROR_KEY in
the environ: "injected fault: error", "unhandled ZeroDivisionError") or "HTTP 500". A request whose trace is not
sampled (the caller's flag 00, or the ratio for a new trace) gets the SDK's non-recording span and nothing else is
done. The context is never attached to the thread: the app makes no outgoing calls to pass it on. The resource's
attributes (and process.pid: which worker) go into every Zipkin span's tags, service.name also into its
localEndpoint. /health and /metrics are not traced at all (no span, no parsing): Consul's checks and Prometheus'
scrapes would fill Zipkin.

Never in a request's way: a span that ends is appended to the batch processor's bounded queue and a thread of the
worker sends the batches (Zipkin JSON v2, one HTTP POST each). A slow or stopped Zipkin costs spans, never a
request's time or answer; they are counted (metrics.py):

    tracing_spans_exported_total{instance_id}          spans Zipkin accepted
    tracing_spans_dropped_total{instance_id, reason}   queue_full: the queue was full (export slower than the spans
                                                       came), counted through the SDK's own metrics (instrument());
                                                       export_failed: connection refused or an error status;
                                                       export_timeout: no answer within the export timeout;
                                                       shutdown: a span that ended after the worker's tracer stopped

Per worker process: granian calls the app factory (server.worker_app) in each worker, after the worker started
(forked from the main process with Python up to 3.13 on Linux, spawned elsewhere), and the factory builds the app
and its tracer. So the tracer provider, its queue and its export thread belong to the process that serves;
the main process never imports OpenTelemetry (a thread started before a fork does not exist in the child).
The tracer provider is not made global: nothing else here asks for one, and tests build several apps per process.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing.util
import os
import time
from dataclasses import dataclass

import requests
from flask import Flask
from opentelemetry.exporter.zipkin.json import ZipkinExporter
from opentelemetry.metrics import NoOpCounter, NoOpMeter, NoOpMeterProvider
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.environment_variables import (
    OTEL_BSP_EXPORT_TIMEOUT,
    OTEL_BSP_MAX_EXPORT_BATCH_SIZE,
    OTEL_BSP_MAX_QUEUE_SIZE,
    OTEL_EXPORTER_ZIPKIN_TIMEOUT,
    OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED,
)
from opentelemetry.sdk.resources import (
    PROCESS_PID,
    SERVICE_INSTANCE_ID,
    SERVICE_NAME,
    SERVICE_VERSION,
    OTELResourceDetector,
    Resource,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_METHOD,
    HTTP_RESPONSE_STATUS_CODE,
    HTTP_ROUTE,
)
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .config import TRACE_ERROR_KEY, TRACING_ENDPOINT_ENV
from .metrics import TracingCounters

#: The server span's attribute naming the instance that answered (the resource says it too, as
#: service.instance.id; this one is on the span itself, next to the HTTP attributes).
INSTANCE_ATTRIBUTE = "mesh.instance"
#: Paths whose requests get no span (whatever the query or the method).
UNTRACED_PATHS = frozenset({"/health", "/metrics"})
# The methods of HTTP's conventions; any other is "_OTHER" in the attribute and the span's name, as the conventions
# say (span names stay a bounded set).
_KNOWN_METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"})
# The SDK's batch size when OTEL_BSP_MAX_EXPORT_BATCH_SIZE is unset.
_DEFAULT_BATCH_SIZE = 512
# The batch processor's own metric (OpenTelemetry's semantic conventions for the SDK's self-observability): one add
# per span handed to the exporter, and per span dropped, with error.type (queue_full, already_shutdown).
_PROCESSED_METRIC = "otel.sdk.processor.span.processed"
# A stopped Zipkin fails a batch every schedule delay: its messages reach the journal once a minute, the metrics
# count every span.
LOG_INTERVAL_S = 60.0

_log = logging.getLogger(__name__)


class _OncePerInterval(logging.Filter):
    """Lets through one record per message template every LOG_INTERVAL_S seconds."""

    def __init__(self):
        super().__init__()
        self._last = {}

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now - self._last.get(record.msg, -math.inf) < LOG_INTERVAL_S:
            return False
        self._last[record.msg] = now
        return True


# Ours, and the exporter's (it logs every batch that gets an error status, with the answer's body).
for _logger in (_log, logging.getLogger("opentelemetry.exporter.zipkin.json")):
    _logger.addFilter(_OncePerInterval())


@dataclass(frozen=True)
class Tracing:
    """A traced app's tracer provider and batch processor (app.extensions["tracing"]): tests flush them."""

    provider: TracerProvider
    processor: BatchSpanProcessor


def instrument(app: Flask, op: str, instance_id: str, counters: TracingCounters) -> Tracing:
    """Trace the app's requests (its WSGI callable, app.wsgi_app, gets wrapped) and send the spans to
    OTEL_EXPORTER_ZIPKIN_ENDPOINT."""
    exporter = CountingExporter(
        ZipkinExporter(endpoint=os.environ[TRACING_ENDPOINT_ENV], timeout=_export_timeout_s(),
                       session=_direct_session()),
        counters)
    # The queue-full drops happen inside the processor, which tells only its own metrics (an OpenTelemetry
    # MeterProvider given to it, when OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED is true as it is created): this one
    # passes the dropped spans to the counters and ignores the rest.
    with _sdk_internal_metrics():
        processor = BatchSpanProcessor(exporter, max_export_batch_size=_batch_size(),
                                       meter_provider=_DropCountingMeterProvider(counters))
    # The spans still queued at a graceful stop (at most a schedule delay's) go out as the worker ends; a Zipkin that
    # does not answer holds the stop up to granian's kill timeout (10 s), no longer. Not through atexit, the SDK's
    # way: a granian worker is a multiprocessing process, and a forked one ends with os._exit(), without atexit;
    # multiprocessing's finalizers run in either kind.
    provider = TracerProvider(resource=build_resource(op, instance_id), shutdown_on_exit=False)
    provider.add_span_processor(processor)
    multiprocessing.util.Finalize(provider, provider.shutdown, exitpriority=10)

    _trace_requests(app, provider.get_tracer("arith_svc"), instance_id)
    tracing = app.extensions["tracing"] = Tracing(provider, processor)
    return tracing


class _EnvironGetter(Getter):
    """The propagator's view of a WSGI environ: the header traceparent is HTTP_TRACEPARENT there."""

    _KEYS = {"traceparent": "HTTP_TRACEPARENT", "tracestate": "HTTP_TRACESTATE"}

    def get(self, carrier, key):
        value = carrier.get(self._KEYS.get(key) or "HTTP_" + key.upper().replace("-", "_"))
        return None if value is None else [value]

    def keys(self, carrier):
        return [name[5:].lower().replace("_", "-") for name in carrier if name.startswith("HTTP_")]


def _trace_requests(app: Flask, tracer, instance_id: str) -> None:
    """A SERVER span around each request but /health's and /metrics': a WSGI middleware around the Flask app's own
    (app.wsgi_app), so no Flask hook and no context-local lookup is added to a request."""
    propagator = TraceContextTextMapPropagator()
    getter = _EnvironGetter()
    serve = app.wsgi_app

    def traced_wsgi_app(environ, start_response):
        if environ.get("PATH_INFO") in UNTRACED_PATHS:
            return serve(environ, start_response)
        method = environ.get("REQUEST_METHOD", "GET").upper()  # as Werkzeug reads it
        if method not in _KNOWN_METHODS:
            method = "_OTHER"
        name = "HTTP" if method == "_OTHER" else method  # the route is known once Flask has matched the URL
        span = tracer.start_span(name, context=propagator.extract(environ, getter=getter), kind=SpanKind.SERVER,
                                 attributes={INSTANCE_ATTRIBUTE: instance_id, HTTP_REQUEST_METHOD: method})
        if not span.is_recording():  # not sampled: a non-recording span, nothing to add and nothing to end
            return serve(environ, start_response)
        answer = []  # the status, and the route that matched

        def start_response_seen(status, headers, exc_info=None):
            # Called by Flask's response while the request is alive: Werkzeug keeps it in the environ (Flask clears
            # that when the request ends). No route: none matched (404, 405).
            answer[:] = status, getattr(environ.get("werkzeug.request"), "url_rule", None)
            return start_response(status, headers) if exc_info is None else start_response(status, headers, exc_info)

        error = None
        try:
            return serve(environ, start_response_seen)
        except BaseException as exc:  # Flask answers every Exception itself; this is what it let through
            error = f"unhandled {type(exc).__name__}"
            raise
        finally:
            _end(span, name, environ, answer, error)

    app.wsgi_app = traced_wsgi_app


def _end(span, name: str, environ: dict, answer: list, error: str | None) -> None:
    """The route and the status (none: an exception left the app, the server answers 500), the error status for a
    5xx (why, when the app said: TRACE_ERROR_KEY), and the end."""
    status, rule = (int(answer[0][:3]), answer[1]) if answer else (500, None)
    if rule is None:
        span.set_attribute(HTTP_RESPONSE_STATUS_CODE, status)
    else:
        span.update_name(f"{name} {rule.rule}")
        span.set_attributes({HTTP_ROUTE: rule.rule, HTTP_RESPONSE_STATUS_CODE: status})
    if status >= 500:
        span.set_status(StatusCode.ERROR, error or environ.get(TRACE_ERROR_KEY) or f"HTTP {status}")
    span.end()


def build_resource(op: str, instance_id: str) -> Resource:
    """OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (the SDK reads them), with the instance's own values for what
    they leave out: service.name add-svc/sub-svc, service.instance.id the instance id, service.version APP_VERSION.
    process.pid tells the workers apart."""
    from_env = OTELResourceDetector().detect().attributes
    own = {SERVICE_NAME: f"{op}-svc", SERVICE_INSTANCE_ID: instance_id}
    if os.environ.get("APP_VERSION"):
        own[SERVICE_VERSION] = os.environ["APP_VERSION"]
    attributes = {key: value for key, value in own.items() if key not in from_env}
    attributes[PROCESS_PID] = os.getpid()
    return Resource.create(attributes)


class CountingExporter(SpanExporter):
    """The Zipkin exporter, counting each batch's spans as exported or dropped (and why).

    It runs in the batch processor's thread. A batch that fails is not retried: its spans are dropped and counted
    (the next batch is already waiting; a retry would only hold the queue up).
    """

    def __init__(self, inner: SpanExporter, counters: TracingCounters):
        self.inner = inner
        self.counters = counters

    def export(self, spans: list[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except requests.Timeout:
            reason = "export_timeout"
            _log.warning("tracing: Zipkin did not answer within the export timeout; spans dropped (metric "
                         "tracing_spans_dropped_total; this message at most once a minute)")
        except Exception as exc:  # noqa: BLE001 - whatever the cause, the spans are lost and counted
            reason = "export_failed"
            _log.warning("tracing: cannot send spans to Zipkin (%s); spans dropped (metric "
                         "tracing_spans_dropped_total; this message at most once a minute)", type(exc).__name__)
        else:
            if result is SpanExportResult.SUCCESS:
                self.counters.exported(len(spans))
                return result
            reason = "export_failed"  # an error status: the exporter logged it
        self.counters.dropped(len(spans), reason)
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class _DropCountingMeterProvider(NoOpMeterProvider):
    """The batch processor's meter provider: its counter of processed spans counts the dropped ones; every other
    instrument is OpenTelemetry's no-op."""

    def __init__(self, counters: TracingCounters):
        self.counters = counters

    def get_meter(self, name, version=None, schema_url=None, attributes=None):
        return _DropCountingMeter(name, self.counters, version=version, schema_url=schema_url)


class _DropCountingMeter(NoOpMeter):
    def __init__(self, name, counters: TracingCounters, **kwargs):
        super().__init__(name, **kwargs)
        self.counters = counters

    def create_counter(self, name, *args, **kwargs):
        if name == _PROCESSED_METRIC:
            return _DroppedSpans(name, self.counters)
        return super().create_counter(name, *args, **kwargs)


class _DroppedSpans(NoOpCounter):
    def __init__(self, name, counters: TracingCounters):
        super().__init__(name)
        self.counters = counters

    def add(self, amount, attributes=None, context=None):
        # Without error.type: spans handed to the exporter (CountingExporter counts how that went).
        error = (attributes or {}).get(ERROR_TYPE)
        if error:
            self.counters.dropped(amount, "queue_full" if error == "queue_full" else "shutdown")


@contextlib.contextmanager
def _sdk_internal_metrics():
    """OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED=true while the batch processor is created (it reads it then), put
    back afterwards: the tracer provider would otherwise count every span in metrics nobody reads."""
    before = os.environ.get(OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED)
    os.environ[OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED] = "true"
    try:
        yield
    finally:
        if before is None:
            del os.environ[OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED]
        else:
            os.environ[OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED] = before


def _export_timeout_s() -> float | None:
    """OTEL_BSP_EXPORT_TIMEOUT (ms) as the exporter's HTTP timeout (connecting, and each wait for the answer), in s;
    None: the exporter's own (OTEL_EXPORTER_ZIPKIN_TIMEOUT, else 10 s)."""
    raw = os.environ.get(OTEL_BSP_EXPORT_TIMEOUT)
    if os.environ.get(OTEL_EXPORTER_ZIPKIN_TIMEOUT) or not raw:
        return None
    try:
        millis = float(raw)
    except ValueError:
        millis = 0
    if not 0 < millis < math.inf:
        _log.warning("tracing: %s=%r is not a positive number of milliseconds; the exporter's default applies",
                     OTEL_BSP_EXPORT_TIMEOUT, raw)
        return None
    return millis / 1000


def _batch_size() -> int | None:
    """None (the SDK's: OTEL_BSP_MAX_EXPORT_BATCH_SIZE, else 512), or the queue's size when only a queue smaller than
    512 is set: the SDK refuses a batch larger than the queue, and the worker would not start."""
    if os.environ.get(OTEL_BSP_MAX_EXPORT_BATCH_SIZE):
        return None
    try:
        queue = int(os.environ.get(OTEL_BSP_MAX_QUEUE_SIZE, ""))
    except ValueError:
        return None
    return queue if 0 < queue < _DEFAULT_BATCH_SIZE else None


def _direct_session() -> requests.Session:
    """The exporter's HTTP session, without the environment's proxies (HTTP_PROXY, NO_PROXY) and .netrc: the endpoint
    is the instance's own sidecar listener, a proxy for the node's outside traffic must not take its spans."""
    session = requests.Session()
    session.trust_env = False
    return session
