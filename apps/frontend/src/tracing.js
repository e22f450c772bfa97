'use strict';
/**
 * Distributed tracing of the compute requests: OpenTelemetry SDK, spans exported to Zipkin (JSON v2) in batches.
 *
 * On when OTEL_EXPORTER_ZIPKIN_ENDPOINT is set and OTEL_SDK_DISABLED is not true (config.js: the endpoint is
 * checked with the other settings); off, this module and the SDK (16 MB, 0.1 s to load) are not even loaded, and
 * compute answers carry no trace id. The other standard variables are read by the SDK itself, from the process
 * environment, with the SDK's defaults and its handling of bad values (a warning on stderr at start-up, then the
 * default), as in the Python apps:
 *   OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES    the resource (service.name, service.instance.id, service.version);
 *                                                  unset, they default to frontend, INSTANCE_ID and APP_VERSION
 *   OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG   default parentbased_always_on; the lab: parentbased_traceidratio
 *   OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_SCHEDULE_DELAY, OTEL_BSP_EXPORT_TIMEOUT, OTEL_BSP_MAX_EXPORT_BATCH_SIZE
 *
 * Spans (the attributes are in apps/README.md, "Tracing"):
 *   compute           SERVER, one per POST /api/v1/compute, from its arrival to its answer; the child of the
 *                     request's `traceparent` if it has a valid one, else a new trace's root
 *   <upstream> attempt
 *                     CLIENT, one per HTTP attempt of an upstream call (first tries, retries, hedged attempts), the
 *                     compute span's child; the attempt's request carries the `traceparent` of its own span, so
 *                     the arith app's server span is its child. A call refused by its open breaker sends nothing
 *                     and makes no attempt span (the compute span's error says "circuit open").
 *
 * Why the server span is made here and not by @opentelemetry/instrumentation-http: that instrumentation patches
 * the process's `http` module for every server and client in it, so it would also make a span of its own for each
 * upstream request (duplicating the attempt spans, which know the attempt number, the hedging and the outcome,
 * unless its outgoing side is turned off), needs a global provider and context manager (one per process, where the
 * tests run several frontends in one process), and brings require-in-the-middle and its dependencies. The frontend
 * traces one route: extracting `traceparent` (W3CTraceContextPropagator) and passing the span's context down the
 * call chain explicitly is a few lines, and costs nothing when tracing is off.
 *
 * A slow or dead collector never slows or fails a request: span.end() only queues the span (BatchSpanProcessor,
 * bounded by OTEL_BSP_MAX_QUEUE_SIZE); batches are sent in the background. What cannot be sent is dropped, and
 * counted (metrics.js, tracing_spans_dropped_total{reason}):
 *   queue_full        the span ended while the queue was full (the processor drops it; counted by mirroring the
 *                     queue's length: spans accepted minus spans handed to the exporter)
 *   export_failed     its batch was refused: connection error, or the collector answered >= 400
 *   export_timeout    its batch had no answer within OTEL_BSP_EXPORT_TIMEOUT, or was not sent because an earlier
 *                     batch still has none (see StallGuardExporter)
 * and what the collector accepted is counted in tracing_spans_exported_total. The first failure of a streak and
 * the recovery are written to stderr; the SDK's own runtime messages are not (one per failed batch).
 */

const {
  DiagConsoleLogger,
  DiagLogLevel,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  TraceFlags,
  defaultTextMapGetter,
  defaultTextMapSetter,
  diag,
  trace,
} = require('@opentelemetry/api');
const {
  ExportResultCode,
  W3CTraceContextPropagator,
  getNumberFromEnv,
} = require('@opentelemetry/core');
const { defaultResource, detectResources, envDetector, resourceFromAttributes } = require('@opentelemetry/resources');
const { BasicTracerProvider, BatchSpanProcessor } = require('@opentelemetry/sdk-trace-base');
const { ZipkinExporter } = require('@opentelemetry/exporter-zipkin');

