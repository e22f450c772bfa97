'use strict';
/**
 * GET /metrics: the counters rise by exactly what was done, against real add-svc and sub-svc (whose own
 * /metrics must agree), and failures, retries and an open breaker show as they happen.
 */

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');

const { compute, request, startArith, startFakeServer, startFrontend } = require('../test-support/harness');

const SEED = '1+1+2+3+4+5+6-1-2-3-4-5-6+9+8-4-5';

/** [{name, labels, value}] of a text exposition (no escaped quotes in this app's label values). */
function parse(text) {
  const samples = [];
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match) continue;
    const labels = {};
    for (const [, key, value] of (match[2] || '').matchAll(/([a-zA-Z_]+)="([^"]*)"/g)) labels[key] = value;
    samples.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return samples;
}

/** Sum of the samples named `name` whose labels include `where`. */
function total(samples, name, where = {}) {
  return samples
    .filter((s) => s.name === name && Object.entries(where).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0);
}

async function scrape(url) {
  const res = await request(`${url}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers['content-type'], /^text\/plain/);
  return parse(res.text);
}

describe('metrics with real arith services', () => {
  let add;
  let sub;
  let frontend;

  before(async () => {
    [add, sub] = await Promise.all([startArith('add'), startArith('sub')]);
    frontend = await startFrontend({ ADD_SVC_URL: add.url, SUB_SVC_URL: sub.url });
  });
  after(async () => {
    await frontend?.close();
    await Promise.all([add?.stop(), sub?.stop()]);
  });

  it('count every compute, every upstream call by answering instance, and agree with the apps', async () => {
    const [before0, addBefore] = await Promise.all([scrape(frontend.url), scrape(add.url)]);
    const computes = 7;
    for (let i = 0; i < computes; i += 1) assert.equal((await compute(frontend.url, { expression: SEED })).status, 200);
    await request(`${frontend.url}/nowhere`);
    const [after0, addAfter] = await Promise.all([scrape(frontend.url), scrape(add.url)]);
    const rose = (name, where) => total(after0, name, where) - total(before0, name, where);

    assert.equal(rose('http_requests_total', { route: '/api/v1/compute', method: 'POST', status: '200' }), computes);
    assert.equal(rose('http_request_duration_seconds_count', { route: '/api/v1/compute', status: '200' }), computes);
    assert.equal(rose('http_requests_total', { route: 'other', status: '404' }), 1);
    assert.equal(rose('upstream_calls_total', { upstream: 'add-svc', upstream_instance: add.instanceId, outcome: 'ok' }), 8 * computes);
    assert.equal(rose('upstream_calls_total', { upstream: 'sub-svc', upstream_instance: sub.instanceId, outcome: 'ok' }), 8 * computes);
    assert.equal(rose('upstream_attempts_total', { upstream: 'add-svc' }), 8 * computes);
    assert.equal(rose('upstream_retries_total', {}), 0);
    assert.equal(total(after0, 'upstream_breaker_state', { upstream: 'add-svc', state: 'closed' }), 1);
    assert.equal(total(after0, 'upstream_breaker_state', { upstream: 'add-svc', state: 'open' }), 0);
    for (const s of after0.filter((x) => x.name.startsWith('http_') || x.name.startsWith('upstream_'))) {
      assert.equal(s.labels.instance_id, 'frontend-test', `${s.name} names its instance`);
    }
    // The app on the other end counted the same calls.
    const execute = { route: '/api/v1/execute', status: '200' };
    assert.equal(total(addAfter, 'http_requests_total', execute) - total(addBefore, 'http_requests_total', execute), 8 * computes);
    // process metrics come along (CPU, memory, event loop)
    assert.ok(total(after0, 'process_cpu_user_seconds_total') > 0);
  });
});

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
