import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { Queue } from 'bullmq';
import { QueueName, type AsyncStatus, type DetectionResponse } from '../../shared/contracts.js';
import { ASYNC_DECODED_AHEAD } from '../../services/pre/async-pacing.js';
import { assertShapes, drawImage, type Shape } from '../helpers/images.js';
import { suiteImageServer, suiteLoopbackServer } from '../helpers/image-server.js';
import { sample, scrape } from '../helpers/metrics.js';
import { keysOf, logEvents, postJson, suiteRedis, type Stack } from '../helpers/stack.js';

/**
 * Asynchronous requests on the real stack (every role its own process, a real redis-server,
 * the generated tiny detector): submit, poll, lists, DELETE, limits, deadlines, TTLs, webhooks
 * to a receiver of the test's own on 127.0.0.1, priority of synchronous images, a worker killed
 * mid-list, and a Redis that restarts empty.
 */
const suite = suiteRedis();
const SECRET = 'test-webhook-secret';

const SCENE: Shape[] = [
  { colour: 'red', x: 40, y: 60, w: 120, h: 90 },
  { colour: 'blue', x: 300, y: 200, w: 150, h: 100 },
];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function b64(image: Buffer) {
  return { type: 'base64', value: image.toString('base64') };
}

async function getStatus(stack: Stack, id: string) {
  const res = await fetch(`${stack.url}/async/${id}`);
  return { status: res.status, body: (await res.json()) as AsyncStatus & { code?: string } };
}

/** Polls the status until `done` says so (default: finished), within `ms`. */
async function pollUntil(
  stack: Stack,
  id: string,
  ms = 20_000,
  done: (s: AsyncStatus) => boolean = (s) => s.status === 'completed' || s.status === 'failed',
): Promise<AsyncStatus> {
  const until = Date.now() + ms;
  let last: unknown;
  while (Date.now() < until) {
    const res = await getStatus(stack, id);
    last = res.body;
    if (res.status === 200 && done(res.body)) return res.body;
    await sleep(50);
  }
  assert.fail(`async request ${id} not done in ${ms} ms: ${JSON.stringify(last).slice(0, 500)}`);
}

async function submit(stack: Stack, body: unknown) {
  const res = await postJson(stack, '/async/infer/object_detection', body);
  return { ...res, body: res.body as { inference_id: string; status: string; status_url: string } };
}

/** Waits until the gateway serves the model (a stack started without waiting for /readyz). */
async function waitForModel(stack: Stack): Promise<void> {
  const until = Date.now() + 60_000;
  while (Date.now() < until) {
    try {
      const res = await fetch(`${stack.url}/models`);
      if (res.ok && ((await res.json()) as { models: unknown[] }).models.length > 0) return;
    } catch {
      // Not listening yet.
    }
    await sleep(100);
  }
  throw new Error(`no model served:\n${stack.logs().slice(-30).join('\n')}`);
}

/** Keys of a stack that hold a per-request id (a UUID), reply lists of gateways aside. */
async function requestKeys(stack: Stack): Promise<string[]> {
  const all = await keysOf(suite.redis.client, stack.prefix);
  return all.filter((k) => /[0-9a-f]{8}-[0-9a-f]{4}-/.test(k) && !k.includes(':reply:'));
}

/** A webhook receiver on 127.0.0.1 that records each delivery and answers `status`. */
interface Receiver {
  url: string;
  status: number;
  deliveries: Array<{ url: string; headers: IncomingHttpHeaders; body: string; at: number }>;
}

function receiver(): Receiver {
  const handle: Receiver = { url: '', status: 200, deliveries: [] };
  const server = suiteLoopbackServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      handle.deliveries.push({
        url: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
        at: Date.now(),
      });
      res.writeHead(handle.status).end();
    });
  });
  return Object.defineProperty(handle, 'url', { get: () => server.url });
}

