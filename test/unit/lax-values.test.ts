import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { z } from 'zod';
import {
  FALSE_SPELLINGS,
  TRUE_SPELLINGS,
  laxBoolean,
  laxConfidence,
  laxNumber,
} from '../../services/gateway/lax-values.js';
import { SERVER_VERSION } from '../../services/gateway/version.js';

/** The value spellings every route accepts, as Roboflow's server (pydantic, lax mode) does. */
const bool = laxBoolean();

test('booleans: every spelling of true and false, in any case, and JSON booleans and 1/0', () => {
  const cases = (words: readonly string[]) =>
    words.flatMap((w) => [w, w.toUpperCase(), w[0]!.toUpperCase() + w.slice(1), ` ${w} `]);
  for (const v of [...cases(TRUE_SPELLINGS), true, 1]) assert.equal(bool.parse(v), true, String(v));
  for (const v of [...cases(FALSE_SPELLINGS), false, 0])
    assert.equal(bool.parse(v), false, String(v));
  for (const v of ['', 'maybe', 'tru', '2', 2, -1, 0.5, null, [], {}, 'yess']) {
    const r = bool.safeParse(v);
    assert.equal(r.success, false, JSON.stringify(v));
    assert.match(
      r.error?.issues[0]?.message ?? '',
      /true\/1\/yes\/on\/t\/y or false\/0\/no\/off\/f\/n \(any case\)/,
    );
  }
});

test('numbers: decimal numerals only, as Python reads them', () => {
  const num = laxNumber(z.number());
  for (const [text, value] of [
    ['0.5', 0.5],
    ['-2', -2],
    ['1e-3', 0.001],
    ['.25', 0.25],
    ['3.', 3],
  ] as const)
    assert.equal(num.parse(text), value, text);
  for (const text of ['0x1', '0b1', '0o7', 'Infinity', 'NaN', '1_000', '1,5'])
    assert.equal(num.safeParse(text).success, false, text);
});

test('numbers: JSON numbers and numeric strings; range checks after conversion', () => {
  const n = laxNumber(z.number().int().min(1));
  assert.equal(n.parse('300'), 300);
  assert.equal(n.parse(' 7 '), 7);
  assert.equal(n.parse(12), 12);
  for (const v of ['', ' ', 'abc', '1.5', '0', 'Infinity', 'NaN', true, null]) {
    assert.equal(n.safeParse(v).success, false, JSON.stringify(v));
  }
});

test("confidence: a number in range, a numeric string, 'default' or 'best'", () => {
  const fraction = laxConfidence(1);
  assert.equal(fraction.parse('0.5'), 0.5);
  assert.equal(fraction.parse(0), 0);
  assert.equal(fraction.parse('default'), 'default');
  assert.equal(fraction.parse('best'), 'best');
  for (const v of ['1.5', 2, -0.1, 'Best', 'worst', '', null])
    assert.equal(fraction.safeParse(v).success, false, JSON.stringify(v));
  const percent = laxConfidence(100);
  assert.equal(percent.parse('25'), 25);
  assert.equal(percent.safeParse('101').success, false);
});

test('the version /info and the API documentation give is the package version', () => {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  assert.equal(SERVER_VERSION, pkg.version);
});
