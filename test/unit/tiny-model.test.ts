import { test } from 'node:test';
import assert from 'node:assert/strict';
import ort from 'onnxruntime-node';
import sharp from 'sharp';
import {
  buildTinyDetector,
  TINY_CLASS_NAMES,
  TINY_DUPLICATE_SCORE,
} from '../../services/infer/tiny-model/tiny-model.js';
import { parseClassNames, readOnnxMetadata } from '../../services/infer/onnx/model-metadata.js';

const S = 320;
const NC = TINY_CLASS_NAMES.length;
const ANCHORS = 2 * NC;
const GREY = { r: 114, g: 114, b: 114 };

interface Rect {
  left: number;
  top: number;
  width: number;
  height: number;
  colour: { r: number; g: number; b: number };
}

/** Draws rectangles on a grey S×S canvas with sharp and returns float32 CHW planes in 0..1. */
async function drawChw(rects: readonly Rect[]): Promise<Float32Array> {
  const { data: rgb, info } = await sharp({
    create: { width: S, height: S, channels: 3, background: GREY },
  })
    .composite(
      rects.map((r) => ({
        input: {
          create: { width: r.width, height: r.height, channels: 3 as const, background: r.colour },
        },
        left: r.left,
        top: r.top,
      })),
    )
    .removeAlpha() // composite adds an alpha channel; the model wants RGB only
    .raw()
    .toBuffer({ resolveWithObject: true });
  assert.equal(info.channels, 3);
  assert.equal(rgb.length, S * S * 3);
  const chw = new Float32Array(3 * S * S);
  for (let i = 0; i < S * S; i++) {
    for (let c = 0; c < 3; c++) chw[c * S * S + i] = (rgb[i * 3 + c] ?? 0) / 255;
  }
  return chw;
}

/** Reads anchor `a` of image `b` from a [B, 4+NC, ANCHORS] output. */
function anchor(data: Float32Array, b: number, a: number): { box: number[]; scores: number[] } {
  const at = (row: number): number => {
    const v = data[b * (4 + NC) * ANCHORS + row * ANCHORS + a];
    assert.ok(v !== undefined, `output index out of range (b=${b} row=${row} a=${a})`);
    return v;
  };
  return {
    box: [0, 1, 2, 3].map(at),
    scores: Array.from({ length: NC }, (_, j) => at(4 + j)),
  };
}

function assertBox(actual: number[], expected: readonly number[], what: string): void {
  assert.equal(actual.length, 4);
  actual.forEach((v, i) => {
    const e = expected[i] ?? NaN;
    assert.ok(
      Math.abs(v - e) <= 1,
      `${what}: box[${i}] = ${v}, expected ${e} (±1) — ${actual.join(',')}`,
    );
  });
}

function assertScores(actual: number[], expected: readonly number[], what: string): void {
  actual.forEach((v, j) => {
    const e = expected[j] ?? NaN;
    assert.ok(Math.abs(v - e) < 1e-6, `${what}: score[${j}] = ${v}, expected ${e}`);
  });
}

const RED = { r: 255, g: 0, b: 0 };
const GREEN = { r: 0, g: 255, b: 0 };
const BLUE = { r: 0, g: 0, b: 255 };

void test('tiny detector: session loads and reports YOLOv8-like input/output metadata', async () => {
  const session = await ort.InferenceSession.create(buildTinyDetector());
  try {
    assert.deepEqual(session.inputNames, ['images']);
    assert.deepEqual(session.outputNames, ['output0']);
    const input = session.inputMetadata[0];
    const output = session.outputMetadata[0];
    assert.ok(input?.isTensor && output?.isTensor);
    assert.equal(input.type, 'float32');
    assert.deepEqual(input.shape, ['batch', 3, S, S]);
    assert.equal(output.type, 'float32');
    assert.deepEqual(output.shape, ['batch', 4 + NC, ANCHORS]);
  } finally {
    await session.release();
  }
});

