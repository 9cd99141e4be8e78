import { test } from 'node:test';
import fc from 'fast-check';
import assert from 'node:assert/strict';
import {
  decodeEnd2end,
  decoderFor,
  decodeYolov5,
  decodeYolov8,
  decodeYolox,
  yoloxGrid,
} from '../../services/infer/output-decoder.js';
import { letterboxToNchwFloat, type Placement } from '../../services/infer/input-tensor.js';
import type { CandidateFilter } from '../../services/infer/output-decoder.js';
import { detectLayout, gridCells, LayoutError } from '../../services/infer/layout-detection.js';
import type { LayoutQuery } from '../../services/infer/layout-detection.js';
import { CANDIDATE_STRIDE, decodeCandidates, encodeCandidates } from '../../shared/candidates.js';
import type { Candidate } from '../../shared/candidates.js';

/** One image's output, anchor-major for readability: per anchor [cx, cy, w, h, ...scores]. */
type AnchorRow = number[];

/** Builds a [batch, 4 + nc, anchors] tensor from per-image, per-anchor rows. */
function buildOutput(images: AnchorRow[][], numClasses: number): Float32Array {
  const channels = 4 + numClasses;
  const anchors = images[0]!.length;
  const out = new Float32Array(images.length * channels * anchors);
  images.forEach((rows, b) => {
    assert.equal(rows.length, anchors);
    rows.forEach((row, a) => {
      assert.equal(row.length, channels);
      row.forEach((v, ch) => {
        out[b * channels * anchors + ch * anchors + a] = v;
      });
    });
  });
  return out;
}

function unpack(packed: Float32Array): Candidate[] {
  assert.equal(packed.length % CANDIDATE_STRIDE, 0);
  return decodeCandidates(encodeCandidates(packed));
}

const NC = 3;
const CHANNELS = 4 + NC;
const ANCHORS = 5;

// Batch of two images, three classes, five anchors. Scores are exact in float32 where a
// threshold comparison depends on them.
const IMAGE0: AnchorRow[] = [
  [10, 20, 30, 40, 0.1, 0.5, 0.25], // best class 1 at 0.5
  [11, 21, 31, 41, 0.75, 0.125, 0.0625], // best class 0 at 0.75
  [12, 22, 32, 42, 0.0625, 0.125, 0.25], // best class 2 at 0.25
  [13, 23, 33, 43, 0.875, 0, 0.9375], // best class 2 at 0.9375, class 0 at 0.875
  [14, 24, 34, 44, 0, 0, 0], // nothing
];
const IMAGE1: AnchorRow[] = [
  [110, 120, 130, 140, 0, 0, 0],
  [111, 121, 131, 141, 0, 0.625, 0],
  [112, 122, 132, 142, 0, 0, 0],
  [113, 123, 133, 143, 0.5, 0, 0],
  [114, 124, 134, 144, 0, 0, 0.375],
];
const OUTPUT = buildOutput([IMAGE0, IMAGE1], NC);

function filter(over: Partial<CandidateFilter> = {}): CandidateFilter {
  return { confidence: 0.3, allowedClassIds: null, maxCandidates: 100, ...over };
}

void test('decodeYolov8: picks the best class per anchor and copies boxes', () => {
  const got = unpack(decodeYolov8(OUTPUT, CHANNELS, ANCHORS, 0, filter()));
  assert.deepEqual(got, [
    { cx: 10, cy: 20, w: 30, h: 40, score: 0.5, classId: 1 },
    { cx: 11, cy: 21, w: 31, h: 41, score: 0.75, classId: 0 },
    { cx: 13, cy: 23, w: 33, h: 43, score: 0.9375, classId: 2 },
  ]);
});

