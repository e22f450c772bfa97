'use strict';
/**
 * HTTP server of the calculator frontend:
 *   POST /api/v1/compute  {"expression": "1+2-3"} -> {"result": 0, "calls": [...]}
 *   GET  /health          status, and per upstream its breaker state and call counters
 *   GET  /metrics         Prometheus metrics (metrics.js): requests, upstream calls, retries, breakers
 * Every response but /metrics is JSON; every one carries X-Instance-Id; one JSON access-log line
 * is written per request. With tracing on (config.tracing, tracing.js), every compute request is a span, and its
 * answer (success or error) carries the trace id: the X-Trace-Id header and `trace_id` in the body.
 *
 * Admin endpoint, on 127.0.0.1:APP_ADMIN_PORT only (never through the mesh):
 *   GET/PUT/DELETE /admin/faults      fault injection on /api/v1/compute (faults.js)
 *   GET/PUT        /admin/resilience  {"enabled": true|false}: the upstream policies on or off
 */

const http = require('node:http');
const { parseExpression, ParseError } = require('./parser');
const { evaluate } = require('./calculator');
const { UpstreamClient, UpstreamError } = require('./upstream');
const { validateFaults, drawFault, isActive, FaultError, NONE } = require('./faults');
const { Metrics } = require('./metrics');

const MAX_BODY_BYTES = 16 * 1024;

/** An error answered as-is: status plus extra JSON fields. */
class HttpError extends Error {
  constructor(status, message, { fields = {}, headers = {} } = {}) {
    super(message);
    this.status = status;
    this.fields = fields;
    this.headers = headers;
  }
}

/** Default access logger: one JSON line on stdout (synchronous for files and pipes on Linux). */
function writeLogLine(record) {
  process.stdout.write(`${JSON.stringify(record)}\n`);
}

/** A handler's answer that is sent as it is, not as JSON (the metrics' text format). */
class RawBody {
  constructor(contentType, text) {
    this.contentType = contentType;
    this.text = text;
  }
}

function sendJson(res, status, body, headers = {}) {
  if (res.headersSent || res.destroyed) return;
  const raw = body instanceof RawBody;
  const payload = raw ? body.text : `${JSON.stringify(body)}\n`;
  res.writeHead(status, {
    ...headers,
    'Content-Type': raw ? body.contentType : 'application/json',
    'Content-Length': Buffer.byteLength(payload),
  });
  res.end(payload);
}

/** Read the whole request body, refusing more than `limit` bytes with 413. */
function readBody(req, limit) {
  // The rest of an oversized body is not read: close the connection after answering.
  const tooLarge = () =>
    new HttpError(413, `request body larger than ${limit} bytes`, { headers: { Connection: 'close' } });
  return new Promise((resolve, reject) => {
    if (Number(req.headers['content-length']) > limit) {
      reject(tooLarge());
      return;
    }
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > limit) {
        reject(tooLarge());
        req.removeAllListeners('data');
      } else {
        chunks.push(chunk);
      }
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
    req.on('close', () => {
      if (!req.complete) reject(new HttpError(400, 'client closed the connection before sending the whole body'));
    });
  });
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Validate the compute request and return its expression string. */
async function readExpression(req) {
  const mediaType = (req.headers['content-type'] || '').split(';')[0].trim().toLowerCase();
  if (mediaType !== 'application/json') {
    throw new HttpError(415, 'Content-Type must be application/json');
  }
  const raw = await readBody(req, MAX_BODY_BYTES);
  let body;
  try {
    body = JSON.parse(utf8.decode(raw));
  } catch {
    throw new HttpError(400, 'request body is not valid UTF-8 JSON');
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new HttpError(400, 'request body must be a JSON object');
  }
  if (!Object.hasOwn(body, 'expression')) throw new HttpError(400, 'missing field "expression"');
  if (typeof body.expression !== 'string') throw new HttpError(400, 'field "expression" must be a string');
  return body.expression;
}

