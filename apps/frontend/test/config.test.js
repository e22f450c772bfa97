'use strict';

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const os = require('node:os');
const { loadConfig, ConfigError } = require('../src/config');

describe('loadConfig', () => {
  it('uses documented defaults', () => {
    const config = loadConfig({});
    assert.equal(config.bind, '127.0.0.1');
    assert.equal(config.port, 8080);
    assert.equal(config.instanceId, `${os.hostname()}:8080`);
    assert.deepEqual(config.upstreams.add, {
      name: 'add-svc',
      baseUrl: 'http://127.0.0.1:9191',
      timeoutMs: 2000,
      attemptTimeoutMs: 250,
      retries: 3,
      backoffMs: 10,
      retryBudget: { percent: 10, minPerSecond: 10 },
      breakerFailures: 5,
      breakerHalfOpenMs: 5000,
      resilience: true,
      pool: { maxSockets: 8, minSockets: 8, maxRequestsPerSocket: 100000, maxSocketAgeMs: 30000, rerollRequests: 16 },
    });
    assert.equal(config.adminPort, 0);
    assert.equal(config.version, null);
    assert.deepEqual(config.faults, { latency_ms: 0, latency_jitter_ms: 0, error_rate: 0, abort_rate: 0 });
    assert.equal(config.upstreams.sub.name, 'sub-svc');
    assert.equal(config.upstreams.sub.baseUrl, 'http://127.0.0.1:9192');
  });

  it('reads every variable, treating empty ones as unset', () => {
    const config = loadConfig({
      APP_BIND: '::1',
      APP_PORT: '9000',
      INSTANCE_ID: 'fe-1',
      ADD_SVC_URL: 'http://localhost:7001/prefix/',
      SUB_SVC_URL: '',
      UPSTREAM_TIMEOUT_MS: '500',
      UPSTREAM_RETRIES: '0',
      UPSTREAM_MAX_SOCKETS: '2',
      UPSTREAM_MIN_SOCKETS: '2',
      UPSTREAM_MAX_REQUESTS_PER_SOCKET: '100',
      UPSTREAM_SOCKET_MAX_AGE_MS: '30000',
      UPSTREAM_REROLL_REQUESTS: '8',
    });
    assert.equal(config.bind, '::1');
    assert.equal(config.port, 9000);
    assert.equal(config.instanceId, 'fe-1');
    assert.equal(config.upstreams.add.baseUrl, 'http://localhost:7001/prefix');
    assert.equal(config.upstreams.sub.baseUrl, 'http://127.0.0.1:9192');
    assert.equal(config.upstreams.sub.timeoutMs, 500);
    assert.equal(config.upstreams.sub.retries, 0);
    assert.deepEqual(config.upstreams.sub.pool, { maxSockets: 2, minSockets: 2, maxRequestsPerSocket: 100, maxSocketAgeMs: 30000, rerollRequests: 8 });
  });

  it('takes per-upstream policy settings over the common ones, and initial faults', () => {
    const config = loadConfig({
      UPSTREAM_RETRIES: '2', ADD_SVC_RETRIES: '5', SUB_SVC_ATTEMPT_TIMEOUT_MS: '80', RESILIENCE: 'off',
      APP_ADMIN_PORT: '18080', FAULT_LATENCY_MS: '300', FAULT_ERROR_RATE: '0.5',
    });
    assert.equal(config.upstreams.add.retries, 5);
    assert.equal(config.upstreams.sub.retries, 2);
    assert.equal(config.upstreams.sub.attemptTimeoutMs, 80);
    assert.equal(config.upstreams.add.attemptTimeoutMs, 250);
    assert.equal(config.upstreams.add.resilience, false);
    assert.equal(config.adminPort, 18080);
    assert.deepEqual(config.faults, { latency_ms: 300, latency_jitter_ms: 0, error_rate: 0.5, abort_rate: 0 });
    assert.throws(() => loadConfig({ FAULT_ERROR_RATE: '0.7', FAULT_ABORT_RATE: '0.5' }), /must not exceed 1/);
  });

  it('turns tracing on with OTEL_EXPORTER_ZIPKIN_ENDPOINT, unless OTEL_SDK_DISABLED is true', () => {
    assert.equal(loadConfig({}).tracing, null);
    assert.equal(loadConfig({ OTEL_EXPORTER_ZIPKIN_ENDPOINT: '' }).tracing, null);
    const endpoint = 'http://127.0.0.3:19411/api/v2/spans';
    assert.deepEqual(loadConfig({ OTEL_EXPORTER_ZIPKIN_ENDPOINT: endpoint }).tracing, { endpoint });
    assert.deepEqual(loadConfig({ OTEL_EXPORTER_ZIPKIN_ENDPOINT: endpoint, OTEL_SDK_DISABLED: 'false' }).tracing, { endpoint });
    assert.equal(loadConfig({ OTEL_EXPORTER_ZIPKIN_ENDPOINT: endpoint, OTEL_SDK_DISABLED: ' TRUE ' }).tracing, null);
    // The SDK reads the other OTEL_* variables; the frontend's configuration does not check them.
    assert.equal(loadConfig({ OTEL_TRACES_SAMPLER: 'nonsense' }).tracing, null);
  });

  const invalid = {
    APP_BIND: 'not a host',
    APP_PORT: '70000',
    INSTANCE_ID: 'has space',
    ADD_SVC_URL: 'https://127.0.0.1:9191',
    SUB_SVC_URL: 'not-a-url',
    UPSTREAM_TIMEOUT_MS: '0',
    UPSTREAM_RETRIES: '-1',
    UPSTREAM_MAX_SOCKETS: '1.5',
    UPSTREAM_MAX_REQUESTS_PER_SOCKET: 'lots',
    UPSTREAM_SOCKET_MAX_AGE_MS: '1e4',
    UPSTREAM_ATTEMPT_TIMEOUT_MS: 'fast',
    ADD_SVC_RETRIES: '11',
    RESILIENCE: 'yes',
    FAULT_ERROR_RATE: '1.5',
    APP_ADMIN_PORT: '-1',
    OTEL_EXPORTER_ZIPKIN_ENDPOINT: 'zipkin:9411',
  };
  for (const [name, value] of Object.entries(invalid)) {
    it(`rejects ${name}=${value}`, () => {
      assert.throws(
        () => loadConfig({ [name]: value }),
        (err) => err instanceof ConfigError && err.problems.length === 1 && err.problems[0].startsWith(`${name}=`),
      );
    });
  }

  it('reports all problems at once', () => {
    assert.throws(() => loadConfig(invalid), (err) => err.problems.length === Object.keys(invalid).length);
  });
});
