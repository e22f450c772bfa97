'use strict';
/**
 * Client for one arith upstream (add-svc or sub-svc) reached through the mesh.
 *
 * Error mapping (see apps/README.md):
 *   no connection / reset / non-2xx / malformed answer -> UpstreamError 502
 *   no complete answer within timeoutMs                 -> UpstreamError 504
 *   upstream answered 400 (operand rejected)            -> UpstreamError 422
 * Retries: a request that failed with a connection error before any response
 * byte arrived is sent again, up to `retries` times, on a new connection
 * outside the pool (the pooled sockets may be just as stale). Timeouts are
 * never retried. The GET is idempotent, so a retry cannot double-apply.
 */

const http = require('node:http');
const { BoundedAgent } = require('./pool');

const MAX_RESPONSE_BYTES = 64 * 1024;
const RETRYABLE_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE']);

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

/** Failure of one attempt; `retryable` only for connection errors before any response. */
class AttemptError extends Error {
  constructor(status, message, retryable = false) {
    super(message);
    this.status = status;
    this.retryable = retryable;
  }
}

class UpstreamClient {
  /**
   * @param {object} options
   * @param {string} options.name service name used in errors, e.g. "add-svc"
   * @param {string} options.baseUrl e.g. "http://127.0.0.1:9191" (no trailing slash)
   * @param {number} options.timeoutMs deadline for one call, retries included
   * @param {number} options.retries extra attempts after a connection error
   * @param {object} options.pool {maxSockets, maxRequestsPerSocket, maxSocketAgeMs}
   */
  constructor({ name, baseUrl, timeoutMs, retries, pool }) {
    this.name = name;
    this.baseUrl = baseUrl;
    this.timeoutMs = timeoutMs;
    this.retries = retries;
    this.agent = new BoundedAgent(pool);
  }

  /**
   * GET {baseUrl}/api/v1/execute?l=&r=
   * @returns {Promise<{result: number, instance: string|null}>}
   * @throws {UpstreamError}
   */
  async execute(l, r) {
    const url = `${this.baseUrl}/api/v1/execute?${new URLSearchParams({ l: String(l), r: String(r) })}`;
    const deadline = Date.now() + this.timeoutMs;
    for (let attempt = 0; ; attempt += 1) {
      try {
        const response = await this.#request(url, deadline, attempt === 0 ? this.agent : false);
        return this.#interpret(response);
      } catch (err) {
        if (!(err instanceof AttemptError)) throw err;
        if (!err.retryable || attempt >= this.retries) {
          throw new UpstreamError(err.status, this.name, `${this.name}: ${err.message}`);
        }
      }
    }
  }

  /** Release pooled connections (used on shutdown). */
  close() {
    this.agent.destroy();
  }

  /**
   * One HTTP attempt. Resolves with the status, headers and body; rejects with
   * AttemptError. `agent === false` forces a fresh, unpooled connection.
   */
  #request(url, deadline, agent) {
    return new Promise((resolve, reject) => {
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        reject(new AttemptError(504, `no answer within ${this.timeoutMs} ms`));
        return;
      }
      let responded = false;
      const req = http.get(url, { agent, headers: { accept: 'application/json' } });
      const timer = setTimeout(() => {
        req.destroy(new AttemptError(504, `no answer within ${this.timeoutMs} ms`));
      }, remaining);
      const fail = (err) => {
        clearTimeout(timer);
        if (err instanceof AttemptError) return reject(err);
        const retryable = !responded && RETRYABLE_CODES.has(err.code);
        reject(new AttemptError(502, `${responded ? 'response failed' : 'connection failed'}: ${err.message}`, retryable));
      };
      req.on('error', fail);
      req.on('response', (res) => {
        responded = true;
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
          clearTimeout(timer);
          resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') });
        });
      });
    });
  }

  /** Turn an HTTP answer into a result, or throw UpstreamError. */
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
    if (status < 200 || status > 299) {
      throw new UpstreamError(502, this.name, `${this.name} answered HTTP ${status}`);
    }
    if (!Number.isSafeInteger(payload?.result)) {
      throw new UpstreamError(502, this.name, `${this.name} sent a malformed answer (no integer "result")`);
    }
    return { result: payload.result, instance: headers['x-instance-id'] ?? null };
  }
}

module.exports = { UpstreamClient, UpstreamError };