/** Map any thrown error to [status, JSON body, extra headers]. */
function errorResponse(err) {
  if (err instanceof HttpError) return [err.status, { error: err.message, ...err.fields }, err.headers];
  if (err instanceof ParseError) return [400, { error: err.message, position: err.position }, {}];
  if (err instanceof UpstreamError) {
    return [err.status, { error: err.message, upstream: err.upstream, position: err.position }, {}];
  }
  process.stderr.write(`unexpected error: ${err && err.stack}\n`);
  return [500, { error: 'internal error' }, {}];
}

/**
 * @param {object} config from loadConfig()
 * @param {{log?: (record: object) => void}} [options] access logger (tests pass a collector)
 * @returns {{server: http.Server, listen: () => Promise<import('node:net').AddressInfo>, close: () => Promise<void>}}
 */
/** Sleep `ms` milliseconds. */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** An abort fault: close the connection without an answer. */
class AbortFault extends Error {}

const COMPUTE = '/api/v1/compute';

function createApp(config, { log = writeLogLine } = {}) {
  const clients = {
    '+': new UpstreamClient(config.upstreams.add),
    '-': new UpstreamClient(config.upstreams.sub),
  };
  let closing = false;
  let faults = validateFaults(config.faults || {});
  let metrics = null; // made below, once the routes are known

  // A handler gets the request and, for a traced compute, its trace (tracing.js's ComputeTrace, else null); it
  // resolves to [status, body]; errors are mapped by errorResponse().
  const routes = {
    [COMPUTE]: {
      POST: async (req, computeTrace) => {
        if (isActive(faults)) {
          const { delayMs, outcome } = drawFault(faults);
          if (delayMs > 0) await sleep(delayMs);
          if (outcome === 'abort') throw new AbortFault();
          if (outcome === 'error') throw new HttpError(500, 'injected fault: error', { fields: { instance: config.instanceId } });
        }
        const expression = await readExpression(req);
        const answer = await evaluate(parseExpression(expression), clients, computeTrace);
        return [200, config.version ? { ...answer, version: config.version } : answer];
      },
    },
    '/health': {
      GET: async () => [200, {
        status: 'ok',
        instance: config.instanceId,
        version: config.version,
        faults,
        upstreams: Object.fromEntries(Object.values(clients).map((c) => [c.name, c.status()])),
      }],
    },
  };
  routes['/health'].HEAD = routes['/health'].GET;
  routes['/metrics'] = {
    GET: async () => {
      const { contentType, text } = await metrics.render();
      return [200, new RawBody(contentType, text)];
    },
  };

  const readJson = async (req) => {
    try {
      return JSON.parse((await readBody(req, MAX_BODY_BYTES)).toString('utf8') || '{}');
    } catch (err) {
      if (err instanceof HttpError) throw err;
      throw new HttpError(400, 'request body is not valid JSON');
    }
  };
  const adminRoutes = {
    '/admin/faults': {
      GET: async () => [200, faults],
      PUT: async (req) => {
        try {
          faults = validateFaults(await readJson(req));
        } catch (err) {
          if (err instanceof FaultError) throw new HttpError(400, err.message);
          throw err;
        }
        return [200, faults];
      },
      DELETE: async () => {
        faults = { ...NONE };
        return [200, faults];
      },
    },
    '/admin/resilience': {
      GET: async () => [200, { enabled: clients['+'].resilience }],
      PUT: async (req) => {
        const body = await readJson(req);
        if (typeof body?.enabled !== 'boolean') throw new HttpError(400, 'send {"enabled": true} or {"enabled": false}');
        for (const client of Object.values(clients)) client.resilience = body.enabled;
        return [200, { enabled: body.enabled }];
      },
    },
  };

  metrics = new Metrics(config.instanceId, [...Object.keys(routes), ...Object.keys(adminRoutes)]);
  for (const client of Object.values(clients)) client.observer = metrics.upstream(client);
  // Loaded only when on: the OpenTelemetry SDK costs 16 MB of memory and 0.1 s at start-up.
  const tracing = config.tracing ? new (require('./tracing').Tracing)(config, metrics.tracing()) : null;

  async function dispatch(req, path, table, computeTrace) {
    const methods = table[path];
    if (!methods) throw new HttpError(404, `no route for ${path}`);
    const handler = methods[req.method];
    if (!handler) {
      throw new HttpError(405, `method ${req.method} not allowed on ${path}`, {
        headers: { Allow: Object.keys(methods).join(', ') },
      });
    }
    const [status, body] = await handler(req, computeTrace);
    return [status, body, {}];
  }

  const handle = (table) => (req, res) => {
    const started = process.hrtime.bigint();
    const path = req.url.split('?')[0];
    // The compute's span starts with the request and ends with its answer (or the connection's end).
    const computeTrace = tracing && table === routes && path === COMPUTE && req.method === 'POST'
      ? tracing.compute(req, path)
      : null;
    let failure = null; // why the request failed, for the span's status
    res.once('close', () => {
      const elapsedMs = Number(process.hrtime.bigint() - started) / 1e6;
      // 499 (nginx's convention): the client went away before the response was sent.
      const status = res.writableFinished ? res.statusCode : 499;
      computeTrace?.end(res.writableFinished ? res.statusCode : null,
        failure || (res.writableFinished ? null : 'connection closed before the answer was sent'));
      metrics.request(path, req.method, status, elapsedMs / 1000);
      log({
        instance: config.instanceId,
        method: req.method,
        path,
        status,
        duration_ms: Math.round(elapsedMs * 1000) / 1000,
      });
    });
    dispatch(req, path, table, computeTrace)
      .catch((err) => {
        if (err instanceof AbortFault) {
          failure = 'injected fault: abort (connection closed without an answer)';
          req.socket.destroy();
          return null;
        }
        return errorResponse(err);
      })
      .then((answer) => {
        if (!answer) return;
        const [status, plainBody, headers] = answer;
        let body = plainBody;
        const traceId = {};
        if (computeTrace) {
          // Even when the span is not sampled: it is the id the upstream calls carried.
          body = { ...body, trace_id: computeTrace.traceId };
          traceId['X-Trace-Id'] = computeTrace.traceId;
          if (status >= 500) failure = body.error;
        }
        // While shutting down, make keep-alive clients reconnect elsewhere.
        const connection = closing ? { Connection: 'close' } : {};
        const version = config.version ? { 'X-Version': config.version } : {};
        sendJson(res, status, body, {
          ...headers, ...connection, ...version, ...traceId, 'X-Instance-Id': config.instanceId,
        });
      })
      .catch((err) => {
        process.stderr.write(`cannot send response: ${err.stack}\n`);
        res.destroy();
      });
  };
  const server = http.createServer(handle(routes));
  const admin = config.adminPort ? http.createServer(handle(adminRoutes)) : null;

  return {
    server,
    admin,
    /** Start listening on config.bind:config.port (port 0 picks a free port), and the admin endpoint. */
    async listen() {
      const listenOn = (srv, port, bind) => new Promise((resolve, reject) => {
        srv.once('error', reject);
        srv.listen(port, bind, () => {
          srv.off('error', reject);
          resolve(srv.address());
        });
      });
      const address = await listenOn(server, config.port, config.bind);
      if (admin) await listenOn(admin, config.adminPort, '127.0.0.1');
      return address;
    },
    /** Stop accepting, finish in-flight requests, close idle keep-alive connections. */
    close() {
      closing = true;
      return new Promise((resolve) => {
        if (admin) {
          admin.close();
          admin.closeAllConnections();
        }
        server.close(() => {
          clients['+'].close();
          clients['-'].close();
          // Every request has been answered: send their spans (within a short bound).
          if (tracing) tracing.shutdown().then(resolve);
          else resolve();
        });
        server.closeIdleConnections();
      });
    },
  };
}

module.exports = { createApp, MAX_BODY_BYTES };
