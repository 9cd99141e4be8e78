import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildResponse } from '../../services/post/postprocess.js';
import type { PostprocessInput } from '../../services/post/postprocess.js';
import { computeLetterbox } from '../../shared/letterbox.js';
import type { Candidate } from '../../shared/candidates.js';
import type { DetectionParams } from '../../shared/contracts.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const NAMES = ['person', 'car', 'dog'];
// 1280x720 into 640x640: scale 0.5, padTop 140, padLeft 0.
const LB = computeLetterbox(1280, 720, 640, 640);

function cand(cx: number, cy: number, w: number, h: number, score: number, classId = 0): Candidate {
  return { cx, cy, w, h, score, classId };
}

function params(over: Partial<DetectionParams> = {}): DetectionParams {
  return {
    confidence: 0.4,
    iouThreshold: 0.5,
    classAgnosticNms: false,
    classFilter: null,
    maxDetections: 300,
    maxCandidates: 3000,
    ...over,
  };
}

function input(candidates: Candidate[], over: Partial<PostprocessInput> = {}): PostprocessInput {
  return {
    inferenceId: 'inf-123',
    candidates,
    params: params(),
    letterbox: LB,
    classNames: NAMES,
    elapsedSeconds: 0.25,
    ...over,
  };
}

/** Candidates spaced far apart so NMS never interferes. */
function spread(scores: number[], classId = 0): Candidate[] {
  return scores.map((s, i) => cand(40 + i * 60, 320, 20, 20, s, classId));
}

void test('buildResponse: response shape', () => {
  const res = buildResponse(input([cand(320, 320, 100, 50, 0.875, 1)]));
  assert.deepEqual(Object.keys(res).sort(), ['image', 'inference_id', 'predictions', 'time']);
  assert.equal(res.inference_id, 'inf-123');
  assert.equal(res.time, 0.25);
  assert.deepEqual(res.image, { width: 1280, height: 720 });
  assert.equal(res.predictions.length, 1);
  const p = res.predictions[0]!;
  assert.deepEqual(Object.keys(p).sort(), [
    'class',
    'class_id',
    'confidence',
    'detection_id',
    'height',
    'width',
    'x',
    'y',
  ]);
  assert.match(p.detection_id, UUID);
});

void test('buildResponse: boxes are un-letterboxed to original pixels, x/y are centres', () => {
  // Input box [270,295]-[370,345] -> original [540,310]-[740,410].
  const res = buildResponse(input([cand(320, 320, 100, 50, 0.875, 1)]));
  const p = res.predictions[0]!;
  assert.equal(p.x, 640);
  assert.equal(p.y, 360);
  assert.equal(p.width, 200);
  assert.equal(p.height, 100);
  assert.equal(p.confidence, 0.875);
  assert.equal(p.class, 'car');
  assert.equal(p.class_id, 1);
});

void test('buildResponse: portrait letterbox maps x through the left padding', () => {
  // 810x1080 into 640: scale 480/810, padLeft 80. Input box [88,64]-[168,192]
  // -> original x [13.5, 148.5], y [108, 324].
  const lb = computeLetterbox(810, 1080, 640, 640);
  const res = buildResponse(input([cand(128, 128, 80, 128, 0.5, 2)], { letterbox: lb }));
  const p = res.predictions[0]!;
  assert.deepEqual(res.image, { width: 810, height: 1080 });
  assert.equal(p.x, 81);
  assert.equal(p.y, 216);
  assert.equal(p.width, 135);
  assert.equal(p.height, 216);
  assert.equal(p.class, 'dog');
});

