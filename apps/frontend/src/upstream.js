'use strict';
/**
 * Client for one arith upstream (add-svc or sub-svc) reached through the mesh, with the
 * caller-side resilience that Consul's built-in (L4) proxy does not have.
 *
 * Policies (cockatiel, see apps/README.md), outermost first:
 *   circuit breaker  opens after `breakerFailures` consecutive calls that failed because the upstream is
 *                    broken or gone (5xx answers, refused or cut connections, after their retries); while
 *                    open, calls fail at once (503 naming the upstream); half-opens after `breakerHalfOpenMs`.
 *                    A call that only ran out of time (504) is no such failure: a busy upstream answers late,
 *                    and opening the breaker on it turned a burst the mesh could carry into an outage
 *                    (issue 24); the retry budget and the edge's concurrency limit are what bound a busy mesh
 *   retry            up to `retries` more attempts for idempotent GETs that failed with a
 *                    connection error, a 5xx answer or an attempt timeout, with decorrelated
 *                    jittered exponential backoff from `backoffMs`, while the retry budget allows
 *   attempt timeout  each attempt gets `attemptTimeoutMs`; the whole call `timeoutMs`
 * Outlier ejection, connection by connection: the proxy picks an instance per connection, and a
 * connection knows its instance from the answers' X-Instance-Id. An instance that answered 5xx or
 * too late keeps no connection in the pool for 5 s, so retries (which take pooled connections)
 * go to the instances that answer well. A connection error ejects the connection's instance too
 * (its pooled connections were cut with it); while an instance is ejected, the pool keeps its
 * connections to the good ones past their use and age limits (pool.js). An attempt that timed out is not cancelled: its late answer still counts for the
 * call if it arrives before the retries' (a hedged retry), so a merely slow instance delays a call
 * but does not fail it, whichever instances the proxy picks for the retries' new connections.
 * With resilience off (admin endpoint), a call is one attempt on the plain pool.
 *
 * Error mapping: no connection / reset / 5xx / malformed -> 502; no answer in time -> 504;
 * circuit open -> 503; upstream answered 400 (operand rejected) -> 422 (never retried).
 *
 * Tracing (tracing.js): given the compute's trace, every attempt that is sent gets its own CLIENT span, and its
 * request the span's `traceparent`. The span lasts as long as the attempt's request: an attempt left running after
 * its timeout ends when its late answer comes (outcome late_ok when that answer completed the call, else timeout)
 * or when it is closed. The outcomes: ok, late_ok, error (connection error, 5xx, 400, malformed answer), timeout,
 * cancelled (another attempt's late answer completed the call first).
 */

const http = require('node:http');
const {
  BrokenCircuitError,
  CircuitState,
  ConsecutiveBreaker,
  ExponentialBackoff,
  TaskCancelledError,
  TimeoutStrategy,
  circuitBreaker,
  decorrelatedJitterGenerator,
  handleWhen,
  retry,
  timeout,
  wrap,
} = require('cockatiel');
const { BoundedAgent, INSTANCE, UNKNOWN_INSTANCE } = require('./pool');
const { NO_OBSERVER } = require('./metrics');
// An attempt's span when the call is not traced: the methods #request calls, doing nothing (tracing.js is not
// loaded when tracing is off).
const NO_ATTEMPT = { headers: {}, answered() {}, late() {}, end() {} };

// How long an instance that answered 5xx or too late stays out of the connection pool.
const EJECT_MS = 5000;

const MAX_RESPONSE_BYTES = 64 * 1024;
const CONNECTION_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH']);
const BREAKER_STATES = { [CircuitState.Closed]: 'closed', [CircuitState.Open]: 'open', [CircuitState.HalfOpen]: 'half-open', [CircuitState.Isolated]: 'isolated' };

class UpstreamError extends Error {
  /**
   * @param {number} status HTTP status the frontend should answer with
   * @param {string} upstream service name, e.g. "add-svc"
   * @param {string} message
   */
  constructor(status, upstream, message) {
    super(message);
    this.name = 'UpstreamError';
    this.status = status;
    this.upstream = upstream;
  }
}

/** Failure of one attempt; `retryable` for connection errors, 5xx answers and timeouts (GETs are idempotent). */
class AttemptError extends Error {
  constructor(status, message, { retryable = false } = {}) {
    super(message);
    this.status = status;
    this.retryable = retryable;
  }
}

