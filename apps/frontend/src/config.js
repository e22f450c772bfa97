'use strict';
/**
 * Frontend settings from environment variables (an empty variable counts as
 * unset). loadConfig() throws ConfigError listing every invalid variable;
 * server.js turns that into exit code 2.
 */

const net = require('node:net');
const os = require('node:os');

const HOSTNAME_RE = /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/;
// Echoed in a response header: visible ASCII only, no spaces.
const INSTANCE_ID_RE = /^[\x21-\x7e]{1,128}$/;

class ConfigError extends Error {
  constructor(problems) {
    super(`invalid configuration:\n  ${problems.join('\n  ')}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

const integer = (min, max) => (raw) => {
  if (!/^[0-9]{1,9}$/.test(raw) || Number(raw) < min || Number(raw) > max) {
    throw new Error(`must be an integer from ${min} to ${max}`);
  }
  return Number(raw);
};

const bindAddress = (raw) => {
  if (net.isIP(raw) === 0 && !HOSTNAME_RE.test(raw)) throw new Error('must be an IP address or a host name');
  return raw;
};

const instanceId = (raw) => {
  if (!INSTANCE_ID_RE.test(raw)) throw new Error('must be 1-128 visible ASCII characters, no spaces');
  return raw;
};

/** Base URL of an upstream: plain http (the mesh proxy listens on loopback), optional path prefix. */
const upstreamUrl = (raw) => {
  let url;
  try {
    url = new URL(raw);
  } catch {
    throw new Error('must be an absolute URL such as http://127.0.0.1:9191');
  }
  if (url.protocol !== 'http:') throw new Error('must use http://');
  if (url.search || url.hash || url.username || url.password) {
    throw new Error('must not contain a query, fragment or credentials');
  }
  return `${url.origin}${url.pathname.replace(/\/+$/, '')}`;
};

/** Where the trace collector takes Zipkin's JSON v2 spans (in the mesh: the instance's sidecar upstream). */
const collectorUrl = (raw) => {
  let url;
  try {
    url = new URL(raw);
  } catch {
    throw new Error('must be an absolute URL such as http://127.0.0.1:9411/api/v2/spans');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('must use http:// or https://');
  return url.href;
};

const onOff = (raw) => {
  if (raw !== 'on' && raw !== 'off') throw new Error('must be on or off');
  return raw === 'on';
};

const rate = (raw) => {
  if (!/^(0(\.[0-9]+)?|1(\.0+)?)$/.test(raw)) throw new Error('must be a number from 0 to 1');
  return Number(raw);
};

// Per-call policy settings: UPSTREAM_<X> for every upstream, <NAME>_<X> (ADD_SVC_<X>, SUB_SVC_<X>) for one.
const POLICY = {
  TIMEOUT_MS: [integer(1, 600000), '2000'], // the whole call, retries included
  ATTEMPT_TIMEOUT_MS: [integer(1, 600000), '250'], // one attempt
  RETRIES: [integer(0, 10), '3'],
  RETRY_BACKOFF_MS: [integer(0, 60000), '10'], // first backoff; decorrelated jitter, at most 20x
  // Retries at most this % of the calls of the last 10 s (Google SRE's per-client budget: 10 %, so that retries
  // add at most a tenth to a busy upstream's load) ...
  RETRY_BUDGET_PERCENT: [integer(0, 1000), '10'],
  RETRY_BUDGET_MIN_PER_S: [integer(0, 100000), '10'], // ... or this many per second, whichever is more
  BREAKER_FAILURES: [integer(1, 1000), '5'], // consecutive broken calls (502, not 504) that open the breaker
  BREAKER_HALF_OPEN_MS: [integer(1, 3600000), '5000'], // open -> half-open after this long
};

/** name -> [parser, default]; a default of null is computed below. */
const SPEC = {
  APP_BIND: [bindAddress, '127.0.0.1'],
  APP_PORT: [integer(1, 65535), '8080'],
  APP_ADMIN_PORT: [integer(0, 65535), '0'], // 127.0.0.1 only; 0: no admin endpoint
  INSTANCE_ID: [instanceId, null],
  APP_VERSION: [(raw) => {
    if (!/^[a-z][a-z0-9-]{0,30}$/.test(raw)) throw new Error('must be lowercase letters, digits and -');
    return raw;
  }, null],
  ADD_SVC_URL: [upstreamUrl, 'http://127.0.0.1:9191'],
  SUB_SVC_URL: [upstreamUrl, 'http://127.0.0.1:9192'],
  RESILIENCE: [onOff, 'on'],
  // The connection pool per upstream (pool.js): up to MAX_SOCKETS connections, MIN_SOCKETS opened before idle
  // ones are reused; a connection lives MAX_REQUESTS_PER_SOCKET requests or SOCKET_MAX_AGE_MS, only
  // REROLL_REQUESTS while the pool reaches too few instances.
  UPSTREAM_MAX_SOCKETS: [integer(1, 1024), '8'],
  UPSTREAM_MIN_SOCKETS: [integer(1, 1024), '8'],
  UPSTREAM_MAX_REQUESTS_PER_SOCKET: [integer(1, 10000000), '100000'],
  UPSTREAM_SOCKET_MAX_AGE_MS: [integer(1, 86400000), '30000'],
  UPSTREAM_REROLL_REQUESTS: [integer(1, 10000000), '16'],
  FAULT_LATENCY_MS: [integer(0, 60000), '0'],
  FAULT_LATENCY_JITTER_MS: [integer(0, 60000), '0'],
  FAULT_ERROR_RATE: [rate, '0'],
  FAULT_ABORT_RATE: [rate, '0'],
  // Tracing (tracing.js) is on when this is set; the OpenTelemetry SDK reads the other OTEL_* variables itself.
  OTEL_EXPORTER_ZIPKIN_ENDPOINT: [collectorUrl, null],
};
for (const [key, spec] of Object.entries(POLICY)) {
  SPEC[`UPSTREAM_${key}`] = spec;
  SPEC[`ADD_SVC_${key}`] = [spec[0], null];
  SPEC[`SUB_SVC_${key}`] = [spec[0], null];
}

/**
 * @param {Record<string, string|undefined>} env usually process.env
 * @returns {object} settings, see SPEC
 * @throws {ConfigError}
 */
function loadConfig(env) {
  const values = {};
  const problems = [];
  for (const [name, [parse, fallback]] of Object.entries(SPEC)) {
    const raw = env[name] || fallback;
    if (raw === null) continue;
    try {
      values[name] = parse(raw);
    } catch (err) {
      problems.push(`${name}=${JSON.stringify(raw)}: ${err.message}`);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);

  const faults = {
    latency_ms: values.FAULT_LATENCY_MS,
    latency_jitter_ms: values.FAULT_LATENCY_JITTER_MS,
    error_rate: values.FAULT_ERROR_RATE,
    abort_rate: values.FAULT_ABORT_RATE,
  };
  if (faults.error_rate + faults.abort_rate > 1) throw new ConfigError(['FAULT_ERROR_RATE + FAULT_ABORT_RATE must not exceed 1']);

  const pool = {
    maxSockets: values.UPSTREAM_MAX_SOCKETS,
    minSockets: values.UPSTREAM_MIN_SOCKETS,
    maxRequestsPerSocket: values.UPSTREAM_MAX_REQUESTS_PER_SOCKET,
    maxSocketAgeMs: values.UPSTREAM_SOCKET_MAX_AGE_MS,
    rerollRequests: values.UPSTREAM_REROLL_REQUESTS,
  };
  const upstream = (name, prefix, baseUrl) => {
    const get = (key) => values[`${prefix}_${key}`] ?? values[`UPSTREAM_${key}`];
    return {
      name,
      baseUrl,
      timeoutMs: get('TIMEOUT_MS'),
      attemptTimeoutMs: get('ATTEMPT_TIMEOUT_MS'),
      retries: get('RETRIES'),
      backoffMs: get('RETRY_BACKOFF_MS'),
      retryBudget: { percent: get('RETRY_BUDGET_PERCENT'), minPerSecond: get('RETRY_BUDGET_MIN_PER_S') },
      breakerFailures: get('BREAKER_FAILURES'),
      breakerHalfOpenMs: get('BREAKER_HALF_OPEN_MS'),
      resilience: values.RESILIENCE,
      pool,
    };
  };
  return {
    bind: values.APP_BIND,
    port: values.APP_PORT,
    adminPort: values.APP_ADMIN_PORT,
    instanceId: values.INSTANCE_ID ?? `${os.hostname()}:${values.APP_PORT}`,
    version: values.APP_VERSION ?? null,
    faults,
    // OTEL_SDK_DISABLED=true turns the SDK off whatever else is set (the specification's switch; any other value
    // counts as false, as in the SDK).
    tracing: values.OTEL_EXPORTER_ZIPKIN_ENDPOINT && (env.OTEL_SDK_DISABLED || '').trim().toLowerCase() !== 'true'
      ? { endpoint: values.OTEL_EXPORTER_ZIPKIN_ENDPOINT }
      : null,
    upstreams: {
      add: upstream('add-svc', 'ADD_SVC', values.ADD_SVC_URL),
      sub: upstream('sub-svc', 'SUB_SVC', values.SUB_SVC_URL),
    },
  };
}

module.exports = { loadConfig, ConfigError };
