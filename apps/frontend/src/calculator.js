'use strict';
/** Left-to-right evaluation of a parsed expression through the arith services. */

/**
 * @param {{first: number, steps: {op: string, value: number, position: number}[]}} parsed
 * @param {{'+': import('./upstream').UpstreamClient, '-': import('./upstream').UpstreamClient}} clients
 * @param {import('./tracing').ComputeTrace|null} [computeTrace] the compute's trace (its calls' attempts are spans in it)
 * @returns {Promise<{result: number, calls: {op: string, instance: string|null, attempts: number, breaker: string}[]}>}
 * @throws {import('./upstream').UpstreamError} with `position` set to the failing operator
 */
async function evaluate(parsed, clients, computeTrace = null) {
  let result = parsed.first;
  const calls = [];
  for (const { op, value, position } of parsed.steps) {
    try {
      const answer = await clients[op].execute(result, value, computeTrace);
      result = answer.result;
      calls.push({ op, instance: answer.instance, attempts: answer.attempts, breaker: answer.breaker });
    } catch (err) {
      err.position = position;
      throw err;
    }
  }
  return { result, calls };
}

module.exports = { evaluate };