/**
 * Retries allowed: at most `percent` % of the calls of the last `windowMs`, and `minPerSecond`
 * per second whatever the traffic, so that retries cannot multiply a failing upstream's load.
 */
class RetryBudget {
  constructor({ percent, minPerSecond, windowMs = 10000 }) {
    this.percent = percent;
    this.minPerSecond = minPerSecond;
    this.windowMs = windowMs;
    this.calls = [];
    this.retries = [];
  }

  #trim(now) {
    const since = now - this.windowMs;
    while (this.calls.length && this.calls[0] < since) this.calls.shift();
    while (this.retries.length && this.retries[0] < since) this.retries.shift();
  }

  recordCall(now = Date.now()) {
    this.calls.push(now);
  }

  /** Take one retry from the budget; false when it is spent. */
  take(now = Date.now()) {
    this.#trim(now);
    const allowed = Math.max((this.minPerSecond * this.windowMs) / 1000, (this.percent / 100) * this.calls.length);
    if (this.retries.length >= allowed) return false;
    this.retries.push(now);
    return true;
  }
}

class UpstreamClient {
  /**
   * @param {object} options see config.js (upstream settings)
   */
  constructor({ name, baseUrl, timeoutMs, attemptTimeoutMs, retries, backoffMs, retryBudget, breakerFailures,
    breakerHalfOpenMs, pool, resilience = true }) {
    this.name = name;
    this.baseUrl = baseUrl;
    this.timeoutMs = timeoutMs;
    this.attemptTimeoutMs = attemptTimeoutMs;
    this.resilience = resilience;
    this.agent = new BoundedAgent(pool);
    this.budget = new RetryBudget(retryBudget);
    this.stats = { calls: 0, attempts: 0, retries: 0, late_answers_used: 0, failures: 0, rejected: 0, budget_exhausted: 0 };
    // Who counts the calls, attempts and retries for /metrics (app.js sets it: Metrics.upstream()).
    this.observer = NO_OBSERVER;

    // The breaker counts calls that failed after their retries because the upstream is broken or gone (502:
    // 5xx answers, connection errors, malformed answers); not a rejected operand (422), not a late answer (504).
    this.breaker = circuitBreaker(handleWhen((err) => (err instanceof AttemptError || err instanceof UpstreamError)
      && err.status === 502), {
      halfOpenAfter: breakerHalfOpenMs,
      breaker: new ConsecutiveBreaker(breakerFailures),
    });
    this.retry = retry(
      handleWhen((err) => this.#retryable(err)),
      {
        maxAttempts: retries,
        backoff: new ExponentialBackoff({ initialDelay: backoffMs, maxDelay: backoffMs * 20, generator: decorrelatedJitterGenerator }),
      },
    );
    this.retry.onRetry(() => {
      this.stats.retries += 1;
      this.observer.retry();
    });
    // abortOnReturn off: aborting every finished attempt's signal costs a DOMException per call (a tenth of
    // the frontend's CPU); the one attempt that can still be running when the call returns (beaten by a late
    // answer) is cancelled in execute() instead.
    this.attemptTimeout = timeout(attemptTimeoutMs, { strategy: TimeoutStrategy.Aggressive, abortOnReturn: false });
    this.policy = wrap(this.breaker, this.retry, this.attemptTimeout);
  }

  #retryable(err) {
    const retryable = err instanceof TaskCancelledError || (err instanceof AttemptError && err.retryable);
    if (!retryable) return false;
    if (this.budget.take()) return true;
    this.stats.budget_exhausted += 1;
    return false;
  }

  get breakerState() {
    return BREAKER_STATES[this.breaker.state] || 'unknown';
  }

  /** What /health reports for this upstream. */
  status() {
    return { breaker: this.breakerState, resilience: this.resilience ? 'on' : 'off', ...this.stats };
  }