// The SDK's defaults for the two processor settings the counting below needs to know (the specification's).
const DEFAULT_MAX_QUEUE_SIZE = 2048;
const DEFAULT_EXPORT_TIMEOUT_MS = 30000;
// On shutdown the queued spans get at most this long (and at most the export timeout) to reach the collector.
const SHUTDOWN_FLUSH_MS = 2000;
// An export unanswered this long past its timeout is given up for good: new batches are sent again (one more
// connection to a collector that may never answer, at most one a minute), so that tracing resumes by itself.
const STALL_GIVE_UP_MS = 60000;

function writeStderr(line) {
  process.stderr.write(`frontend: tracing: ${line}\n`);
}

/**
 * The exporter's wrapper that counts what became of each batch (exported / dropped) and keeps a stalled collector
 * from piling up connections. The Zipkin exporter's requests have no timeout of their own: after
 * OTEL_BSP_EXPORT_TIMEOUT the batch processor gives up on a batch and sends the next one on a new connection, so a
 * collector that accepts connections but never answers would hold one more connection every few seconds. Here,
 * while an earlier export has gone unanswered past the export timeout, new batches are dropped at once (counted
 * export_timeout): a stalled collector holds one connection. Sending resumes when that export ends (answer or
 * error), or STALL_GIVE_UP_MS after its timeout.
 */
class StallGuardExporter {
  constructor(inner, { timeoutMs, counts, onTaken, endpoint, log }) {
    this.inner = inner;
    this.timeoutMs = timeoutMs;
    this.counts = counts;
    this.onTaken = onTaken;
    this.endpoint = endpoint;
    this.log = log;
    this.unanswered = new Map(); // export number -> when it was sent (performance.now())
    this.sequence = 0;
    this.failing = false;
  }

  /** Whether an export is unanswered past the timeout (by its age: the processor's timer for it may have fired
   * before this one, and the processor sends the next batch at once). */
  #stalled() {
    const now = performance.now();
    for (const [id, sentAt] of this.unanswered) {
      const age = now - sentAt;
      if (age >= this.timeoutMs + STALL_GIVE_UP_MS) this.unanswered.delete(id); // given up for good
      else if (age >= this.timeoutMs - 1) return true; // 1 ms: the processor set its timer just before sending
    }
    return false;
  }

  #outcome(n, reason, error) {
    if (reason === null) {
      this.counts.exported(n);
      if (this.failing) this.log(`exports to ${this.endpoint} succeed again`);
      this.failing = false;
      return;
    }
    this.counts.dropped(reason, n);
    if (!this.failing) {
      this.log(`export of ${n} spans to ${this.endpoint} failed (${error}); spans are dropped, counted in `
        + 'tracing_spans_dropped_total, until an export succeeds');
    }
    this.failing = true;
  }

  export(spans, done) {
    this.onTaken(spans.length);
    if (this.#stalled()) {
      this.#outcome(spans.length, 'export_timeout', 'an earlier export is still unanswered');
      done({ code: ExportResultCode.FAILED, error: new Error('an earlier export to the collector is still unanswered') });
      return;
    }
    const id = (this.sequence += 1);
    this.unanswered.set(id, performance.now());
    let settled = false;
    const timer = setTimeout(() => {
      settled = true;
      this.#outcome(spans.length, 'export_timeout', `no answer within ${this.timeoutMs} ms`);
      done({ code: ExportResultCode.FAILED, error: new Error(`no answer within ${this.timeoutMs} ms`) });
    }, this.timeoutMs);
    timer.unref();
    this.inner.export(spans, (result) => {
      clearTimeout(timer);
      this.unanswered.delete(id);
      if (settled) return; // counted as timed out already (a late success is not counted again)
      settled = true;
      const ok = result.code === ExportResultCode.SUCCESS;
      this.#outcome(spans.length, ok ? null : 'export_failed', result.error?.message || 'export failed');
      done(result);
    });
  }

  shutdown() {
    return this.inner.shutdown();
  }

  forceFlush() {
    return this.inner.forceFlush();
  }
}

