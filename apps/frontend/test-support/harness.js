'use strict';
/**
 * Test helpers (kept outside test/ because `node --test test/` would run every
 * .js file there as a test file): real arith services as child processes,
 * an in-process frontend, the real entry point as a child process, a tiny HTTP
 * client, fault-injecting servers and a test trace collector.
 */

const { spawn } = require('node:child_process');
const http = require('node:http');
const net = require('node:net');
const path = require('node:path');
const { once } = require('node:events');
const { setTimeout: sleep } = require('node:timers/promises');

const { loadConfig } = require('../src/config');

const SERVER = path.resolve(__dirname, '..', 'src', 'server.js');
const { createApp } = require('../src/app');

const ARITH_DIR = path.resolve(__dirname, '..', '..', 'arith');
// A path (not a bare command name) is taken relative to the directory the tests run from.
const pythonSetting = process.env.ARITH_PYTHON || 'python3';
const ARITH_PYTHON = pythonSetting.includes('/') ? path.resolve(pythonSetting) : pythonSetting;

/** A loopback port that was free a moment ago. */
async function freePort() {
  const server = net.createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  server.close();
  await once(server, 'close');
  return port;
}

/**
 * Minimal HTTP client; a fresh connection per request unless `agent` is given.
 * @returns {Promise<{status: number, headers: object, text: string, json: any}>}
 */
function request(url, { method = 'GET', headers = {}, body, agent = false } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent }, (res) => {
      const chunks = [];
      res.on('data', (chunk) => chunks.push(chunk));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode, headers: res.headers, text, json });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** POST a JSON body (an object, or a raw string sent verbatim) to /api/v1/compute. */
function compute(baseUrl, body, { headers = { 'Content-Type': 'application/json' }, agent } = {}) {
  const payload = typeof body === 'string' ? body : JSON.stringify(body);
  return request(`${baseUrl}/api/v1/compute`, { method: 'POST', headers, body: payload, agent });
}

async function waitForHealth(url, child, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${url}: process exited with ${child.exitCode}`);
    try {
      if ((await request(`${url}/health`)).status === 200) return;
    } catch {
      // not listening yet
    }
    await sleep(50);
  }
  throw new Error(`${url} not healthy after ${timeoutMs} ms`);
}

/** Send SIGTERM and resolve with the exit code. */
async function terminate(child) {
  if (child.exitCode !== null) return child.exitCode;
  child.kill('SIGTERM');
  const [code] = await once(child, 'exit');
  return code;
}

/**
 * Spawn `command` (its stderr kept), wait until it answers /health on the loopback `port`; on failure kill it and
 * throw with its stderr.
 * @returns {Promise<{url: string, child: import('node:child_process').ChildProcess, stderr: () => string}>}
 */
async function spawnUntilHealthy(command, args, options, port) {
  const child = spawn(command, args, { ...options, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
  });
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitForHealth(url, child);
  } catch (err) {
    child.kill('SIGKILL');
    throw new Error(`${err.message}\n${command} stderr:\n${stderr}`);
  }
  return { url, child, stderr: () => stderr };
}

/**
 * Start a real add-svc or sub-svc (`python -m arith_svc`) on a free loopback port; `env` is added to this
 * process's environment.
 * @returns {Promise<{url: string, port: number, instanceId: string, stop: () => Promise<number>}>}
 */
async function startArith(op, { admin = false, env = {} } = {}) {
  const port = await freePort();
  const adminPort = admin ? await freePort() : 0;
  const instanceId = `${op}-test-${port}`;
  const { url, child } = await spawnUntilHealthy(
    ARITH_PYTHON,
    ['-m', 'arith_svc', '--op', op, '--port', String(port), '--workers', '1', '--instance-id', instanceId,
      '--admin-port', String(adminPort)],
    { cwd: ARITH_DIR, env: { ...process.env, ...env } },
    port,
  );
  const faults = (body) => request(`http://127.0.0.1:${adminPort}/admin/faults`, {
    method: body ? 'PUT' : 'DELETE', headers: { 'Content-Type': 'application/json' }, body: body && JSON.stringify(body),
  });
  return { url, port, adminPort, instanceId, faults, stop: () => terminate(child) };
}

/**
 * Listen on a free loopback port. close() destroys the tracked `sockets` (TCP servers) or every
 * connection (HTTP servers), then closes the server.
 */
async function serve(server, state, sockets = new Set()) {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    state,
    url: `http://127.0.0.1:${server.address().port}`,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      server.closeAllConnections?.();
      server.close();
      await once(server, 'close');
    },
  };
}

/**
 * A TCP proxy in front of several instances that, like Consul's built-in proxy, picks one
 * instance at random for each new connection (L4: every request on that connection goes there).
 * `pick(n)`, when given, chooses the index of the instance of the n-th connection (from 1) instead.
 */
async function startBalancingProxy(ports, { pick = () => Math.floor(Math.random() * ports.length) } = {}) {
  const sockets = new Set();
  const state = { connections: 0 };
  const server = net.createServer((client) => {
    state.connections += 1;
    const upstream = net.connect(ports[pick(state.connections)], '127.0.0.1');
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream).pipe(client);
  });
  return serve(server, state, sockets);
}

/**
 * Start the frontend in this process on a free port.
 * @param {Record<string, string>} env environment variables (see config.js)
 */
