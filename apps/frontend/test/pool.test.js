'use strict';
/**
 * Connection-pool bounds, proven by counting the TCP connections that reach a
 * real add-svc through a loopback forwarder.
 */

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { setTimeout: sleep } = require('node:timers/promises');

const { compute, startArith, startBalancingProxy, startCountingProxy, startFrontend } = require('../test-support/harness');
const { UpstreamClient } = require('../src/upstream');
const { loadConfig } = require('../src/config');

describe('upstream connection pool', () => {
  let add;
  let add2;
  let proxy;

  before(async () => {
    [add, add2] = await Promise.all([startArith('add'), startArith('add')]);
  });
  after(async () => {
    await Promise.all([add?.stop(), add2?.stop()]);
  });

  // Each test gets a fresh forwarder so its connection count starts at 0.
  const withProxy = async (fn) => {
    proxy = await startCountingProxy(add.port);
    try {
      await fn();
    } finally {
      await proxy.close();
    }
  };

  const withFrontend = async (env, fn) => {
    const fe = await startFrontend({ ADD_SVC_URL: proxy.url, ...env });
    try {
      await fn(fe);
    } finally {
      await fe.close();
    }
  };

  // "1+1+...+1" with 41 terms: 40 sequential calls to add-svc.
  const fortyAdditions = Array(41).fill('1').join('+');
  // The life bounds alone: no spread (one connection at a time) and no re-deal.
  const ONE_BY_ONE = { UPSTREAM_MIN_SOCKETS: '1', UPSTREAM_REROLL_REQUESTS: '10000000' };

  const callsPerInstance = (responses) => {
    const counts = {};
    for (const res of responses) for (const call of res.json.calls) counts[call.instance] = (counts[call.instance] || 0) + 1;
    return counts;
  };

  it('spreads calls made one at a time over MIN_SOCKETS connections, alternating between the instances', async () => {
    // The proxy deals connections to the two instances in turn; the pool needs only its 4 connections.
    proxy = await startBalancingProxy([add.port, add2.port], { pick: (n) => n % 2 });
    try {
      await withFrontend({ UPSTREAM_MIN_SOCKETS: '4' }, async (fe) => {
        const responses = [await compute(fe.url, { expression: fortyAdditions }), await compute(fe.url, { expression: fortyAdditions })];
        assert.ok(responses.every((res) => res.status === 200 && res.json.result === 41));
        const counts = callsPerInstance(responses);
        assert.deepEqual(Object.values(counts).sort(), [40, 40], JSON.stringify(counts));
        assert.equal(proxy.state.connections, 4);
      });
    } finally {
      await proxy.close();
    }
  });

  it('re-deals connections while they all reach one instance, then keeps them', async () => {
    // The first 4 connections go to add, every later one to add2: the pool must retire some to find add2.
    proxy = await startBalancingProxy([add.port, add2.port], { pick: (n) => (n <= 4 ? 0 : 1) });
    try {
      await withFrontend({ UPSTREAM_MIN_SOCKETS: '4', UPSTREAM_REROLL_REQUESTS: '4' }, async (fe) => {
        const responses = [await compute(fe.url, { expression: fortyAdditions }), await compute(fe.url, { expression: fortyAdditions })];
        assert.ok(responses.every((res) => res.status === 200));
        const counts = callsPerInstance(responses);
        assert.ok((counts[add2.instanceId] || 0) >= 20, `add2 answered too few of 80 calls: ${JSON.stringify(counts)}`);
        assert.ok(proxy.state.connections >= 5 && proxy.state.connections <= 8, `${proxy.state.connections} connections`);
      });
    } finally {
      await proxy.close();
    }
  });

  it('retires a connection after UPSTREAM_MAX_REQUESTS_PER_SOCKET requests (40 calls / 16 = 3 sockets)', () =>
    withProxy(() =>
      withFrontend({ ...ONE_BY_ONE, UPSTREAM_MAX_REQUESTS_PER_SOCKET: '16', UPSTREAM_SOCKET_MAX_AGE_MS: '60000' }, async (fe) => {
        const res = await compute(fe.url, { expression: fortyAdditions });
        assert.equal(res.status, 200, res.text);
        assert.equal(res.json.result, 41);
        assert.equal(res.json.calls.length, 40);
        assert.equal(proxy.state.connections, 3);
      }),
    ));

  it('keeps one connection alive when the bound is high', () =>
    withProxy(() =>
      withFrontend({ ...ONE_BY_ONE, UPSTREAM_MAX_REQUESTS_PER_SOCKET: '1000', UPSTREAM_SOCKET_MAX_AGE_MS: '60000' }, async (fe) => {
        for (let i = 0; i < 3; i += 1) {
          assert.equal((await compute(fe.url, { expression: fortyAdditions })).json.result, 41);
        }
        assert.equal(proxy.state.connections, 1);
      }),
    ));

  it('retires a connection older than UPSTREAM_SOCKET_MAX_AGE_MS, busy or idle', () =>
    withProxy(() =>
      withFrontend({ ...ONE_BY_ONE, UPSTREAM_MAX_REQUESTS_PER_SOCKET: '1000', UPSTREAM_SOCKET_MAX_AGE_MS: '150' }, async (fe) => {
        assert.equal((await compute(fe.url, { expression: '1+1' })).status, 200);
        assert.equal((await compute(fe.url, { expression: '1+1' })).status, 200);
        assert.equal(proxy.state.connections, 1, 'young connection is reused');
        await sleep(250);
        assert.equal((await compute(fe.url, { expression: '1+1' })).status, 200);
        assert.equal(proxy.state.connections, 2, 'old connection is not reused');
      }),
    ));

  it('also retires connections handed directly to queued requests', () =>
    withProxy(async () => {
      // One socket, 12 concurrent calls: after each response Agent passes the
      // socket straight to the next queued request instead of pooling it.
      const client = new UpstreamClient({
        ...loadConfig({ UPSTREAM_TIMEOUT_MS: '5000', UPSTREAM_ATTEMPT_TIMEOUT_MS: '5000', UPSTREAM_RETRIES: '0' }).upstreams.add,
        baseUrl: proxy.url,
        pool: { maxSockets: 1, maxRequestsPerSocket: 4, maxSocketAgeMs: 60000 },
      });
      try {
        const answers = await Promise.all(Array.from({ length: 12 }, (_, i) => client.execute(i, 1)));
        assert.deepEqual(answers.map((a) => a.result), Array.from({ length: 12 }, (_, i) => i + 1));
        assert.equal(proxy.state.connections, 3);
      } finally {
        client.close();
      }
    }));
});
