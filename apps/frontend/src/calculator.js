'use strict';
/** Left-to-right evaluation of a parsed expression through the arith services. */

/**
 * @param {{first: number, steps: {op: string, value: number, position: number}[]}} parsed
 * @param {{'+': import('./upstream').UpstreamClient, '-': import('./upstream').UpstreamClient}} clients
 * @returns {Promise<{result: number, calls: {op: string, instance: string|null, attempts: number, breaker: string}[]}>}
 * @throws {import('./upstream').UpstreamError} with `position` set to the failing operator
 */
async function evaluate(parsed, clients) {
  let result = parsed.first;
  const calls = [];
  for (const { op, value, position } of parsed.steps) {
    try {
      const answer = await clients[op].execute(result, value);
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
