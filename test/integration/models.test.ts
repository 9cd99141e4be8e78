import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { DetectionResponse, Prediction } from '../../shared/contracts.js';
import { drawImage } from '../helpers/images.js';
import { sample, scrape } from '../helpers/metrics.js';
import { missingShared, sharedPath } from '../helpers/shared-data.js';
import { postJson, suiteStack, type Stack } from '../helpers/stack.js';

/**
 * Several models in one stack, from a models file: two real detectors of different families
 * (YOLOv8 and YOLOX) served side by side, lazy loading with at most MAX_ACTIVE_MODELS loaded
 * (least recently used unloaded first, pinned models never), and Roboflow's model manager
 * routes.
 */
let stack: Stack;
const dir = mkdtempSync(join(tmpdir(), 'sd-models-'));
const modelsFile = join(dir, 'models.yaml');
writeFileSync(
  modelsFile,
  `# served by the test stack
models:
  - id: yolov8n
    path: ${sharedPath('models/yolov8n-dynamic.onnx')}
    pinned: true
  - id: yolox-nano
    path: ${sharedPath('models/yolox_nano.onnx')}
    class_names: ${sharedPath('models/coco80.txt')}
    max_batch_size: 4
  - id: shapes
    builtin: tiny-shapes
`,
);

// Without these (a fresh clone), the suite skips instead of failing to start its stack.
const missing = missingShared(
  'models/yolov8n-dynamic.onnx',
  'models/yolox_nano.onnx',
  'models/coco80.txt',
  'data/samples/bus.jpg',
  'data/samples/zidane.jpg',
);
if (missing === undefined) {
  suiteStack({ env: { MODELS_FILE: modelsFile, MAX_ACTIVE_MODELS: '2' } }, (s) => {
    stack = s;
  });
}

after(() => rmSync(dir, { recursive: true, force: true }));

function detect(modelId: string, image: string) {
  const bytes = readFileSync(sharedPath(`data/samples/${image}`));
  return postJson(stack, '/infer/object_detection', {
    model_id: modelId,
    image: { type: 'base64', value: bytes.toString('base64') },
    confidence: 0.4,
    // Ultralytics' default: Roboflow's 0.3 would let a box around both people on zidane.jpg
    // suppress each of them.
    iou_threshold: 0.7,
  });
}

async function get(path: string): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`${stack.url}${path}`);
  return { status: res.status, body: await res.json() };
}

async function registry(): Promise<string[]> {
  const res = await get('/model/registry');
  assert.equal(res.status, 200);
  return (res.body as { models: Array<{ model_id: string }> }).models.map((m) => m.model_id).sort();
}

const count = (preds: Prediction[], cls: string) => preds.filter((p) => p.class === cls).length;

