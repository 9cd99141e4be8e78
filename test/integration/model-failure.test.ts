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
 * and the inference process goes on serving. The model here fails inside onnxruntime (a Gather
 * beyond its data) on any batch holding a pixel brighter than 0.7, and detects nothing in any
 * other batch. So a bright image's batch fails, whatever else it holds and however the batcher
 * happens to group the images.
 */
const S = 64;
let dir: string;
let stack: Stack;
let redis: RedisHandle;

function brightFailsModel(): Uint8Array {
  const g = new GraphBuilder();
  const images = g.reserve('images');
  const max = g.op('ReduceMax', [images], 'max', { keepdims: attrInt(0) });
  const bright = g.op('Greater', [max, g.constFloat('threshold', [], [0.7])], 'bright');
  const p = g.op('Cast', [bright], 'p', { to: attrInt(DataType.INT64) });
  const index = g.op('Mul', [p, g.constInt64('beyond', [], [1000])], 'index');
  const picked = g.op('Gather', [g.constFloat('one_value', [1], [0]), index], 'picked');
  const perImage = g.op('ReduceMax', [images], 'per_image', {
    axes: attrInts([1, 2, 3]),
    keepdims: attrInt(1),
  });
  const flat = g.op('Reshape', [perImage, g.constInt64('flat', [3], [-1, 1, 1])], 'flat');
  const zeros = g.op(
    'Mul',
    [flat, g.constFloat('zeros', [1, 7, 6], new Array(42).fill(0))],
    'zeros',
  );
  const output = g.op('Add', [zeros, picked], 'output0');
  return encodeModel({
    graphName: 'bright_fails',
    producerName: 'staged-detect tests',
    nodes: g.nodes,
    initializers: g.initializers,
    inputs: [{ name: images, elemType: DataType.FLOAT, dims: ['batch', 3, S, S] }],
    outputs: [{ name: output, elemType: DataType.FLOAT, dims: ['batch', 7, 6] }],
  });
}

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'sd-model-'));
  writeFileSync(join(dir, 'bright-fails.onnx'), brightFailsModel());
});
suiteStack(
  () => ({ env: { MODEL_PATH: join(dir, 'bright-fails.onnx'), MAX_BATCH_DELAY_MS: '300' } }),
  (s, r) => {
    stack = s;
    redis = r;
  },
);
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Asserts that `r` is the documented answer to a batch the model could not run. */
function assertModelFailed(r: Awaited<ReturnType<typeof postJson>>): void {
  assert.equal(r.status, 500, JSON.stringify(r.body));
  const err = r.body as { code: string; message: string };
  assert.equal(err.code, 'MODEL_EXECUTION_FAILED');
  assert.match(err.message, /the model failed on this batch/);
}

test('a batch the model cannot run fails its requests clearly; the next batch is served', async () => {
  const dark = {
    image: { type: 'base64', value: (await drawImage(100, 80, [])).toString('base64') },
  };
  const brightPng = await drawImage(100, 80, [{ colour: 'red', x: 10, y: 10, w: 40, h: 40 }]);
  const bright = { image: { type: 'base64', value: brightPng.toString('base64') } };

  // A batch the model cannot run, then one it can.
  assertModelFailed(await postJson(stack, '/infer/object_detection', bright));
  const first = await postJson(stack, '/infer/object_detection', dark);
  assert.equal(first.status, 200, JSON.stringify(first.body));

  // Eight images wait in the paused `infer` queue, one of them bright; once it resumes, they
  // reach the batcher together. The bright image's batch fails whatever else it holds; every
  // other request gets its result, or the same clear error where it shared that batch.
  const inferQueue = new Queue(QueueName.infer, {
    connection: { url: redis.url },
    prefix: stack.prefix,
  });
  let together: Awaited<ReturnType<typeof postJson>>[];
  try {
    await inferQueue.pause();
    const pending = Promise.all(
      [bright, ...Array.from({ length: 7 }, () => dark)].map((body) =>
        postJson(stack, '/infer/object_detection', body),
      ),
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
  assertModelFailed(together[0]!);
  for (const r of together.slice(1)) {
    if (r.status !== 200) assertModelFailed(r);
  }

  const alone = await postJson(stack, '/infer/object_detection', dark);
  assert.equal(alone.status, 200, JSON.stringify(alone.body));
  const metrics = await scrape(stack, 'infer');
  assert.ok(
    sample(metrics, 'sd_stage_jobs_failed_total', {
      stage: 'infer',
      code: 'MODEL_EXECUTION_FAILED',
    }) >= 2,
  );
  assert.equal(
    stack.roles.find((r) => r.role === 'infer')?.process.exitCode,
    null,
    'infer still runs',
  );
});
