'use strict';
/**
 * Keep-alive HTTP agent that spreads requests over the upstream's instances with few new connections.
 *
 * Why: Consul's built-in Connect proxy balances per TCP connection (it deals each new connection to a
 * random healthy instance), and a new connection is expensive: a TLS handshake in both proxies and an
 * authorisation call to Consul, about 5 ms of CPU in all (docs/bench.md), some 15 upstream calls' worth.
 * So the pool keeps several long-lived connections and balances per request itself:
 *
 *   spread    it opens `minSockets` connections before it reuses idle ones, so even calls made one at a
 *             time have connections to several instances to choose from;
 *   choice    each request takes the idle connection whose instance (learnt from the X-Instance-Id of
 *             its answers) was used least recently: calls alternate between the instances the pool
 *             reaches, however many connections each has;
 *   re-deal   while the pool's connections reach only one instance, or fewer instances than answered in
 *             the last `maxSocketAgeMs`, a connection retires after `rerollRequests` requests, so the
 *             proxy deals a new one (possibly to the missing instance);
 *   life      a connection retires after `maxRequestsPerSocket` requests or `maxSocketAgeMs`
 *             milliseconds whatever the above, so a new or restarted instance is found in that time.
 */

const http = require('node:http');

const BORN_AT = Symbol('bornAt');
const USES = Symbol('uses');
const INSTANCE = Symbol('instance');
const RETIRE = Symbol('retire');
const NAME = Symbol('name');
// Ejected when a new connection failed before its instance was known: no connection is closed, but the
// pool keeps its connections to good instances (see #expired) instead of dealing new ones.
const UNKNOWN_INSTANCE = '(a new connection\'s instance)';

class BoundedAgent extends http.Agent {
  /**
   * @param {object} options
   * @param {number} options.maxSockets concurrent connections per upstream
   * @param {number} options.minSockets connections opened before idle ones are reused (spread)
   * @param {number} options.maxRequestsPerSocket requests before a connection is retired
   * @param {number} options.maxSocketAgeMs age after which a connection is retired
   * @param {number} options.rerollRequests requests before a connection is retired while the pool
   *   reaches too few instances (re-deal)
   */
  constructor({ maxSockets, minSockets = 1, maxRequestsPerSocket, maxSocketAgeMs, rerollRequests = maxRequestsPerSocket }) {
    // 'lifo' pops the last idle connection: addRequest puts the chosen one there.
    super({ keepAlive: true, maxSockets, scheduling: 'lifo' });
    this.minSockets = Math.min(minSockets, maxSockets);
    this.maxRequestsPerSocket = maxRequestsPerSocket;
    this.maxSocketAgeMs = maxSocketAgeMs;
    this.rerollRequests = rerollRequests;
    this.lastUsed = new Map(); // instance id -> sequence number of the last request sent to it
    this.answered = new Map(); // instance id -> when it last answered (ms since epoch)
    this.sequence = 0;
    // http.Agent emits 'free' after every response on a keep-alive socket and
    // then either hands the socket straight to a queued request or pools it via
    // keepSocketAlive(). Retiring here (before Agent's own listener) covers
    // both paths: Agent sees a destroyed socket, drops it, and opens a new
    // connection for any queued request.
    // (Agent also emits 'free' for a brand-new socket opened for a queued
    // request, so uses are counted per assigned request, in addRequest.)
    this.prependListener('free', (socket) => {
      if (this.#expired(socket)) socket.destroy();
    });
    this.ejected = new Map(); // instance id -> until (ms since epoch)
  }

  /**
   * Remember which instance answered on `socket` (the proxy chose it when the connection was made),
   * and retire the connection when `bad` (it answered 5xx or too late).
   */
  noteAnswer(socket, instance, bad) {
    if (!socket) return;
    if (instance) {
      socket[INSTANCE] = instance;
      this.answered.set(instance, Date.now());
      if (!this.lastUsed.has(instance)) this.lastUsed.set(instance, this.sequence);
    }
    if (bad) socket[RETIRE] = true;
  }

  /** The pool's connections for `name`, busy and idle. */
  #connections(name) {
    return [...(this.sockets[name] || []), ...(this.freeSockets[name] || [])].filter((socket) => !socket.destroyed);
  }

