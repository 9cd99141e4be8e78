import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { OnnxModel } from '../../services/infer/model.js';
import {
  buildTinyDetector,
  TINY_YOLOV5_CLASS_SCORE,
} from '../../services/infer/tiny-model/tiny-model.js';
import type { DetectionResponse, ModelDescription, Prediction } from '../../shared/contracts.js';
import { Keys } from '../../shared/keys.js';
import { ModelDirectory } from '../../shared/model-directory.js';
import { assertShapes, drawImage, drawPixels, type Shape } from '../helpers/images.js';
import { requireShared, sharedPath } from '../helpers/shared-data.js';
import { postJson, suiteRedis, type Stack } from '../helpers/stack.js';

/**
 * Detector families other than YOLOv8 through the whole stack: the real YOLOX-Nano (raw grid
 * head, BGR 0..255 input padded at the bottom-right) served with nothing but MODEL_PATH and
 * CLASS_NAMES, and the generated tiny detector exported in the YOLOv5 and end-to-end layouts.
 */
let dir: string;
const suite = suiteRedis();
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'sd-families-'));
});
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

function serve(env: Record<string, string>): Promise<Stack> {
  return suite.stack({ env });
}

function tinyModelFile(name: string, layout: 'yolov5' | 'end2end'): string {
  const path = join(dir, name);
  writeFileSync(path, buildTinyDetector({ layout, layoutMetadata: false }));
  return path;
}

/** The description the inference process published for `pre` and `post`. */
async function publishedModel(stack: Stack, modelId: string): Promise<ModelDescription> {
  const client = new Redis(suite.redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await client.connect();
    const desc = await new ModelDirectory(client, new Keys(stack.prefix)).get(modelId);
    assert.ok(desc, `no description of ${modelId}`);
    return desc;
  } finally {
    client.disconnect();
  }
}

async function detect(stack: Stack, image: Buffer, extra: Record<string, unknown> = {}) {
  const res = await postJson(stack, '/infer/object_detection', {
    image: { type: 'base64', value: image.toString('base64') },
    ...extra,
  });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body as DetectionResponse;
}

interface Corners {
  x1: number;
  y1: number;
  x2: number;
  y2: number;
}

function corners(p: Prediction): Corners {
  return {
    x1: p.x - p.width / 2,
    y1: p.y - p.height / 2,
    x2: p.x + p.width / 2,
    y2: p.y + p.height / 2,
  };
}

function iou(a: Corners, b: Corners): number {
  const w = Math.max(0, Math.min(a.x2, b.x2) - Math.max(a.x1, b.x1));
  const h = Math.max(0, Math.min(a.y2, b.y2) - Math.max(a.y1, b.y1));
  const inter = w * h;
  const area = (c: Corners) => (c.x2 - c.x1) * (c.y2 - c.y1);
  return inter / (area(a) + area(b) - inter);
}

/** Best overlap of a reference box with the predictions of one class. */
function bestMatch(predictions: Prediction[], cls: string, ref: Corners): number {
  return Math.max(
    0,
    ...predictions.filter((p) => p.class === cls).map((p) => iou(corners(p), ref)),
  );
}

/**
 * What the stack's YOLOv8n (yolov8n-dynamic.onnx, conf 0.25) finds on bus.jpg, in source
 * pixels: the bus and the three people standing in front of it.
 */
const BUS_YOLOV8N = {
  bus: { x1: 34, y1: 231, x2: 799, y2: 771 },
  people: [
    { x1: 673, y1: 380, x2: 810, y2: 879 },
    { x1: 221, y1: 408, x2: 343, y2: 857 },
    { x1: 50, y1: 397, x2: 243, y2: 904 },
  ],
};

const SCENE: Shape[] = [
  { colour: 'red', x: 40, y: 60, w: 120, h: 90 },
  { colour: 'blue', x: 300, y: 200, w: 150, h: 100 },
];

describe('YOLOX-Nano (raw grid head), served with MODEL_PATH and CLASS_NAMES only', () => {
  const MODEL = 'models/yolox_nano.onnx';
  let stack: Stack | undefined;
  before(async () => {
    // Each test skips (or fails under CI) through requireShared when the model is missing.
    if (!existsSync(sharedPath(MODEL))) return;
    stack = await serve({
      MODEL_PATH: sharedPath(MODEL),
      CLASS_NAMES: sharedPath('models/coco80.txt'),
    });
  });

  test('is detected as YOLOX, with its preprocessing published for pre', async (t) => {
    if (!requireShared(t, MODEL) || !stack) return;
    const desc = await publishedModel(stack, 'yolox_nano');
    assert.equal(desc.layout, 'yolox');
    assert.deepEqual(desc.preprocessing, { pad: 'top-left', channelOrder: 'bgr', scale: 1 });
    assert.deepEqual([desc.input_width, desc.input_height, desc.batch_size], [416, 416, 1]);
    assert.equal(desc.class_names.length, 80);
    assert.deepEqual([desc.class_names[0], desc.class_names[5]], ['person', 'bus']);
  });

  test('finds the bus and the people of bus.jpg where YOLOv8n finds them', async (t) => {
    if (!requireShared(t, MODEL) || !stack) return;
    const body = await detect(stack, readFileSync(sharedPath('data/samples/bus.jpg')), {
      confidence: 0.25,
    });
    assert.deepEqual(body.image, { width: 810, height: 1080 });
    const all = JSON.stringify(body.predictions);
    const buses = body.predictions.filter((p) => p.class === 'bus');
    assert.equal(buses.length, 1, all);
    // 0.916 with YOLOX's BGR 0..255 input; the same pixels as RGB score 0.85, scaled to 0..1
    // nothing at all.
    assert.ok(buses[0]!.confidence > 0.9, all);
    // A box off by YOLOX's padding (centred instead of top-left) or a wrong grid would not
    // overlap this much.
    assert.ok(bestMatch(body.predictions, 'bus', BUS_YOLOV8N.bus) > 0.8, all);
    for (const person of BUS_YOLOV8N.people) {
      assert.ok(
        bestMatch(body.predictions, 'person', person) > 0.7,
        `${JSON.stringify(person)}: ${all}`,
      );
    }
    assert.ok(body.predictions.filter((p) => p.class === 'person').length >= 3, all);
  });

  test('finds the two people of zidane.jpg', async (t) => {
    if (!requireShared(t, MODEL) || !stack) return;
    const body = await detect(stack, readFileSync(sharedPath('data/samples/zidane.jpg')), {
      confidence: 0.25,
      iou_threshold: 0.7,
    });
    assert.deepEqual(body.image, { width: 1280, height: 720 });
    const people = body.predictions.filter((p) => p.class === 'person' && p.confidence > 0.5);
    assert.equal(people.length, 2, JSON.stringify(body.predictions));
    // One on the left half, one on the right, each most of the photo's height.
    assert.deepEqual(people.map((p) => p.x < 640).sort(), [false, true], JSON.stringify(people));
    for (const p of people) assert.ok(p.height > 350, JSON.stringify(p));
  });
});

