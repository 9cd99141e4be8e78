import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test, type TestContext } from 'node:test';
import { requireShared, sharedPath } from '../helpers/shared-data.js';
import { suiteStack, type Stack } from '../helpers/stack.js';

/**
 * Our answers against what Roboflow's own server answered for the same requests
 * (../shared/data/roboflow-responses, recorded from Roboflow Inference 1.5 serving the same
 * yolov8n as `coco/3`): field names, value types, list shapes and HTTP statuses, field for
 * field. Box values are not compared: that server's preprocessing differs from ours (see the
 * fixtures' README). The fixtures are beside the repository, so without them these tests skip,
 * except under CI=true, where they must run.
 */
const FIXTURES = 'data/roboflow-responses';
const NEEDED = [
  `${FIXTURES}/INDEX.tsv`,
  'models/yolov8n.onnx',
  'models/coco80.txt',
  'data/samples/bus.jpg',
  'data/samples/zidane.jpg',
];

/**
 * Statuses where ours differ from Roboflow's on purpose. Every other fixture's status must be
 * ours too.
 */
const DIFFERENT_STATUS: Record<string, { ours: number; why: string }> = {
  'err_unknown_model.json': {
    ours: 404,
    why: "Roboflow's offline server could not reach its API (503); a model this server does not serve is 404 MODEL_NOT_FOUND",
  },
  'err_missing_image.json': {
    ours: 400,
    why: "FastAPI answers validation errors 422; every request error here is 400 INVALID_REQUEST (inference-sdk treats both as the client's error)",
  },
};

let stack: Stack | undefined;
let notFound: Server | undefined;
let notFoundUrl = '';
const haveShared = () => NEEDED.every((p) => existsSync(sharedPath(p)));

before(async () => {
  if (!haveShared()) return;
  notFound = createServer((_req, res) => void res.writeHead(404).end('no such image'));
  await new Promise<void>((r) => notFound!.listen(0, '127.0.0.1', r));
  notFoundUrl = `http://127.0.0.1:${(notFound.address() as AddressInfo).port}/missing.jpg`;
});
// Each test skips (or fails under CI) through requireShared when ../shared is missing.
suiteStack(
  () =>
    haveShared()
      ? {
          env: {
            MODEL_PATH: sharedPath('models/yolov8n.onnx'),
            CLASS_NAMES: sharedPath('models/coco80.txt'),
            MODEL_ID: 'coco/3',
            // The 404 URL is on this machine's loopback, as the fixture's was.
            ALLOW_PRIVATE_URLS: 'true',
          },
        }
      : undefined,
  (s) => {
    stack = s;
  },
);
after(() => {
  notFound?.close();
});

const sample = (name: string) =>
  readFileSync(sharedPath(`data/samples/${name}`)).toString('base64');
const image = (name: string) => ({ type: 'base64', value: sample(name) });

interface Answer {
  status: number;
  body: unknown;
}

