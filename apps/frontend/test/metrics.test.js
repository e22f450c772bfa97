'use strict';
/**
 * GET /metrics of failing calls: failures, attempts, retries and an open breaker show as they happen. (That the
 * counters rise by exactly what was done against real add-svc and sub-svc is in compute.test.js.)
 */

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');

const { compute, scrapeMetrics: scrape, startFakeServer, startFrontend, sumSamples: total } = require('../test-support/harness');

describe('metrics of failing calls', () => {
  let broken;
  let frontend;

  before(async () => {
    broken = await startFakeServer((req, res) => {
      res.writeHead(500, { 'Content-Type': 'application/json', 'X-Instance-Id': 'broken-1' });
      res.end('{"error":"down"}');
    });
    frontend = await startFrontend({
      ADD_SVC_URL: broken.url, SUB_SVC_URL: broken.url,
      ADD_SVC_RETRIES: '2', ADD_SVC_RETRY_BACKOFF_MS: '1', ADD_SVC_BREAKER_FAILURES: '3',
    });
  });
  after(async () => {
    await frontend?.close();
    await broken?.close();
  });

  it('count failed calls, their attempts and retries, and show the breaker open', async () => {
    for (let i = 0; i < 4; i += 1) await compute(frontend.url, { expression: '1+1' });
    const samples = await scrape(frontend.url);
    // Three calls failed after 1 + 2 attempts each (502), then the breaker opened: the fourth failed at once (503).
    assert.equal(total(samples, 'upstream_calls_total', { upstream: 'add-svc', upstream_instance: '', outcome: '502' }), 3);
    assert.equal(total(samples, 'upstream_calls_total', { upstream: 'add-svc', outcome: '503' }), 1);
    assert.equal(total(samples, 'upstream_attempts_total', { upstream: 'add-svc' }), 9);
    assert.equal(total(samples, 'upstream_retries_total', { upstream: 'add-svc' }), 6);
    assert.equal(total(samples, 'upstream_breaker_state', { upstream: 'add-svc', state: 'open' }), 1);
    assert.equal(total(samples, 'upstream_breaker_state', { upstream: 'add-svc', state: 'closed' }), 0);
    assert.equal(total(samples, 'http_requests_total', { route: '/api/v1/compute', status: '502' }), 3);
    assert.equal(total(samples, 'http_requests_total', { route: '/api/v1/compute', status: '503' }), 1);
  });
});