void test('decodeYolov8: the confidence threshold is inclusive', () => {
  // Anchor 0's best score is exactly 0.5.
  const at = unpack(decodeYolov8(OUTPUT, CHANNELS, ANCHORS, 0, filter({ confidence: 0.5 })));
  assert.deepEqual(
    at.map((c) => c.cx),
    [10, 11, 13],
  );
  const above = unpack(
    decodeYolov8(OUTPUT, CHANNELS, ANCHORS, 0, filter({ confidence: 0.5000001 })),
  );
  assert.deepEqual(
    above.map((c) => c.cx),
    [11, 13],
  );
  // Confidence 0 keeps every anchor, even those scoring 0 everywhere.
  const all = unpack(decodeYolov8(OUTPUT, CHANNELS, ANCHORS, 0, filter({ confidence: 0 })));
  assert.equal(all.length, ANCHORS);
  assert.deepEqual(all[4], { cx: 14, cy: 24, w: 34, h: 44, score: 0, classId: 0 });
});

void test('decodeYolov8: allowedClassIds restricts which classes compete', () => {
  // Without class 2, anchor 3 falls back to class 0 (0.875); anchor 2 (best allowed 0.125)
  // drops below the threshold.
  const got = unpack(
    decodeYolov8(OUTPUT, CHANNELS, ANCHORS, 0, filter({ allowedClassIds: [0, 1] })),
  );
  assert.deepEqual(got, [
    { cx: 10, cy: 20, w: 30, h: 40, score: 0.5, classId: 1 },
    { cx: 11, cy: 21, w: 31, h: 41, score: 0.75, classId: 0 },
    { cx: 13, cy: 23, w: 33, h: 43, score: 0.875, classId: 0 },
  ]);

  // Only class 2: anchor 0 competes with 0.25 only, anchor 3 keeps 0.9375.
  const only2 = unpack(
    decodeYolov8(OUTPUT, CHANNELS, ANCHORS, 0, filter({ allowedClassIds: [2], confidence: 0.25 })),
  );
  assert.deepEqual(
    only2.map((c) => [c.cx, c.score, c.classId]),
    [
      [10, 0.25, 2],
      [12, 0.25, 2],
      [13, 0.9375, 2],
    ],
  );
});

void test('decodeYolov8: out-of-range class ids are ignored', () => {
  const got = unpack(
    decodeYolov8(OUTPUT, CHANNELS, ANCHORS, 0, filter({ allowedClassIds: [-1, 1, 3, 99] })),
  );
  // Only class 1 competes: anchor 0 (0.5) passes 0.3; nothing reads past the class rows.
  assert.deepEqual(got, [{ cx: 10, cy: 20, w: 30, h: 40, score: 0.5, classId: 1 }]);

  const none = decodeYolov8(
    OUTPUT,
    CHANNELS,
    ANCHORS,
    0,
    filter({ allowedClassIds: [7, -2], confidence: 0 }),
  );
  assert.equal(none.length, 0);

  const empty = decodeYolov8(
    OUTPUT,
    CHANNELS,
    ANCHORS,
    0,
    filter({ allowedClassIds: [], confidence: 0 }),
  );
  assert.equal(empty.length, 0);
});

void test('decodeYolov8: maxCandidates keeps the highest scores', () => {
  const two = unpack(decodeYolov8(OUTPUT, CHANNELS, ANCHORS, 0, filter({ maxCandidates: 2 })));
  assert.deepEqual(
    two.map((c) => [c.cx, c.score]),
    [
      [13, 0.9375],
      [11, 0.75],
    ],
  );
  const one = unpack(decodeYolov8(OUTPUT, CHANNELS, ANCHORS, 0, filter({ maxCandidates: 1 })));
  assert.deepEqual(
    one.map((c) => c.cx),
    [13],
  );
  // Equal scores: the earlier anchor wins the last slot.
  const tie = buildOutput(
    [
      [
        [1, 1, 1, 1, 0.5],
        [2, 2, 2, 2, 0.75],
        [3, 3, 3, 3, 0.5],
      ],
    ],
    1,
  );
  const tied = unpack(
    decodeYolov8(tie, 5, 3, 0, { confidence: 0, allowedClassIds: null, maxCandidates: 2 }),
  );
  assert.deepEqual(
    tied.map((c) => c.cx),
    [2, 1],
  );
});

void test('decodeYolov8: batchIndex selects the right image', () => {
  const got = unpack(decodeYolov8(OUTPUT, CHANNELS, ANCHORS, 1, filter()));
  assert.deepEqual(got, [
    { cx: 111, cy: 121, w: 131, h: 141, score: 0.625, classId: 1 },
    { cx: 113, cy: 123, w: 133, h: 143, score: 0.5, classId: 0 },
    { cx: 114, cy: 124, w: 134, h: 144, score: 0.375, classId: 2 },
  ]);
});

