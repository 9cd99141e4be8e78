import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import sharp from 'sharp';
import { allocatorEnv } from '../../services/supervisor/processes.js';
import { suiteStack, type Stack } from '../helpers/stack.js';

/**
 * Many large drawings at once (visualize_predictions on 16-megapixel photos): `post` draws
 * within its pixel budget (VISUALIZE_MAX_PIXELS), so its peak memory is bounded, and gives the
 * memory back after the load (jemalloc, preloaded by the supervisor and in the image).
 */
let stack: Stack;
suiteStack(
  { env: { MAX_BODY_BYTES: String(64 << 20), REQUEST_TIMEOUT_MS: '120000', LOG_LEVEL: 'warn' } },
  (s) => {
    stack = s;
  },
);

function rssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1]) / 1024;
}

test('50 simultaneous 16-megapixel drawings: post stays bounded and returns near its resting size', async (t) => {
  if (!allocatorEnv({})['LD_PRELOAD']) {
    if (process.env['CI']) throw new Error('libjemalloc2 is missing, and CI needs it');
    t.skip('libjemalloc2 is not installed (apt-get install libjemalloc2)');
    return;
  }
  const post = stack.roles.find((r) => r.role === 'post')!.process.pid!;
  const side = 4000;
  const scene = `<svg width="${side}" height="${side}"><rect width="${side}" height="${side}" fill="#446"/><rect x="400" y="400" width="1600" height="1200" fill="#0f0"/></svg>`;
  const jpeg = await sharp(Buffer.from(scene)).jpeg({ quality: 85 }).toBuffer();
  const rest = rssMiB(post);
  let peak = rest;
  const sampler = setInterval(() => (peak = Math.max(peak, rssMiB(post))), 50);
  const body = JSON.stringify({
    image: { type: 'base64', value: jpeg.toString('base64') },
    visualize_predictions: true,
  });
  const statuses = await Promise.all(
    Array.from({ length: 50 }, async () => {
      const res = await fetch(`${stack.url}/infer/object_detection`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
      });
      const answer = (await res.json()) as { visualization?: string };
      assert.ok((answer.visualization?.length ?? 0) > 0);
      return res.status;
    }),
  );
  clearInterval(sampler);
  assert.deepEqual(new Set(statuses), new Set([200]));
  let after = rssMiB(post);
  for (let i = 0; i < 60 && after > rest + 100; i++) {
    await sleep(500);
    after = rssMiB(post);
  }
  process.stdout.write(
    `# post RSS: ${rest.toFixed(0)} MiB at rest, ${peak.toFixed(0)} MiB at the peak, ${after.toFixed(0)} MiB after\n`,
  );
  assert.ok(peak < 700, `peak ${peak.toFixed(0)} MiB`);
  assert.ok(
    after < rest + 100,
    `${after.toFixed(0)} MiB after the load, ${rest.toFixed(0)} at rest`,
  );
});
