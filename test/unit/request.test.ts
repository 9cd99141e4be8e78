import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  DEFAULT_CONFIDENCE,
  parseJsonRequest,
  parseQueryRequest,
  resolveConfidence,
  resolveParams,
} from '../../services/gateway/request.js';
import type { ImageInput, ParsedRequest } from '../../services/gateway/request.js';
import { ErrorCode, PipelineError } from '../../shared/errors.js';

const MAX = 4;
const BYTES = Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46]);
const B64 = BYTES.toString('base64');

function img(value: unknown = B64, type = 'base64'): { type: string; value: unknown } {
  return { type, value };
}

function assertInvalid(fn: () => unknown, messagePattern?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof PipelineError, `expected a PipelineError, got ${String(err)}`);
    assert.equal(err.code, ErrorCode.INVALID_REQUEST);
    if (messagePattern) assert.match(err.message, messagePattern);
    return true;
  });
}

function bytesOf(input: ImageInput | undefined): Buffer {
  assert.ok(input);
  assert.equal(input.kind, 'bytes');
  if (input.kind !== 'bytes') throw new Error('unreachable');
  return input.bytes;
}

function urlOf(input: ImageInput | undefined): string {
  assert.ok(input);
  assert.equal(input.kind, 'url');
  if (input.kind !== 'url') throw new Error('unreachable');
  return input.url;
}

void test('parseJsonRequest: defaults', () => {
  const r: ParsedRequest = parseJsonRequest({ image: img() }, MAX);
  assert.deepEqual(r.params, {
    confidence: 0.4,
    iouThreshold: 0.3,
    classAgnosticNms: false,
    classFilter: null,
    maxDetections: 300,
    maxCandidates: 3000,
  });
  assert.equal(r.autoOrient, true);
  assert.equal(r.modelId, undefined);
  assert.equal(r.isList, false);
  assert.equal(r.images.length, 1);
  assert.deepEqual(bytesOf(r.images[0]), BYTES);
});

void test('parseJsonRequest: explicit options are passed through', () => {
  const r = parseJsonRequest(
    {
      image: img(),
      model_id: 'coco/3',
      confidence: 0.55,
      iou_threshold: 0.7,
      class_agnostic_nms: true,
      class_filter: ['person', 'car'],
      max_detections: 10,
      max_candidates: 50,
      disable_preproc_auto_orient: true,
    },
    MAX,
  );
  assert.equal(r.modelId, 'coco/3');
  assert.equal(r.autoOrient, false);
  assert.deepEqual(r.params, {
    confidence: 0.55,
    iouThreshold: 0.7,
    classAgnosticNms: true,
    classFilter: ['person', 'car'],
    maxDetections: 10,
    maxCandidates: 50,
  });
});

void test('parseJsonRequest: an empty or null class_filter means all classes', () => {
  assert.equal(parseJsonRequest({ image: img(), class_filter: [] }, MAX).params.classFilter, null);
  assert.equal(
    parseJsonRequest({ image: img(), class_filter: null }, MAX).params.classFilter,
    null,
  );
});

void test('parseJsonRequest: a list of images sets isList, even with one image', () => {
  const other = Buffer.from('hello world');
  const r = parseJsonRequest(
    { image: [img(), img(other.toString('base64')), img('https://example.com/a.jpg', 'url')] },
    MAX,
  );
  assert.equal(r.isList, true);
  assert.equal(r.images.length, 3);
  assert.deepEqual(bytesOf(r.images[0]), BYTES);
  assert.deepEqual(bytesOf(r.images[1]), other);
  assert.equal(urlOf(r.images[2]), 'https://example.com/a.jpg');

  const one = parseJsonRequest({ image: [img()] }, MAX);
  assert.equal(one.isList, true);
  assert.equal(one.images.length, 1);
});

void test('parseJsonRequest: data-URL prefix is stripped', () => {
  const r = parseJsonRequest({ image: img(`data:image/jpeg;base64,${B64}`) }, MAX);
  assert.deepEqual(bytesOf(r.images[0]), BYTES);
});

void test('parseJsonRequest: url-safe base64 and surrounding whitespace are accepted', () => {
  const bytes = Buffer.from([0xfb, 0xff, 0xbf, 0x01, 0x02]);
  const urlSafe = bytes.toString('base64url');
  assert.match(urlSafe, /[-_]/);
  assert.deepEqual(bytesOf(parseJsonRequest({ image: img(urlSafe) }, MAX).images[0]), bytes);
  const wrapped = `${B64.slice(0, 8)}\n${B64.slice(8)}\n`;
  assert.deepEqual(bytesOf(parseJsonRequest({ image: img(wrapped) }, MAX).images[0]), BYTES);
});

