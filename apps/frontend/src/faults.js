'use strict';
/**
 * Fault injection (off by default): added latency (fixed plus a uniform jitter), an error
 * rate (HTTP 500 with a JSON body) and an abort rate (the connection is closed without an
 * answer). Set at start-up from FAULT_* variables (config.js) or at run time through the
 * admin endpoint on 127.0.0.1 (app.js): GET/PUT/DELETE /admin/faults. The same settings
 * and messages as add-svc/sub-svc (apps/arith/arith_svc/faults.py).
 */

const FIELDS = {
  latency_ms: { min: 0, max: 60000, integer: true },
  latency_jitter_ms: { min: 0, max: 60000, integer: true },
  error_rate: { min: 0, max: 1, integer: false },
  abort_rate: { min: 0, max: 1, integer: false },
};
const NONE = Object.freeze({ latency_ms: 0, latency_jitter_ms: 0, error_rate: 0, abort_rate: 0 });

class FaultError extends Error {}

/**
 * Check a fault setting; every problem in one message. Missing fields are 0.
 * @param {object} input e.g. {latency_ms: 300} or {error_rate: 0.5}
 * @returns {{latency_ms: number, latency_jitter_ms: number, error_rate: number, abort_rate: number}}
 * @throws {FaultError}
 */
function validateFaults(input) {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    throw new FaultError('faults must be a JSON object such as {"latency_ms": 300} or {"error_rate": 0.5}');
  }
  const problems = [];
  const unknown = Object.keys(input).filter((key) => !(key in FIELDS));
  if (unknown.length) problems.push(`unknown field(s) ${unknown.join(', ')}: use ${Object.keys(FIELDS).join(', ')}`);
  const faults = { ...NONE };
  for (const [key, { min, max, integer }] of Object.entries(FIELDS)) {
    if (!(key in input)) continue;
    const value = input[key];
    if (typeof value !== 'number' || !Number.isFinite(value) || (integer && !Number.isInteger(value)) || value < min || value > max) {
      problems.push(`${key} must be ${integer ? 'an integer' : 'a number'} from ${min} to ${max}, got ${JSON.stringify(value)}`);
    } else {
      faults[key] = value;
    }
  }
  if (faults.error_rate + faults.abort_rate > 1) problems.push('error_rate + abort_rate must not exceed 1');
  if (problems.length) throw new FaultError(problems.join('; '));
  return faults;
}

/** The faults that decide one request: {delayMs, outcome: 'ok' | 'error' | 'abort'}. */
function drawFault(faults, random = Math.random) {
  const delayMs = faults.latency_ms + (faults.latency_jitter_ms ? random() * faults.latency_jitter_ms : 0);
  const roll = random();
  let outcome = 'ok';
  if (roll < faults.abort_rate) outcome = 'abort';
  else if (roll < faults.abort_rate + faults.error_rate) outcome = 'error';
  return { delayMs, outcome };
}

function isActive(faults) {
  return Object.keys(NONE).some((key) => faults[key] !== 0);
}

module.exports = { validateFaults, drawFault, isActive, FaultError, NONE };