void test('buildResponse: boxes are clipped to the image and empty ones dropped', () => {
  const res = buildResponse(
    input([
      // Input x [-10,50], y [130,170] -> original x [0,100], y [0,60].
      cand(20, 150, 60, 40, 0.9),
      // Entirely in the top padding: y [40,60] -> [0,0], no height.
      cand(300, 50, 40, 20, 0.8),
      // Entirely in the bottom padding.
      cand(500, 600, 40, 20, 0.7),
      // Bottom-right corner spilling past the image.
      cand(630, 495, 40, 30, 0.6),
    ]),
  );
  assert.equal(res.predictions.length, 2);
  const [a, b] = res.predictions;
  assert.deepEqual([a!.x, a!.y, a!.width, a!.height], [50, 30, 100, 60]);
  // Input x [610,650], y [480,510] -> original x [1220,1280], y [680,720].
  assert.deepEqual([b!.x, b!.y, b!.width, b!.height], [1250, 700, 60, 40]);
  for (const p of res.predictions) {
    assert.ok(p.width > 0 && p.height > 0);
    assert.ok(p.x - p.width / 2 >= 0 && p.x + p.width / 2 <= 1280);
    assert.ok(p.y - p.height / 2 >= 0 && p.y + p.height / 2 <= 720);
  }
});

void test('buildResponse: NMS is applied per class, or across classes when agnostic', () => {
  const cands = [
    cand(100, 320, 40, 40, 0.9, 0),
    cand(102, 320, 40, 40, 0.8, 0),
    cand(101, 321, 40, 40, 0.7, 1),
  ];
  const perClass = buildResponse(input(cands));
  assert.deepEqual(
    perClass.predictions.map((p) => [p.confidence, p.class]),
    [
      [0.9, 'person'],
      [0.7, 'car'],
    ],
  );
  const agnostic = buildResponse(input(cands, { params: params({ classAgnosticNms: true }) }));
  assert.deepEqual(
    agnostic.predictions.map((p) => p.confidence),
    [0.9],
  );
});

void test('buildResponse: maxDetections caps the predictions', () => {
  const res = buildResponse(
    input(spread([0.5, 0.9, 0.6, 0.8, 0.7]), { params: params({ maxDetections: 3 }) }),
  );
  assert.deepEqual(
    res.predictions.map((p) => p.confidence),
    [0.9, 0.8, 0.7],
  );
});

void test('buildResponse: unknown class ids get the class_<i> name', () => {
  const res = buildResponse(input([cand(320, 320, 20, 20, 0.9, 42)]));
  assert.equal(res.predictions[0]!.class, 'class_42');
  assert.equal(res.predictions[0]!.class_id, 42);
  const noNames = buildResponse(input([cand(320, 320, 20, 20, 0.9, 0)], { classNames: [] }));
  assert.equal(noNames.predictions[0]!.class, 'class_0');
});

void test('buildResponse: every prediction has its own detection_id', () => {
  const res = buildResponse(input(spread([0.9, 0.8, 0.7, 0.6, 0.5, 0.45])));
  assert.equal(res.predictions.length, 6);
  const ids = res.predictions.map((p) => p.detection_id);
  for (const id of ids) assert.match(id, UUID);
  assert.equal(new Set(ids).size, ids.length);
  const again = buildResponse(input(spread([0.9])));
  assert.ok(!ids.includes(again.predictions[0]!.detection_id));
});

void test('buildResponse: values are rounded (2 digits for boxes, 4 for confidence)', () => {
  // Input x [100.1234, 110.12350] -> original [200.2468, 220.2470]: centre 210.2469, width 20.0002.
  // Input y [200.5678, 210.5678] -> original [121.1356, 141.1356]: centre 131.1356.
  const res = buildResponse(
    input([cand(105.12345, 205.5678, 10.0001, 10, 0.123456789)], {
      params: params({ confidence: 0.1 }),
    }),
  );
  const p = res.predictions[0]!;
  assert.equal(p.confidence, 0.1235);
  assert.equal(p.width, 20);
  assert.equal(p.x, 210.25);
  assert.equal(p.y, 131.14);
  assert.equal(p.height, 20);
});

void test('buildResponse: no candidates gives an empty prediction list', () => {
  const res = buildResponse(input([]));
  assert.deepEqual(res.predictions, []);
  assert.deepEqual(res.image, { width: 1280, height: 720 });
});