void test('parseJsonRequest: http and https URLs are accepted', () => {
  assert.equal(
    urlOf(parseJsonRequest({ image: img('http://example.com/x.png', 'url') }, MAX).images[0]),
    'http://example.com/x.png',
  );
  assert.equal(
    urlOf(parseJsonRequest({ image: img('https://example.com/a b.png', 'url') }, MAX).images[0]),
    'https://example.com/a%20b.png',
  );
});

void test('parseJsonRequest: other URL schemes and garbage URLs are rejected', () => {
  assertInvalid(
    () => parseJsonRequest({ image: img('ftp://example.com/x.png', 'url') }, MAX),
    /http or https/,
  );
  assertInvalid(
    () => parseJsonRequest({ image: img('file:///etc/passwd', 'url') }, MAX),
    /http or https/,
  );
  assertInvalid(() => parseJsonRequest({ image: img('not a url', 'url') }, MAX), /not a valid URL/);
  assertInvalid(() => parseJsonRequest({ image: img('/relative/path.png', 'url') }, MAX));
});

void test('parseJsonRequest: non-object bodies are rejected', () => {
  for (const body of [null, undefined, 'text', 42, true, [], [{ image: img() }]]) {
    assertInvalid(() => parseJsonRequest(body, MAX), /JSON object/);
  }
});

void test('parseJsonRequest: missing or malformed image is rejected', () => {
  assertInvalid(() => parseJsonRequest({}, MAX));
  assertInvalid(() => parseJsonRequest({ confidence: 0.5 }, MAX));
  assertInvalid(() => parseJsonRequest({ image: 'abc' }, MAX));
  assertInvalid(() => parseJsonRequest({ image: { value: B64 } }, MAX));
  assertInvalid(() => parseJsonRequest({ image: [img(), 'x'] }, MAX));
});

void test('parseJsonRequest: unsupported image.type is rejected', () => {
  assertInvalid(() => parseJsonRequest({ image: img(B64, 'numpy') }, MAX), /numpy/);
  assertInvalid(() => parseJsonRequest({ image: img(B64, 'pil') }, MAX));
  assertInvalid(() => parseJsonRequest({ image: [img(), img(B64, 'numpy')] }, MAX), /image\[1\]/);
});

void test('parseJsonRequest: non-string or empty image.value is rejected', () => {
  assertInvalid(() => parseJsonRequest({ image: img(123) }, MAX), /non-empty string/);
  assertInvalid(() => parseJsonRequest({ image: img(null) }, MAX));
  assertInvalid(() => parseJsonRequest({ image: img(['abc']) }, MAX));
  assertInvalid(() => parseJsonRequest({ image: img('') }, MAX));
  assertInvalid(() => parseJsonRequest({ image: { type: 'base64' } }, MAX));
  assertInvalid(() => parseJsonRequest({ image: img(42, 'url') }, MAX));
});

void test('parseJsonRequest: empty list and too many images are rejected', () => {
  assertInvalid(() => parseJsonRequest({ image: [] }, MAX), /empty/);
  const many = Array.from({ length: MAX + 1 }, () => img());
  assertInvalid(() => parseJsonRequest({ image: many }, MAX), /at most 4/);
  // Exactly maxImages is fine.
  assert.equal(parseJsonRequest({ image: many.slice(0, MAX) }, MAX).images.length, MAX);
});

void test('parseJsonRequest: bad numeric options are rejected', () => {
  for (const confidence of [1.5, -0.1, '1.5', '', 'high', 'Best', null, Number.NaN]) {
    assertInvalid(() => parseJsonRequest({ image: img(), confidence }, MAX), /confidence/);
  }
  assertInvalid(() => parseJsonRequest({ image: img(), iou_threshold: 2 }, MAX), /iou_threshold/);
  assertInvalid(() => parseJsonRequest({ image: img(), max_detections: 0 }, MAX));
  assertInvalid(() => parseJsonRequest({ image: img(), max_detections: 2.5 }, MAX));
  assertInvalid(() => parseJsonRequest({ image: img(), max_candidates: '10.5' }, MAX));
  // The bounds themselves are valid.
  assert.equal(parseJsonRequest({ image: img(), confidence: 0 }, MAX).params.confidence, 0);
  assert.equal(parseJsonRequest({ image: img(), confidence: 1 }, MAX).params.confidence, 1);
});