void test('decodeYolov8: non-integer box values are copied as float32', () => {
  const out = buildOutput(
    [
      [
        [320.25, 100.5, 64.125, 12.75, 0.9],
        [1, 2, 3, 4, 0.1],
      ],
    ],
    1,
  );
  const packed = decodeYolov8(out, 5, 2, 0, filter());
  assert.equal(packed.length, CANDIDATE_STRIDE);
  assert.deepEqual([...packed], [320.25, 100.5, 64.125, 12.75, Math.fround(0.9), 0]);
});

void test('letterboxToNchwFloat: converts HWC uint8 to NCHW floats in 0..1', () => {
  const h = 2;
  const w = 2;
  // Image 0: pixel p has (R, G, B) = (p+1, 10*(p+1), 255 - p).
  // Image 1: pixel p has (R, G, B) = (100 + p, 200 + p, 50 * p).
  const src = new Uint8Array(2 * h * w * 3);
  for (let p = 0; p < 4; p++) {
    src.set([p + 1, 10 * (p + 1), 255 - p], p * 3);
    src.set([100 + p, 200 + p, 50 * p], 12 + p * 3);
  }
  const dst = new Float32Array(2 * 3 * h * w).fill(-1);
  const whole: Placement = { width: w, height: h, left: 0, top: 0 };
  letterboxToNchwFloat(src, [whole, whole], h, w, dst);
  const expected = [
    // image 0: R plane, G plane, B plane
    1, 2, 3, 4, 10, 20, 30, 40, 255, 254, 253, 252,
    // image 1
    100, 101, 102, 103, 200, 201, 202, 203, 0, 50, 100, 150,
  ];
  assert.equal(dst.length, expected.length);
  expected.forEach((v, i) => {
    assert.ok(Math.abs(dst[i]! - v / 255) < 1e-7, `index ${i}: ${dst[i]} vs ${v / 255}`);
  });
  assert.equal(dst[8], 1);
  assert.equal(dst[20], 0);
});

void test('letterboxToNchwFloat: padded batch entries are left untouched', () => {
  const h = 2;
  const w = 2;
  const plane = h * w;
  // Only one real image, in a tensor sized for a batch of 2.
  const src = new Uint8Array([255, 0, 51, 0, 255, 102, 51, 102, 0, 204, 153, 255]);
  const dst = new Float32Array(2 * 3 * plane).fill(7);
  letterboxToNchwFloat(src, [{ width: w, height: h, left: 0, top: 0 }], h, w, dst);
  assert.deepEqual(
    [...dst.subarray(0, 3 * plane)],
    [255, 0, 51, 204, 0, 255, 102, 153, 51, 102, 0, 255].map((v) => Math.fround(v / 255)),
  );
  assert.deepEqual([...dst.subarray(3 * plane)], new Array<number>(3 * plane).fill(7));
});

void test('candidates: encode/decode round trip', () => {
  const packed = new Float32Array([1.5, 2.25, 3, 4, 0.875, 2, 100, 200, 300, 400, 0.5, 79]);
  const bytes = encodeCandidates(packed);
  assert.equal(bytes.byteLength, 48);
  // Little-endian float32: 1.5 is 0x3fc00000.
  assert.deepEqual([...bytes.subarray(0, 4)], [0x00, 0x00, 0xc0, 0x3f]);
  assert.deepEqual(decodeCandidates(bytes), [
    { cx: 1.5, cy: 2.25, w: 3, h: 4, score: 0.875, classId: 2 },
    { cx: 100, cy: 200, w: 300, h: 400, score: 0.5, classId: 79 },
  ]);
  assert.deepEqual(decodeCandidates(encodeCandidates(new Float32Array(0))), []);
});

