import { test } from 'node:test';
import assert from 'node:assert/strict';
import { iou, nonMaxSuppression } from '../../services/post/nms.js';
import type { NmsOptions } from '../../services/post/nms.js';
import type { Candidate } from '../../shared/candidates.js';

function cand(cx: number, cy: number, w: number, h: number, score: number, classId = 0): Candidate {
  return { cx, cy, w, h, score, classId };
}

function opts(over: Partial<NmsOptions> = {}): NmsOptions {
  return { iouThreshold: 0.5, classAgnostic: false, maxDetections: 100, ...over };
}

void test('iou: identical boxes give 1', () => {
  const a = cand(50, 50, 20, 10, 0.9);
  assert.equal(iou(a, a), 1);
  assert.equal(iou(a, cand(50, 50, 20, 10, 0.1, 3)), 1);
});

void test('iou: disjoint and edge-touching boxes give 0', () => {
  assert.equal(iou(cand(0, 0, 10, 10, 1), cand(100, 100, 10, 10, 1)), 0);
  // Touching edges: x in [0,10] and [10,20].
  assert.equal(iou(cand(5, 5, 10, 10, 1), cand(15, 5, 10, 10, 1)), 0);
  // Overlap in x only.
  assert.equal(iou(cand(5, 5, 10, 10, 1), cand(8, 50, 10, 10, 1)), 0);
});

void test('iou: half-overlapping boxes give 1/3', () => {
  // [0,10]x[0,10] and [5,15]x[0,10]: intersection 50, union 150.
  const v = iou(cand(5, 5, 10, 10, 1), cand(10, 5, 10, 10, 1));
  assert.ok(Math.abs(v - 1 / 3) < 1e-12, String(v));
  // A box containing another of half its area: 50 / 100.
  const c = iou(cand(10, 10, 20, 10, 1), cand(5, 10, 10, 10, 1));
  assert.ok(Math.abs(c - 0.5) < 1e-12, String(c));
  // Symmetric.
  assert.equal(
    iou(cand(3, 4, 7, 9, 1), cand(6, 2, 5, 8, 1)),
    iou(cand(6, 2, 5, 8, 1), cand(3, 4, 7, 9, 1)),
  );
});

void test('iou: zero-area boxes give 0', () => {
  assert.equal(iou(cand(5, 5, 0, 10, 1), cand(5, 5, 10, 10, 1)), 0);
  assert.equal(iou(cand(5, 5, 10, 0, 1), cand(5, 5, 10, 10, 1)), 0);
  assert.equal(iou(cand(5, 5, 0, 0, 1), cand(5, 5, 0, 0, 1)), 0);
});

void test('nonMaxSuppression: suppresses overlapping boxes of the same class', () => {
  const a = cand(50, 50, 20, 20, 0.9);
  const b = cand(51, 51, 20, 20, 0.8); // iou ~0.82 with a
  const c = cand(200, 200, 20, 20, 0.7);
  const kept = nonMaxSuppression([b, c, a], opts());
  assert.deepEqual(kept, [a, c]);
});

void test('nonMaxSuppression: per-class keeps overlapping boxes of different classes', () => {
  const a = cand(50, 50, 20, 20, 0.9, 0);
  const b = cand(51, 51, 20, 20, 0.8, 1);
  const c = cand(50, 52, 20, 20, 0.7, 0); // suppressed by a
  assert.deepEqual(nonMaxSuppression([a, b, c], opts()), [a, b]);
});

void test('nonMaxSuppression: class-agnostic suppresses across classes', () => {
  const a = cand(50, 50, 20, 20, 0.9, 0);
  const b = cand(51, 51, 20, 20, 0.8, 1);
  const c = cand(150, 150, 20, 20, 0.7, 2);
  assert.deepEqual(nonMaxSuppression([a, b, c], opts({ classAgnostic: true })), [a, c]);
});

void test('nonMaxSuppression: the IoU threshold is strict', () => {
  // IoU exactly 0.5: [0,20]x[0,10] vs [0,10]x[0,10].
  const a = cand(10, 5, 20, 10, 0.9);
  const b = cand(5, 5, 10, 10, 0.8);
  assert.equal(iou(a, b), 0.5);
  assert.deepEqual(nonMaxSuppression([a, b], opts({ iouThreshold: 0.5 })), [a, b]);
  assert.deepEqual(nonMaxSuppression([a, b], opts({ iouThreshold: 0.49 })), [a]);
  // Threshold 0 suppresses any overlap; threshold 1 suppresses nothing, even identical boxes.
  assert.deepEqual(nonMaxSuppression([a, cand(19, 5, 4, 4, 0.5)], opts({ iouThreshold: 0 })), [a]);
  const twin = cand(10, 5, 20, 10, 0.1);
  assert.deepEqual(nonMaxSuppression([a, twin], opts({ iouThreshold: 1 })), [a, twin]);
});

void test('nonMaxSuppression: equal scores keep the earlier candidate', () => {
  const first = cand(50, 50, 20, 20, 0.8, 0);
  const second = cand(50, 50, 20, 20, 0.8, 0);
  const kept = nonMaxSuppression([first, second], opts());
  assert.equal(kept.length, 1);
  assert.equal(kept[0], first);
  const keptReversed = nonMaxSuppression([second, first], opts());
  assert.equal(keptReversed[0], second);
});

void test('nonMaxSuppression: output is ordered by score, ties by input order', () => {
  const xs = [
    cand(0, 0, 5, 5, 0.3),
    cand(100, 0, 5, 5, 0.9),
    cand(200, 0, 5, 5, 0.3),
    cand(300, 0, 5, 5, 0.6),
  ];
  assert.deepEqual(
    nonMaxSuppression(xs, opts()).map((c) => c.cx),
    [100, 300, 0, 200],
  );
});

void test('nonMaxSuppression: a suppressed box does not suppress others', () => {
  // a suppresses b; b would suppress c, but c only slightly overlaps a.
  const a = cand(10, 10, 20, 20, 0.9);
  const b = cand(20, 10, 20, 20, 0.8); // iou(a,b) = 1/3
  const c = cand(30, 10, 20, 20, 0.7); // iou(b,c) = 1/3, iou(a,c) = 0
  assert.deepEqual(nonMaxSuppression([a, b, c], opts({ iouThreshold: 0.3 })), [a, c]);
});

void test('nonMaxSuppression: maxDetections caps the kept boxes, best first', () => {
  const xs = Array.from({ length: 10 }, (_, i) => cand(i * 100, 0, 10, 10, i / 10));
  const kept = nonMaxSuppression(xs, opts({ maxDetections: 3 }));
  assert.deepEqual(
    kept.map((c) => c.score),
    [0.9, 0.8, 0.7],
  );
  assert.equal(nonMaxSuppression(xs, opts({ maxDetections: 0 })).length, 0);
  assert.equal(nonMaxSuppression([], opts()).length, 0);
});

void test('nonMaxSuppression: does not modify its input', () => {
  const xs = [cand(0, 0, 10, 10, 0.1), cand(1, 1, 10, 10, 0.9)];
  const copy = xs.map((c) => ({ ...c }));
  nonMaxSuppression(xs, opts());
  assert.deepEqual(xs, copy);
});
