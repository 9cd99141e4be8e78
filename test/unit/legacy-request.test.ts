import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PipelineError } from '../../shared/errors.js';
import { parseLegacyRequest, type LegacyBody } from '../../services/gateway/legacy-request.js';

/** Roboflow's legacy query string mapped to detection options (pure, no server). */
const PNG = Buffer.from('89504e47', 'hex');
const body: LegacyBody = { kind: 'bytes', bytes: PNG };

test('defaults: Roboflow hosted API defaults (40 % confidence, 30 % overlap), JSON, no drawing', () => {
  const { parsed, format } = parseLegacyRequest('coco/3', {}, body);
  assert.equal(format, 'json');
  assert.equal(parsed.modelId, 'coco/3');
  assert.equal(parsed.isList, false);
  assert.equal(parsed.params.confidence, 0.4);
  assert.equal(parsed.params.iouThreshold, 0.3);
  assert.equal(parsed.params.maxDetections, 300);
  assert.equal(parsed.params.classFilter, null);
  assert.equal(parsed.params.visualize, undefined);
  assert.deepEqual(parsed.images, [{ kind: 'bytes', bytes: PNG }]);
});

test('confidence and overlap: 1 or more is a percentage, below 1 a fraction', () => {
  const percent = parseLegacyRequest('m/1', { confidence: '55', overlap: '70' }, body).parsed;
  const fraction = parseLegacyRequest('m/1', { confidence: '0.55', overlap: '0.7' }, body).parsed;
  assert.equal(percent.params.confidence, 0.55);
  assert.equal(fraction.params.confidence, 0.55);
  assert.equal(percent.params.iouThreshold, 0.7);
  assert.equal(fraction.params.iouThreshold, 0.7);
  // As Roboflow's server reads them: 1 is 1 %.
  assert.equal(parseLegacyRequest('m/1', { confidence: '1' }, body).parsed.params.confidence, 0.01);
});

test('format image and image_and_json draw, with labels off and stroke 1 unless asked', () => {
  const image = parseLegacyRequest('m/1', { format: 'image' }, body);
  assert.equal(image.format, 'image');
  assert.deepEqual(image.parsed.params.visualize, {
    labels: false,
    strokeWidth: 1,
    autoOrient: true,
  });
  const both = parseLegacyRequest(
    'm/1',
    { format: 'image_and_json', labels: 'true', stroke: '3', disable_preproc_auto_orient: 'true' },
    body,
  );
  assert.deepEqual(both.parsed.params.visualize, {
    labels: true,
    strokeWidth: 3,
    autoOrient: false,
  });
  assert.equal(both.parsed.autoOrient, false);
});

test('the image: a URL, base64 text or bytes; classes as a comma list', () => {
  const url = parseLegacyRequest('m/1', { image: 'https://example.com/a.jpg' }, null).parsed;
  assert.deepEqual(url.images, [{ kind: 'url', url: 'https://example.com/a.jpg' }]);
  const b64 = parseLegacyRequest(
    'm/1',
    { classes: 'dog, cat,' },
    { kind: 'base64', text: PNG.toString('base64') + '\n' },
  ).parsed;
  assert.deepEqual(b64.images, [{ kind: 'bytes', bytes: PNG }]);
  assert.deepEqual(b64.params.classFilter, ['dog', 'cat']);
});

test('bad parameters and missing or doubled images are INVALID_REQUEST naming the problem', () => {
  const cases: Array<[Record<string, unknown>, LegacyBody, RegExp]> = [
    [{}, null, /no image/],
    [{}, { kind: 'base64', text: '  ' }, /no image/],
    [{ image: 'https://example.com/a.jpg' }, body, /not both/],
    [{ format: 'png' }, body, /format/],
    [{ confidence: '101' }, body, /confidence/],
    [{ overlap: '-1' }, body, /overlap/],
    [{ stroke: '1.5' }, body, /stroke/],
    [{ labels: 'maybe' }, body, /labels: expected a boolean/],
    [{ confidence: 'better' }, body, /confidence/],
    [{ max_detections: 'x' }, body, /max_detections/],
    [{}, { kind: 'base64', text: '%%%' }, /base64/],
    [{}, { kind: 'bytes', bytes: Buffer.alloc(0) }, /empty/],
  ];
  for (const [query, b, message] of cases) {
    assert.throws(
      () => parseLegacyRequest('m/1', query, b),
      (err: unknown) =>
        err instanceof PipelineError && err.code === 'INVALID_REQUEST' && message.test(err.message),
      JSON.stringify(query),
    );
  }
});

test("Python's booleans (labels=True, =1, =False) and the confidence keywords", () => {
  for (const [v, want] of [
    ['True', true],
    ['1', true],
    ['yes', true],
    ['ON', true],
    ['False', false],
    ['0', false],
    ['no', false],
    ['off', false],
  ] as const) {
    const { parsed } = parseLegacyRequest(
      'm/1',
      {
        format: 'image',
        labels: v,
        class_agnostic_nms: v,
        disable_preproc_auto_orient: v,
      },
      body,
    );
    assert.equal(parsed.params.visualize?.labels, want, v);
    assert.equal(parsed.params.classAgnosticNms, want, v);
    assert.equal(parsed.autoOrient, !want, v);
  }
  for (const keyword of ['best', 'default'] as const) {
    const { parsed } = parseLegacyRequest('m/1', { confidence: keyword }, body);
    assert.equal(parsed.params.confidence, keyword);
  }
});