async function startFrontend(env) {
  const adminPort = env.APP_ADMIN_PORT ? Number(env.APP_ADMIN_PORT) : 0;
  const config = { ...loadConfig({ INSTANCE_ID: 'frontend-test', ...env }), port: 0, adminPort };
  const logs = [];
  const app = createApp(config, { log: (record) => logs.push(record) });
  const { port } = await app.listen();
  return { url: `http://127.0.0.1:${port}`, adminUrl: adminPort ? `http://127.0.0.1:${adminPort}` : null, logs, app,
    close: () => app.close() };
}

/**
 * TCP forwarder in front of `targetPort` that counts client connections.
 * The first `dropFirst` connections are closed as soon as a request arrives
 * (the client sees "socket hang up" before any response byte); `delayMs`
 * holds back each chunk sent by the client.
 */
async function startCountingProxy(targetPort, { dropFirst = 0, delayMs = 0 } = {}) {
  const state = { connections: 0 };
  const sockets = new Set();
  const server = net.createServer((client) => {
    state.connections += 1;
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => {});
    if (state.connections <= dropFirst) {
      client.once('data', () => client.destroy());
      return;
    }
    const upstream = net.connect(targetPort, '127.0.0.1');
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    sockets.add(upstream);
    upstream.on('close', () => sockets.delete(upstream));
    upstream.on('error', () => client.destroy());
    upstream.pipe(client);
    client.on('data', (chunk) => setTimeout(() => upstream.write(chunk), delayMs));
    client.on('end', () => setTimeout(() => upstream.end(), delayMs));
  });
  return serve(server, state, sockets);
}

/** HTTP server answering every request with `handler`; counts requests. */
async function startFakeServer(handler) {
  const state = { requests: 0 };
  const server = http.createServer((req, res) => {
    state.requests += 1;
    handler(req, res);
  });
  return serve(server, state);
}


/**
 * Start `node src/server.js` (the real entry point: configuration and the OpenTelemetry SDK's settings from its
 * environment) on a free port. `env` is added to this process's environment.
 * @returns {Promise<{url: string, child: import('node:child_process').ChildProcess, stderr: () => string,
 *   stop: () => Promise<number>}>}
 */
async function startServer(env) {
  const port = await freePort();
  const { url, child, stderr } = await spawnUntilHealthy(process.execPath, [SERVER], {
    env: { ...process.env, INSTANCE_ID: 'frontend-test', ...env, APP_PORT: String(port) },
  }, port);
  return { url, child, stderr, stop: () => terminate(child) };
}

/**
 * An HTTP proxy in front of `targetPort` that records each request's headers (`state.requests`) and holds the
 * n-th request (from 1) back `delayMs(n)` ms before forwarding it.
 */
async function startHttpProxy(targetPort, { delayMs = () => 0 } = {}) {
  const state = { requests: [] };
  const server = http.createServer((req, res) => {
    state.requests.push({ url: req.url, headers: req.headers });
    const timer = setTimeout(() => {
      const upstream = http.get({ port: targetPort, host: '127.0.0.1', path: req.url, headers: req.headers, agent: false },
        (answer) => {
          res.writeHead(answer.statusCode, answer.headers);
          answer.pipe(res);
        });
      upstream.on('error', () => res.destroy());
    }, delayMs(state.requests.length));
    res.on('close', () => clearTimeout(timer));
  });
  return serve(server, state);
}

/**
 * A test trace collector (not Zipkin): takes what the Zipkin exporter POSTs (JSON v2 span arrays) and keeps the
 * spans in `state.spans`. `state.mode`, changeable at any time: 'accept' (answer 202, as Zipkin does), 'fail'
 * (answer 500), 'hang' (never answer, until cutHanging()). `state.posts` counts the requests.
 */
async function startTestCollector() {
  const state = { mode: 'accept', posts: 0, spans: [], hanging: new Set() };
  const server = http.createServer((req, res) => {
    state.posts += 1;
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      if (state.mode === 'hang') {
        state.hanging.add(res);
        res.on('close', () => state.hanging.delete(res));
        return;
      }
      if (state.mode === 'fail') {
        res.writeHead(500).end();
        return;
      }
      if (req.method !== 'POST' || req.url !== '/api/v2/spans' || !/^application\/json/.test(req.headers['content-type'])) {
        res.writeHead(400).end();
        return;
      }
      state.spans.push(...JSON.parse(Buffer.concat(chunks).toString('utf8')));
      res.writeHead(202).end();
    });
  });
  const collector = await serve(server, state);
  return {
    ...collector,
    endpoint: `${collector.url}/api/v2/spans`,
    /** Cut the connections of the requests left hanging (the exporter sees them fail). */
    cutHanging: () => {
      for (const res of state.hanging) res.destroy();
    },
  };
}

/** [{name, labels, value}] of a Prometheus text exposition (no escaped quotes in this app's label values). */
function parseMetrics(text) {
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
function sumSamples(samples, name, where = {}) {
  return samples
    .filter((s) => s.name === name && Object.entries(where).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0);
}

/** GET {baseUrl}/metrics, checked to be the text format, parsed. */
async function scrapeMetrics(baseUrl) {
  const res = await request(`${baseUrl}/metrics`);
  if (res.status !== 200 || !/^text\/plain/.test(res.headers['content-type'])) {
    throw new Error(`${baseUrl}/metrics answered ${res.status} ${res.headers['content-type']}`);
  }
  return parseMetrics(res.text);
}

module.exports = {
  ARITH_DIR,
  compute,
  startBalancingProxy,
  freePort,
  request,
  scrapeMetrics,
  startArith,
  startCountingProxy,
  startFakeServer,
  startFrontend,
  startHttpProxy,
  startServer,
  startTestCollector,
  sumSamples,
  terminate,
  waitForHealth,
};
