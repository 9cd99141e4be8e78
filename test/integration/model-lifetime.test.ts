import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { drawImage } from '../helpers/images.js';
import { isRunning, postJson, suiteStack, type Stack } from '../helpers/stack.js';

/**
 * A model is listed exactly as long as a live inference process serves it: an inference
 * process replaced by one with another model (as `docker compose up` recreates it, Redis kept)
 * takes its model with it, stopped or killed, and requests without `model_id` go to the one
 * model served now.
 */
let stack: Stack;
suiteStack({}, (s) => {
  stack = s;
});

async function servedIds(): Promise<string[]> {
  const res = await fetch(`${stack.url}/models`);
  const body = (await res.json()) as { models: Array<{ model_id: string }> };
  return body.models.map((m) => m.model_id).sort();
}

async function until(what: string, timeoutMs: number, check: () => Promise<boolean>) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await check()) return Date.now();
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function detectWithoutModelId(): Promise<{ status: number; body: unknown }> {
  const png = await drawImage(120, 90, [{ colour: 'green', x: 10, y: 10, w: 40, h: 30 }]);
  return postJson(stack, '/infer/object_detection', {
    image: { type: 'base64', value: png.toString('base64') },
  });
}

for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
  test(`an inference process replaced by one with another model (old one ${signal}) takes its model with it`, async () => {
    const before = await servedIds();
    assert.equal(before.length, 1);
    const replacement = stack.add('infer', { MODEL_ID: `other-${signal.toLowerCase()}` });
    await until('the new model listed', 30_000, async () => (await servedIds()).length === 2);
    const old = stack.roles.find((r) => r.role === 'infer' && r !== replacement && isRunning(r))!;
    const stoppedAt = Date.now();
    old.process.kill(signal);
    const goneAt = await until(
      'the old model unlisted',
      10_000,
      async () => (await servedIds()).length === 1,
    );
    process.stdout.write(`# ${signal}: old model unlisted after ${goneAt - stoppedAt} ms\n`);
    assert.deepEqual(await servedIds(), [`other-${signal.toLowerCase()}`]);
    const res = await detectWithoutModelId();
    assert.equal(res.status, 200, JSON.stringify(res.body));
  });
}
