import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { FALSE_SPELLINGS, TRUE_SPELLINGS } from '../../services/gateway/lax-values.js';
import { ErrorCode, HTTP_STATUS } from '../../shared/errors.js';

/** The README's API section says what the code does: error codes, statuses, spellings. */
const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
const api = readme.slice(readme.indexOf('\n## API'), readme.indexOf('\n## Configuration'));

test('the error table lists every code a client can see, with its status', () => {
  const rows = new Map(
    [...api.matchAll(/^\| `([A-Z_]+)`\s*\| (\d{3})\s*\|/gm)].map((m) => [m[1], Number(m[2])]),
  );
  for (const code of Object.values(ErrorCode)) {
    // The client is gone by the time this one is "answered".
    if (code === ErrorCode.CLIENT_CLOSED) continue;
    assert.equal(rows.get(code), HTTP_STATUS[code], `README error table: ${code}`);
  }
});

test('the API section lists every accepted boolean spelling', () => {
  for (const [t, f] of TRUE_SPELLINGS.map((w, i) => [w, FALSE_SPELLINGS[i]!] as const))
    assert.ok(api.includes(`\`${t}\`/\`${f}\``), `README: ${t}/${f}`);
});
