'use strict';
/**
 * Keep-alive HTTP agent whose pooled connections have a bounded life.
 *
 * Why: Consul's built-in Connect proxy balances per TCP connection, so a
 * connection that lives forever pins all of its requests to one upstream
 * instance. Retiring a connection after `maxRequestsPerSocket` requests or
 * `maxSocketAgeMs` milliseconds makes the client open a new one from time to
 * time, which the proxy may route to another instance, while most requests
 * still reuse an open connection (no new TCP/TLS handshake).
 */

const http = require('node:http');

const BORN_AT = Symbol('bornAt');
const USES = Symbol('uses');
const INSTANCE = Symbol('instance');
const RETIRE = Symbol('retire');
// Ejected when a new connection failed before its instance was known: no connection is closed, but the
// pool keeps its connections to good instances (see #expired) instead of dealing new ones.
const UNKNOWN_INSTANCE = '(a new connection\'s instance)';

class BoundedAgent extends http.Agent {
  /**
   * @param {object} options
   * @param {number} options.maxSockets concurrent connections per upstream
   * @param {number} options.maxRequestsPerSocket requests before a connection is retired
   * @param {number} options.maxSocketAgeMs age after which a connection is retired
   */
  constructor({ maxSockets, maxRequestsPerSocket, maxSocketAgeMs }) {
    // 'lifo' reuses the most recently used connection, so idle ones age out
    // instead of being kept warm by round-robin use.
    super({ keepAlive: true, maxSockets, scheduling: 'lifo' });
    this.maxRequestsPerSocket = maxRequestsPerSocket;
    this.maxSocketAgeMs = maxSocketAgeMs;
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
    if (instance) socket[INSTANCE] = instance;
    if (bad) socket[RETIRE] = true;
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
    });
    super.addRequest(req, options);
  }

  createConnection(options, callback) {
    const socket = super.createConnection(options, callback);
    socket[BORN_AT] = Date.now();
    socket[USES] = 0;
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
    return socket[USES] >= this.maxRequestsPerSocket || Date.now() - socket[BORN_AT] >= this.maxSocketAgeMs;
  }
}

module.exports = { BoundedAgent, INSTANCE, UNKNOWN_INSTANCE };
