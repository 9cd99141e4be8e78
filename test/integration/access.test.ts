import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { drawImage } from '../helpers/images.js';
import { suiteStack, type Stack } from '../helpers/stack.js';

/**
 * With API keys configured, every inference and admin route needs one (body, query or Bearer);
 * health routes stay open; keys never reach the logs.
 */
let stack: Stack;
let dir: string;
const INLINE = ['inline-key-6f1d2c', 'second-key-93ab70'];
const FROM_FILE = 'file-key-a8c4e1';

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'sd-keys-'));
  writeFileSync(join(dir, 'keys.txt'), `# not a comment, just a line\n${FROM_FILE}\n`);
});
suiteStack(
  () => ({
    env: {
      API_KEYS: INLINE.join(','),
      API_KEYS_FILE: join(dir, 'keys.txt'),
      METRICS_REQUIRE_KEY: 'true',
      ALLOW_URL_INPUT: 'false',
    },
  }),
  (s) => {
    stack = s;
  },
);
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

async function call(path: string, init: RequestInit = {}) {
  const res = await fetch(`${stack.url}${path}`, init);
  const text = await res.text();
  return { status: res.status, text };
}

test('API keys: required on inference and admin routes, accepted from body, query or Bearer', async () => {
  const png = await drawImage(120, 90, [{ colour: 'red', x: 10, y: 10, w: 40, h: 30 }]);
  const json = (extra: Record<string, unknown>) => ({
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ image: { type: 'base64', value: png.toString('base64') }, ...extra }),
  });

  const missing = await call('/infer/object_detection', json({}));
  assert.equal(missing.status, 401);
  assert.equal((JSON.parse(missing.text) as { code: string }).code, 'UNAUTHORIZED');
  assert.equal((await call('/infer/object_detection', json({ api_key: 'wrong-key' }))).status, 401);
  assert.equal((await call('/model/registry')).status, 401);
  assert.equal((await call('/admin/queues')).status, 401);
  assert.equal((await call('/metrics')).status, 401);

  assert.equal((await call('/infer/object_detection', json({ api_key: INLINE[0] }))).status, 200);
  const bearer = { headers: { authorization: `Bearer ${INLINE[1]}` } };
  assert.equal((await call('/model/registry', bearer)).status, 200);
  assert.equal((await call('/metrics', bearer)).status, 200);
  const raw = await call(`/infer/object_detection?api_key=${FROM_FILE}`, {
    method: 'POST',
    headers: { 'content-type': 'image/png' },
    body: png,
  });
  assert.equal(raw.status, 200, raw.text);

  // The asynchronous routes likewise.
  assert.equal((await call('/async/infer/object_detection', json({}))).status, 401);
  const accepted = await call('/async/infer/object_detection', json({ api_key: INLINE[0] }));
  assert.equal(accepted.status, 202, accepted.text);
  const statusUrl = (JSON.parse(accepted.text) as { status_url: string }).status_url;
  assert.equal((await call(statusUrl)).status, 401);
  assert.equal((await call(statusUrl, { method: 'DELETE' })).status, 401);
  assert.equal((await call(statusUrl, bearer)).status, 200);
  assert.equal((await call(statusUrl, { method: 'DELETE', ...bearer })).status, 204);

  for (const open of ['/healthz', '/readyz', '/docs/json'])
    assert.equal((await call(open)).status, 200, open);

  await new Promise((r) => setTimeout(r, 200));
  const logs = stack.logs().join('\n');
  for (const key of [...INLINE, FROM_FILE]) assert.ok(!logs.includes(key), 'an API key was logged');
});

test("inference-sdk's model calls: /model/remove and /model/clear need the key, which the client sends only as a header", async () => {
  // What inference-sdk sends for unload_model / unload_all_models with its default
  // api_key_transport: a JSON body with model_id alone, and no body at all.
  const remove = (headers: Record<string, string> = {}) =>
    call('/model/remove', {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: JSON.stringify({ model_id: 'tiny-shapes' }),
    });
  const clear = (headers: Record<string, string> = {}) =>
    call('/model/clear', { method: 'POST', headers });
  assert.equal((await remove()).status, 401);
  assert.equal((await clear()).status, 401);
  // With api_key_transport="header" (or "both"): Authorization: Bearer <key>.
  const bearer = { authorization: `Bearer ${INLINE[0]}` };
  const removed = await remove(bearer);
  assert.equal(removed.status, 200, removed.text);
  assert.equal((await clear(bearer)).status, 200);
  // get_server_info() sends no key, as Roboflow's /info needs none.
  const info = await call('/info');
  assert.equal(info.status, 200, info.text);
});

test('ALLOW_URL_INPUT=false refuses image URLs at the gateway', async () => {
  const res = await fetch(`${stack.url}/infer/object_detection`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${INLINE[0]}` },
    body: JSON.stringify({ image: { type: 'url', value: 'https://example.com/a.jpg' } }),
  });
  assert.equal(res.status, 400);
  const body = (await res.json()) as { code: string; message: string };
  assert.equal(body.code, 'INVALID_REQUEST');
  assert.match(body.message, /URLs are turned off/);
});

test('the Bearer scheme is case-insensitive', async () => {
  for (const scheme of ['bearer', 'BEARER', 'Bearer']) {
    const res = await call('/models', { headers: { authorization: `${scheme} ${INLINE[0]}` } });
    assert.equal(res.status, 200, `${scheme}: ${res.text}`);
  }
  assert.equal((await call('/models', { headers: { authorization: 'Basic xyz' } })).status, 401);
});

test('the queue dashboard works in a browser with API keys: static files open, the key kept as a cookie', async () => {
  assert.equal((await call('/admin/queues')).status, 401);
  const page = await fetch(`${stack.url}/admin/queues?api_key=${INLINE[0]}`);
  const html = await page.text();
  assert.equal(page.status, 200);
  const cookie = page.headers.get('set-cookie') ?? '';
  assert.match(cookie, /^sd_api_key=[^;]+; Path=\/admin\/queues; HttpOnly; SameSite=Strict$/);
  // The page's own scripts and API calls carry no key of their own.
  const script = /src="([^"]*static[^"]+\.js)"/.exec(html)?.[1];
  assert.ok(script, 'the page names its script');
  const scriptPath = script.startsWith('/') ? script : `/admin/queues/${script}`;
  assert.equal((await call(scriptPath)).status, 200);
  const withCookie = { headers: { cookie: cookie.split(';')[0]! } };
  assert.equal((await call('/admin/queues/api/queues', withCookie)).status, 200);
  assert.equal((await call('/admin/queues/api/queues')).status, 401);
  const wrong = { headers: { cookie: 'sd_api_key=not-a-key' } };
  assert.equal((await call('/admin/queues/api/queues', wrong)).status, 401);
});