void test('candidates: a subarray view encodes only its own candidates', () => {
  const whole = new Float32Array([9, 9, 9, 9, 9, 9, 1, 2, 3, 4, 0.5, 1]);
  const view = whole.subarray(6);
  assert.deepEqual(decodeCandidates(encodeCandidates(view)), [
    { cx: 1, cy: 2, w: 3, h: 4, score: 0.5, classId: 1 },
  ]);
});

void test('candidates: decoding from an unaligned buffer works', () => {
  const bytes = encodeCandidates(new Float32Array([5, 6, 7, 8, 0.25, 3]));
  const shifted = Buffer.alloc(bytes.byteLength + 1);
  bytes.copy(shifted, 1);
  assert.deepEqual(decodeCandidates(shifted.subarray(1)), [
    { cx: 5, cy: 6, w: 7, h: 8, score: 0.25, classId: 3 },
  ]);
});

void test('candidates: malformed lengths are rejected', () => {
  assert.throws(() => encodeCandidates(new Float32Array(5)), RangeError);
  assert.throws(() => encodeCandidates(new Float32Array(7)), RangeError);
  assert.throws(() => decodeCandidates(new Uint8Array(23)), RangeError);
  assert.throws(() => decodeCandidates(new Uint8Array(25)), RangeError);
  assert.throws(() => decodeCandidates(new Uint8Array(4)), RangeError);
});

// ---- YOLOv5 / YOLOv7: [batch, anchors, 5 + classes], row-major per anchor ----

/** Builds a [batch, anchors, width] tensor from per-image rows (already in memory order). */
function rowMajor(images: number[][][]): Float32Array {
  return new Float32Array(images.flat(2));
}

// Rows: cx, cy, w, h, objectness, three class scores. Products are exact in float32.
const V5_IMAGE0 = [
  [10, 20, 30, 40, 0.5, 0.5, 1, 0.25], // class 1: 0.5 × 1 = 0.5
  [11, 21, 31, 41, 1, 0.75, 0.125, 0], // class 0: 0.75
  [12, 22, 32, 42, 0.25, 1, 1, 1], // objectness under 0.3: skipped whatever the classes
  [13, 23, 33, 43, 0.75, 0.5, 0, 1], // class 2: 0.75, class 0: 0.375
  [14, 24, 34, 44, 0.5, 0.5, 0.5, 0.5], // 0.25 for every class: under 0.3
];
const V5_IMAGE1 = [
  [110, 120, 130, 140, 0, 1, 1, 1],
  [111, 121, 131, 141, 1, 0, 0, 0.625],
  [112, 122, 132, 142, 0, 0, 0, 0],
  [113, 123, 133, 143, 0, 0, 0, 0],
  [114, 124, 134, 144, 0, 0, 0, 0],
];
const V5 = rowMajor([V5_IMAGE0, V5_IMAGE1]);

void test('decodeYolov5: score is objectness × best class score; boxes copied', () => {
  assert.deepEqual(unpack(decodeYolov5(V5, 5, 8, 0, filter())), [
    { cx: 10, cy: 20, w: 30, h: 40, score: 0.5, classId: 1 },
    { cx: 11, cy: 21, w: 31, h: 41, score: 0.75, classId: 0 },
    { cx: 13, cy: 23, w: 33, h: 43, score: 0.75, classId: 2 },
  ]);
  assert.deepEqual(unpack(decodeYolov5(V5, 5, 8, 1, filter())), [
    { cx: 111, cy: 121, w: 131, h: 141, score: 0.625, classId: 2 },
  ]);
});

