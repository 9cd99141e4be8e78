import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { DetectionResponse, Prediction } from '../../shared/contracts.js';
import sharp from 'sharp';
import { cmykJpegs, requireImageMagick } from '../helpers/imagemagick.js';
import { requireShared, sharedPath } from '../helpers/shared-data.js';
import { logEvents, postJson, suiteRedis, type Stack } from '../helpers/stack.js';

/**
 * The stack serving real pretrained COCO models from ../shared on real photos: the detections
 * a person would expect, with a dynamic-batch model and with one whose batch is fixed at 1.
 */
const suite = suiteRedis();

function serve(model: string, env: Record<string, string> = {}): Promise<Stack> {
  return suite.stack({ env: { MODEL_PATH: sharedPath(`models/${model}`), ...env } });
}

function detect(stack: Stack, image: string, extra: Record<string, unknown> = {}) {
  const bytes = readFileSync(sharedPath(`data/samples/${image}`));
  return postJson(stack, '/infer/object_detection', {
    image: { type: 'base64', value: bytes.toString('base64') },
    confidence: 0.25,
    ...extra,
  });
}

const inside = (p: Prediction, x1: number, y1: number, x2: number, y2: number) =>
  p.x > x1 && p.x < x2 && p.y > y1 && p.y < y2;

describe('real COCO models', () => {
  test('yolov8n (dynamic batch) finds the people and the bus in bus.jpg', async (t) => {
    if (!requireShared(t, 'models/yolov8n-dynamic.onnx')) return;
    const stack = await serve('yolov8n-dynamic.onnx');
    const res = await detect(stack, 'bus.jpg');
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const body = res.body as DetectionResponse;
    assert.deepEqual(body.image, { width: 810, height: 1080 });
    const people = body.predictions.filter((p) => p.class === 'person');
    const buses = body.predictions.filter((p) => p.class === 'bus');
    assert.equal(buses.length, 1, JSON.stringify(body.predictions));
    const bus = buses[0]!;
    // The bus fills the upper middle of the photo, wider than half of it.
    assert.ok(
      bus.confidence > 0.7 && bus.width > 600 && inside(bus, 250, 350, 600, 650),
      JSON.stringify(bus),
    );
    // Three people standing in front of the bus, confidently; a fourth cut off at the left edge.
    const confident = people.filter((p) => p.confidence > 0.8);
    assert.equal(confident.length, 3, JSON.stringify(people));
    for (const p of confident)
      assert.ok(p.height > 350 && inside(p, 0, 450, 810, 850), JSON.stringify(p));
    assert.ok(
      people.some((p) => p.x < 80),
      'the person at the left edge',
    );
    assert.deepEqual(
      body.predictions.map((p) => p.class).filter((c) => c !== 'person' && c !== 'bus'),
      [],
    );
  });

  test('yolov8n with a batch fixed at 1 serves concurrent requests one image at a time', async (t) => {
    if (!requireShared(t, 'models/yolov8n.onnx')) return;
    const stack = await serve('yolov8n.onnx', { MAX_BATCH_DELAY_MS: '20' });
    const registry = (await (await fetch(`${stack.url}/model/registry`)).json()) as {
      models: Array<{ batch_size: number }>;
    };
    assert.equal(registry.models[0]?.batch_size, 1);
    const results = await Promise.all([
      detect(stack, 'zidane.jpg'),
      detect(stack, 'zidane.jpg'),
      detect(stack, 'bus.jpg'),
    ]);
    for (const r of results) assert.equal(r.status, 200, JSON.stringify(r.body));
    const zidane = results[0].body as DetectionResponse;
    assert.deepEqual(zidane.image, { width: 1280, height: 720 });
    const classes = zidane.predictions.map((p) => p.class).sort();
    // Two people and a tie (Ultralytics' reference result for this photo at conf 0.25),
    // with NMS at Ultralytics' IoU of 0.7 so the overlapping people are both kept.
    const loose = await detect(stack, 'zidane.jpg', { iou_threshold: 0.7 });
    assert.deepEqual((loose.body as DetectionResponse).predictions.map((p) => p.class).sort(), [
      'person',
      'person',
      'tie',
    ]);
    assert.ok(classes.includes('tie') && classes.includes('person'), classes.join(','));
    assert.ok((results[2].body as DetectionResponse).predictions.some((p) => p.class === 'bus'));
    // The log lines come through a pipe and may trail the HTTP answers by a moment.
    const batches = () => logEvents(stack, 'infer', 'batch done').map((e) => e['size']);
    for (let i = 0; i < 50 && batches().length < 4; i++) await sleep(20);
    const sizes = batches();
    assert.ok(sizes.length >= 4 && sizes.every((s) => s === 1), `batch sizes: ${sizes.join(', ')}`);
  });

  test('yolov8n: CMYK JPEGs of bus.jpg without a profile give the boxes of the RGB original within 3 px', async (t) => {
    if (!requireShared(t, 'models/yolov8n.onnx')) return;
    const im = requireImageMagick(t);
    if (!im) return;
    const bus = readFileSync(sharedPath('data/samples/bus.jpg'));
    const { data, info } = await sharp(bus).raw().toBuffer({ resolveWithObject: true });
    const stack = await serve('yolov8n.onnx');
    const boxes = async (bytes: Buffer) => {
      const res = await postJson(stack, '/infer/object_detection', {
        image: { type: 'base64', value: bytes.toString('base64') },
        confidence: 0.25,
      });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      return (res.body as DetectionResponse).predictions;
    };
    const original = await boxes(bus);
    const confident = original.filter((p) => p.confidence >= 0.5);
    assert.ok(confident.some((p) => p.class === 'bus') && confident.length >= 4);
    for (const [style, jpeg] of cmykJpegs(im, data, info.width, info.height)) {
      const got = await boxes(jpeg);
      let worst = 0;
      for (const want of confident) {
        // The same object: the box of its class nearest to the original's.
        const offset = (p: Prediction) =>
          Math.max(
            ...(['x', 'y', 'width', 'height'] as const).map((k) => Math.abs(p[k] - want[k])),
          );
        const match = got
          .filter((p) => p.class === want.class)
          .sort((a, b) => offset(a) - offset(b))[0];
        assert.ok(match, `${style}: no ${want.class} near ${JSON.stringify(want)}`);
        worst = Math.max(worst, offset(match));
        assert.ok(offset(match) <= 3, `${style}: ${want.class} moved ${offset(match)} px`);
      }
      t.diagnostic(`${style}: boxes within ${worst.toFixed(2)} px of the RGB original's`);
    }
  });

  test('an execution provider that is not installed is a clear startup error', async () => {
    const stack = await suite.stack({ roles: ['infer'], env: { EXECUTION_PROVIDER: 'cuda' } });
    const infer = stack.roles[0]!;
    const code =
      infer.process.exitCode ??
      (await new Promise<number | null>((r) => infer.process.once('exit', r)));
    assert.equal(code, 1);
    assert.match(stack.logs('infer').join('\n'), /EXECUTION_PROVIDER=cuda is not available/);
  });
});
