'use strict';
/**
 * Connection-pool bounds, proven by counting the TCP connections that reach a
 * real add-svc through a loopback forwarder.
 */

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { setTimeout: sleep } = require('node:timers/promises');

const { compute, startArith, startCountingProxy, startFrontend } = require('../test-support/harness');
const { UpstreamClient } = require('../src/upstream');
const { loadConfig } = require('../src/config');

describe('upstream connection pool', () => {
  let add;
  let proxy;

  before(async () => {
    add = await startArith('add');
  });
  after(async () => {
    await add?.stop();
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

  it('retires a connection after UPSTREAM_MAX_REQUESTS_PER_SOCKET requests (40 calls / 16 = 3 sockets)', () =>
    withProxy(() =>
      withFrontend({ UPSTREAM_MAX_REQUESTS_PER_SOCKET: '16', UPSTREAM_SOCKET_MAX_AGE_MS: '60000' }, async (fe) => {
        const res = await compute(fe.url, { expression: fortyAdditions });
        assert.equal(res.status, 200, res.text);
        assert.equal(res.json.result, 41);
        assert.equal(res.json.calls.length, 40);
        assert.equal(proxy.state.connections, 3);
      }),
    ));

  it('keeps one connection alive when the bound is high', () =>
    withProxy(() =>
      withFrontend({ UPSTREAM_MAX_REQUESTS_PER_SOCKET: '1000', UPSTREAM_SOCKET_MAX_AGE_MS: '60000' }, async (fe) => {
        for (let i = 0; i < 3; i += 1) {
          assert.equal((await compute(fe.url, { expression: fortyAdditions })).json.result, 41);
        }
        assert.equal(proxy.state.connections, 1);
      }),
    ));

  it('retires a connection older than UPSTREAM_SOCKET_MAX_AGE_MS, busy or idle', () =>
    withProxy(() =>
      withFrontend({ UPSTREAM_MAX_REQUESTS_PER_SOCKET: '1000', UPSTREAM_SOCKET_MAX_AGE_MS: '150' }, async (fe) => {
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