async function post(path: string, body: string, type: string): Promise<Answer> {
  const res = await fetch(`${stack!.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': type },
    body,
  });
  const answer: unknown = await res.json();
  return { status: res.status, body: answer };
}

const postJson = (body: unknown) =>
  post('/infer/object_detection', JSON.stringify(body), 'application/json');

/** The request each fixture recorded, sent to our stack (see the fixtures' README). */
const REQUESTS: Record<string, () => Promise<Answer>> = {
  'od_bus_conf0.25.json': () =>
    postJson({ model_id: 'coco/3', api_key: 'dummy', image: image('bus.jpg'), confidence: 0.25 }),
  'od_zidane_conf0.25.json': () =>
    postJson({
      model_id: 'coco/3',
      api_key: 'dummy',
      image: image('zidane.jpg'),
      confidence: 0.25,
    }),
  'od_bus_conf0.5_classfilter_person.json': () =>
    postJson({
      model_id: 'coco/3',
      api_key: 'dummy',
      image: image('bus.jpg'),
      confidence: 0.5,
      class_filter: ['person'],
    }),
  'od_list_bus_zidane_conf0.25.json': () =>
    postJson({
      model_id: 'coco/3',
      api_key: 'dummy',
      image: [image('bus.jpg'), image('zidane.jpg')],
      confidence: 0.25,
    }),
  'od_bus_visualize_keys.json': () =>
    postJson({
      model_id: 'coco/3',
      api_key: 'dummy',
      image: image('bus.jpg'),
      visualize_predictions: true,
    }),
  'legacy_coco3_bus_conf25.json': () =>
    post(
      '/coco/3?api_key=dummy&confidence=25',
      sample('bus.jpg'),
      'application/x-www-form-urlencoded',
    ),
  'extra_od_bus_no_api_key.json': () =>
    postJson({ model_id: 'coco/3', image: image('bus.jpg'), confidence: 0.25 }),
  'err_corrupt_image.json': () =>
    postJson({
      model_id: 'coco/3',
      api_key: 'dummy',
      // Random bytes (a fixed seed's worth), as base64: no image format.
      image: {
        type: 'base64',
        value: Buffer.from(Array.from({ length: 512 }, (_, i) => (i * 7919) % 251)).toString(
          'base64',
        ),
      },
    }),
  'err_unknown_model.json': () =>
    postJson({ model_id: 'nope/99', api_key: 'dummy', image: image('bus.jpg') }),
  'err_missing_image.json': () =>
    postJson({ model_id: 'coco/3', api_key: 'dummy', confidence: 0.25 }),
  'err_url_404_loopback.json': () =>
    postJson({
      model_id: 'coco/3',
      api_key: 'dummy',
      image: { type: 'url', value: notFoundUrl },
    }),
};

interface IndexRow {
  file: string;
  status: number;
  contentType: string;
}

function readIndex(): IndexRow[] {
  const lines = readFileSync(sharedPath(`${FIXTURES}/INDEX.tsv`), 'utf8')
    .trim()
    .split('\n');
  return lines.slice(1).map((line) => {
    const [file = '', status = '', contentType = ''] = line.split('\t');
    return { file, status: Number(status), contentType };
  });
}

/** A recorded answer: most files are the body itself, some wrap it with its status. */
function readFixture(file: string): { status: number | undefined; body: unknown } {
  const json = JSON.parse(readFileSync(sharedPath(`${FIXTURES}/${file}`), 'utf8')) as unknown;
  if (json && typeof json === 'object' && 'http_status' in json && 'body' in json)
    return { status: json.http_status as number, body: json.body };
  return { status: undefined, body: json };
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** Fields whose values are whole numbers in Roboflow's answers by type, not by chance. */
const INTEGER_FIELDS = new Set(['class_id', 'image.width', 'image.height']);
const UUID_FIELDS = new Set(['inference_id', 'detection_id']);

/**
 * Asserts that `ours` has the shape of `theirs`: the same keys in every object, the same value
 * types, lists where they have lists (each of our items shaped like their first item), integers
 * and UUIDs where theirs are.
 */
function assertSameShape(ours: unknown, theirs: unknown, path = ''): void {
  const where = path || '(top)';
  if (Array.isArray(theirs)) {
    assert.ok(Array.isArray(ours), `${where}: a list in Roboflow's answer`);
    const model: unknown = theirs[0];
    if (model !== undefined)
      ours.forEach((item: unknown, i) => assertSameShape(item, model, `${path}[${i}]`));
    return;
  }
  if (theirs !== null && typeof theirs === 'object') {
    assert.ok(
      ours !== null && typeof ours === 'object' && !Array.isArray(ours),
      `${where}: an object`,
    );
    assert.deepEqual(Object.keys(ours).sort(), Object.keys(theirs).sort(), `${where}: field names`);
    for (const [key, value] of Object.entries(theirs))
      assertSameShape((ours as Record<string, unknown>)[key], value, path ? `${path}.${key}` : key);
    return;
  }
  assert.equal(typeof ours, typeof theirs, `${where}: type`);
  const field = path.replace(/\[\d+\]/g, '').replace(/^predictions\./, '');
  if (INTEGER_FIELDS.has(field)) assert.ok(Number.isInteger(ours), `${where}: an integer`);
  if (UUID_FIELDS.has(field)) assert.match(String(ours), UUID, `${where}: a UUID`);
}

function available(t: TestContext): boolean {
  return NEEDED.every((p) => requireShared(t, p));
}