const hook = receiver();
// A webhook receiver that takes each POST and never answers.
const silent = suiteLoopbackServer(() => {});
// Image URLs that fail slowly (a trickle, cut off by URL_FETCH_MIN_BYTES_PER_S after 2 s).
const slowImages = suiteImageServer();

describe('asynchronous requests on a whole stack', () => {
  let stack: Stack;
  before(async () => {
    stack = await suite.stack({
      env: {
        WEBHOOK_SECRET: SECRET,
        // The test's receiver is on loopback.
        ALLOW_PRIVATE_URLS: 'true',
        ASYNC_WEBHOOK_ATTEMPTS: '3',
        ASYNC_MAX_IMAGES: '60',
        MAX_BATCH_DELAY_MS: '20',
        JOB_LOCK_MS: '1000',
      },
    });
    // A second `pre`, so that one can be killed while the other goes on.
    stack.add('pre');
  });
  after(() => stack.stop());

  test('submit, poll, completed: the same predictions as the synchronous route', async () => {
    const image = await drawImage(480, 360, SCENE);
    const res = await submit(stack, { image: b64(image), confidence: 0.5 });
    assert.equal(res.status, 202, JSON.stringify(res.body));
    const id = res.body.inference_id;
    assert.match(id, /^[0-9a-f-]{36}$/);
    assert.equal(res.body.status, 'queued');
    assert.equal(res.body.status_url, `/async/${id}`);
    assert.equal(res.headers.get('location'), `/async/${id}`);

    const done = await pollUntil(stack, id);
    assert.equal(done.status, 'completed', JSON.stringify(done));
    assert.equal(done.inference_id, id);
    assert.deepEqual([done.images_total, done.images_done], [1, 1]);
    assert.ok(Date.parse(done.created_at) <= Date.parse(done.completed_at!));
    assert.equal(done.error, undefined);
    const result = done.result as DetectionResponse;
    assert.ok(!Array.isArray(result));
    assertShapes(result.predictions, SCENE);

    const sync = await postJson(stack, '/infer/object_detection', {
      image: b64(image),
      confidence: 0.5,
    });
    assert.equal(sync.status, 200);
    const strip = (r: DetectionResponse) =>
      r.predictions.map(({ detection_id: _, ...p }) => p).sort((a, b) => a.x - b.x);
    assert.deepEqual(strip(result), strip(sync.body as DetectionResponse));
    assert.deepEqual(result.image, (sync.body as DetectionResponse).image);
    assert.deepEqual(Object.keys(result).sort(), Object.keys(sync.body as object).sort());
  });

  test('a raw image body with options in the query string', async () => {
    const image = await drawImage(300, 200, [{ colour: 'green', x: 10, y: 20, w: 100, h: 80 }]);
    const res = await fetch(`${stack.url}/async/infer/object_detection?class_filter=green`, {
      method: 'POST',
      headers: { 'content-type': 'image/png' },
      body: image,
    });
    assert.equal(res.status, 202);
    const { inference_id } = (await res.json()) as { inference_id: string };
    const done = await pollUntil(stack, inference_id);
    assert.equal(done.status, 'completed');
    assert.deepEqual(
      (done.result as DetectionResponse).predictions.map((p) => p.class),
      ['green'],
    );
  });

  test('a list: progress, results in order, and a failed image fails the request', async () => {
    const colours = ['red', 'green', 'blue'] as const;
    const images = await Promise.all(
      Array.from({ length: 12 }, (_, i) =>
        drawImage(200 + i * 10, 160, [{ colour: colours[i % 3]!, x: 20, y: 20, w: 60, h: 50 }]),
      ),
    );
    const res = await submit(stack, { image: images.map(b64) });
    assert.equal(res.status, 202);
    const id = res.body.inference_id;
    const first = await getStatus(stack, id);
    assert.equal(first.body.images_total, 12);
    assert.ok(first.body.images_done <= 12);
    const done = await pollUntil(stack, id);
    assert.equal(done.status, 'completed');
    assert.equal(done.images_done, 12);
    const list = done.result as DetectionResponse[];
    assert.ok(Array.isArray(list) && list.length === 12);
    list.forEach((r, i) => {
      assert.equal(r.image.width, 200 + i * 10, `image ${i} in its place`);
      assert.deepEqual(
        r.predictions.map((p) => p.class),
        [colours[i % 3]],
      );
    });

    const bad = await submit(stack, {
      image: [b64(images[0]!), b64(Buffer.from('not an image at all'))],
    });
    const failed = await pollUntil(stack, bad.body.inference_id);
    assert.equal(failed.status, 'failed');
    assert.equal(failed.result, undefined);
    assert.equal(failed.error?.code, 'IMAGE_DECODE_FAILED');
    assert.equal(failed.images_done, 2);
  });

  test('a list whose images fail: both routes report the first failed image in its order', async () => {
    // The first image fails after about 2 s (a trickling download), the second at once.
    slowImages.trickled.add('/trickle.png');
    const body = {
      image: [
        { type: 'url', value: `${slowImages.url}/trickle.png` },
        b64(Buffer.from('not an image at all')),
      ],
    };
    const sync = await postJson(stack, '/infer/object_detection', body);
    assert.equal(sync.status, 400);
    assert.equal((sync.body as { code: string }).code, 'IMAGE_FETCH_FAILED');
    const res = await submit(stack, body);
    const failed = await pollUntil(stack, res.body.inference_id);
    assert.equal(failed.status, 'failed');
    assert.equal(failed.error?.code, 'IMAGE_FETCH_FAILED');
  });

  test('an unknown id is 404 RESULT_UNKNOWN; limits are 400', async () => {
    for (const id of ['7d9f3c1e-0000-4000-8000-000000000000', 'not-an-id', 'x'.repeat(300)]) {
      const res = await getStatus(stack, id);
      assert.equal(res.status, 404);
      assert.equal(res.body.code, 'RESULT_UNKNOWN');
      const del = await fetch(`${stack.url}/async/${id}`, { method: 'DELETE' });
      assert.equal(del.status, 404);
    }
    const image = await drawImage(64, 64, []);
    const tooMany = await submit(stack, { image: Array.from({ length: 61 }, () => b64(image)) });
    assert.equal(tooMany.status, 400);
    assert.match(JSON.stringify(tooMany.body), /61 images .* at most 60/);
    const notUrl = await submit(stack, { image: b64(image), webhook_url: 'not a url' });
    assert.equal(notUrl.status, 400, JSON.stringify(notUrl.body));
    const badHook = await submit(stack, { image: b64(image), webhook_url: 'ftp://x.example/' });
    assert.equal(badHook.status, 400);
    assert.match(JSON.stringify(badHook.body), /webhook_url/);
  });

  test("receivers that never answer do not hold back other requests' webhooks", async () => {
    hook.status = 200;
    hook.deliveries.length = 0;
    const image = await drawImage(64, 64, []);
    // More silent deliveries at once than the two `pre` processes had slots for before
    // WEBHOOK_CONCURRENCY (16 each), each waiting out its timeout.
    for (let i = 0; i < 40; i++) {
      const res = await submit(stack, { image: b64(image), webhook_url: `${silent.url}/${i}` });
      assert.equal(res.status, 202);
    }
    await sleep(1000);
    const sentAt = Date.now();
    const res = await submit(stack, { image: b64(image), webhook_url: `${hook.url}/prompt` });
    assert.equal(res.status, 202);
    const until = Date.now() + 8000;
    while (hook.deliveries.length === 0 && Date.now() < until) await sleep(20);
    assert.equal(hook.deliveries.length, 1, 'the webhook of a healthy receiver waited');
    assert.ok(Date.now() - sentAt < 3000, `delivered ${Date.now() - sentAt} ms after the submit`);
  });

  test('a webhook answered 2xx gets the status document once, signed', async () => {
    hook.status = 200;
    hook.deliveries.length = 0;
    const image = await drawImage(480, 360, SCENE);
    const res = await submit(stack, { image: b64(image), webhook_url: `${hook.url}/done?x=1` });
    assert.equal(res.status, 202, JSON.stringify(res.body));
    const id = res.body.inference_id;
    // A multipart body gives its webhook_url in the query string.
    const form = new FormData();
    form.append('file', new Blob([image], { type: 'image/png' }), 'scene.png');
    const hookUrl = encodeURIComponent(`${hook.url}/multipart`);
    const multipart = await fetch(
      `${stack.url}/async/infer/object_detection?webhook_url=${hookUrl}`,
      { method: 'POST', body: form },
    );
    assert.equal(multipart.status, 202);
    const multipartId = ((await multipart.json()) as { inference_id: string }).inference_id;
    const until = Date.now() + 15_000;
    while (hook.deliveries.length < 2 && Date.now() < until) await sleep(50);
    await sleep(1500); // a second delivery of either would come now
    assert.equal(hook.deliveries.length, 2, 'one delivery per request');
    const d = hook.deliveries.find((x) => x.url === '/done?x=1')!;
    assert.equal(d.headers['content-type'], 'application/json');
    assert.equal(d.headers['x-inference-id'], id);
    const expected = `sha256=${createHmac('sha256', SECRET).update(d.body).digest('hex')}`;
    assert.equal(d.headers['x-signature-256'], expected);
    const body = JSON.parse(d.body) as AsyncStatus;
    assert.equal(body.status, 'completed');
    assertShapes((body.result as DetectionResponse).predictions, SCENE);
    // The result stays available by polling, and is the same document.
    assert.deepEqual((await getStatus(stack, id)).body, body);
    const other = hook.deliveries.find((x) => x.url === '/multipart')!;
    assert.equal(other.headers['x-inference-id'], multipartId);
    assertShapes(
      (JSON.parse(other.body) as { result: DetectionResponse }).result.predictions,
      SCENE,
    );
  });

  test('a webhook answered 500 is retried with backoff, ASYNC_WEBHOOK_ATTEMPTS times', async () => {
    hook.status = 500;
    hook.deliveries.length = 0;
    const image = await drawImage(64, 64, []);
    const res = await submit(stack, { image: b64(image), webhook_url: hook.url });
    const id = res.body.inference_id;
    const until = Date.now() + 20_000;
    while (hook.deliveries.length < 3 && Date.now() < until) await sleep(50);
    await sleep(5000); // the backoff would have brought a fourth by now
    assert.equal(hook.deliveries.length, 3, 'three attempts, then it gives up');
    assert.ok(hook.deliveries.every((d) => d.headers['x-inference-id'] === id));
    const gaps = hook.deliveries.slice(1).map((d, i) => d.at - hook.deliveries[i]!.at);
    assert.ok(gaps[0]! >= 900 && gaps[1]! >= 1900, `exponential backoff: ${gaps.join(', ')} ms`);
    assert.equal((await getStatus(stack, id)).body.status, 'completed');
    hook.status = 200;
  });

  test('a pre worker killed during a list: the request still finishes, every image right', async () => {
    const images = await Promise.all(
      Array.from({ length: 60 }, (_, i) =>
        drawImage(1200, 900, [{ colour: 'red', x: 10 + i, y: 20, w: 100, h: 80 }]),
      ),
    );
    const res = await submit(stack, { image: images.map(b64) });
    assert.equal(res.status, 202);
    const id = res.body.inference_id;
    // Killed while it holds a job: it comes back through the stalled-job check (JOB_LOCK_MS).
    const active = `${stack.prefix}:pre-async:active`;
    const until = Date.now() + 20_000;
    while ((await suite.redis.client.llen(active)) === 0 && Date.now() < until) await sleep(2);
    const victim = stack.roles.find(
      (r) => r.role === 'pre' && r.process.exitCode === null && r.process.signalCode === null,
    )!;
    victim.process.kill('SIGKILL');
    assert.ok((await getStatus(stack, id)).body.images_done < 60, 'killed mid-list');
    const done = await pollUntil(stack, id, 30_000);
    assert.equal(done.status, 'completed', JSON.stringify(done).slice(0, 500));
    const list = done.result as DetectionResponse[];
    assert.equal(list.length, 60);
    // Each image's own box (its centre moves a pixel per image), within the detector's 2 px.
    list.forEach((r, i) => assert.ok(Math.abs(r.predictions[0]!.x - (10 + i + 50)) <= 2, `${i}`));
  });

  test("a list is decoded at the model's pace, and synchronous images do not wait for it", async () => {
    // The inference process takes no asynchronous image while `infer-async` is paused.
    const inferAsync = new Queue(QueueName.inferAsync, {
      connection: { url: suite.redis.url },
      prefix: stack.prefix,
    });
    const decodedAhead = () => suite.redis.client.zcard(`${stack.prefix}:infer-async:prioritized`);
    try {
      await inferAsync.pause();
      const images = await Promise.all(
        Array.from({ length: 30 }, (_, i) =>
          drawImage(320, 240, [{ colour: 'green', x: 10 + i, y: 30, w: 90, h: 70 }]),
        ),
      );
      const res = await submit(stack, { image: images.map(b64) });
      assert.equal(res.status, 202);
      const until = Date.now() + 10_000;
      while ((await decodedAhead()) < ASYNC_DECODED_AHEAD && Date.now() < until) await sleep(20);
      await sleep(500);
      // Each `pre` process (two here) may decode one more image than the limit between its
      // check and its enqueue; the rest of the list waits undecoded.
      const ahead = await decodedAhead();
      assert.ok(
        ahead >= ASYNC_DECODED_AHEAD && ahead <= ASYNC_DECODED_AHEAD + 2,
        `${ahead} decoded ahead`,
      );
      const undecoded = await suite.redis.client.zcard(`${stack.prefix}:pre-async:prioritized`);
      assert.ok(undecoded >= 30 - ahead - 2, `${undecoded} not decoded yet`);
      // A synchronous image goes through while the list waits.
      const started = Date.now();
      const sync = await postJson(stack, '/infer/object_detection', {
        image: b64(images[0]!),
        timeout_ms: 5000,
      });
      assert.equal(sync.status, 200, JSON.stringify(sync.body));
      assert.ok(Date.now() - started < 2000, `synchronous request took ${Date.now() - started} ms`);
      await inferAsync.resume();
      const done = await pollUntil(stack, res.body.inference_id, 30_000);
      assert.equal(done.status, 'completed');
      const list = done.result as DetectionResponse[];
      list.forEach((r, i) => assert.ok(Math.abs(r.predictions[0]!.x - (10 + i + 45)) <= 2, `${i}`));
    } finally {
      await inferAsync.resume();
      await inferAsync.close();
    }
  });

  test('after Redis restarts empty, an id it no longer knows is 404 RESULT_UNKNOWN', async () => {
    const image = await drawImage(64, 64, []);
    const res = await submit(stack, { image: b64(image) });
    const id = res.body.inference_id;
    await pollUntil(stack, id);
    await suite.redis.restart();
    const until = Date.now() + 10_000;
    let last: { status: number; body: { code?: string } } | undefined;
    while (Date.now() < until) {
      last = await getStatus(stack, id).catch(() => undefined);
      if (last?.status === 404) break;
      await sleep(100);
    }
    assert.equal(last?.status, 404);
    assert.equal(last?.body.code, 'RESULT_UNKNOWN');
  });
});

