import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import sharp from 'sharp';
import type { DetectionResponse, Prediction } from '../../shared/contracts.js';
import { boxColour } from '../../shared/palette.js';
import { drawImage, drawPixels, type Shape } from '../helpers/images.js';
import { suiteImageServer } from '../helpers/image-server.js';
import { keysOf, postJson, suiteStack, type RedisHandle, type Stack } from '../helpers/stack.js';

/**
 * `visualize_predictions`: `post` draws the boxes on the original image (oriented as `pre`
 * oriented it) and returns it as base64 JPEG, for uploads and for image URLs alike.
 */
let redis: RedisHandle;
let stack: Stack;
const images = suiteImageServer();

const W = 480;
const H = 360;
const SCENE: Shape[] = [
  { colour: 'red', x: 40, y: 80, w: 120, h: 90 },
  { colour: 'blue', x: 300, y: 200, w: 150, h: 100 },
];

suiteStack({ env: { ALLOW_PRIVATE_URLS: 'true' } }, (s, r) => {
  stack = s;
  redis = r;
});

interface Decoded {
  width: number;
  height: number;
  px: Buffer;
}

async function decodeVisualization(body: DetectionResponse): Promise<Decoded> {
  assert.equal(typeof body.visualization, 'string', 'visualization is missing');
  const jpeg = Buffer.from(body.visualization!, 'base64');
  const meta = await sharp(jpeg).metadata();
  assert.equal(meta.format, 'jpeg');
  const { data, info } = await sharp(jpeg).raw().toBuffer({ resolveWithObject: true });
  assert.equal(info.channels, 3);
  return { width: info.width, height: info.height, px: data };
}

function rgb(img: { width: number; px: Buffer }, x: number, y: number): [number, number, number] {
  const o = (Math.round(y) * img.width + Math.round(x)) * 3;
  return [img.px[o]!, img.px[o + 1]!, img.px[o + 2]!];
}

const distance = (a: readonly number[], b: readonly number[]) =>
  a.reduce((sum, v, i) => sum + Math.abs(v - b[i]!), 0);

function hex(colour: string): [number, number, number] {
  const n = parseInt(colour.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

/** The middle of a prediction's left edge, where its outline is drawn and no label is. */
const leftEdge = (p: Prediction): [number, number] => [p.x - p.width / 2, p.y];

function assertDrawn(drawn: Decoded, original: Decoded, predictions: Prediction[]): void {
  assert.ok(predictions.length > 0);
  for (const p of predictions) {
    const [x, y] = leftEdge(p);
    const got = rgb(drawn, x, y);
    // The outline's colour, not the original pixel (JPEG shifts colours a little).
    assert.ok(
      distance(got, rgb(original, x, y)) > 150,
      `${p.class} edge at ${x},${y}: ${got.join(',')} is the original pixel`,
    );
    assert.ok(
      distance(got, hex(boxColour(p.class_id))) < 90,
      `${p.class} edge at ${x},${y}: ${got.join(',')}, want ${boxColour(p.class_id)}`,
    );
    // Inside the box, away from its edges, the image is untouched.
    const inside = rgb(drawn, p.x, p.y);
    assert.ok(
      distance(inside, rgb(original, p.x, p.y)) < 40,
      `${p.class} centre changed: ${inside.join(',')}`,
    );
  }
}

describe('visualize_predictions', () => {
  test('returns the image with each box outlined, as base64 JPEG of the original size', async () => {
    const image = await drawImage(W, H, SCENE);
    const res = await postJson(stack, '/infer/object_detection', {
      image: { type: 'base64', value: image.toString('base64') },
      visualize_predictions: true,
      visualization_stroke_width: 5,
    });
    assert.equal(res.status, 200, JSON.stringify(res.body).slice(0, 500));
    const body = res.body as DetectionResponse;
    assert.deepEqual(body.predictions.map((p) => p.class).sort(), ['blue', 'red']);
    const drawn = await decodeVisualization(body);
    assert.deepEqual([drawn.width, drawn.height], [W, H]);
    assertDrawn(drawn, { width: W, height: H, px: drawPixels(W, H, SCENE) }, body.predictions);
  });

  test('labels are drawn above the boxes unless visualization_labels is false', async () => {
    const image = await drawImage(W, H, SCENE);
    const request = (labels: boolean) =>
      postJson(stack, '/infer/object_detection', {
        image: { type: 'base64', value: image.toString('base64') },
        visualize_predictions: true,
        visualization_labels: labels,
      });
    const [withLabels, without] = await Promise.all([request(true), request(false)]);
    const red = SCENE[0]!;
    // Just above the red box's top-left corner: the label's background, or the grey scene.
    const [x, y] = [red.x + 6, red.y - 5];
    const labelled = await decodeVisualization(withLabels.body as DetectionResponse);
    const plain = await decodeVisualization(without.body as DetectionResponse);
    assert.ok(distance(rgb(labelled, x, y), hex(boxColour(0))) < 90, rgb(labelled, x, y).join());
    assert.ok(distance(rgb(plain, x, y), [90, 90, 90]) < 30, rgb(plain, x, y).join());
  });

  test('an EXIF-rotated photo is drawn on as displayed, where the boxes are', async () => {
    const image = await drawImage(W, H, SCENE, { format: 'jpeg', orientation: 6 });
    const res = await postJson(stack, '/infer/object_detection', {
      image: { type: 'base64', value: image.toString('base64') },
      visualize_predictions: true,
      visualization_stroke_width: 5,
      visualization_labels: false,
    });
    assert.equal(res.status, 200, JSON.stringify(res.body).slice(0, 500));
    const body = res.body as DetectionResponse;
    assert.deepEqual(body.image, { width: W, height: H });
    const drawn = await decodeVisualization(body);
    assert.deepEqual([drawn.width, drawn.height], [W, H]);
    assertDrawn(drawn, { width: W, height: H, px: drawPixels(W, H, SCENE) }, body.predictions);
  });

  test('an image URL is drawn on too, and its fetched bytes leave Redis with the image', async () => {
    images.served.set('/scene.png', await drawImage(W, H, SCENE));
    const res = await postJson(stack, '/infer/object_detection', {
      image: { type: 'url', value: `${images.url}/scene.png` },
      visualize_predictions: true,
      visualization_stroke_width: 5,
    });
    assert.equal(res.status, 200, JSON.stringify(res.body).slice(0, 500));
    const body = res.body as DetectionResponse;
    const drawn = await decodeVisualization(body);
    assertDrawn(drawn, { width: W, height: H, px: drawPixels(W, H, SCENE) }, body.predictions);
    await new Promise((r) => setTimeout(r, 200));
    const left = (await keysOf(redis.client, stack.prefix)).filter((k) =>
      /:(img|src|px|cand):/.test(k),
    );
    assert.deepEqual(left, []);
  });

  test('no visualization unless asked for; a bad stroke width is a 400', async () => {
    const image = await drawImage(W, H, SCENE);
    const plain = await postJson(stack, '/infer/object_detection', {
      image: { type: 'base64', value: image.toString('base64') },
    });
    assert.equal(plain.status, 200);
    assert.equal((plain.body as DetectionResponse).visualization, undefined);
    const bad = await postJson(stack, '/infer/object_detection', {
      image: { type: 'base64', value: image.toString('base64') },
      visualize_predictions: true,
      visualization_stroke_width: 0,
    });
    assert.equal(bad.status, 400);
    assert.equal((bad.body as { code: string }).code, 'INVALID_REQUEST');
    assert.match((bad.body as { message: string }).message, /visualization_stroke_width/);
  });
});