void test('decodeYolov5: threshold inclusive, class filter, out-of-range ids, maxCandidates', () => {
  const at = unpack(decodeYolov5(V5, 5, 8, 0, filter({ confidence: 0.25 })));
  assert.deepEqual(
    at.map((c) => [c.cx, c.score]),
    [
      [10, 0.5],
      [11, 0.75],
      [12, 0.25],
      [13, 0.75],
      [14, 0.25],
    ],
  );
  const above = unpack(decodeYolov5(V5, 5, 8, 0, filter({ confidence: 0.5000001 })));
  assert.deepEqual(
    above.map((c) => c.cx),
    [11, 13],
  );
  // Without class 2, anchor 3 falls back to class 0 (0.375).
  const no2 = unpack(decodeYolov5(V5, 5, 8, 0, filter({ allowedClassIds: [0, 1, 7, -1] })));
  assert.deepEqual(
    no2.map((c) => [c.cx, c.score, c.classId]),
    [
      [10, 0.5, 1],
      [11, 0.75, 0],
      [13, 0.375, 0],
    ],
  );
  assert.equal(decodeYolov5(V5, 5, 8, 0, filter({ allowedClassIds: [3, 9] })).length, 0);
  // Equal scores: the earlier anchor first.
  const two = unpack(decodeYolov5(V5, 5, 8, 0, filter({ maxCandidates: 2 })));
  assert.deepEqual(
    two.map((c) => c.cx),
    [11, 13],
  );
  // Confidence 0 keeps every anchor, even with objectness 0.
  assert.equal(decodeYolov5(V5, 5, 8, 1, filter({ confidence: 0 })).length / CANDIDATE_STRIDE, 5);
});

// ---- YOLOX: [batch, cells, 5 + classes] over the stride 8/16/32 grid ----

void test('yoloxGrid: cells row-major per stride, strides 8, 16, 32 in order', () => {
  // A 32 (high) × 64 (wide) input: 4×8 cells at stride 8, 2×4 at 16, 1×2 at 32.
  const g = yoloxGrid(32, 64);
  assert.equal(g.x.length, 32 + 8 + 2);
  assert.deepEqual([g.x[9], g.y[9], g.stride[9]], [1, 1, 8]);
  assert.deepEqual([g.x[31], g.y[31], g.stride[31]], [7, 3, 8]);
  assert.deepEqual([g.x[32], g.y[32], g.stride[32]], [0, 0, 16]);
  assert.deepEqual([g.x[39], g.y[39], g.stride[39]], [3, 1, 16]);
  assert.deepEqual([g.x[41], g.y[41], g.stride[41]], [1, 0, 32]);
  assert.equal(gridCells(32, 64), 42);
  assert.equal(gridCells(640, 640), 8400);
  assert.equal(gridCells(416, 416), 3549);
  // Sizes that are not multiples of 32 round each level up, as a stride-2 convolution does.
  assert.equal(gridCells(100, 100), 13 * 13 + 7 * 7 + 4 * 4);
});

void test('decodeYolox: boxes decoded from grid cell and stride; score = objectness × class', () => {
  const grid = yoloxGrid(32, 32); // 16 + 4 + 1 cells
  const cells = 21;
  const rows: number[][] = Array.from({ length: cells }, () => [0, 0, 0, 0, 0, 0, 0]);
  rows[5] = [0.5, 0.25, Math.log(2), 0, 0.5, 0.25, 1]; // stride 8, cell (1, 1): class 1 at 0.5
  rows[19] = [-0.5, 0.5, 0, Math.log(0.5), 1, 0.75, 0.5]; // stride 16, cell (1, 1): class 0
  rows[20] = [0.5, 0.5, Math.log(4), Math.log(2), 0.25, 1, 1]; // stride 32: objectness 0.25
  const out = rowMajor([rows, rows.map((r) => r.map(() => 0))]);
  const got = unpack(decodeYolox(out, cells, 7, 0, filter(), grid));
  assert.equal(got.length, 2);
  assert.deepEqual(
    got.map((c) => [c.cx, c.cy, c.score, c.classId]),
    [
      [12, 10, 0.5, 1],
      [8, 24, 0.75, 0],
    ],
  );
  assert.ok(Math.abs(got[0]!.w - 16) < 1e-4 && Math.abs(got[0]!.h - 8) < 1e-4);
  assert.ok(Math.abs(got[1]!.w - 16) < 1e-4 && Math.abs(got[1]!.h - 8) < 1e-4);
  const low = unpack(decodeYolox(out, cells, 7, 0, filter({ confidence: 0.25 }), grid));
  assert.deepEqual(low[2], { cx: 16, cy: 16, w: 128, h: 64, score: 0.25, classId: 0 });
  const onlyClass1 = unpack(decodeYolox(out, cells, 7, 0, filter({ allowedClassIds: [1] }), grid));
  assert.deepEqual(
    onlyClass1.map((c) => [c.cx, c.score]),
    [
      [12, 0.5],
      [8, 0.5],
    ],
  );
  assert.equal(decodeYolox(out, cells, 7, 0, filter({ maxCandidates: 1 }), grid).length, 6);
  assert.equal(decodeYolox(out, cells, 7, 1, filter(), grid).length, 0);
  // An output that does not match the input's grid is refused rather than misread.
  assert.throws(() => decodeYolox(out, 20, 7, 0, filter(), grid), /21/);
});

