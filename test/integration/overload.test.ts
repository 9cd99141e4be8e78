import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Role } from '../../services/supervisor/processes.js';
import { drawImage } from '../helpers/images.js';
import { sample, scrape } from '../helpers/metrics.js';
import {
  isRunning,
  keysOf,
  postJson,
  suiteStack,
  type RedisHandle,
  type Stack,
} from '../helpers/stack.js';

/**
 * Overload is refused early and cheaply (429 with Retry-After, before the image is read), the
 * requests already accepted still succeed, and a request its client abandons stops costing work.
 */
let redis: RedisHandle;
let stack: Stack;

suiteStack({ env: { MAX_INFLIGHT: '3', MAX_QUEUE_DEPTH: '2' } }, (s, r) => {
  stack = s;
  redis = r;
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function stopRole(role: Role, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  for (const r of stack.roles.filter((x) => x.role === role && isRunning(x))) {
    r.process.kill(signal);
    await new Promise((res) => (!isRunning(r) ? res(null) : r.process.once('exit', res)));
  }
}

async function body() {
  const png = await drawImage(120, 90, [{ colour: 'green', x: 10, y: 10, w: 40, h: 30 }]);
  return { image: { type: 'base64', value: png.toString('base64') } };
}

async function expect429(why: RegExp): Promise<void> {
  const started = Date.now();
  const res = await fetch(`${stack.url}/infer/object_detection`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(await body()),
  });
  assert.equal(res.status, 429);
  assert.equal(res.headers.get('retry-after'), '1');
  const err = (await res.json()) as { code: string; message: string };
  assert.equal(err.code, 'OVERLOADED');
  assert.match(err.message, why);
  assert.ok(Date.now() - started < 1000, 'refused at once');
}

test('a backlog in the pre queue over MAX_QUEUE_DEPTH is refused with 429', async () => {
  await stopRole('pre');
  const accepted = [
    postJson(stack, '/infer/object_detection', await body()),
    postJson(stack, '/infer/object_detection', await body()),
  ];
  await sleep(500); // the gateway reads the backlog in the background, every 200 ms
  await expect429(/waiting/);
  stack.add('pre');
  for (const r of await Promise.all(accepted)) assert.equal(r.status, 200);
});

test('requests over MAX_INFLIGHT are refused with 429; the accepted ones succeed', async () => {
  await stopRole('post');
  await sleep(500); // let the gateway see that the pre backlog of the last test is gone
  const accepted = Array.from({ length: 3 }, async () =>
    postJson(stack, '/infer/object_detection', await body()),
  );
  await sleep(300);
  await expect429(/in flight/);

  // Far more than capacity at once: every extra request is refused quickly and the gateway's
  // memory does not grow with them.
  const rss = async () =>
    sample(await scrape(stack, 'gateway'), 'sd_process_resident_memory_bytes');
  const before = await rss();
  const burst = JSON.stringify(await body());
  const started = Date.now();
  const statuses = await Promise.all(
    Array.from({ length: 400 }, async () => {
      const res = await fetch(`${stack.url}/infer/object_detection`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: burst,
      });
      await res.arrayBuffer();
      return res.status;
    }),
  );
  assert.ok(
    statuses.every((st) => st === 429),
    `statuses: ${[...new Set(statuses)].join(', ')}`,
  );
  assert.ok(Date.now() - started < 10_000, `400 refusals took ${Date.now() - started} ms`);
  const grown = (await rss()) - before;
  assert.ok(grown < 64 * 1024 * 1024, `gateway memory grew by ${Math.round(grown / 1e6)} MB`);

  stack.add('post');
  for (const r of await Promise.all(accepted)) assert.equal(r.status, 200);
  // Slots are given back: the gateway accepts again.
  assert.equal((await postJson(stack, '/infer/object_detection', await body())).status, 200);
});

test('a request whose client goes away leaves no data behind and no work for the model', async () => {
  await stopRole('pre');
  const abort = new AbortController();
  const request = fetch(`${stack.url}/infer/object_detection`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(await body()),
    signal: abort.signal,
  });
  const imageKeys = async () =>
    (await keysOf(redis.client, stack.prefix)).filter((k) => k.includes(':img:'));
  for (let i = 0; i < 50 && (await imageKeys()).length === 0; i++) await sleep(20);
  assert.equal((await imageKeys()).length, 1, 'the upload is stored while the request waits');
  abort.abort();
  await assert.rejects(request);
  for (let i = 0; i < 50 && (await imageKeys()).length > 0; i++) await sleep(20);
  assert.deepEqual(await imageKeys(), [], 'the gateway removed the abandoned image');
  stack.add('pre');
  // The abandoned job ends in pre (its image is gone) and never reaches the infer queue.
  for (let i = 0; i < 100 && (await redis.client.llen(`${stack.prefix}:pre:wait`)) > 0; i++)
    await sleep(50);
  await sleep(300);
  assert.equal(await redis.client.llen(`${stack.prefix}:infer:wait`), 0);
  assert.equal((await postJson(stack, '/infer/object_detection', await body())).status, 200);
});

test('a request past its own deadline gets 504, and its image never reaches the model', async () => {
  // Killed, not stopped: its heartbeat (and with it the model) outlives it by HEARTBEAT_TTL_MS,
  // so the request is accepted and waits in the infer queue.
  await stopRole('infer', 'SIGKILL');
  const started = Date.now();
  const res = await postJson(stack, '/infer/object_detection', {
    ...(await body()),
    timeout_ms: 400,
  });
  assert.equal(res.status, 504);
  assert.equal((res.body as { code: string }).code, 'DEADLINE_EXCEEDED');
  assert.ok(Date.now() - started < 3000, 'answered at its own deadline, not the server default');
  stack.add('infer');
  // The new inference process finds the expired job and drops it without running the model.
  let text = '';
  for (let i = 0; i < 100; i++) {
    text = await scrape(stack, 'infer').catch(() => '');
    if (
      sample(text, 'sd_stage_jobs_failed_total', { stage: 'infer', code: 'DEADLINE_EXCEEDED' }) >= 1
    )
      break;
    await sleep(100);
  }
  assert.equal(
    sample(text, 'sd_stage_jobs_failed_total', { stage: 'infer', code: 'DEADLINE_EXCEEDED' }),
    1,
  );
  assert.equal(sample(text, 'sd_inference_images_total'), 0);
  assert.equal((await postJson(stack, '/infer/object_detection', await body())).status, 200);
});