void test('parseJsonRequest: wrong types for booleans and class_filter are rejected', () => {
  assertInvalid(
    () => parseJsonRequest({ image: img(), class_agnostic_nms: 'maybe' }, MAX),
    /class_agnostic_nms: expected a boolean/,
  );
  assertInvalid(() => parseJsonRequest({ image: img(), class_agnostic_nms: 2 }, MAX));
  assertInvalid(() => parseJsonRequest({ image: img(), class_agnostic_nms: '' }, MAX));
  assertInvalid(() => parseJsonRequest({ image: img(), disable_preproc_auto_orient: [] }, MAX));
  assertInvalid(() => parseJsonRequest({ image: img(), class_filter: 'person' }, MAX));
  assertInvalid(() => parseJsonRequest({ image: img(), class_filter: [1, 2] }, MAX));
  assertInvalid(() => parseJsonRequest({ image: img(), model_id: '' }, MAX));
  assertInvalid(() => parseJsonRequest({ image: img(), model_id: 7 }, MAX));
});

void test('parseJsonRequest: invalid base64 is rejected', () => {
  for (const value of ['abc$def', 'ab!c', 'äöü', 'abc=def', 'abcd===', 'data:image/png;base64']) {
    assertInvalid(() => parseJsonRequest({ image: img(value) }, MAX), /base64/);
  }
  // Valid syntax but no bytes.
  assertInvalid(() => parseJsonRequest({ image: img('data:image/png;base64,') }, MAX), /empty/);
  assertInvalid(() => parseJsonRequest({ image: img('   ') }, MAX), /empty/);
});

void test('parseJsonRequest: the error names every bad field', () => {
  try {
    parseJsonRequest({ image: img(), confidence: 5, max_detections: -1 }, MAX);
    assert.fail('expected an error');
  } catch (err) {
    assert.ok(err instanceof PipelineError);
    assert.match(err.message, /confidence/);
    assert.match(err.message, /max_detections/);
    assert.ok(Array.isArray(err.details?.issues));
    assert.equal((err.details.issues as unknown[]).length, 2);
  }
});

void test('parseJsonRequest: unknown fields are accepted', () => {
  const r = parseJsonRequest(
    { image: { ...img(), extra: 1 }, api_key: 'secret', visualize_predictions: true },
    MAX,
  );
  assert.deepEqual(bytesOf(r.images[0]), BYTES);
  assert.equal(r.params.confidence, 0.4);
});

void test('parseQueryRequest: defaults with an empty query', () => {
  const r = parseQueryRequest({}, BYTES);
  assert.equal(r.isList, false);
  assert.equal(r.autoOrient, true);
  assert.equal(r.modelId, undefined);
  assert.deepEqual(r.params, {
    confidence: 0.4,
    iouThreshold: 0.3,
    classAgnosticNms: false,
    classFilter: null,
    maxDetections: 300,
    maxCandidates: 3000,
  });
  assert.equal(r.images.length, 1);
  assert.equal(bytesOf(r.images[0]), BYTES);
});

void test('parseQueryRequest: converts numbers and booleans from strings', () => {
  const r = parseQueryRequest(
    {
      confidence: '0.5',
      iou_threshold: '0.45',
      class_agnostic_nms: 'true',
      disable_preproc_auto_orient: 'true',
      max_detections: '12',
      max_candidates: '99',
      model_id: 'coco/3',
      api_key: 'whatever',
    },
    BYTES,
  );
  assert.equal(r.modelId, 'coco/3');
  assert.equal(r.autoOrient, false);
  assert.deepEqual(r.params, {
    confidence: 0.5,
    iouThreshold: 0.45,
    classAgnosticNms: true,
    classFilter: null,
    maxDetections: 12,
    maxCandidates: 99,
  });
  const f = parseQueryRequest({ class_agnostic_nms: 'false' }, BYTES);
  assert.equal(f.params.classAgnosticNms, false);
});

void test('parseQueryRequest: a repeated scalar takes its last value', () => {
  const r = parseQueryRequest({ confidence: ['0.2', '0.6'] }, BYTES);
  assert.equal(r.params.confidence, 0.6);
});

void test('parseQueryRequest: class_filter may be repeated and comma-separated', () => {
  assert.deepEqual(parseQueryRequest({ class_filter: 'person' }, BYTES).params.classFilter, [
    'person',
  ]);
  assert.deepEqual(parseQueryRequest({ class_filter: 'person, car' }, BYTES).params.classFilter, [
    'person',
    'car',
  ]);
  assert.deepEqual(
    parseQueryRequest({ class_filter: ['person', 'car,dog', ''] }, BYTES).params.classFilter,
    ['person', 'car', 'dog'],
  );
  // Names that look like numbers or booleans stay strings.
  assert.deepEqual(parseQueryRequest({ class_filter: ['1', 'true'] }, BYTES).params.classFilter, [
    '1',
    'true',
  ]);
  assert.equal(parseQueryRequest({ class_filter: '' }, BYTES).params.classFilter, null);
  assert.equal(parseQueryRequest({ class_filter: ' , ' }, BYTES).params.classFilter, null);
});