// ---- End-to-end: [batch, detections, 6] = x1, y1, x2, y2, score, class ----

const E2E = rowMajor([
  [
    [10, 20, 50, 100, 0.875, 2],
    [0, 0, 8, 6, 0.5, 0],
    [100, 100, 104, 110, 0.25, 1],
    [0, 0, 0, 0, 0, 0], // padding row
  ],
  [
    [1, 2, 3, 4, 0.75, 5],
    [0, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 0],
  ],
]);

void test('decodeEnd2end: corners become centre and size; threshold, classes, maxCandidates', () => {
  assert.deepEqual(unpack(decodeEnd2end(E2E, 4, 0, filter())), [
    { cx: 30, cy: 60, w: 40, h: 80, score: 0.875, classId: 2 },
    { cx: 4, cy: 3, w: 8, h: 6, score: 0.5, classId: 0 },
  ]);
  assert.deepEqual(
    unpack(decodeEnd2end(E2E, 4, 0, filter({ confidence: 0.25 }))).map((c) => c.cx),
    [30, 4, 102],
  );
  assert.deepEqual(
    unpack(decodeEnd2end(E2E, 4, 0, filter({ allowedClassIds: [0, 1], confidence: 0.25 }))).map(
      (c) => c.classId,
    ),
    [0, 1],
  );
  assert.deepEqual(
    unpack(decodeEnd2end(E2E, 4, 0, filter({ maxCandidates: 1, confidence: 0 }))).map(
      (c) => c.score,
    ),
    [0.875],
  );
  assert.deepEqual(unpack(decodeEnd2end(E2E, 4, 1, filter())), [
    { cx: 2, cy: 3, w: 2, h: 2, score: 0.75, classId: 5 },
  ]);
});

void test('decoderFor: each layout reads its own axes of the output dims', () => {
  const f = filter();
  assert.deepEqual(
    decoderFor('yolov8', 640, 640)(OUTPUT, [2, CHANNELS, ANCHORS], 1, f),
    decodeYolov8(OUTPUT, CHANNELS, ANCHORS, 1, f),
  );
  assert.deepEqual(
    decoderFor('yolov5', 640, 640)(V5, [2, 5, 8], 0, f),
    decodeYolov5(V5, 5, 8, 0, f),
  );
  assert.deepEqual(
    decoderFor('end2end', 640, 640)(E2E, [2, 4, 6], 0, f),
    decodeEnd2end(E2E, 4, 0, f),
  );
  const yx = new Float32Array(21 * 6);
  yx.set([0, 0, 0, 0, 1, 1], 6 * 20); // the stride-32 cell of a 32×32 input
  assert.deepEqual(unpack(decoderFor('yolox', 32, 32)(yx, [1, 21, 6], 0, f)), [
    { cx: 0, cy: 0, w: 32, h: 32, score: 1, classId: 0 },
  ]);
});

// ---- Layout detection ----

function query(outputShape: number[], over: Partial<LayoutQuery> = {}): LayoutQuery {
  return {
    outputShape,
    inputHeight: 640,
    inputWidth: 640,
    metadata: {},
    configured: undefined,
    ...over,
  };
}

