'use strict';
/** The real entry point `node src/server.js` as a child process. */

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn, spawnSync } = require('node:child_process');
const { once } = require('node:events');
const http = require('node:http');
const path = require('node:path');
const { setTimeout: sleep } = require('node:timers/promises');

const { compute, freePort, request, startArith, startCountingProxy, terminate, waitForHealth } = require('../test-support/harness');

const SERVER = path.resolve(__dirname, '..', 'src', 'server.js');

describe('node src/server.js', () => {
  it('exits 2 naming every invalid variable', () => {
    const result = spawnSync(process.execPath, [SERVER], {
      env: { ...process.env, APP_PORT: 'eighty', UPSTREAM_TIMEOUT_MS: '-5' },
      encoding: 'utf8',
      timeout: 10000,
    });
    assert.equal(result.status, 2);
    assert.match(result.stderr, /APP_PORT="eighty": must be an integer/);
    assert.match(result.stderr, /UPSTREAM_TIMEOUT_MS="-5": must be an integer/);
  });

  describe('running', () => {
    let add;
    let sub;
    let slowAdd;

    before(async () => {
      [add, sub] = await Promise.all([startArith('add'), startArith('sub')]);
      slowAdd = await startCountingProxy(add.port, { delayMs: 300 });
    });
    after(async () => {
      await slowAdd?.close();
      await Promise.all([add?.stop(), sub?.stop()]);
    });

    it('logs JSON per request and finishes in-flight requests on SIGTERM', async () => {
      const port = await freePort();
      const child = spawn(process.execPath, [SERVER], {
        env: {
          ...process.env,
          APP_PORT: String(port),
          INSTANCE_ID: 'fe-child',
          ADD_SVC_URL: slowAdd.url,
          SUB_SVC_URL: sub.url,
          UPSTREAM_ATTEMPT_TIMEOUT_MS: '2000', // the slow add-svc answers within one attempt
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      child.stdout.on('data', (chunk) => {
        stdout += chunk;
      });
      const url = `http://127.0.0.1:${port}`;
      try {
        await waitForHealth(url, child);
        const bad = await compute(url, { expression: '1+' });
        assert.equal(bad.status, 400);
        assert.equal(bad.headers['x-instance-id'], 'fe-child');

        // A keep-alive client whose request is in flight when SIGTERM arrives
        // gets its answer, with Connection: close, and the process exits
        // without waiting for the idle keep-alive connection to time out.
        const agent = new http.Agent({ keepAlive: true });
        const exited = once(child, 'exit');
        const inFlight = compute(url, { expression: '1+2-3' }, { agent });
        await sleep(100); // the add call is now held back by the proxy
        const signalledAt = Date.now();
        child.kill('SIGTERM');
        const res = await inFlight;
        assert.equal(res.status, 200, res.text);
        assert.equal(res.json.result, 0);
        assert.equal(res.headers.connection, 'close');
        const [code] = await exited;
        assert.equal(code, 0);
        assert.ok(Date.now() - signalledAt < 2000, 'exit did not wait for keep-alive timeout');
        agent.destroy();
        await assert.rejects(request(`${url}/health`), /ECONNREFUSED/);
      } finally {
        await terminate(child);
      }

      const records = stdout.trim().split('\n').map((line) => JSON.parse(line));
      const computeRecords = records.filter((r) => r.path === '/api/v1/compute');
      assert.deepEqual(computeRecords.map((r) => r.status), [400, 200]);
      for (const record of records) {
        assert.equal(record.instance, 'fe-child');
        assert.equal(typeof record.duration_ms, 'number');
      }
    });
  });
});