describe('YOLOv5 layout [batch, anchors, 5 + classes]', () => {
  test('with MODEL_LAYOUT=yolov5: score is objectness × class score, boxes exact', async () => {
    const stack = await serve({
      MODEL_PATH: tinyModelFile('tiny-yolov5.onnx', 'yolov5'),
      MODEL_LAYOUT: 'yolov5',
    });
    assert.equal((await publishedModel(stack, 'tiny-yolov5')).layout, 'yolov5');
    const body = await detect(stack, await drawImage(480, 360, SCENE));
    // Absent colours have class score 0.8 but objectness 0: none may appear.
    assertShapes(body.predictions, SCENE, TINY_YOLOV5_CLASS_SCORE);
    const onlyBlue = await detect(stack, await drawImage(480, 360, SCENE), {
      class_filter: ['blue'],
    });
    assertShapes(
      onlyBlue.predictions,
      SCENE.filter((s) => s.colour === 'blue'),
      TINY_YOLOV5_CLASS_SCORE,
    );
  });

  test('without MODEL_LAYOUT, an output that fits no grid is a startup error naming it', async () => {
    const stack = await suite.stack({
      roles: ['infer'],
      env: { MODEL_PATH: tinyModelFile('tiny-yolov5-unnamed.onnx', 'yolov5') },
    });
    const infer = stack.roles[0]!;
    const code =
      infer.process.exitCode ??
      (await new Promise<number | null>((r) => infer.process.once('exit', r)));
    assert.equal(code, 1);
    assert.match(
      stack.logs('infer').join('\n'),
      /model output \[1, 6, 8\] matches no known layout .*set MODEL_LAYOUT/,
    );
  });
});

describe('end-to-end layout [batch, detections, 6]', () => {
  test('detected from the shape alone: corner boxes become the same detections', async () => {
    const stack = await serve({ MODEL_PATH: tinyModelFile('tiny-end2end.onnx', 'end2end') });
    const desc = await publishedModel(stack, 'tiny-end2end');
    assert.equal(desc.layout, 'end2end');
    assert.deepEqual(desc.preprocessing, { pad: 'centre', channelOrder: 'rgb', scale: 1 / 255 });
    const shapes: Shape[] = [...SCENE, { colour: 'green', x: 200, y: 20, w: 60, h: 140 }];
    const body = await detect(stack, await drawImage(480, 360, shapes));
    assertShapes(body.predictions, shapes, 1);
    const portrait: Shape[] = [{ colour: 'green', x: 20, y: 500, w: 200, h: 120 }];
    assertShapes(
      (await detect(stack, await drawImage(300, 700, portrait))).predictions,
      portrait,
      1,
    );
  });
});

describe('ModelOptions: layout and preprocessing set by the caller', () => {
  test('reach the model description and the session thread', async () => {
    const model = await OnnxModel.load({
      modelId: 'tiny-bgr',
      modelPath: tinyModelFile('tiny-yolov5-options.onnx', 'yolov5'),
      classNamesPath: undefined,
      executionProvider: 'cpu',
      maxBatchSize: 2,
      layout: 'yolov5',
      preprocessing: { channelOrder: 'bgr', pad: undefined },
    });
    try {
      assert.equal(model.layoutSource, 'configured');
      assert.equal(model.description.layout, 'yolov5');
      assert.deepEqual(model.description.preprocessing, {
        pad: 'centre',
        channelOrder: 'bgr',
        scale: 1 / 255,
      });
      // Fed as BGR, a red square reaches the model as pure blue (its 0.72 duplicate is cut).
      const red: Shape = { colour: 'red', x: 40, y: 60, w: 80, h: 50 };
      const out = await model.run(
        [
          {
            pixels: drawPixels(320, 320, [red]),
            placement: { width: 320, height: 320, left: 0, top: 0 },
          },
        ],
        [{ confidence: 0.75, allowedClassIds: null, maxCandidates: 10 }],
      );
      assert.deepEqual(
        [...out.candidates[0]!],
        [80, 85, 80, 50, TINY_YOLOV5_CLASS_SCORE, 2].map((v) => Math.fround(v)),
      );
    } finally {
      await model.close();
    }
  });
});