void test('detectLayout: each family from its output shape', () => {
  assert.deepEqual(detectLayout(query([1, 84, 8400])), {
    layout: 'yolov8',
    source: 'shape',
    numClasses: 80,
  });
  assert.deepEqual(detectLayout(query([1, 25200, 85])), {
    layout: 'yolov5',
    source: 'shape',
    numClasses: 80,
  });
  assert.deepEqual(detectLayout(query([1, 3549, 85], { inputHeight: 416, inputWidth: 416 })), {
    layout: 'yolox',
    source: 'shape',
    numClasses: 80,
  });
  assert.deepEqual(detectLayout(query([4, 300, 6])), {
    layout: 'end2end',
    source: 'shape',
    numClasses: undefined,
  });
  // One class: six columns, but a grid's worth of rows is a head, not NMS output.
  assert.equal(detectLayout(query([1, 8400, 6])).layout, 'yolox');
  assert.equal(detectLayout(query([1, 25200, 6])).layout, 'yolov5');
  assert.equal(detectLayout(query([1, 5, 8400])).layout, 'yolov8');
  // Non-square input: 480 high × 640 wide has 60·80 + 30·40 + 15·20 = 6300 cells.
  assert.equal(
    detectLayout(query([1, 84, 6300], { inputHeight: 480, inputWidth: 640 })).layout,
    'yolov8',
  );
});

void test('detectLayout: metadata and configuration decide where the shape cannot', () => {
  // The tiny detector: YOLOv8 layout with 6 anchors, named in its metadata.
  assert.deepEqual(
    detectLayout(
      query([1, 7, 6], { inputHeight: 320, inputWidth: 320, metadata: { layout: 'yolov8' } }),
    ),
    { layout: 'yolov8', source: 'metadata', numClasses: 3 },
  );
  assert.equal(
    detectLayout(query([1, 300, 6], { metadata: { end2end: 'True', names: '{0: "a"}' } })).source,
    'metadata',
  );
  assert.deepEqual(detectLayout(query([1, 6, 8], { configured: 'yolov5' })), {
    layout: 'yolov5',
    source: 'configured',
    numClasses: 3,
  });
  // Configuration wins over metadata.
  assert.equal(
    detectLayout(query([1, 84, 8400], { metadata: { layout: 'end2end' }, configured: 'yolov8' }))
      .layout,
    'yolov8',
  );
});

void test('detectLayout: unknown, ambiguous and misfitting outputs are errors naming the shape', () => {
  assert.throws(
    () => detectLayout(query([1, 100, 85])),
    (e: Error) =>
      e instanceof LayoutError &&
      /model output \[1, 100, 85\] matches no known layout/.test(e.message) &&
      /yolov8 \[batch, 4 \+ classes, 8400\]/.test(e.message) &&
      /set MODEL_LAYOUT/.test(e.message),
  );
  assert.throws(() => detectLayout(query([1, 8400])), /\[1, 8400\] matches no known layout/);
  assert.throws(() => detectLayout(query([1, 1, 84, 8400])), /\[1, 1, 84, 8400\]/);
  // 32×32 has 21 cells: [1, 21, 21] is both a YOLOv8 and a YOLOX head.
  assert.throws(
    () => detectLayout(query([1, 21, 21], { inputHeight: 32, inputWidth: 32 })),
    /\[1, 21, 21\] is ambiguous \(it fits yolov8 and yolox\)/,
  );
  assert.throws(
    () => detectLayout(query([1, 84, 8400], { configured: 'end2end' })),
    /\[1, 84, 8400\] does not fit the end2end layout \(MODEL_LAYOUT\)/,
  );
  assert.throws(
    () => detectLayout(query([1, 3000, 85], { configured: 'yolox' })),
    /640×640 input has 8400 grid cells/,
  );
  assert.throws(
    () => detectLayout(query([1, 84, 8400], { metadata: { layout: 'yolov9000' } })),
    /metadata names layout 'yolov9000'/,
  );
  assert.throws(
    () => detectLayout(query([1, 4, 8400], { metadata: { layout: 'yolov8' } })),
    /\(model metadata\)/,
  );
});

void test('letterboxToNchwFloat: BGR order and a scale of 1 (YOLOX input)', () => {
  const src = new Uint8Array([10, 20, 30, 40, 50, 60]); // two pixels, RGB
  const dst = new Float32Array(6);
  const whole = { width: 2, height: 1, left: 0, top: 0 };
  letterboxToNchwFloat(src, [whole], 1, 2, dst, { channelOrder: 'bgr', scale: 1 });
  assert.deepEqual([...dst], [30, 60, 20, 50, 10, 40]);
});

