'use strict';

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const { parseExpression, ParseError, MAX_TERMS, MAX_EXPRESSION_LENGTH } = require('../src/parser');

/** Shorthand: [first, [op, value], ...] */
const flat = ({ first, steps }) => [first, ...steps.map(({ op, value }) => [op, value])];

describe('parseExpression', () => {
  it('parses the seed expression left to right', () => {
    const parsed = parseExpression('1+1+2+3+4+5+6-1-2-3-4-5-6+9+8-4-5');
    assert.equal(parsed.first, 1);
    assert.equal(parsed.steps.length, 16);
    assert.deepEqual(parsed.steps.map((s) => s.op).join(''), '++++++------++--');
  });

  it('accepts a single number', () => {
    assert.deepEqual(parseExpression('5'), { first: 5, steps: [] });
  });

  it('allows whitespace around numbers and operators and records operator positions', () => {
    const parsed = parseExpression(' \t12 +\n3 - 004\r\n');
    assert.deepEqual(flat(parsed), [12, ['+', 3], ['-', 4]]);
    assert.deepEqual(parsed.steps.map((s) => s.position), [5, 9]);
  });

  it('accepts 15-digit numbers and exactly the maximum number of terms', () => {
    assert.equal(parseExpression('999999999999999').first, 999999999999999);
    assert.equal(parseExpression(Array(MAX_TERMS).fill('1').join('+')).steps.length, MAX_TERMS - 1);
  });

  const rejects = [
    // [expression, message fragment, position]
    ['', 'empty', 0],
    ['   \t', 'empty', 0],
    ['a', "expected a number at 'a'", 0],
    ['1+b', "expected a number at 'b'", 2],
    ['1*2', "expected '+' or '-' at '*'", 1],
    ['1/2', "expected '+' or '-' at '/'", 1],
    ['1++2', "expected a number at '+'", 2],
    ['1+-2', "expected a number at '-'", 2],
    ['1+', 'expected a number at end of expression', 2],
    ['1 + 2 -  ', 'expected a number at end of expression', 9],
    ['-1+2', 'unary minus is not supported', 0],
    ['+1', "expected a number at '+'", 0],
    ['1 2', "expected '+' or '-' at '2'", 2],
    ['1.5+1', "expected '+' or '-' at '.'", 1],
    ['(1+2)', "expected a number at '('", 0],
    ['١+2', "expected a number at '١'", 0],
    ['1+²', "expected a number at '²'", 2],
    ['1\u00a0+2', "expected '+' or '-'", 1], // non-breaking space is not whitespace here
    ['1+9999999999999999', 'more than 15 digits', 2],
    ['0000000000000001', 'more than 15 digits', 0],
    [Array(MAX_TERMS + 1).fill('1').join('+'), `more than ${MAX_TERMS} numbers`, 2 * MAX_TERMS],
    ['1'.padEnd(MAX_EXPRESSION_LENGTH + 1, ' '), `longer than ${MAX_EXPRESSION_LENGTH}`, MAX_EXPRESSION_LENGTH],
  ];
  for (const [expression, message, position] of rejects) {
    it(`rejects ${JSON.stringify(expression.length > 30 ? `${expression.slice(0, 30)}...` : expression)}`, () => {
      assert.throws(
        () => parseExpression(expression),
        (err) => {
          assert.ok(err instanceof ParseError);
          assert.match(err.message, new RegExp(message.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
          assert.equal(err.position, position);
          return true;
        },
      );
    });
  }
});