/**
 * The batch processor's wrapper that counts the spans it drops because its queue is full. The processor drops a
 * sampled span that ends while `maxQueueSize` spans wait, without telling anyone (a debug message); its queue holds
 * the spans it accepted and has not handed to the exporter yet, which both wrappers see.
 */
class QueueCountingProcessor {
  constructor(inner, { maxQueueSize, counts }) {
    this.inner = inner;
    this.maxQueueSize = maxQueueSize;
    this.counts = counts;
    this.queued = 0;
    this.closed = false;
  }

  /** The exporter took `n` spans off the queue. */
  taken(n) {
    this.queued = Math.max(0, this.queued - n);
  }

  onStart(span, parentContext) {
    this.inner.onStart(span, parentContext);
  }

  onEnd(span) {
    // The processor's own rules: unsampled spans are not queued; after shutdown nothing is.
    if (!this.closed && (span.spanContext().traceFlags & TraceFlags.SAMPLED) !== 0) {
      if (this.queued >= this.maxQueueSize) this.counts.dropped('queue_full', 1);
      else this.queued += 1;
    }
    this.inner.onEnd(span);
  }

  forceFlush() {
    return this.inner.forceFlush();
  }

  shutdown() {
    this.closed = true;
    return this.inner.shutdown();
  }
}

/** The CLIENT span of one HTTP attempt to an upstream. */
class AttemptTrace {
  constructor(tracing, parentContext, { upstream, attempt, hedged, url }) {
    this.span = tracing.tracer.startSpan(`${upstream} attempt`, {
      kind: SpanKind.CLIENT,
      attributes: {
        'mesh.upstream': upstream,
        'mesh.attempt': attempt,
        'mesh.hedged': hedged,
        'http.request.method': 'GET',
        'url.full': url,
      },
    }, parentContext);
    // The request carries this span's own context: the upstream's server span becomes its child.
    this.headers = {};
    tracing.propagator.inject(trace.setSpan(ROOT_CONTEXT, this.span), this.headers, defaultTextMapSetter);
    this.ended = false;
  }

  /** The upstream answered (headers received), in time or late. */
  answered(status, instance) {
    this.span.setAttribute('http.response.status_code', status);
    if (instance) this.span.setAttribute('mesh.instance', instance);
  }

  /** The attempt timed out but is left running: its late answer may still complete the call. */
  late(reason) {
    this.span.addEvent('attempt timeout, waiting for a late answer', { 'mesh.reason': reason });
  }

  /**
   * @param {'ok'|'late_ok'|'error'|'timeout'|'cancelled'} outcome (see apps/README.md, "Tracing")
   * @param {string} [reason] why the attempt failed: the span's error status
   */
  end(outcome, reason) {
    if (this.ended) return;
    this.ended = true;
    this.span.setAttribute('mesh.outcome', outcome);
    if (outcome === 'error' || outcome === 'timeout') this.span.setStatus({ code: SpanStatusCode.ERROR, message: reason });
    this.span.end();
  }
}

/** The SERVER span of one compute request. */
class ComputeTrace {
  constructor(tracing, req, path) {
    this.tracing = tracing;
    // A valid incoming traceparent makes this span its child (and the parent-based sampler follows its decision).
    const parent = tracing.propagator.extract(ROOT_CONTEXT, req.headers, defaultTextMapGetter);
    this.span = tracing.tracer.startSpan('compute', {
      kind: SpanKind.SERVER,
      attributes: { 'http.request.method': req.method, 'url.path': path, 'http.route': path },
    }, parent);
    this.context = trace.setSpan(parent, this.span);
    // Returned to the client even when the span is not sampled: it is the trace id the upstreams were given.
    this.traceId = this.span.spanContext().traceId;
  }

  /** The span of the next attempt of an upstream call, the compute span's child. */
  attempt(details) {
    return new AttemptTrace(this.tracing, this.context, details);
  }