  /**
   * GET {baseUrl}/api/v1/execute?l=&r=
   * @param {import('./tracing').ComputeTrace|null} [computeTrace] the compute's trace: a span per attempt
   * @returns {Promise<{result: number, instance: string|null, attempts: number, breaker: string}>}
   * @throws {UpstreamError}
   */
  async execute(l, r, computeTrace = null) {
    const url = `${this.baseUrl}/api/v1/execute?l=${encodeURIComponent(l)}&r=${encodeURIComponent(r)}`;
    this.stats.calls += 1;
    this.budget.recordCall();
    const started = process.hrtime.bigint();
    const seconds = () => Number(process.hrtime.bigint() - started) / 1e9;
    const deadline = AbortSignal.timeout(this.timeoutMs);
    let attempts = 0;
    // The first good late answer of an attempt that timed out: it completes the call (hedging).
    let lateResult = null;
    let onLateResult;
    const lateWin = new Promise((resolve) => {
      onLateResult = resolve;
    });
    // The spans of this call's attempts that timed out and still wait for their answer: an attempt sent
    // meanwhile runs alongside them (mesh.hedged).
    const lateSpans = new Set();
    const timeoutReason = () => (deadline.aborted
      ? `no answer within ${this.timeoutMs} ms (the call's deadline)`
      : `no answer within ${this.resilience ? this.attemptTimeoutMs : this.timeoutMs} ms`);
    const onLate = (answer, span, reason) => {
      lateSpans.delete(span);
      if (lateResult) {
        span.end('timeout', `${reason}; answered after the call was complete`);
        return;
      }
      try {
        lateResult = this.#interpret(answer);
      } catch (err) {
        span.end('timeout', `${reason}; then ${err.message}`);
        return; // a late failure changes nothing
      }
      this.stats.late_answers_used += 1;
      span.end('late_ok');
      onLateResult(lateResult);
    };
    const attempt = async (signal) => {
      if (lateResult) return lateResult;
      attempts += 1;
      this.stats.attempts += 1;
      this.observer.attempt();
      const span = computeTrace
        ? computeTrace.attempt({ upstream: this.name, attempt: attempts, hedged: lateSpans.size > 0, url })
        : NO_ATTEMPT;
      const hedge = {
        span,
        over: () => lateResult !== null,
        cancel: null,
        // What #request saw, for the span: the attempt timed out, and was left running (late: its span ends with
        // its late answer or its closing), or was cancelled because another attempt's late answer won.
        timedOut: false,
        late: null, // why it is late
        cancelled: false,
        wentLate: () => {
          hedge.late = timeoutReason();
          lateSpans.add(span);
          span.late(hedge.late);
        },
        onLate: (answer) => onLate(answer, span, hedge.late),
        lateFailed: () => {
          lateSpans.delete(span);
          span.end('timeout', hedge.late);
        },
      };
      const own = this.#request(url, signal, hedge).then((answer) => this.#interpret(answer)).then(
        (result) => {
          span.end('ok');
          return result;
        },
        (err) => {
          if (!hedge.late) {
            if (hedge.cancelled) span.end('cancelled');
            else if (hedge.timedOut) span.end('timeout', timeoutReason());
            else span.end('error', err?.message || String(err));
          }
          throw err;
        },
      );
      return Promise.race([own, lateWin.then((result) => {
        hedge.cancel?.(); // a late answer won: this attempt's request is no longer needed
        return result;
      })]);
    };
    try {
      const answer = this.resilience
        ? await this.policy.execute(({ signal }) => attempt(signal), deadline)
        : await attempt(deadline);
      this.observer.call(answer.instance, 'ok', seconds());
      return { ...answer, attempts, breaker: this.breakerState };
    } catch (err) {
      this.stats.failures += 1;
      const failure = this.#toUpstreamError(err, deadline);
      this.observer.call(null, String(failure.status), seconds());
      throw failure;
    }
  }

  #toUpstreamError(err, deadline) {
    if (err instanceof UpstreamError) return err;
    if (err instanceof BrokenCircuitError) {
      this.stats.rejected += 1;
      return new UpstreamError(503, this.name, `${this.name}: circuit open after repeated failures, not calling it`);
    }
    if (err instanceof TaskCancelledError || deadline.aborted || err?.name === 'AbortError') {
      const limit = deadline.aborted ? this.timeoutMs : this.attemptTimeoutMs;
      return new UpstreamError(504, this.name, `${this.name}: no answer within ${limit} ms`);
    }
    if (err instanceof AttemptError) return new UpstreamError(err.status, this.name, `${this.name}: ${err.message}`);
    return new UpstreamError(502, this.name, `${this.name}: ${err?.message || err}`);
  }

  /** Release pooled connections (used on shutdown). */
  close() {
    this.agent.destroy();
  }

  /**
   * One HTTP attempt, cancelled by `signal`. Resolves with the status, headers and body; rejects with
   * AttemptError. With resilience on, an attempt
   * cancelled by its timeout is rejected at once but left running for two more attempt timeouts: its late
   * answer goes to `hedge.onLate` (and ejects the slow instance). Once `hedge.over()` (another attempt's
   * late answer completed the call), cancelling it just closes it.
   */
  #request(url, signal, hedge) {
    return new Promise((resolve, reject) => {
      if (signal.aborted) {
        hedge.timedOut = true;
        reject(new AttemptError(504, `no answer within ${this.attemptTimeoutMs} ms`, { retryable: true }));
        return;
      }
      let responded = false;
      let late = false;
      const req = http.get(url, { agent: this.agent, headers: { accept: 'application/json', ...hedge.span.headers } });
      const onAbort = () => {
        hedge.timedOut = true;
        // Resilience off, an answer already coming, the call over, or still queued for a pooled
        // connection (nothing sent, nothing to learn): cancel it, freeing its place in the pool.
        if (!this.resilience || responded || hedge.over() || !req.socket) {
          req.destroy(new AttemptError(504, 'cancelled', { retryable: true }));
          return;
        }
        // Too late for this call (its retry is on its way), but let the answer arrive for two more attempt
        // timeouts: it may still complete the call (hedging) and tells which instance was slow. Not longer:
        // a connection into a dead node never answers and must not keep its place in the pool.
        late = true;
        hedge.wentLate();
        this.agent.eject(req.socket[INSTANCE] || UNKNOWN_INSTANCE, EJECT_MS);
        setTimeout(() => req.destroy(), Math.min(2 * this.attemptTimeoutMs, this.timeoutMs)).unref();
        reject(new AttemptError(504, `no answer within ${this.attemptTimeoutMs} ms`, { retryable: true }));
      };
      signal.addEventListener('abort', onAbort, { once: true });
      hedge.cancel = () => {
        if (late) return;
        hedge.cancelled = true;
        req.destroy(new AttemptError(504, 'cancelled', { retryable: true }));
      };
      const done = () => {
        hedge.cancel = null;
        signal.removeEventListener('abort', onAbort);
      };
      const fail = (err) => {
        done();
        if (late) {
          hedge.lateFailed(); // closed, or failed, before its late answer came
          return;
        }
        if (err instanceof AttemptError) return reject(err);
        const connection = !responded && (CONNECTION_CODES.has(err.code) || /socket hang up/.test(err.message));
        if (connection && this.resilience) this.agent.eject(req.socket?.[INSTANCE] || UNKNOWN_INSTANCE, EJECT_MS);
        reject(new AttemptError(502, `${responded ? 'response failed' : 'connection failed'}: ${err.message}`,
          { retryable: connection }));
      };
      req.on('error', fail);
      req.on('response', (res) => {
        responded = true;
        const instance = res.headers['x-instance-id'];
        hedge.span.answered(res.statusCode, instance);
        const bad = late || res.statusCode >= 500;
        this.agent.noteAnswer(res.socket, instance, bad);
        if (bad && this.resilience) this.agent.eject(instance, EJECT_MS);
        const chunks = [];
        let size = 0;
        res.on('data', (chunk) => {
          size += chunk.length;
          if (size > MAX_RESPONSE_BYTES) {
            req.destroy(new AttemptError(502, `response larger than ${MAX_RESPONSE_BYTES} bytes`));
          } else {
            chunks.push(chunk);
          }
        });
        res.on('error', fail);
        res.on('close', () => {
          if (!res.complete) fail(new Error('connection closed before the response was complete'));
        });
        res.on('end', () => {
          done();
          const answer = { status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') };
          if (late) hedge.onLate(answer);
          else resolve(answer);
        });
      });
    });
  }

  /** Turn an HTTP answer into a result, or throw (AttemptError for what a retry may fix). */
  #interpret({ status, headers, body }) {
    let payload;
    try {
      payload = JSON.parse(body);
    } catch {
      payload = undefined;
    }
    if (status === 400) {
      const detail = typeof payload?.error === 'string' ? payload.error : 'bad request';
      throw new UpstreamError(422, this.name, `${this.name} rejected the operation: ${detail}`);
    }
    if (status >= 500) {
      throw new AttemptError(502, `${this.name} answered HTTP ${status}`, { retryable: true });
    }
    if (status < 200 || status > 299) {
      throw new UpstreamError(502, this.name, `${this.name} answered HTTP ${status}`);
    }
    if (!Number.isSafeInteger(payload?.result)) {
      throw new AttemptError(502, `${this.name} sent a malformed answer (no integer "result")`);
    }
    return { result: payload.result, instance: headers['x-instance-id'] ?? null };
  }
}

module.exports = { UpstreamClient, UpstreamError, RetryBudget };
