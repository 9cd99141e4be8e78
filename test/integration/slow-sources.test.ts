import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { drawImage } from '../helpers/images.js';
import { suiteImageServer } from '../helpers/image-server.js';
import { postJson, suiteStack, type Stack } from '../helpers/stack.js';

/**
 * Image URLs whose hosts trickle: downloads run on their own worker (the `fetch` queue), so
 * they never hold the slot that decodes an upload, and each ends by URL_FETCH_TIMEOUT_MS with
 * IMAGE_FETCH_FAILED. The server only ever connects to this test's loopback image server.
 */
const images = suiteImageServer();
let stack: Stack;
suiteStack(
  {
    env: {
      PRE_CONCURRENCY: '1',
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

test('slow image URLs delay only their own requests, and end by URL_FETCH_TIMEOUT_MS', async () => {
  const png = await drawImage(120, 90, [{ colour: 'green', x: 10, y: 10, w: 40, h: 30 }]);
  images.served.set('/fast.png', png);
  for (let i = 0; i < 4; i++) images.trickled.add(`/slow-${i}.png`);
  const slow = [...images.trickled].map((path) =>
    timed(
      postJson(stack, '/infer/object_detection', {
        image: { type: 'url', value: `${images.url}${path}` },
        timeout_ms: 8000,
      }),
    ),
  );
  await sleep(500);
  // The one decoding slot is free for an upload, and downloads from a quick host pass too.
  const upload = await timed(
    postJson(stack, '/infer/object_detection', {
      image: { type: 'base64', value: png.toString('base64') },
    }),
  );
  assert.equal(upload.status, 200, JSON.stringify(upload.body));
  assert.ok(upload.ms < 2000, `the upload waited ${upload.ms} ms behind slow downloads`);
  const fast = await timed(
    postJson(stack, '/infer/object_detection', {
      image: { type: 'url', value: `${images.url}/fast.png` },
    }),
  );
  assert.equal(fast.status, 200, JSON.stringify(fast.body));
  assert.ok(fast.ms < 2000, `the quick URL waited ${fast.ms} ms behind slow downloads`);
  for (const res of await Promise.all(slow)) {
    assert.equal(res.status, 400, JSON.stringify(res.body));
    const body = res.body as { code: string; message: string };
    assert.equal(body.code, 'IMAGE_FETCH_FAILED');
    assert.match(body.message, /took longer than 3000 ms/);
    assert.ok(res.ms >= 2900 && res.ms < 6000, `answered after ${res.ms} ms`);
  }
});
