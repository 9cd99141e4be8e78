import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Queue } from 'bullmq';
import { QueueName } from '../../shared/contracts.js';
import {
  DataType,
  encodeModel,
  GraphBuilder,
  attrInt,
  attrInts,
} from '../../services/infer/tiny-model/onnx-builder.js';
import { drawImage } from '../helpers/images.js';
import { sample, scrape } from '../helpers/metrics.js';
import { postJson, suiteStack, type RedisHandle, type Stack } from '../helpers/stack.js';

/**
 * A model that fails at run time on some inputs fails the affected requests with a clear error,
 * and the inference process goes on serving. The model here declares a dynamic batch but
 * reshapes its input to a batch of 1, so every batch of two or more images fails inside
 * onnxruntime, while single images run (and detect nothing). A single image's run is made slow
 * on purpose (its pixels tiled to 2048 × 2048 before the reduction), so that images arriving
 * while it runs form a batch of their own.
 */
const S = 64;
let dir: string;
let stack: Stack;
let redis: RedisHandle;

function batchOfOneModel(): Uint8Array {
  const g = new GraphBuilder();
  const images = g.reserve('images');
  const one = g.op('Reshape', [images, g.constInt64('shape', [4], [1, 3, S, S])], 'one');
  const big = g.op('Tile', [one, g.constInt64('repeats', [4], [1, 1, 32, 32])], 'big');
  const max = g.op('ReduceMax', [big], 'max', { axes: attrInts([1, 2, 3]), keepdims: attrInt(1) });
  const flat = g.op('Reshape', [max, g.constInt64('flat', [3], [1, 1, 1])], 'flat');
  const output = g.op(
    'Mul',
    [flat, g.constFloat('zeros', [1, 7, 6], new Array(42).fill(0))],
    'output0',
  );
  return encodeModel({
    graphName: 'batch_of_one',
    producerName: 'staged-detect tests',
    nodes: g.nodes,
    initializers: g.initializers,
    inputs: [{ name: images, elemType: DataType.FLOAT, dims: ['batch', 3, S, S] }],
    outputs: [{ name: output, elemType: DataType.FLOAT, dims: ['batch', 7, 6] }],
  });
}

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'sd-model-'));
  writeFileSync(join(dir, 'batch-of-one.onnx'), batchOfOneModel());
});
suiteStack(
  () => ({ env: { MODEL_PATH: join(dir, 'batch-of-one.onnx'), MAX_BATCH_DELAY_MS: '300' } }),
  (s, r) => {
    stack = s;
    redis = r;
  },
);
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

test('a batch the model cannot run fails its requests clearly; the next batch is served', async () => {
  const png = await drawImage(100, 80, []);
  const body = { image: { type: 'base64', value: png.toString('base64') } };
  // Eight images wait in the paused `infer` queue; once it resumes, the first finds the model
  // idle and runs alone (slowly), and the next ones, arriving during a run, form batches.
  const inferQueue = new Queue(QueueName.infer, {
    connection: { url: redis.url },
    prefix: stack.prefix,
  });
  let together: Awaited<ReturnType<typeof postJson>>[];
  try {
    await inferQueue.pause();
    const pending = Promise.all(
      Array.from({ length: 8 }, () => postJson(stack, '/infer/object_detection', body)),
    );
    const until = Date.now() + 20_000;
    while ((await inferQueue.getWaitingCount()) < 8) {
      assert.ok(Date.now() < until, 'the 8 images never all reached the infer queue');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await inferQueue.resume();
    together = await pending;
  } finally {
    await inferQueue.resume();
    await inferQueue.close();
  }
  const failed = together.filter((r) => r.status === 500);
  assert.ok(failed.length >= 1, `statuses: ${together.map((r) => r.status).join(', ')}`);
  for (const r of failed) {
    const err = r.body as { code: string; message: string };
    assert.equal(err.code, 'MODEL_EXECUTION_FAILED');
    assert.match(err.message, /the model failed on this batch/);
  }
  for (const r of together) assert.ok(r.status === 500 || r.status === 200);

  const alone = await postJson(stack, '/infer/object_detection', body);
  assert.equal(alone.status, 200, JSON.stringify(alone.body));
  const metrics = await scrape(stack, 'infer');
  assert.ok(
    sample(metrics, 'sd_stage_jobs_failed_total', {
      stage: 'infer',
      code: 'MODEL_EXECUTION_FAILED',
    }) >= 1,
  );
  assert.equal(
    stack.roles.find((r) => r.role === 'infer')?.process.exitCode,
    null,
    'infer still runs',
  );
});
