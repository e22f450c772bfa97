'use strict';
/**
 * Prometheus metrics of one frontend instance (prom-client), served on GET /metrics:
 *
 *   http_requests_total{instance_id, route, method, status}                      counter
 *   http_request_duration_seconds{instance_id, route, method, status}            histogram, seconds
 *   upstream_calls_total{instance_id, upstream, upstream_instance, outcome}      counter: one per call (after its
 *       retries), by the instance that gave the answer ('' for a failed call) and the outcome: ok, or the status
 *       the call failed with (422 operand refused, 502, 503 breaker open, 504 no answer in time)
 *   upstream_call_duration_seconds{instance_id, upstream, outcome}               histogram, seconds, retries included
 *   upstream_attempts_total{instance_id, upstream}                               counter: HTTP attempts (retries included)
 *   upstream_retries_total{instance_id, upstream}                                counter
 *   upstream_breaker_state{instance_id, upstream, state}                         gauge: 1 for the breaker's current
 *       state (closed, open, half-open, isolated), 0 for the others
 *   process_* and nodejs_*                                                       prom-client's defaults (CPU, memory,
 *       event loop lag)
 * With tracing on (tracing.js), and only then:
 *   tracing_spans_exported_total{instance_id}                                    counter: spans the collector accepted
 *   tracing_spans_dropped_total{instance_id, reason}                             counter: spans dropped instead, by reason:
 *       queue_full (the export queue was full), export_failed (the collector refused the batch or could not be
 *       reached), export_timeout (no answer within OTEL_BSP_EXPORT_TIMEOUT, or an earlier batch still had none)
 *
 * `route` is a route of the app's (/api/v1/compute, /health, /metrics, /admin/...) or "other", `method` a
 * known method or "other": labels keep a bounded number of values. `instance_id` is INSTANCE_ID.
 */

const promClient = require('prom-client');

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE']);
// An upstream call takes about a millisecond through the mesh, a compute (16 calls) tens of milliseconds; the
// buckets reach the seconds that latency faults and timeouts add.
const BUCKETS = [0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const BREAKER_STATES = ['closed', 'open', 'half-open', 'isolated'];
const TRACING_DROP_REASONS = ['queue_full', 'export_failed', 'export_timeout'];

class Metrics {
  /**
   * @param {string} instanceId
   * @param {Iterable<string>} routes the app's routes (any other path counts as "other")
   */
  constructor(instanceId, routes) {
    this.instanceId = instanceId;
    this.routes = new Set(routes);
    this.registry = new promClient.Registry();
    this.registry.setDefaultLabels({ instance_id: instanceId });
    const registers = [this.registry];
    promClient.collectDefaultMetrics({ register: this.registry });
    this.requests = new promClient.Counter({
      name: 'http_requests_total', help: 'HTTP requests answered, by route, method and status',
      labelNames: ['route', 'method', 'status'], registers,
    });
    this.requestDuration = new promClient.Histogram({
      name: 'http_request_duration_seconds', help: 'Time to answer an HTTP request',
      labelNames: ['route', 'method', 'status'], buckets: BUCKETS, registers,
    });
    this.calls = new promClient.Counter({
      name: 'upstream_calls_total', help: 'Upstream calls (after retries), by the instance that answered and the outcome',
      labelNames: ['upstream', 'upstream_instance', 'outcome'], registers,
    });
    this.callDuration = new promClient.Histogram({
      name: 'upstream_call_duration_seconds', help: 'Time of an upstream call, its retries included',
      labelNames: ['upstream', 'outcome'], buckets: BUCKETS, registers,
    });
    this.attempts = new promClient.Counter({
      name: 'upstream_attempts_total', help: 'HTTP attempts to an upstream (first tries and retries)',
      labelNames: ['upstream'], registers,
    });
    this.retries = new promClient.Counter({
      name: 'upstream_retries_total', help: 'Retries of upstream calls', labelNames: ['upstream'], registers,
    });
    this.clients = [];
    const clients = this.clients;
    this.breaker = new promClient.Gauge({
      name: 'upstream_breaker_state', help: "1 for the upstream circuit breaker's current state, 0 for the others",
      labelNames: ['upstream', 'state'], registers,
      collect() {
        for (const client of clients) {
          for (const state of BREAKER_STATES) this.set({ upstream: client.name, state }, client.breakerState === state ? 1 : 0);
        }
      },
    });
  }

  /** The observer an UpstreamClient reports its calls, attempts and retries to; its breaker is read at scrape time. */
  upstream(client) {
    this.clients.push(client);
    const upstream = client.name;
    const attempts = this.attempts.labels(upstream);
    const retries = this.retries.labels(upstream);
    // At 0 from the start: "no retry yet" is a series too (rates and dashboards show it as a line at 0).
    attempts.inc(0);
    retries.inc(0);
    return {
      call: (instance, outcome, seconds) => {
        this.calls.labels(upstream, instance || '', outcome).inc();
        this.callDuration.labels(upstream, outcome).observe(seconds);
      },
      attempt: () => attempts.inc(),
      retry: () => retries.inc(),
    };
  }

  /** The counters tracing.js reports its exported and dropped spans to (made only when tracing is on). */
  tracing() {
    const registers = [this.registry];
    const exported = new promClient.Counter({
      name: 'tracing_spans_exported_total', help: 'Spans the trace collector accepted', registers,
    });
    const dropped = new promClient.Counter({
      name: 'tracing_spans_dropped_total', help: 'Spans dropped instead of exported (the queue was full, or their batch failed)',
      labelNames: ['reason'], registers,
    });
    for (const reason of TRACING_DROP_REASONS) dropped.labels(reason).inc(0);
    return {
      exported: (n) => exported.inc(n),
      dropped: (reason, n) => dropped.labels(reason).inc(n),
    };
  }

  /** Count one answered request (`seconds` from its arrival to its end). */
  request(path, method, status, seconds) {
    const route = this.routes.has(path) ? path : 'other';
    const labels = [route, METHODS.has(method) ? method : 'other', String(status)];
    this.requests.labels(...labels).inc();
    this.requestDuration.labels(...labels).observe(seconds);
  }

  /** @returns {Promise<{contentType: string, text: string}>} the text exposition format */
  async render() {
    return { contentType: this.registry.contentType, text: await this.registry.metrics() };
  }
}

/** What an UpstreamClient reports to when nobody counts (tests, the default). */
const NO_OBSERVER = { call() {}, attempt() {}, retry() {} };

module.exports = { Metrics, NO_OBSERVER };
