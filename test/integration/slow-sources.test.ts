import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { drawImage } from '../helpers/images.js';
import { suiteImageServer } from '../helpers/image-server.js';
import { postJson, suiteStack, type Stack } from '../helpers/stack.js';

/**
 * Image URLs whose hosts are slow: downloads run on their own worker (the `fetch` queue), so
 * they never hold the slot that decodes an upload; a host that trickles is cut off once its
 * average rate stays under URL_FETCH_MIN_BYTES_PER_S (after 2 s), so even more slow downloads
 * than URL_FETCH_CONCURRENCY free their slots soon; and no download outlasts
 * URL_FETCH_TIMEOUT_MS. The server only ever connects to this test's loopback image server.
 */
const images = suiteImageServer();
let stack: Stack;
suiteStack(
  {
    env: {
      PRE_CONCURRENCY: '1',
      URL_FETCH_CONCURRENCY: '4',
      ALLOW_PRIVATE_URLS: 'true',
      URL_FETCH_TIMEOUT_MS: '3000',
    },
  },
  (s) => {
    stack = s;
  },
);

async function timed<T>(work: Promise<T>): Promise<T & { ms: number }> {
  const started = Date.now();
  const result = await work;
  return { ...result, ms: Date.now() - started };
}

function byUrl(paths: string[]) {
  const image = paths.map((p) => ({ type: 'url', value: `${images.url}${p}` }));
  return postJson(stack, '/infer/object_detection', {
    image: image.length === 1 ? image[0] : image,
    timeout_ms: 8000,
  });
}

test('trickling hosts delay only their own requests, even with more of them than download slots', async () => {
  const png = await drawImage(120, 90, [{ colour: 'green', x: 10, y: 10, w: 40, h: 30 }]);
  images.served.set('/fast.png', png);
  const slowPaths = Array.from({ length: 6 }, (_, i) => `/slow-${i}.png`);
  for (const p of slowPaths) images.trickled.add(p);
  // Six trickling downloads for four slots: two wait until the floor cuts the first ones off.
  const slow = [timed(byUrl(slowPaths.slice(0, 3))), timed(byUrl(slowPaths.slice(3)))];
  await sleep(500);
  // The one decoding slot is free for an upload...
  const upload = await timed(
    postJson(stack, '/infer/object_detection', {
      image: { type: 'base64', value: png.toString('base64') },
    }),
  );
  assert.equal(upload.status, 200, JSON.stringify(upload.body));
  assert.ok(upload.ms < 2000, `the upload waited ${upload.ms} ms behind slow downloads`);
  // ...and a quick host's image waits at most until the trickling ones are cut off.
  const fast = await timed(byUrl(['/fast.png']));
  assert.equal(fast.status, 200, JSON.stringify(fast.body));
  assert.ok(fast.ms < 4000, `the quick URL waited ${fast.ms} ms behind slow downloads`);
  for (const res of await Promise.all(slow)) {
    assert.equal(res.status, 400, JSON.stringify(res.body));
    const body = res.body as { code: string; message: string };
    assert.equal(body.code, 'IMAGE_FETCH_FAILED');
    assert.match(body.message, /slower than 4096 bytes\/s/);
    assert.ok(res.ms >= 1900 && res.ms < 7000, `answered after ${res.ms} ms`);
  }
});

test('a download fast enough but endless ends at URL_FETCH_TIMEOUT_MS', async () => {
  images.steady.add('/endless.png');
  const res = await timed(byUrl(['/endless.png']));
  assert.equal(res.status, 400, JSON.stringify(res.body));
  const body = res.body as { code: string; message: string };
  assert.equal(body.code, 'IMAGE_FETCH_FAILED');
  assert.match(body.message, /took longer than 3000 ms/);
  assert.ok(res.ms >= 2900 && res.ms < 5000, `answered after ${res.ms} ms`);
});