void test('parseQueryRequest: bad numbers and booleans are rejected', () => {
  assertInvalid(() => parseQueryRequest({ confidence: 'abc' }, BYTES), /confidence/);
  assertInvalid(() => parseQueryRequest({ confidence: '' }, BYTES), /confidence/);
  assertInvalid(() => parseQueryRequest({ confidence: '1.5' }, BYTES), /confidence/);
  assertInvalid(() => parseQueryRequest({ confidence: '-0.1' }, BYTES), /confidence/);
  assertInvalid(() => parseQueryRequest({ max_detections: '2.5' }, BYTES), /max_detections/);
  assertInvalid(() => parseQueryRequest({ max_detections: 'Infinity' }, BYTES));
  assertInvalid(() => parseQueryRequest({ class_agnostic_nms: 'maybe' }, BYTES));
  assertInvalid(() => parseQueryRequest({ class_agnostic_nms: '2' }, BYTES));
  assertInvalid(() => parseQueryRequest({ confidence: 'BEST' }, BYTES), /'default' or 'best'/);
});

void test("booleans in Roboflow's spellings, in the query and in JSON, any case", () => {
  const truths = ['true', 'True', 'TRUE', '1', 'yes', 'Yes', 'on', 'ON', 't', 'y', ' true '];
  const lies = ['false', 'False', 'FALSE', '0', 'no', 'NO', 'off', 'Off', 'f', 'n'];
  for (const [spellings, want] of [
    [truths, true],
    [lies, false],
  ] as const) {
    for (const v of spellings) {
      const q = parseQueryRequest({ class_agnostic_nms: v, disable_preproc_auto_orient: v }, BYTES);
      assert.equal(q.params.classAgnosticNms, want, v);
      assert.equal(q.autoOrient, !want, v);
      const j = parseJsonRequest(
        { image: img(), class_agnostic_nms: v, visualize_predictions: v },
        MAX,
      );
      assert.equal(j.params.classAgnosticNms, want, v);
      assert.equal(j.params.visualize !== undefined, want, v);
    }
  }
  // JSON's own booleans and the numbers 1 and 0.
  assert.equal(
    parseJsonRequest({ image: img(), class_agnostic_nms: 1 }, MAX).params.classAgnosticNms,
    true,
  );
  assert.equal(
    parseJsonRequest({ image: img(), class_agnostic_nms: 0 }, MAX).params.classAgnosticNms,
    false,
  );
});

void test('numbers as strings, as pydantic reads them', () => {
  const p = parseJsonRequest(
    {
      image: img(),
      confidence: '0.5',
      iou_threshold: ' 0.25 ',
      max_detections: '7',
      max_candidates: '100',
      visualization_stroke_width: '3',
      visualize_predictions: true,
      timeout_ms: '2000',
    },
    MAX,
  );
  assert.equal(p.params.confidence, 0.5);
  assert.equal(p.params.iouThreshold, 0.25);
  assert.equal(p.params.maxDetections, 7);
  assert.equal(p.params.maxCandidates, 100);
  assert.equal(p.params.visualize?.strokeWidth, 3);
  assert.equal(p.timeoutMs, 2000);
});

void test("confidence 'default' and 'best' resolve against the model", () => {
  for (const confidence of ['default', 'best'] as const) {
    assert.equal(parseJsonRequest({ image: img(), confidence }, MAX).params.confidence, confidence);
    assert.equal(parseQueryRequest({ confidence }, BYTES).params.confidence, confidence);
  }
  const withBest = { recommended_confidence: 0.62 };
  const without = { recommended_confidence: null };
  assert.equal(resolveConfidence('default', withBest), DEFAULT_CONFIDENCE);
  assert.equal(resolveConfidence('best', withBest), 0.62);
  assert.equal(resolveConfidence('best', without), DEFAULT_CONFIDENCE);
  assert.equal(resolveConfidence('best', {}), DEFAULT_CONFIDENCE);
  assert.equal(resolveConfidence('best', undefined), DEFAULT_CONFIDENCE);
  assert.equal(resolveConfidence(0.3, withBest), 0.3);
  const parsed = parseJsonRequest({ image: img(), confidence: 'best' }, MAX);
  assert.equal(resolveParams(parsed.params, withBest).confidence, 0.62);
  assert.equal(DEFAULT_CONFIDENCE, parseJsonRequest({ image: img() }, MAX).params.confidence);
});

void test('parseQueryRequest: an empty image buffer is rejected', () => {
  assertInvalid(() => parseQueryRequest({}, Buffer.alloc(0)), /empty/);
});

void test('parseQueryRequest keeps model_id a string even when it looks like a number', () => {
  const parsed = parseQueryRequest({ model_id: '123', confidence: '0.5' }, Buffer.from([1, 2, 3]));
  assert.equal(parsed.modelId, '123');
  assert.equal(parsed.params.confidence, 0.5);
});
