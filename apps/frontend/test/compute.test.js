'use strict';
/**
 * End-to-end: in-process frontend -> real add-svc and sub-svc (python -m arith_svc).
 * Failure cases use closed ports and small fault-injecting servers on loopback.
 */

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');

const {
  compute,
  freePort,
  request,
  scrapeMetrics,
  startArith,
  startCountingProxy,
  startFakeServer,
  startFrontend,
  sumSamples,
} = require('../test-support/harness');

const SEED = '1+1+2+3+4+5+6-1-2-3-4-5-6+9+8-4-5';

describe('frontend with real arith services', () => {
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

  it('evaluates the seed expression to 9 with 16 calls', async () => {
    const res = await compute(frontend.url, { expression: SEED });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.headers['x-instance-id'], 'frontend-test');
    assert.equal(res.json.result, 9);
    assert.equal(res.json.calls.length, 16);
    assert.equal(res.json.calls.map((c) => c.op).join(''), '++++++------++--');
    for (const call of res.json.calls) {
      assert.equal(call.instance, call.op === '+' ? add.instanceId : sub.instanceId);
    }
  });

  it('counts every compute and every upstream call by answering instance in /metrics, as the apps do', async () => {
    const [before0, addBefore] = await Promise.all([scrapeMetrics(frontend.url), scrapeMetrics(add.url)]);
    const computes = 7;
    for (let i = 0; i < computes; i += 1) assert.equal((await compute(frontend.url, { expression: SEED })).status, 200);
    await request(`${frontend.url}/nowhere`);
    const [after0, addAfter] = await Promise.all([scrapeMetrics(frontend.url), scrapeMetrics(add.url)]);
    const rose = (name, where) => sumSamples(after0, name, where) - sumSamples(before0, name, where);

    assert.equal(rose('http_requests_total', { route: '/api/v1/compute', method: 'POST', status: '200' }), computes);
    assert.equal(rose('http_request_duration_seconds_count', { route: '/api/v1/compute', status: '200' }), computes);
    assert.equal(rose('http_requests_total', { route: 'other', status: '404' }), 1);
    assert.equal(rose('upstream_calls_total', { upstream: 'add-svc', upstream_instance: add.instanceId, outcome: 'ok' }), 8 * computes);
    assert.equal(rose('upstream_calls_total', { upstream: 'sub-svc', upstream_instance: sub.instanceId, outcome: 'ok' }), 8 * computes);
    assert.equal(rose('upstream_attempts_total', { upstream: 'add-svc' }), 8 * computes);
    assert.equal(rose('upstream_retries_total', {}), 0);
    assert.equal(sumSamples(after0, 'upstream_breaker_state', { upstream: 'add-svc', state: 'closed' }), 1);
    assert.equal(sumSamples(after0, 'upstream_breaker_state', { upstream: 'add-svc', state: 'open' }), 0);
    for (const s of after0.filter((x) => x.name.startsWith('http_') || x.name.startsWith('upstream_'))) {
      assert.equal(s.labels.instance_id, 'frontend-test', `${s.name} names its instance`);
    }
    // The app on the other end counted the same calls.
    const execute = { route: '/api/v1/execute', status: '200' };
    assert.equal(sumSamples(addAfter, 'http_requests_total', execute) - sumSamples(addBefore, 'http_requests_total', execute), 8 * computes);
    // process metrics come along (CPU, memory, event loop)
    assert.ok(sumSamples(after0, 'process_cpu_user_seconds_total') > 0);
  });

  it('returns a single number without calls', async () => {
    const res = await compute(frontend.url, { expression: ' 5 ' });
    assert.equal(res.status, 200);
    assert.deepEqual(res.json, { result: 5, calls: [] });
  });

  it('evaluates strictly left to right, through negative intermediates', async () => {
    const res = await compute(frontend.url, { expression: '1 - 5 + 2 - 10' });
    assert.equal(res.status, 200);
    assert.equal(res.json.result, -12);
    assert.deepEqual(res.json.calls.map((c) => c.op), ['-', '+', '-']);
  });

  it('answers 422 naming the upstream when an intermediate result leaves the arith range', async () => {
    const expression = '999999999999999+999999999999999+1';
    const res = await compute(frontend.url, { expression });
    assert.equal(res.status, 422);
    assert.equal(res.json.upstream, 'add-svc');
    assert.match(res.json.error, /out of range/);
    assert.equal(res.json.position, expression.lastIndexOf('+'));
  });

  const badExpressions = [
    ['', 0, /empty/],
    ['   ', 0, /empty/],
    ['1+a', 2, /expected a number/],
    ['2*3', 1, /expected '\+' or '-'/],
    ['1++2', 2, /expected a number/],
    ['1+2-', 4, /end of expression/],
    ['-1+2', 0, /unary minus/],
    ['1+1234567890123456', 2, /more than 15 digits/],
    [Array(101).fill('1').join('+'), 200, /more than 100 numbers/],
    ['1'.repeat(15) + ' '.repeat(990), 1000, /longer than 1000/],
  ];
  for (const [expression, position, error] of badExpressions) {
    it(`rejects expression ${JSON.stringify(expression.slice(0, 20))} with 400 at ${position}`, async () => {
      const res = await compute(frontend.url, { expression });
      assert.equal(res.status, 400);
      assert.match(res.json.error, error);
      assert.equal(res.json.position, position);
    });
  }

  const badBodies = [
    ['non-JSON body', 'expression=1+2', 400, /not valid UTF-8 JSON/],
    ['invalid UTF-8', Buffer.from([0x7b, 0xff, 0x7d]).toString('latin1'), 400, /not valid UTF-8 JSON/],
    ['JSON array', '[1]', 400, /must be a JSON object/],
    ['JSON null', 'null', 400, /must be a JSON object/],
    ['missing expression', '{"expr":"1+2"}', 400, /missing field "expression"/],
    ['numeric expression', '{"expression":12}', 400, /must be a string/],
    ['null expression', '{"expression":null}', 400, /must be a string/],
  ];
  for (const [name, body, status, error] of badBodies) {
    it(`rejects a ${name} with ${status}`, async () => {
      const res = await compute(frontend.url, body);
      assert.equal(res.status, status);
      assert.match(res.json.error, error);
    });
  }

  it('rejects a wrong or missing Content-Type with 415', async () => {
    for (const headers of [{ 'Content-Type': 'text/plain' }, {}, { 'Content-Type': 'application/jsonx' }]) {
      const res = await compute(frontend.url, { expression: '1+2' }, { headers });
      assert.equal(res.status, 415);
      assert.match(res.json.error, /application\/json/);
    }
    const ok = await compute(frontend.url, { expression: '1+2' }, {
      headers: { 'Content-Type': 'Application/JSON; charset=utf-8' },
    });
    assert.equal(ok.status, 200);
  });

  it('rejects a body over 16 KiB with 413, with and without Content-Length', async () => {
    const body = JSON.stringify({ expression: '1', padding: 'x'.repeat(17 * 1024) });
    const declared = await compute(frontend.url, body);
    assert.equal(declared.status, 413);
    assert.match(declared.json.error, /larger than 16384 bytes/);
    const chunked = await compute(frontend.url, body, {
      headers: { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' },
    });
    assert.equal(chunked.status, 413);
  });

  it('answers unknown routes with 404 and wrong methods with 405 JSON', async () => {
    const missing = await request(`${frontend.url}/api/v1/nope`);
    assert.equal(missing.status, 404);
    assert.ok(missing.json.error);
    const wrong = await request(`${frontend.url}/api/v1/compute`);
    assert.equal(wrong.status, 405);
    assert.equal(wrong.headers.allow, 'POST');
    assert.ok(wrong.json.error);
    const health = await request(`${frontend.url}/health`, { method: 'DELETE' });
    assert.equal(health.status, 405);
  });

  it('serves /health', async () => {
    const res = await request(`${frontend.url}/health`);
    assert.equal(res.status, 200);
    assert.equal(res.json.status, 'ok');
    assert.equal(res.json.instance, 'frontend-test');
    assert.deepEqual(Object.keys(res.json.upstreams), ['add-svc', 'sub-svc']);
    assert.equal(res.json.upstreams['add-svc'].breaker, 'closed');
  });

  it('writes one access-log record per request', async () => {
    const before = frontend.logs.length;
    await request(`${frontend.url}/health`);
    await compute(frontend.url, { expression: '1+' });
    const records = frontend.logs.slice(before);
    assert.deepEqual(
      records.map(({ method, path, status }) => [method, path, status]),
      [
        ['GET', '/health', 200],
        ['POST', '/api/v1/compute', 400],
      ],
    );
    for (const record of records) {
      assert.deepEqual(Object.keys(record), ['instance', 'method', 'path', 'status', 'duration_ms']);
      assert.equal(record.instance, 'frontend-test');
      assert.ok(record.duration_ms >= 0);
    }
  });

  describe('upstream failures', () => {
    it('answers 502 naming sub-svc when it is down', async () => {
      const down = await startFrontend({ ADD_SVC_URL: add.url, SUB_SVC_URL: `http://127.0.0.1:${await freePort()}` });
      try {
        const res = await compute(down.url, { expression: '1+2-1' });
        assert.equal(res.status, 502);
        assert.equal(res.json.upstream, 'sub-svc');
        assert.match(res.json.error, /ECONNREFUSED/);
        assert.equal(res.json.position, 3);
        // add-only expressions still work
        assert.equal((await compute(down.url, { expression: '1+2' })).json.result, 3);
      } finally {
        await down.close();
      }
    });

    it('answers 504 naming add-svc when every attempt times out, retrying within the call deadline', async () => {
      const slow = await startFakeServer((req, res) => {
        const timer = setTimeout(() => res.end('{"result":0}'), 5000);
        res.on('close', () => clearTimeout(timer));
      });
      const fe = await startFrontend({
        ADD_SVC_URL: slow.url, SUB_SVC_URL: sub.url, UPSTREAM_TIMEOUT_MS: '1000', UPSTREAM_ATTEMPT_TIMEOUT_MS: '100',
        UPSTREAM_RETRIES: '2',
      });
      try {
        const started = Date.now();
        const res = await compute(fe.url, { expression: '1+2' });
        const elapsed = Date.now() - started;
        assert.equal(res.status, 504);
        assert.equal(res.json.upstream, 'add-svc');
        assert.match(res.json.error, /no answer within 100 ms/);
        assert.ok(elapsed >= 290 && elapsed < 1000, `took ${elapsed} ms`);
        assert.equal(slow.state.requests, 3, 'one attempt and two retries (the GET is idempotent)');
        // The frontend still serves, including calls to the healthy upstream.
        assert.equal((await request(`${fe.url}/health`)).status, 200);
        assert.equal((await compute(fe.url, { expression: '5-2' })).json.result, 3);
      } finally {
        await fe.close();
        await slow.close();
      }
    });

    it('answers 504 when the upstream sends headers but stalls the body', async () => {
      const stalling = await startFakeServer((req, res) => {
        res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': '20' });
        res.write('{"result":');
      });
      const fe = await startFrontend({
        ADD_SVC_URL: add.url, SUB_SVC_URL: stalling.url, UPSTREAM_TIMEOUT_MS: '200', UPSTREAM_ATTEMPT_TIMEOUT_MS: '200',
      });
      try {
        const res = await compute(fe.url, { expression: '3-1' });
        assert.equal(res.status, 504);
        assert.equal(res.json.upstream, 'sub-svc');
      } finally {
        await fe.close();
        await stalling.close();
      }
    });

    const badAnswers = [
      ['HTTP 500', (req, res) => res.writeHead(500).end('<html>boom</html>'), /answered HTTP 500/],
      ['non-JSON 200', (req, res) => res.end('not json'), /malformed answer/],
      ['JSON without result', (req, res) => res.end('{"value":3}'), /malformed answer/],
      ['truncated body', (req, res) => {
        res.writeHead(200, { 'Content-Length': '100' });
        res.write('{"result":');
        setTimeout(() => res.destroy(), 20);
      }, /response failed|closed before the response was complete/],
    ];
    for (const [name, handler, error] of badAnswers) {
      it(`answers 502 for an upstream ${name}`, async () => {
        const broken = await startFakeServer(handler);
        const fe = await startFrontend({ ADD_SVC_URL: add.url, SUB_SVC_URL: broken.url });
        try {
          const res = await compute(fe.url, { expression: '3-1' });
          assert.equal(res.status, 502);
          assert.equal(res.json.upstream, 'sub-svc');
          assert.match(res.json.error, error);
        } finally {
          await fe.close();
          await broken.close();
        }
      });
    }

    it('retries a connection dropped before any response byte, on a new connection', async () => {
      const proxy = await startCountingProxy(add.port, { dropFirst: 1 });
      const fe = await startFrontend({ ADD_SVC_URL: proxy.url, SUB_SVC_URL: sub.url });
      try {
        const res = await compute(fe.url, { expression: '20+22' });
        assert.equal(res.status, 200, res.text);
        assert.equal(res.json.result, 42);
        assert.equal(proxy.state.connections, 2);
      } finally {
        await fe.close();
        await proxy.close();
      }
    });

    it('gives up after UPSTREAM_RETRIES', async () => {
      const proxy = await startCountingProxy(add.port, { dropFirst: 2 });
      const fe = await startFrontend({ ADD_SVC_URL: proxy.url, SUB_SVC_URL: sub.url, UPSTREAM_RETRIES: '0' });
      try {
        const res = await compute(fe.url, { expression: '20+22' });
        assert.equal(res.status, 502);
        assert.equal(res.json.upstream, 'add-svc');
        assert.match(res.json.error, /socket hang up|ECONNRESET/);
        assert.equal(proxy.state.connections, 1);
      } finally {
        await fe.close();
        await proxy.close();
      }
    });
  });
});
