'use strict';
/**
 * Resilience against real add-svc/sub-svc processes with their fault switch (no mocked upstream):
 * two instances of each behind a proxy that, like Consul's built-in one, picks an instance per
 * connection. Retries, the attempt timeout, the circuit breaker, the retry budget, resilience off,
 * and the frontend's own fault injection and admin endpoint.
 */

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { setTimeout: sleep } = require('node:timers/promises');

const { compute, freePort, request, startArith, startBalancingProxy, startFrontend } = require('../test-support/harness');

const SEED = '1+1+2+3+4+5+6-1-2-3-4-5-6+9+8-4-5';

function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.round((p / 100) * (sorted.length - 1)))];
}

/** `count` computes, `concurrency` at a time: [{status, json, ms}]. */
async function load(url, count, concurrency = 4) {
  const results = [];
  let next = 0;
  const worker = async () => {
    while (next < count) {
      next += 1;
      const started = Date.now();
      const res = await compute(url, { expression: SEED });
      results.push({ status: res.status, json: res.json, ms: Date.now() - started });
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return results;
}

describe('resilience against faulty instances', () => {
  let adds;
  let subs;
  let addProxy;
  let subProxy;

  before(async () => {
    adds = await Promise.all([startArith('add', { admin: true }), startArith('add', { admin: true })]);
    subs = await Promise.all([startArith('sub', { admin: true }), startArith('sub', { admin: true })]);
    addProxy = await startBalancingProxy(adds.map((a) => a.port));
    subProxy = await startBalancingProxy(subs.map((s) => s.port));
  });
  after(async () => {
    await Promise.all([addProxy?.close(), subProxy?.close()]);
    await Promise.all([...(adds || []), ...(subs || [])].map((p) => p.stop()));
  });

  const frontend = (env = {}) => startFrontend({ ADD_SVC_URL: addProxy.url, SUB_SVC_URL: subProxy.url, ...env });

  it('hides an instance that fails half its calls: every compute answers 9, retries show in /health', async () => {
    await subs[0].faults({ error_rate: 0.5 });
    const fe = await frontend();
    try {
      const results = await load(fe.url, 60);
      const failed = results.filter((r) => r.status !== 200 || r.json.result !== 9);
      const health = (await request(`${fe.url}/health`)).json.upstreams['sub-svc'];
      console.log(`erroring sub-svc: ${results.length - failed.length}/${results.length} computes gave 9; sub-svc ${JSON.stringify(health)}`);
      assert.equal(failed.length, 0, JSON.stringify(failed[0]));
      assert.ok(health.retries > 0, 'the errors were retried');
      assert.equal(health.breaker, 'closed');
    } finally {
      await subs[0].faults(null);
      await fe.close();
    }
  });

  it('control: with resilience off the same fault reaches the user', async () => {
    await subs[0].faults({ error_rate: 0.5 });
    const fe = await frontend({ RESILIENCE: 'off' });
    try {
      const results = await load(fe.url, 30);
      const failed = results.filter((r) => r.status !== 200);
      console.log(`resilience off: ${failed.length}/${results.length} computes failed`);
      assert.ok(failed.length > 0);
      assert.ok(failed.every((r) => r.status === 502 && r.json.upstream === 'sub-svc'));
    } finally {
      await subs[0].faults(null);
      await fe.close();
    }
  });

  it('keeps computes fast when one instance is slow: attempt timeouts move calls to the other', async () => {
    const fe = await frontend({ UPSTREAM_ATTEMPT_TIMEOUT_MS: '150' });
    try {
      const baseline = await load(fe.url, 20);
      await adds[0].faults({ latency_ms: 300 });
      const results = await load(fe.url, 40);
      const ms = results.map((r) => r.ms);
      const calls = results.flatMap((r) => r.json.calls).filter((c) => c.op === '+');
      const slowShare = calls.filter((c) => c.instance === adds[0].instanceId).length / calls.length;
      // Each of the expression's 8 add calls loses at most one attempt (150 ms) to the slow instance before
      // the pool has learnt it: the bound over the healthy p99.
      const bound = percentile(baseline.map((r) => r.ms), 99) + 8 * 150;
      console.log(`slow add-svc: p50 ${percentile(ms, 50)} ms, p99 ${percentile(ms, 99)} ms (bound ${bound} ms); slow instance answered ${(slowShare * 100).toFixed(0)}% of add calls`);
      assert.ok(results.every((r) => r.status === 200 && r.json.result === 9));
      assert.ok(percentile(ms, 99) <= bound);
      assert.ok(slowShare < 0.25);
    } finally {
      await adds[0].faults(null);
      await fe.close();
    }
  });

  it('uses a timed-out attempt\'s late answer when every retry is slow too (hedged retries)', async () => {
    const fe = await frontend({ UPSTREAM_ATTEMPT_TIMEOUT_MS: '150', UPSTREAM_TIMEOUT_MS: '2000' });
    try {
      await Promise.all(adds.map((a) => a.faults({ latency_ms: 300 })));
      const started = Date.now();
      const res = await compute(fe.url, { expression: '1+1' });
      const elapsed = Date.now() - started;
      const health = (await request(`${fe.url}/health`)).json.upstreams['add-svc'];
      console.log(`every add-svc +300 ms, attempt timeout 150 ms: ${res.status} in ${elapsed} ms; add-svc ${JSON.stringify(health)}`);
      // Without the late answer, all four 150 ms attempts would time out: 504.
      assert.equal(res.status, 200);
      assert.equal(res.json.result, 2);
      assert.ok(res.json.calls[0].attempts >= 2);
      assert.equal(health.late_answers_used, 1);
      assert.ok(elapsed < 600, `took ${elapsed} ms`);
    } finally {
      await Promise.all(adds.map((a) => a.faults(null)));
      await fe.close();
    }
  });

  it('fails fast with 503 naming the upstream once every instance fails, and recovers after healing', async () => {
    const fe = await frontend({ UPSTREAM_BREAKER_FAILURES: '3', UPSTREAM_BREAKER_HALF_OPEN_MS: '500' });
    try {
      await Promise.all(adds.map((a) => a.faults({ error_rate: 1 })));
      for (let i = 0; i < 3; i += 1) assert.equal((await compute(fe.url, { expression: '1+1' })).status, 502);
      const started = Date.now();
      const res = await compute(fe.url, { expression: '1+1' });
      const elapsed = Date.now() - started;
      const health = (await request(`${fe.url}/health`)).json.upstreams['add-svc'];
      console.log(`all add-svc failing: ${res.status} in ${elapsed} ms, ${JSON.stringify(res.json)}; breaker ${health.breaker}`);
      assert.equal(res.status, 503);
      assert.equal(res.json.upstream, 'add-svc');
      assert.ok(elapsed < 50, `failing fast took ${elapsed} ms`);
      assert.equal(health.breaker, 'open');
      assert.ok(health.rejected >= 1);
      await Promise.all(adds.map((a) => a.faults(null)));
      await sleep(600); // half-open: the next call is a trial
      const healed = await compute(fe.url, { expression: '1+1' });
      assert.equal(healed.status, 200);
      assert.equal(healed.json.calls[0].breaker, 'closed');
      assert.equal((await request(`${fe.url}/health`)).json.upstreams['add-svc'].breaker, 'closed');
    } finally {
      await Promise.all(adds.map((a) => a.faults(null)));
      await fe.close();
    }
  });

  it('keeps the breaker closed for an upstream that is only slow: its calls time out (504), none is rejected', async () => {
    // Every add-svc answer comes after the whole call's time: each compute fails with 504, as many as the
    // breaker's limit and more, yet the breaker stays closed (a busy upstream is not a broken one); the test
    // above is the control: the same number of 502s opens it.
    const fe = await frontend({ UPSTREAM_BREAKER_FAILURES: '2', UPSTREAM_ATTEMPT_TIMEOUT_MS: '50', UPSTREAM_TIMEOUT_MS: '150' });
    try {
      await Promise.all(adds.map((a) => a.faults({ latency_ms: 400 })));
      const statuses = [];
      for (let i = 0; i < 4; i += 1) statuses.push((await compute(fe.url, { expression: '1+1' })).status);
      const health = (await request(`${fe.url}/health`)).json.upstreams['add-svc'];
      console.log(`add-svc 400 ms late: ${statuses.join(', ')}; breaker ${health.breaker}, rejected ${health.rejected}`);
      assert.deepEqual(statuses, [504, 504, 504, 504]);
      assert.equal(health.breaker, 'closed');
      assert.equal(health.rejected, 0);
    } finally {
      await Promise.all(adds.map((a) => a.faults(null)));
      await fe.close();
    }
  });

  it('stops retrying when the retry budget is spent', async () => {
    await Promise.all(subs.map((s) => s.faults({ error_rate: 1 })));
    const fe = await frontend({ UPSTREAM_RETRY_BUDGET_PERCENT: '0', UPSTREAM_RETRY_BUDGET_MIN_PER_S: '0', UPSTREAM_BREAKER_FAILURES: '100' });
    try {
      for (let i = 0; i < 3; i += 1) assert.equal((await compute(fe.url, { expression: '3-1' })).status, 502);
      const health = (await request(`${fe.url}/health`)).json.upstreams['sub-svc'];
      assert.equal(health.retries, 0);
      assert.equal(health.attempts, 3);
      assert.ok(health.budget_exhausted >= 3);
    } finally {
      await Promise.all(subs.map((s) => s.faults(null)));
      await fe.close();
    }
  });
});

describe('the frontend\'s own fault switch and admin endpoint', () => {
  let add;
  let sub;
  let fe;

  before(async () => {
    [add, sub] = await Promise.all([startArith('add'), startArith('sub')]);
    fe = await startFrontend({ ADD_SVC_URL: add.url, SUB_SVC_URL: sub.url, APP_ADMIN_PORT: String(await freePort()) });
  });
  after(async () => {
    await fe?.close();
    await Promise.all([add?.stop(), sub?.stop()]);
  });

  const put = (path, body) => request(`${fe.adminUrl}${path}`, {
    method: 'PUT', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
  });

  it('serves /admin only on the admin port, and the API only on the service port', async () => {
    assert.equal((await request(`${fe.url}/admin/faults`)).status, 404);
    assert.equal((await compute(fe.adminUrl, { expression: '1+1' })).status, 404);
    assert.deepEqual((await request(`${fe.adminUrl}/admin/faults`)).json,
      { latency_ms: 0, latency_jitter_ms: 0, error_rate: 0, abort_rate: 0 });
  });

  it('injects errors, aborts and latency, refuses bad settings, and heals', async () => {
    assert.equal((await put('/admin/faults', { error_rate: 1 })).status, 200);
    const failed = await compute(fe.url, { expression: '1+1' });
    assert.equal(failed.status, 500);
    assert.equal(failed.json.error, 'injected fault: error');
    assert.equal((await put('/admin/faults', { abort_rate: 1 })).status, 200);
    await assert.rejects(compute(fe.url, { expression: '1+1' }), /socket hang up|ECONNRESET/);
    assert.equal((await put('/admin/faults', { latency_ms: 200 })).status, 200);
    const started = Date.now();
    assert.equal((await compute(fe.url, { expression: '1+1' })).json.result, 2);
    assert.ok(Date.now() - started >= 190);
    const bad = await put('/admin/faults', { error_rate: 2, latency: 1 });
    assert.equal(bad.status, 400);
    assert.match(bad.json.error, /unknown field\(s\) latency/);
    assert.match(bad.json.error, /error_rate must be a number from 0 to 1, got 2/);
    assert.equal((await request(`${fe.adminUrl}/admin/faults`, { method: 'DELETE' })).status, 200);
    assert.equal((await compute(fe.url, { expression: '1+1' })).status, 200);
    assert.equal((await request(`${fe.url}/health`)).status, 200);
  });

  it('reports its version (APP_VERSION) in a header and in the body, for the edge\'s canary split', async () => {
    const v2 = await startFrontend({ ADD_SVC_URL: add.url, SUB_SVC_URL: sub.url, APP_VERSION: 'v2' });
    try {
      const res = await compute(v2.url, { expression: '1+1' });
      assert.equal(res.headers['x-version'], 'v2');
      assert.equal(res.json.version, 'v2');
      assert.equal((await request(`${v2.url}/health`)).json.version, 'v2');
    } finally {
      await v2.close();
    }
    assert.equal((await compute(fe.url, { expression: '1+1' })).headers['x-version'], undefined);
  });

  it('turns the upstream policies off and on at run time', async () => {
    assert.deepEqual((await put('/admin/resilience', { enabled: false })).json, { enabled: false });
    assert.equal((await request(`${fe.url}/health`)).json.upstreams['add-svc'].resilience, 'off');
    assert.equal((await put('/admin/resilience', { enabled: 'no' })).status, 400);
    assert.deepEqual((await put('/admin/resilience', { enabled: true })).json, { enabled: true });
  });
});