void test('tiny detector: exact boxes, scores and near-duplicates for a batch of 2', async () => {
  const image0 = await drawChw([
    { left: 40, top: 60, width: 80, height: 80, colour: RED }, // x 40..119, y 60..139
    { left: 200, top: 10, width: 100, height: 40, colour: BLUE }, // x 200..299, y 10..49
  ]);
  const image1 = await drawChw([{ left: 100, top: 180, width: 64, height: 64, colour: GREEN }]);
  const batch = new Float32Array(2 * 3 * S * S);
  batch.set(image0, 0);
  batch.set(image1, 3 * S * S);

  const session = await ort.InferenceSession.create(buildTinyDetector());
  try {
    const out = await session.run({ images: new ort.Tensor('float32', batch, [2, 3, S, S]) });
    const t = out['output0'];
    assert.ok(t instanceof ort.Tensor);
    assert.deepEqual(t.dims, [2, 4 + NC, ANCHORS]);
    assert.ok(t.data instanceof Float32Array);
    const data = t.data;

    const expected: Array<Array<readonly number[] | null>> = [
      // image 0: red, (no green), blue
      [[80, 100, 80, 80], null, [250, 30, 100, 40]],
      // image 1: only green, x 100..163, y 180..243
      [null, [132, 212, 64, 64], null],
    ];
    for (let b = 0; b < 2; b++) {
      for (let k = 0; k < NC; k++) {
        const box = expected[b]?.[k] ?? null;
        const main = anchor(data, b, k);
        const dup = anchor(data, b, k + NC);
        const oneHot = (s: number): number[] =>
          TINY_CLASS_NAMES.map((_, j) => (j === k && box ? s : 0));
        const what = `image ${b} class ${TINY_CLASS_NAMES[k]}`;
        assertScores(main.scores, oneHot(1), what);
        assertScores(dup.scores, oneHot(Math.fround(TINY_DUPLICATE_SCORE)), `${what} (dup)`);
        if (box) {
          assertBox(main.box, box, what);
          const [cx = 0, cy = 0, w = 0, h = 0] = box;
          assertBox(dup.box, [cx, cy, w + 2, h + 2], `${what} (dup)`);
        } else {
          assertBox(main.box, [0, 0, 0, 0], `${what} (absent)`);
          assertBox(dup.box, [0, 0, 0, 0], `${what} (absent dup)`);
        }
      }
    }
    // The red square edges are exact (the ±1 px tolerance is only slack for the assertion).
    assert.deepEqual(anchor(data, 0, 0).box, [80, 100, 80, 80]);
  } finally {
    await session.release();
  }
});

void test('tiny detector: white, black, yellow are ignored; red threshold is at half intensity', async () => {
  const image = await drawChw([
    { left: 0, top: 0, width: 50, height: 50, colour: { r: 255, g: 255, b: 255 } },
    { left: 60, top: 0, width: 50, height: 50, colour: { r: 0, g: 0, b: 0 } },
    { left: 120, top: 0, width: 50, height: 50, colour: { r: 255, g: 255, b: 0 } },
    { left: 180, top: 0, width: 50, height: 50, colour: { r: 128, g: 0, b: 0 } }, // dark red: ≈ 0
  ]);
  const session = await ort.InferenceSession.create(buildTinyDetector());
  try {
    const out = await session.run({ images: new ort.Tensor('float32', image, [1, 3, S, S]) });
    const data = out['output0']?.data;
    assert.ok(data instanceof Float32Array);
    assert.equal(data.length, (4 + NC) * ANCHORS);
    // 128/255 - 0.5 > 0, so dark red at 128 is still (just) red; everything else is not.
    assertScores(anchor(data, 0, 0).scores, [1, 0, 0], 'dark red');
    assertBox(anchor(data, 0, 0).box, [205, 25, 50, 50], 'dark red');
    for (let a = 1; a < NC; a++) assertScores(anchor(data, 0, a).scores, [0, 0, 0], `anchor ${a}`);
  } finally {
    await session.release();
  }
});

void test('tiny detector: inputSize option, metadata and determinism', async () => {
  const a = buildTinyDetector({ inputSize: 64 });
  const b = buildTinyDetector({ inputSize: 64 });
  assert.deepEqual(a, b, 'same options must give the same bytes');
  assert.notDeepEqual(a, buildTinyDetector());
  assert.deepEqual(buildTinyDetector(), buildTinyDetector({ inputSize: 320 }));

  const meta = readOnnxMetadata(a);
  assert.equal(meta['names'], "{0: 'red', 1: 'green', 2: 'blue'}");
  assert.deepEqual(parseClassNames(meta['names'] ?? ''), [...TINY_CLASS_NAMES]);
  assert.equal(meta['imgsz'], '[64, 64]');
  assert.equal(meta['task'], 'detect');
  assert.ok((meta['description'] ?? '').length > 0);

  const session = await ort.InferenceSession.create(a);
  try {
    const input = session.inputMetadata[0];
    assert.ok(input?.isTensor);
    assert.deepEqual(input.shape, ['batch', 3, 64, 64]);
    // A single blue pixel at (x=63, y=0) — the far edge of the grid.
    const x = new Float32Array(3 * 64 * 64);
    x[2 * 64 * 64 + 63] = 1;
    const out = await session.run({ images: new ort.Tensor('float32', x, [1, 3, 64, 64]) });
    const data = out['output0']?.data;
    assert.ok(data instanceof Float32Array);
    assert.deepEqual(anchor(data, 0, 2).box, [63.5, 0.5, 1, 1]);
    assertScores(anchor(data, 0, 2).scores, [0, 0, 1], 'blue pixel');
  } finally {
    await session.release();
  }

  assert.throws(() => buildTinyDetector({ inputSize: 0 }), RangeError);
  assert.throws(() => buildTinyDetector({ inputSize: 10.5 }), RangeError);
});
