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
    socket.setTimeout(Math.max(1, socket[BORN_AT] + this.maxSocketAgeMs - Date.now()));
    return true;
  }

  #expired(socket) {
    return socket[USES] >= this.maxRequestsPerSocket || Date.now() - socket[BORN_AT] >= this.maxSocketAgeMs;
  }
}

module.exports = { BoundedAgent };