void test('letterboxToNchwFloat: each image at its placement, grey 114 around it', () => {
  // A 4 × 3 frame. Image 0: 2 × 1 pixels at (1, 1); image 1: 3 × 3 at the top-left.
  const img0 = [1, 2, 3, 4, 5, 6];
  const img1 = Array.from({ length: 27 }, (_, i) => 100 + i);
  const src = new Uint8Array([...img0, ...img1]);
  const placements: Placement[] = [
    { width: 2, height: 1, left: 1, top: 1 },
    { width: 3, height: 3, left: 0, top: 0 },
  ];
  const dst = new Float32Array(2 * 3 * 12).fill(-1);
  letterboxToNchwFloat(src, placements, 3, 4, dst, { channelOrder: 'rgb', scale: 1 });
  const G = 114;
  // Image 0, planes R, G, B: grey except (1, 1) and (2, 1).
  assert.deepEqual(
    [...dst.subarray(0, 36)],
    [
      [G, G, G, G, G, 1, 4, G, G, G, G, G],
      [G, G, G, G, G, 2, 5, G, G, G, G, G],
      [G, G, G, G, G, 3, 6, G, G, G, G, G],
    ].flat(),
  );
  // Image 1: its 3 columns, then a grey column on the right.
  const plane = (c: number) =>
    [0, 1, 2].flatMap((y) => [0, 1, 2].map((x) => 100 + (y * 3 + x) * 3 + c).concat(G));
  assert.deepEqual([...dst.subarray(36)], [...plane(0), ...plane(1), ...plane(2)]);
  // Scaled as the model wants: the grey too.
  letterboxToNchwFloat(src, placements, 3, 4, dst);
  assert.equal(dst[0], Math.fround(114 / 255));
  assert.equal(dst[5], Math.fround(1 / 255));
});

void test('letterboxToNchwFloat: refuses placements outside the frame and short input', () => {
  const dst = new Float32Array(3 * 4);
  const src = new Uint8Array(12);
  assert.throws(
    () => letterboxToNchwFloat(src, [{ width: 2, height: 2, left: 1, top: 0 }], 2, 2, dst),
    RangeError,
  );
  assert.throws(
    () =>
      letterboxToNchwFloat(
        src.subarray(0, 6),
        [{ width: 2, height: 2, left: 0, top: 0 }],
        2,
        2,
        dst,
      ),
    /missing bytes/,
  );
});

void test('decodeYolov8 agrees with a plain per-anchor reference on random outputs', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 6 }),
      fc.integer({ min: 1, max: 23 }),
      // Few distinct values, so ties between classes and scores equal to the threshold occur.
      fc.array(fc.constantFrom(0, 0.125, 0.25, 0.5, 0.75, 1), { minLength: 6 * 27 * 23 }),
      fc.constantFrom(0, 0.125, 0.25, 0.6),
      fc.option(fc.uniqueArray(fc.integer({ min: 0, max: 5 }), { maxLength: 4 }), { nil: null }),
      (classes, anchors, values, confidence, allowed) => {
        const channels = 4 + classes;
        const output = Float32Array.from(values.slice(0, channels * anchors));
        const f = { confidence, allowedClassIds: allowed, maxCandidates: 1000 };
        const want: Candidate[] = [];
        for (let a = 0; a < anchors; a++) {
          let best = -1;
          let cls = -1;
          for (let c = 0; c < classes; c++) {
            if (allowed && !allowed.includes(c)) continue;
            const s = output[(4 + c) * anchors + a]!;
            if (s > best) [best, cls] = [s, c];
          }
          if (cls >= 0 && best >= confidence) {
            const at = (k: number) => output[k * anchors + a]!;
            want.push({ cx: at(0), cy: at(1), w: at(2), h: at(3), score: best, classId: cls });
          }
        }
        want.sort((x, y) => y.score - x.score);
        const got = unpack(decodeYolov8(output, channels, anchors, 0, f)).sort(
          (x, y) => y.score - x.score,
        );
        assert.deepEqual(
          got.map((c) => [c.score, c.classId, c.cx]).sort(),
          want.map((c) => [c.score, c.classId, c.cx]).sort(),
        );
      },
    ),
    { numRuns: 300 },
  );
});
