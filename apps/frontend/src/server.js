'use strict';
/**
 * Entry point: `node src/server.js`. Configuration comes from the environment
 * (see config.js and apps/README.md); invalid values exit with code 2.
 */

const { loadConfig, ConfigError } = require('./config');
const { createApp } = require('./app');

const SHUTDOWN_GRACE_MS = 10000;

function main() {
  let config;
  try {
    config = loadConfig(process.env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`frontend: ${err.message}\n`);
    process.exit(2);
  }

  const app = createApp(config);
  app.listen().then(
    ({ address, port }) => {
      process.stderr.write(`frontend ${config.instanceId} listening on ${address}:${port}\n`);
      if (config.tracing) process.stderr.write(`frontend: tracing: spans to ${config.tracing.endpoint}\n`);
    },
    (err) => {
      // err.message names the address (the service's or the admin endpoint's).
      process.stderr.write(`frontend: cannot listen: ${err.message}\n`);
      process.exit(1);
    },
  );

  const shutdown = (signal) => {
    process.stderr.write(`frontend: ${signal} received, shutting down\n`);
    // Requests still running after the grace period are cut off. app.close() sends the queued spans last, within
    // a short bound of its own (tracing.js).
    setTimeout(() => process.exit(1), SHUTDOWN_GRACE_MS).unref();
    app.close().then(() => process.exit(0));
  };
  process.once('SIGTERM', shutdown);
  process.once('SIGINT', shutdown);
}

main();
