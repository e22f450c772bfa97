'use strict';
/**
 * Parser for calculator expressions such as "1 + 1 + 2 - 3".
 *
 * Grammar:  expression := ws number (ws ('+' | '-') ws number)* ws
 *           number     := [0-9]{1,15}           (ASCII digits only)
 *           ws         := [ \t\r\n]*
 * There is no unary minus: "-1+2" is rejected at position 0.
 */

const MAX_EXPRESSION_LENGTH = 1000;
const MAX_TERMS = 100;
// 15 digits keep every operand below 10**15: inside the arith services' range
// and far below Number.MAX_SAFE_INTEGER, so no precision is lost in JSON.
const MAX_DIGITS = 15;

class ParseError extends Error {
  /** @param {string} message @param {number} position 0-based index in the expression */
  constructor(message, position) {
    super(message);
    this.name = 'ParseError';
    this.position = position;
  }
}

const isDigit = (ch) => ch >= '0' && ch <= '9';
const isSpace = (ch) => ch === ' ' || ch === '\t' || ch === '\r' || ch === '\n';

/**
 * Parse `text` into its first operand and the (operator, operand) steps that
 * follow, to be applied strictly left to right.
 *
 * @param {string} text
 * @returns {{first: number, steps: {op: '+'|'-', value: number, position: number}[]}}
 *   `position` is the index of the step's operator.
 * @throws {ParseError}
 */
function parseExpression(text) {
  if (text.length > MAX_EXPRESSION_LENGTH) {
    throw new ParseError(`expression is longer than ${MAX_EXPRESSION_LENGTH} characters`, MAX_EXPRESSION_LENGTH);
  }
  let pos = 0;
  const skipSpace = () => {
    while (pos < text.length && isSpace(text[pos])) pos += 1;
  };
  const describe = (at) => (at < text.length ? `'${String.fromCodePoint(text.codePointAt(at))}'` : 'end of expression');

  const readNumber = (termCount) => {
    skipSpace();
    const start = pos;
    if (!isDigit(text[pos] || '')) {
      let hint = '';
      if (text[pos] === '-' && termCount === 0) hint = ' (unary minus is not supported)';
      throw new ParseError(`expected a number at ${describe(pos)}${hint}`, pos);
    }
    if (termCount >= MAX_TERMS) {
      throw new ParseError(`expression has more than ${MAX_TERMS} numbers`, start);
    }
    while (pos < text.length && isDigit(text[pos])) pos += 1;
    if (pos - start > MAX_DIGITS) {
      throw new ParseError(`number has more than ${MAX_DIGITS} digits`, start);
    }
    return Number(text.slice(start, pos));
  };

  skipSpace();
  if (pos === text.length) throw new ParseError('expression is empty', 0);

  const first = readNumber(0);
  const steps = [];
  for (;;) {
    skipSpace();
    if (pos === text.length) return { first, steps };
    const op = text[pos];
    if (op !== '+' && op !== '-') {
      throw new ParseError(`expected '+' or '-' at ${describe(pos)}`, pos);
    }
    const position = pos;
    pos += 1;
    steps.push({ op, value: readNumber(steps.length + 1), position });
  }
}

module.exports = { parseExpression, ParseError, MAX_EXPRESSION_LENGTH, MAX_TERMS, MAX_DIGITS };