describe("Roboflow's recorded answers", () => {
  test('every recorded request is covered here', (t) => {
    if (!available(t)) return;
    assert.deepEqual(
      readIndex()
        .map((r) => r.file)
        .sort(),
      Object.keys(REQUESTS).sort(),
    );
  });

  test('statuses and content types match, except where documented', async (t) => {
    if (!available(t)) return;
    for (const row of readIndex()) {
      const ours = await REQUESTS[row.file]!();
      const deviation = DIFFERENT_STATUS[row.file];
      assert.equal(
        ours.status,
        deviation?.ours ?? row.status,
        `${row.file}${deviation ? ` (${deviation.why})` : ''}: ${JSON.stringify(ours.body).slice(0, 300)}`,
      );
      assert.equal(row.contentType, 'application/json');
      const recorded = readFixture(row.file);
      if (recorded.status !== undefined) assert.equal(recorded.status, row.status, row.file);
      if (row.status >= 400) {
        // Their error bodies carry `message` (FastAPI's validation error `detail`); ours carry
        // `code` and `message` for every error.
        const body = ours.body as Record<string, unknown>;
        assert.equal(typeof body['code'], 'string', row.file);
        assert.equal(typeof body['message'], 'string', row.file);
        if (recorded.body && typeof recorded.body === 'object' && 'message' in recorded.body)
          assert.ok('message' in body, row.file);
      }
    }
  });

  test('detection answers have their field names, types and list shape', async (t) => {
    if (!available(t)) return;
    for (const file of [
      'od_bus_conf0.25.json',
      'od_zidane_conf0.25.json',
      'od_bus_conf0.5_classfilter_person.json',
      'od_list_bus_zidane_conf0.25.json',
      'legacy_coco3_bus_conf25.json',
      'extra_od_bus_no_api_key.json',
    ]) {
      const theirs = readFixture(file).body;
      const ours = await REQUESTS[file]!();
      assert.equal(ours.status, 200, `${file}: ${JSON.stringify(ours.body).slice(0, 300)}`);
      assertSameShape(ours.body, theirs, '');
      // The same images, so the same sizes, in the same order.
      const sizes = (b: unknown) =>
        (Array.isArray(b) ? b : [b]).map((r) => (r as { image: unknown }).image);
      assert.deepEqual(sizes(ours.body), sizes(theirs), file);
      const theirPredictions = (Array.isArray(theirs) ? theirs : [theirs]) as Array<{
        predictions: Array<{ class: string }>;
      }>;
      const ourPredictions = (
        Array.isArray(ours.body) ? ours.body : [ours.body]
      ) as typeof theirPredictions;
      ourPredictions.forEach((r, i) => {
        assert.ok(r.predictions.length > 0, `${file}[${i}]: no predictions`);
        // Both find a person in each photo, and class_filter keeps only its classes.
        assert.ok(
          r.predictions.some((p) => p.class === 'person'),
          `${file}[${i}]`,
        );
        if (file.includes('classfilter'))
          assert.deepEqual([...new Set(r.predictions.map((p) => p.class))], ['person']);
        else assert.ok(theirPredictions[i]!.predictions.length > 0);
      });
    }
  });

  test('with visualize_predictions: the same keys, and the image as base64 JPEG', async (t) => {
    if (!available(t)) return;
    const recorded = readFixture('od_bus_visualize_keys.json').body as {
      keys: string[];
      response_with_visualization_truncated: { visualization: string };
    };
    const ours = await REQUESTS['od_bus_visualize_keys.json']!();
    assert.equal(ours.status, 200);
    const body = ours.body as Record<string, unknown>;
    assert.deepEqual(Object.keys(body).sort(), [...recorded.keys].sort());
    const { visualization, ...rest } = recorded.response_with_visualization_truncated as Record<
      string,
      unknown
    >;
    delete rest['visualization_len'];
    const { visualization: ourVisualization, ...ourRest } = body;
    assertSameShape(ourRest, rest);
    // Both are JPEG (base64 of FF D8 FF starts with /9j/).
    assert.ok(String(visualization).startsWith('/9j/'));
    assert.ok(typeof ourVisualization === 'string' && ourVisualization.startsWith('/9j/'));
  });
});
