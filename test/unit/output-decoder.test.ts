import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeYolov8, hwcToNchwFloat } from '../../services/infer/output-decoder.js';
import type { CandidateFilter } from '../../services/infer/output-decoder.js';
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

void test('hwcToNchwFloat: converts HWC uint8 to NCHW floats in 0..1', () => {
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
  hwcToNchwFloat(src, 2, h, w, dst);
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

void test('hwcToNchwFloat: padded batch entries are left untouched', () => {
  const h = 2;
  const w = 2;
  const plane = h * w;
  // Only one real image, in a tensor sized for a batch of 2.
  const src = new Uint8Array([255, 0, 51, 0, 255, 102, 51, 102, 0, 204, 153, 255]);
  const dst = new Float32Array(2 * 3 * plane).fill(7);
  hwcToNchwFloat(src, 1, h, w, dst);
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