describe('asynchronous requests while nothing runs them yet', () => {
  let stack: Stack;
  before(async () => {
    // No `pre` at first: the images wait in the queues.
    stack = await suite.stack({
      roles: ['infer', 'post', 'gateway'],
      waitReady: false,
      env: {
        WEBHOOK_SECRET: SECRET,
        ASYNC_MAX_BACKLOG: '6',
        ASYNC_MAX_IMAGES: '6',
        ASYNC_RESULT_TTL_S: '2',
        PRE_CONCURRENCY: '1',
      },
    });
    await waitForModel(stack);
  });

  test('DELETE before anything ran: 204, then 404, and nothing of it left', async () => {
    const image = await drawImage(64, 64, []);
    const res = await submit(stack, { image: [b64(image), b64(image)] });
    assert.equal(res.status, 202);
    const id = res.body.inference_id;
    assert.equal((await getStatus(stack, id)).body.status, 'queued');
    assert.ok((await requestKeys(stack)).length > 0);
    const del = await fetch(`${stack.url}/async/${id}`, { method: 'DELETE' });
    assert.equal(del.status, 204);
    assert.equal((await getStatus(stack, id)).status, 404);
    assert.deepEqual(await requestKeys(stack), [], 'no job, image or record left');
  });

  test('the async backlog: refused with 429 and Retry-After past ASYNC_MAX_BACKLOG', async () => {
    const image = await drawImage(64, 64, []);
    const first = await submit(stack, { image: [b64(image), b64(image), b64(image), b64(image)] });
    assert.equal(first.status, 202);
    await sleep(500); // the gateway reads the queues every 200 ms
    const refused = await submit(stack, { image: [b64(image), b64(image), b64(image)] });
    assert.equal(refused.status, 429, JSON.stringify(refused.body));
    assert.equal(refused.headers.get('retry-after'), '1');
    assert.match(JSON.stringify(refused.body), /4 asynchronous images are already waiting/);
    // Synchronous requests are not refused for the asynchronous backlog (nothing runs them
    // here: their deadline ends them).
    const sync = await postJson(stack, '/infer/object_detection', {
      image: b64(image),
      timeout_ms: 300,
    });
    assert.equal(sync.status, 504, JSON.stringify(sync.body));
    const text = await scrape(stack, 'gateway');
    assert.equal(sample(text, 'sd_async_backlog_images'), 4);
    assert.equal(sample(text, 'sd_queue_jobs', { queue: 'pre-async', state: 'prioritized' }), 4);
    const del = await fetch(`${stack.url}/async/${first.body.inference_id}`, { method: 'DELETE' });
    assert.equal(del.status, 204);
    await sleep(500); // the backlog the gateway reads is empty again
    assert.equal(sample(await scrape(stack, 'gateway'), 'sd_async_backlog_images'), 0);
  });

  test('asynchronous images wait in queues of their own, apart from synchronous ones', async () => {
    const image = await drawImage(200, 150, [{ colour: 'blue', x: 20, y: 20, w: 60, h: 50 }]);
    const asyncRes = await submit(stack, { image: [b64(image), b64(image), b64(image)] });
    assert.equal(asyncRes.status, 202);
    await sleep(100);
    const syncPending = postJson(stack, '/infer/object_detection', {
      image: b64(image),
      timeout_ms: 20_000,
    });
    // The sync image waits in `pre`'s wait list, the async ones in `pre-async`, prioritized.
    const until = Date.now() + 5000;
    while ((await suite.redis.client.llen(`${stack.prefix}:pre:wait`)) === 0 && Date.now() < until)
      await sleep(20);
    assert.equal(await suite.redis.client.zcard(`${stack.prefix}:pre-async:prioritized`), 3);
    assert.equal(await suite.redis.client.zcard(`${stack.prefix}:pre:prioritized`), 0);
    stack.add('pre');
    const sync = await syncPending;
    assert.equal(sync.status, 200);
    const syncId = (sync.body as DetectionResponse).inference_id;
    const done = await pollUntil(stack, asyncRes.body.inference_id);
    assert.equal(done.status, 'completed');
    const decoded = logEvents(stack, 'pre', 'preprocessed');
    assert.equal(decoded.find((e) => e['inference_id'] === syncId)?.['stage'], 'pre');
    assert.equal(decoded.filter((e) => e['stage'] === 'pre-async').length, 3);
    // In the inference process, asynchronous images come through a queue of their own too.
    const inferred = logEvents(stack, 'infer', 'inferred');
    assert.equal(inferred.find((e) => e['inference_id'] === syncId)?.['stage'], 'infer');
    assert.equal(inferred.filter((e) => e['stage'] === 'infer-async').length, 3);
  });

  test('a webhook to a private address is refused unless ALLOW_PRIVATE_URLS', async () => {
    hook.deliveries.length = 0;
    const image = await drawImage(64, 64, []);
    const literal = await submit(stack, { image: b64(image), webhook_url: hook.url });
    assert.equal(literal.status, 400);
    assert.match(JSON.stringify(literal.body), /127\.0\.0\.1 is a private, loopback/);
    // A name that resolves to loopback passes the submit and is refused at delivery.
    const port = new URL(hook.url).port;
    const named = await submit(stack, {
      image: b64(image),
      webhook_url: `http://localhost:${port}/`,
    });
    assert.equal(named.status, 202, JSON.stringify(named.body));
    const done = await pollUntil(stack, named.body.inference_id);
    assert.equal(done.status, 'completed');
    const until = Date.now() + 5000;
    const refused = () =>
      scrape(stack, 'pre').then((t) =>
        sample(t, 'sd_webhook_deliveries_total', { outcome: 'refused' }),
      );
    while ((await refused()) === 0 && Date.now() < until) await sleep(100);
    assert.equal(await refused(), 1);
    assert.equal(hook.deliveries.length, 0, 'the receiver was never reached');
  });

  test('the deadline fails what did not finish; after the TTL nothing is left', async () => {
    const image = await drawImage(64, 64, []);
    // Both `pre` processes stopped: nothing runs the images before their deadline.
    await Promise.all(
      stack.roles
        .filter((r) => r.role === 'pre' && r.process.exitCode === null)
        .map(async (r) => {
          r.process.kill('SIGKILL');
          await new Promise((resolve) => r.process.once('exit', resolve));
        }),
    );
    const res = await submit(stack, { image: [b64(image), b64(image)], timeout_ms: 1000 });
    assert.equal(res.status, 202);
    const id = res.body.inference_id;
    await sleep(1200);
    // Never `running` past the deadline, even before anything finished the record.
    const overdue = await getStatus(stack, id);
    assert.equal(overdue.body.status, 'failed');
    assert.equal(overdue.body.error?.code, 'DEADLINE_EXCEEDED');
    stack.add('pre');
    // The deadline job finishes the record, the stages drop the expired jobs, and the record
    // expires ASYNC_RESULT_TTL_S (2 s) after it finished.
    const record = `${stack.prefix}:async:${id}`;
    const finishedBy = Date.now() + 15_000;
    while (!(await suite.redis.client.hexists(record, 'completed_at')) && Date.now() < finishedBy)
      await sleep(100);
    const completed = await getStatus(stack, id);
    assert.equal(completed.body.status, 'failed');
    assert.equal(completed.body.error?.code, 'DEADLINE_EXCEEDED');
    assert.equal(completed.body.completed_at, overdue.body.completed_at, 'failed at its deadline');
    const until = Date.now() + 15_000;
    while ((await requestKeys(stack)).length > 0 && Date.now() < until) await sleep(200);
    assert.deepEqual(await requestKeys(stack), []);
    assert.equal((await getStatus(stack, id)).status, 404);
  });
});
