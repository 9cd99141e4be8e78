import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import sharp from 'sharp';
import type { DetectionResponse } from '../../shared/contracts.js';
import type { Role } from '../../services/supervisor/processes.js';
import { requireShared, sharedPath } from '../helpers/shared-data.js';
import { logEvents, postJson, suiteRedis, type Stack } from '../helpers/stack.js';

/**
 * kill -9 of a `pre` worker, of the inference process or of a `post` worker while it holds
 * jobs: its jobs are taken up again by the replacement (stalled-job recovery, JOB_LOCK_MS), and
 * every accepted request still gets exactly one answer, with the right result.
 */
const suite = suiteRedis();
let stack: Stack | undefined;

/** The stack, started by the first test that has the model (tests skip without ../shared). */
async function ensureStack(): Promise<Stack> {
  stack ??= await suite.stack({
    env: {
      MODEL_PATH: sharedPath('models/yolov8n-dynamic.onnx'),
      MAX_BATCH_SIZE: '2',
      PRE_CONCURRENCY: '1',
      POST_CONCURRENCY: '1',
      JOB_LOCK_MS: '2000',
      MAX_BODY_BYTES: String(96 * 1024 * 1024),
    },
  });
  return stack;
}

async function activeJobs(s: Stack, queue: string): Promise<number> {
  return suite.redis.client.llen(`${s.prefix}:${queue}:active`);
}

/**
 * Sends the requests, kills the role's process once it holds jobs, starts a replacement. The
 * process is stopped (SIGSTOP) when its queue shows an active job, and killed only if the job
 * is still active once a command it may have sent just before has had time to reach Redis:
 * otherwise it had just finished its last job, and it goes on (SIGCONT) until it holds another.
 */
async function killDuringLoad(s: Stack, role: Role, bodies: unknown[]) {
  const victim = s.roles.find(
    (r) => r.role === role && r.process.exitCode === null && r.process.signalCode === null,
  )!;
  const pending = bodies.map((b) => postJson(s, '/infer/object_detection', b));
  const end = Date.now() + 20_000;
  for (;;) {
    while ((await activeJobs(s, role)) === 0) {
      assert.ok(Date.now() < end, `the ${role} stage never held a job`);
      await new Promise((r) => setTimeout(r, 5));
    }
    victim.process.kill('SIGSTOP');
    await new Promise((r) => setTimeout(r, 50));
    if ((await activeJobs(s, role)) > 0) break;
    victim.process.kill('SIGCONT');
  }
  victim.process.kill('SIGKILL');
  const replacement = s.add(role);
  const results = await Promise.all(pending);
  return { results, replacement };
}

function assertAllAnswered(results: Array<{ status: number; body: unknown }>, expectClass: string) {
  for (const r of results) assert.equal(r.status, 200, JSON.stringify(r.body).slice(0, 300));
  const ids = results.map((r) => (r.body as DetectionResponse).inference_id);
  assert.equal(new Set(ids).size, results.length, 'one distinct answer per request');
  for (const r of results) {
    assert.ok((r.body as DetectionResponse).predictions.some((p) => p.class === expectClass));
  }
}

/**
 * How many stalled jobs the replacement put back, waiting up to 3 × JOB_LOCK_MS for the first:
 * a job whose worker died just after sending its result is recovered after its answer went out.
 */
async function recovered(s: Stack, role: Role, pid: number | undefined): Promise<number> {
  const count = () =>
    logEvents(s, role, 'stalled job put back in the queue').filter((e) => e['pid'] === pid).length;
  for (let i = 0; i < 60 && count() === 0; i++) await new Promise((r) => setTimeout(r, 100));
  return count();
}

describe('a process killed under load', () => {
  test('pre', async (t) => {
    if (!requireShared(t, 'models/yolov8n-dynamic.onnx')) return;
    const s = await ensureStack();
    // Large PNGs: no shrink-on-load, so each takes the single pre slot for a while.
    const big = await sharp(readFileSync(sharedPath('data/samples/bus.jpg')))
      .resize(3240, 4320)
      .png({ compressionLevel: 1 })
      .toBuffer();
    const body = { image: { type: 'base64', value: big.toString('base64') }, confidence: 0.5 };
    const { results, replacement } = await killDuringLoad(
      s,
      'pre',
      Array.from({ length: 4 }, () => body),
    );
    assertAllAnswered(results, 'bus');
    assert.ok(
      (await recovered(s, 'pre', replacement.process.pid)) >= 1,
      'the replacement recovered the lost job',
    );
  });

  test('infer', async (t) => {
    if (!requireShared(t, 'models/yolov8n-dynamic.onnx')) return;
    const s = await ensureStack();
    const bus = readFileSync(sharedPath('data/samples/bus.jpg')).toString('base64');
    const body = { image: { type: 'base64', value: bus }, confidence: 0.5 };
    const { results, replacement } = await killDuringLoad(
      s,
      'infer',
      Array.from({ length: 6 }, () => body),
    );
    assertAllAnswered(results, 'bus');
    assert.ok(
      (await recovered(s, 'infer', replacement.process.pid)) >= 1,
      'the replacement recovered the lost jobs',
    );
  });

  test('post', async (t) => {
    if (!requireShared(t, 'models/yolov8n-dynamic.onnx')) return;
    const s = await ensureStack();
    const bus = readFileSync(sharedPath('data/samples/bus.jpg')).toString('base64');
    // Thousands of candidates with an IoU threshold that suppresses almost nothing: NMS keeps
    // the single post slot busy.
    const body = {
      image: { type: 'base64', value: bus },
      confidence: 0.0001,
      iou_threshold: 0.99,
      max_detections: 6000,
      max_candidates: 100000,
    };
    const { results, replacement } = await killDuringLoad(
      s,
      'post',
      Array.from({ length: 4 }, () => body),
    );
    assertAllAnswered(results, 'bus');
    assert.ok(
      (await recovered(s, 'post', replacement.process.pid)) >= 1,
      'the replacement recovered the lost job',
    );
  });
});