describe('several models in one stack', { skip: missing ?? false }, () => {
  before(async () => {
    // Every model was opened once at start; only the pinned one stayed loaded.
    const listed = await get('/models');
    const models = (listed.body as { models: Array<Record<string, unknown>> }).models;
    assert.deepEqual(
      models
        .map((m) => [m['model_id'], m['loaded'], m['pinned'], m['layout'], m['input_width']])
        .sort(),
      [
        ['shapes', false, false, 'yolov8', 320],
        ['yolov8n', true, true, 'yolov8', 640],
        ['yolox-nano', false, false, 'yolox', 416],
      ],
    );
  });

  test('a YOLOv8 and a YOLOX model serve the same photos at the same time', async () => {
    const runs = await Promise.all([
      detect('yolov8n', 'bus.jpg'),
      detect('yolox-nano', 'bus.jpg'),
      detect('yolov8n', 'zidane.jpg'),
      detect('yolox-nano', 'zidane.jpg'),
    ]);
    for (const r of runs) assert.equal(r.status, 200, JSON.stringify(r.body));
    const [v8Bus, xBus, v8Zidane, xZidane] = runs.map(
      (r) => (r.body as DetectionResponse).predictions,
    );
    for (const [name, preds] of [
      ['yolov8n', v8Bus!],
      ['yolox-nano', xBus!],
    ] as const) {
      assert.equal(count(preds, 'bus'), 1, `${name} on bus.jpg: ${JSON.stringify(preds)}`);
      assert.ok(count(preds, 'person') >= 3, `${name} on bus.jpg: ${JSON.stringify(preds)}`);
      // The bus fills the width of the photo's middle band; the people stand in front of it.
      const bus = preds.find((p) => p.class === 'bus')!;
      assert.ok(bus.width > 600 && bus.y > 300 && bus.y < 600, JSON.stringify(bus));
      for (const p of preds.filter((q) => q.class === 'person'))
        assert.ok(p.y > 400, JSON.stringify(p));
    }
    for (const [name, preds] of [
      ['yolov8n', v8Zidane!],
      ['yolox-nano', xZidane!],
    ] as const) {
      // Two people: one left of centre, one on the right of the 1280×720 frame.
      const people = preds.filter((p) => p.class === 'person');
      assert.ok(people.length >= 2, `${name} on zidane.jpg: ${JSON.stringify(preds)}`);
      assert.ok(
        people.some((p) => p.x < 640) && people.some((p) => p.x > 900),
        `${name}: ${JSON.stringify(people)}`,
      );
    }
    // The YOLOX model was loaded by its first request.
    assert.deepEqual(await registry(), ['yolov8n', 'yolox-nano']);
  });

  test('a third model loads on demand and unloads the least recently used one', async () => {
    const image = await drawImage(320, 240, [{ colour: 'green', x: 40, y: 40, w: 100, h: 80 }]);
    const res = await postJson(stack, '/infer/object_detection', {
      model_id: 'shapes',
      image: { type: 'base64', value: image.toString('base64') },
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(
      (res.body as DetectionResponse).predictions.map((p) => p.class),
      ['green'],
    );
    // Two at most: the pinned yolov8n stays, yolox-nano (least recently used) went.
    assert.deepEqual(await registry(), ['shapes', 'yolov8n']);
    const metrics = await scrape(stack, 'infer');
    assert.equal(sample(metrics, 'sd_model_loaded', { model_id: 'yolox-nano' }), 0);
    assert.equal(sample(metrics, 'sd_model_loaded', { model_id: 'shapes' }), 1);
    assert.equal(sample(metrics, 'sd_model_loads_total', { model_id: 'yolox-nano' }), 1);
  });

  test('without model_id, a stack of several models asks for one', async () => {
    const image = await drawImage(64, 64, []);
    const res = await postJson(stack, '/infer/object_detection', {
      image: { type: 'base64', value: image.toString('base64') },
    });
    assert.equal(res.status, 400);
    assert.match((res.body as { message: string }).message, /model_id is required/);
  });

  test('the model manager routes load, unload and clear within the served models', async () => {
    const post = (path: string, body?: unknown) => postJson(stack, path, body ?? {});
    let res = await post('/model/remove', { model_id: 'shapes' });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(await registry(), ['yolov8n']);

    res = await post('/model/add', { model_id: 'yolox-nano' });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(
      (res.body as { models: Array<{ model_id: string }> }).models.map((m) => m.model_id).sort(),
      ['yolov8n', 'yolox-nano'],
    );

    res = await post('/model/remove', { model_id: 'yolov8n' });
    assert.equal(res.status, 409);
    assert.equal((res.body as { code: string }).code, 'MODEL_PINNED');

    res = await post('/model/add', { model_id: 'not-listed' });
    assert.equal(res.status, 404);
    assert.equal((res.body as { code: string }).code, 'MODEL_NOT_FOUND');

    res = await post('/model/add', {});
    assert.equal(res.status, 400);

    res = await post('/model/clear');
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(await registry(), ['yolov8n']);

    // An unloaded model still serves: its next request loads it again.
    const again = await detect('yolox-nano', 'zidane.jpg');
    assert.equal(again.status, 200, JSON.stringify(again.body));
    assert.ok(count((again.body as DetectionResponse).predictions, 'person') >= 2);
  });
});
