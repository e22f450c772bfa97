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

/** name -> [parser, default]; a default of null is computed below. */
const SPEC = {
  APP_BIND: [bindAddress, '127.0.0.1'],
  APP_PORT: [integer(1, 65535), '8080'],
  INSTANCE_ID: [instanceId, null],
  ADD_SVC_URL: [upstreamUrl, 'http://127.0.0.1:9191'],
  SUB_SVC_URL: [upstreamUrl, 'http://127.0.0.1:9192'],
  UPSTREAM_TIMEOUT_MS: [integer(1, 600000), '2000'],
  UPSTREAM_RETRIES: [integer(0, 10), '1'],
  UPSTREAM_MAX_SOCKETS: [integer(1, 1024), '8'],
  UPSTREAM_MAX_REQUESTS_PER_SOCKET: [integer(1, 1000000), '16'],
  UPSTREAM_SOCKET_MAX_AGE_MS: [integer(1, 86400000), '10000'],
};

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

  const pool = {
    maxSockets: values.UPSTREAM_MAX_SOCKETS,
    maxRequestsPerSocket: values.UPSTREAM_MAX_REQUESTS_PER_SOCKET,
    maxSocketAgeMs: values.UPSTREAM_SOCKET_MAX_AGE_MS,
  };
  const upstream = (name, baseUrl) => ({
    name,
    baseUrl,
    timeoutMs: values.UPSTREAM_TIMEOUT_MS,
    retries: values.UPSTREAM_RETRIES,
    pool,
  });
  return {
    bind: values.APP_BIND,
    port: values.APP_PORT,
    instanceId: values.INSTANCE_ID ?? `${os.hostname()}:${values.APP_PORT}`,
    upstreams: {
      add: upstream('add-svc', values.ADD_SVC_URL),
      sub: upstream('sub-svc', values.SUB_SVC_URL),
    },
  };
}

module.exports = { loadConfig, ConfigError };