  /** True while the pool's connections reach fewer instances than it should (see re-deal above). */
  #tooFewInstances(name) {
    const reached = new Set();
    for (const socket of this.#connections(name)) if (socket[INSTANCE]) reached.add(socket[INSTANCE]);
    if (reached.size <= 1) return true;
    const since = Date.now() - this.maxSocketAgeMs;
    for (const [instance, at] of this.answered) {
      if (at < since) this.answered.delete(instance);
      else if (!reached.has(instance) && !this.isEjected(instance)) return true;
    }
    return false;
  }

  /**
   * Outlier ejection, connection by connection: for `ms`, connections to `instance` are not kept
   * in the pool (idle ones are closed now, busy ones when they are released). New connections go
   * where the proxy sends them; the pool fills up with connections to the other instances.
   */
  eject(instance, ms) {
    if (!instance) return;
    this.ejected.set(instance, Date.now() + ms);
    for (const sockets of Object.values(this.freeSockets)) {
      for (const socket of sockets) if (socket[INSTANCE] === instance) socket.destroy();
    }
  }

  /** When the last current ejection ends (ms since epoch), 0 when no instance is ejected. */
  ejectionEnd() {
    let end = 0;
    for (const [instance, until] of this.ejected) {
      if (until > Date.now()) end = Math.max(end, until);
      else this.ejected.delete(instance);
    }
    return end;
  }

  isEjected(instance) {
    const until = this.ejected.get(instance);
    if (until === undefined) return false;
    if (until > Date.now()) return true;
    this.ejected.delete(instance);
    return false;
  }

  addRequest(req, options) {
    req.once('socket', (socket) => {
      socket[USES] += 1;
      this.sequence += 1;
      if (socket[INSTANCE]) this.lastUsed.set(socket[INSTANCE], this.sequence);
    });
    const name = this.getName(options); // host, port, localAddress, family: none of them in this.options
    const idle = this.freeSockets[name];
    if (idle?.length && idle.length + (this.sockets[name]?.length || 0) < this.minSockets) {
      // spread: open one more connection instead of reusing an idle one (Agent creates one when it sees none idle)
      delete this.freeSockets[name];
      try {
        super.addRequest(req, options);
      } finally {
        this.freeSockets[name] = [...idle, ...(this.freeSockets[name] || [])];
      }
      return;
    }
    if (idle?.length > 1) {
      // choice: the idle connection whose instance was used least recently (unknown instance first) goes last,
      // where 'lifo' takes it
      let best = idle.length - 1;
      const rank = (socket) => (socket.destroyed ? Infinity : socket[INSTANCE] ? this.lastUsed.get(socket[INSTANCE]) ?? -1 : -2);
      for (let i = 0; i < idle.length; i += 1) if (rank(idle[i]) < rank(idle[best])) best = i;
      idle.push(idle.splice(best, 1)[0]);
    }
    super.addRequest(req, options);
  }

  createConnection(options, callback) {
    const socket = super.createConnection(options, callback);
    socket[BORN_AT] = Date.now();
    socket[USES] = 0;
    socket[NAME] = options._agentKey ?? this.getName(options);
    return socket;
  }

  /** Called when a socket goes idle into the pool (it has not expired yet). */
  keepSocketAlive(socket) {
    if (!super.keepSocketAlive(socket)) return false;
    // Let Agent's idle-timeout handling close the socket when it reaches its
    // maximum age while idle; Agent only destroys timed-out *free* sockets.
    const retireAt = Math.max(socket[BORN_AT] + this.maxSocketAgeMs, socket[INSTANCE] ? this.ejectionEnd() : 0);
    socket.setTimeout(Math.max(1, retireAt - Date.now()));
    return true;
  }

  #expired(socket) {
    if (socket[RETIRE] || (socket[INSTANCE] && this.isEjected(socket[INSTANCE]))) return true;
    // While an instance is ejected, a connection known to reach a good one outlives its use and age
    // limits: a new connection would go wherever the proxy deals it, the ejected instance included.
    if (socket[INSTANCE] && this.ejectionEnd()) return false;
    if (socket[USES] >= this.maxRequestsPerSocket || Date.now() - socket[BORN_AT] >= this.maxSocketAgeMs) return true;
    return socket[USES] >= this.rerollRequests && this.#tooFewInstances(socket[NAME]);
  }
}

module.exports = { BoundedAgent, INSTANCE, UNKNOWN_INSTANCE };
