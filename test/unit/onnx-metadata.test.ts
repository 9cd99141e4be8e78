import { test } from 'node:test';
import assert from 'node:assert/strict';
import { requireShared } from '../helpers/shared-data.js';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import {
  ProtoWriter,
  decodeFloat,
  decodePackedVarints,
  decodeString,
  readFields,
} from '../../services/infer/onnx/protobuf.js';
import {
  parseClassNames,
  parseRecommendedConfidence,
  readOnnxMetadata,
} from '../../services/infer/onnx/model-metadata.js';
import { buildTinyDetector } from '../../services/infer/tiny-model/tiny-model.js';
import { DataType, attrInt, encodeModel } from '../../services/infer/tiny-model/onnx-builder.js';

// Shared model files live next to the repository (/work/shared/models), never inside it.
const MODELS_DIR = fileURLToPath(new URL('../../../shared/models/', import.meta.url));

void test('protobuf: writer output round-trips through readFields', () => {
  const w = new ProtoWriter()
    .varint(1, 150)
    .varint(2, -1)
    .string(3, 'héllo')
    .float(4, 1.5)
    .packedInt64(5, [1, 300, -2, 2n ** 40n])
    .message(6, (m) => m.varint(1, 7).string(2, 'inner'))
    .bytes(7, new Uint8Array([0xde, 0xad]));
  const bytes = w.finish();
  // Canonical encoding of field 1 = 150 is 08 96 01 (the protobuf docs' own example).
  assert.deepEqual([...bytes.subarray(0, 3)], [0x08, 0x96, 0x01]);

  const fields = [...readFields(bytes)];
  assert.deepEqual(
    fields.map((f) => [f.field, f.wireType]),
    [
      [1, 0],
      [2, 0],
      [3, 2],
      [4, 5],
      [5, 2],
      [6, 2],
      [7, 2],
    ],
  );
  const [f1, f2, f3, f4, f5, f6, f7] = fields;
  assert.ok(f1?.wireType === 0 && f2?.wireType === 0);
  assert.equal(f1.value, 150n);
  assert.equal(BigInt.asIntN(64, f2.value), -1n); // negative int64 is 10-byte two's complement
  assert.ok(f3 && f3.wireType !== 0 && f4 && f4.wireType !== 0);
  assert.equal(decodeString(f3.value), 'héllo');
  assert.equal(decodeFloat(f4.value), 1.5);
  assert.ok(f5 && f5.wireType !== 0);
  assert.deepEqual(
    decodePackedVarints(f5.value).map((v) => BigInt.asIntN(64, v)),
    [1n, 300n, -2n, 2n ** 40n],
  );
  assert.ok(f6 && f6.wireType !== 0);
  const inner = [...readFields(f6.value)];
  assert.equal(inner.length, 2);
  assert.ok(f7 && f7.wireType !== 0);
  assert.deepEqual([...f7.value], [0xde, 0xad]);
});

void test('protobuf: reader skips fixed64 and rejects truncated input and groups', () => {
  // field 1 fixed64 (tag 0x09) + 8 bytes, then field 2 varint 5
  const buf = new Uint8Array([0x09, 1, 2, 3, 4, 5, 6, 7, 8, 0x10, 0x05]);
  const fields = [...readFields(buf)];
  assert.deepEqual(
    fields.map((f) => [f.field, f.wireType]),
    [
      [1, 1],
      [2, 0],
    ],
  );
  assert.throws(() => [...readFields(new Uint8Array([0x0a, 0x05, 1, 2]))], RangeError);
  assert.throws(() => [...readFields(new Uint8Array([0x08, 0x80]))], RangeError);
  assert.throws(() => [...readFields(new Uint8Array([0x0b]))], RangeError); // start group
});