  /**
   * @param {number|null} status the answer's status, null when none was sent (connection closed)
   * @param {string|null} error what went wrong (the answer's `error`, or why there was no answer)
   */
  end(status, error) {
    if (status !== null) this.span.setAttribute('http.response.status_code', status);
    // A server span is in error when the server failed (5xx) or sent nothing; a 4xx is the client's error.
    if (status === null || status >= 500) {
      this.span.setStatus({ code: SpanStatusCode.ERROR, message: error || 'no answer sent' });
    }
    this.span.end();
  }
}

class Tracing {
  /**
   * @param {{instanceId: string, version: string|null, tracing: {endpoint: string}}} config from loadConfig():
   *   the collector's URL, and the resource's defaults (see above)
   * @param {{exported: (n: number) => void, dropped: (reason: string, n: number) => void}} counts metrics.js
   * @param {{log?: (line: string) => void}} [options]
   */
  constructor({ instanceId, version, tracing }, counts, { log = writeStderr } = {}) {
    // The SDK reports bad settings (an unknown sampler, a non-numeric size) through its diagnostic logger, which
    // writes nothing unless one is set: set one while it reads them, then silence it again (at run time it would
    // write a line per failed export, which the metrics count instead).
    diag.setLogger(new DiagConsoleLogger(), DiagLogLevel.WARN);
    try {
      this.endpoint = tracing.endpoint;
      // Read as the batch processor reads them, and passed to it, so that the counting and the processor agree.
      const maxQueueSize = getNumberFromEnv('OTEL_BSP_MAX_QUEUE_SIZE') ?? DEFAULT_MAX_QUEUE_SIZE;
      const exportTimeoutMs = getNumberFromEnv('OTEL_BSP_EXPORT_TIMEOUT') ?? DEFAULT_EXPORT_TIMEOUT_MS;
      this.flushBoundMs = Math.max(1, Math.min(exportTimeoutMs, SHUTDOWN_FLUSH_MS));
      const resource = defaultResource()
        .merge(resourceFromAttributes({
          'service.name': 'frontend',
          'service.instance.id': instanceId,
          ...(version ? { 'service.version': version } : {}),
        }))
        .merge(detectResources({ detectors: [envDetector] })); // OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME
      const exporter = new StallGuardExporter(new ZipkinExporter({ url: this.endpoint }), {
        timeoutMs: exportTimeoutMs,
        counts,
        onTaken: (n) => this.processor.taken(n),
        endpoint: this.endpoint,
        log,
      });
      // OTEL_BSP_SCHEDULE_DELAY and OTEL_BSP_MAX_EXPORT_BATCH_SIZE: read by the processor.
      this.processor = new QueueCountingProcessor(
        new BatchSpanProcessor(exporter, { maxQueueSize, exportTimeoutMillis: exportTimeoutMs }),
        { maxQueueSize, counts },
      );
      // The sampler: OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG, read by the provider. Not registered as the
      // global provider: the spans are made with this tracer and their contexts passed explicitly.
      this.provider = new BasicTracerProvider({ resource, spanProcessors: [this.processor] });
    } finally {
      diag.disable();
    }
    this.tracer = this.provider.getTracer('mesh-calculator-frontend');
    this.propagator = new W3CTraceContextPropagator();
  }

  /** Start the span of a compute request. */
  compute(req, path) {
    return new ComputeTrace(this, req, path);
  }

  /**
   * Send the queued spans, within a short bound (a dead collector must not hold up the exit). Spans of requests
   * still running are lost; app.close() calls this once every request has been answered.
   */
  async shutdown() {
    // Late attempts cut by the closed connection pools end their spans on the next turns of the event loop.
    await new Promise((resolve) => setImmediate(resolve));
    let timer;
    const bound = new Promise((resolve) => {
      timer = setTimeout(resolve, this.flushBoundMs);
    });
    await Promise.race([this.provider.shutdown().catch(() => {}), bound]);
    clearTimeout(timer);
  }
}

module.exports = { Tracing, ComputeTrace, AttemptTrace };
