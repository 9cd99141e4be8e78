import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  computeAp,
  meanAveragePrecision,
  parseYoloLabels,
  type GroundTruth,
  type Prediction,
} from '../../bench/map-metric.js';

const truth = (x1: number, y1: number, x2: number, y2: number, classId = 0): GroundTruth => ({
  x1,
  y1,
  x2,
  y2,
  classId,
});
const pred = (box: GroundTruth, confidence = 0.9, classId = box.classId): Prediction => ({
  ...box,
  classId,
  confidence,
});
const close = (actual: number, expected: number) =>
  assert.ok(Math.abs(actual - expected) < 1e-9, `${actual} is not ${expected}`);

void test('mAP: perfect predictions reach Ultralytics ceiling of 0.995', () => {
  const a = truth(10, 10, 50, 60);
  const b = truth(100, 20, 140, 90, 3);
  const r = meanAveragePrecision([
    { groundTruth: [a, b], predictions: [pred(a), pred(b, 0.8)] },
    { groundTruth: [], predictions: [] },
  ]);
  close(r.map50, 0.995);
  close(r.map50to95, 0.995);
  assert.equal(r.classes, 2);
});

void test('mAP: no predictions score 0', () => {
  const r = meanAveragePrecision([{ groundTruth: [truth(0, 0, 10, 10)], predictions: [] }]);
  assert.equal(r.map50, 0);
  assert.equal(r.map50to95, 0);
});

void test('mAP: a box overlapping half of the truth (IoU 1/3) is a false positive', () => {
  const g = truth(0, 0, 10, 10);
  const r = meanAveragePrecision([{ groundTruth: [g], predictions: [pred(truth(5, 0, 15, 10))] }]);
  assert.equal(r.map50, 0);
});

void test('mAP: IoU 0.77 counts at thresholds 0.50 to 0.75 only', () => {
  const g = truth(0, 0, 10, 10);
  // IoU 100 / 130 = 0.769: a hit at 0.50, 0.55, …, 0.75 (6 of the 10 thresholds).
  const r = meanAveragePrecision([{ groundTruth: [g], predictions: [pred(truth(0, 0, 10, 13))] }]);
  close(r.map50, 0.995);
  close(r.map50to95, (0.995 * 6) / 10);
});

void test('mAP: a prediction of the wrong class does not match, and only classes in the truth count', () => {
  const g = truth(0, 0, 10, 10, 1);
  const r = meanAveragePrecision([{ groundTruth: [g], predictions: [pred(g, 0.9, 2)] }]);
  assert.equal(r.map50, 0);
  assert.equal(r.classes, 1);
});

void test('AP: half the truth found at full precision integrates to 0.75', () => {
  // Envelope 1 up to recall 0.5, then falling linearly to 0 at recall 1.
  close(computeAp([0.5], [1]), 0.75);
  const g1 = truth(0, 0, 10, 10);
  const g2 = truth(50, 50, 60, 60);
  const r = meanAveragePrecision([{ groundTruth: [g1, g2], predictions: [pred(g1)] }]);
  close(r.map50, 0.75);
});

void test('mAP: one truth box matches one prediction; a duplicate is a false positive', () => {
  const g = truth(0, 0, 10, 10);
  // Recall 1 at precision 1 after the first prediction: the later duplicate cannot lower AP.
  const r = meanAveragePrecision([
    { groundTruth: [g], predictions: [pred(g, 0.9), pred(truth(0, 0, 10, 11), 0.5)] },
  ]);
  close(r.map50, 0.995);
  // Ultralytics keeps, per truth box, the pair of the lowest prediction index among those
  // above the threshold (its second np.unique), not the highest IoU: the first-ranked box
  // (IoU 0.91) is the match and the exact one a false positive, so AP is unchanged.
  const r2 = meanAveragePrecision([
    { groundTruth: [g], predictions: [pred(truth(0, 0, 10, 11), 0.9), pred(g, 0.5)] },
  ]);
  close(r2.map50, 0.995);
});

void test('YOLO labels become pixel boxes of the original image', () => {
  const [b] = parseYoloLabels('17 0.5 0.25 0.2 0.1\n', 200, 100);
  assert.deepEqual(b, { classId: 17, x1: 80, y1: 20, x2: 120, y2: 30 });
});