void test('readOnnxMetadata: reads metadata_props of a built model and skips the graph', () => {
  const bytes = encodeModel({
    graphName: 'g',
    producerName: 'test',
    nodes: [
      { opType: 'Identity', inputs: ['x'], outputs: ['y'], attributes: { dummy: attrInt(1) } },
    ],
    initializers: [],
    inputs: [{ name: 'x', elemType: DataType.FLOAT, dims: ['batch', 2] }],
    outputs: [{ name: 'y', elemType: DataType.FLOAT, dims: ['batch', 2] }],
    metadata: { names: "{0: 'a', 1: \"b's\"}", imgsz: '[8, 8]', empty: '' },
  });
  const meta = readOnnxMetadata(bytes);
  assert.deepEqual(meta, { names: "{0: 'a', 1: \"b's\"}", imgsz: '[8, 8]', empty: '' });
  assert.deepEqual(parseClassNames(meta['names'] ?? ''), ['a', "b's"]);

  const none = encodeModel({
    graphName: 'g',
    producerName: 't',
    nodes: [],
    initializers: [],
    inputs: [],
    outputs: [],
  });
  assert.deepEqual(readOnnxMetadata(none), {});
  assert.throws(() => readOnnxMetadata(new Uint8Array([0x3a, 0x10, 0x00])), RangeError);
});

void test('parseClassNames: Python dict reprs', () => {
  assert.deepEqual(parseClassNames("{0: 'person', 1: 'bicycle', 2: \"tie's\"}"), [
    'person',
    'bicycle',
    "tie's",
  ]);
  assert.deepEqual(parseClassNames('{2: "c", 0: "a", 1: "b"}'), ['a', 'b', 'c']);
  assert.deepEqual(parseClassNames("  {0:'x' ,1 : 'y',}  "), ['x', 'y']);
  assert.deepEqual(
    parseClassNames("{0: 'it\\'s', 1: 'back\\\\slash', 2: 'caf\\xe9', 3: 'a, b: {c}'}"),
    ["it's", 'back\\slash', 'café', 'a, b: {c}'],
  );
  for (const bad of [
    '',
    '{}',
    'person, bicycle',
    "['person', 'bicycle']",
    "{0: 'a', 2: 'c'}", // gap
    "{0: 'a', 0: 'b'}", // duplicate
    "{0: 'a'", // unterminated dict
    "{0: 'a}", // unterminated string
    "{'a': 0}", // wrong key type
    "{0: 'a'} extra",
    '{0: a}',
  ]) {
    assert.equal(parseClassNames(bad), undefined, `expected undefined for ${JSON.stringify(bad)}`);
  }
});

void test('readOnnxMetadata: real Ultralytics and YOLOX files', async (t) => {
  if (!requireShared(t, 'models/yolov8n-dynamic.onnx')) return;
  const yolo = readOnnxMetadata(await readFile(`${MODELS_DIR}yolov8n-dynamic.onnx`));
  assert.equal(yolo['task'], 'detect');
  assert.equal(yolo['imgsz'], '[640, 640]');
  const names = parseClassNames(yolo['names'] ?? '');
  assert.ok(names, 'names metadata should parse');
  assert.equal(names.length, 80);
  assert.equal(names[0], 'person');
  assert.equal(names[79], 'toothbrush');

  assert.deepEqual(readOnnxMetadata(await readFile(`${MODELS_DIR}yolox_nano.onnx`)), {});
});

void test('recommended_confidence: a number in 0..1, else none', () => {
  assert.equal(parseRecommendedConfidence({ recommended_confidence: '0.35' }), 0.35);
  assert.equal(parseRecommendedConfidence({ recommended_confidence: ' 1 ' }), 1);
  for (const bad of ['', 'high', '1.5', '-0.1', 'NaN'])
    assert.equal(parseRecommendedConfidence({ recommended_confidence: bad }), null, bad);
  assert.equal(parseRecommendedConfidence({ names: "{0: 'a'}" }), null);
});

void test('the tiny model writes extra metadata entries, which the reader finds', () => {
  const bytes = buildTinyDetector({ extraMetadata: { recommended_confidence: '0.5' } });
  assert.equal(readOnnxMetadata(bytes)['recommended_confidence'], '0.5');
});
