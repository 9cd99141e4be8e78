import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Ajv } from 'ajv';
import addFormatsModule from 'ajv-formats';
import type { DetectionResponse } from '../../shared/contracts.js';
import { buildTinyDetector } from '../../services/infer/tiny-model/tiny-model.js';
import { freePort } from '../../services/supervisor/processes.js';
import { drawImage, type Shape } from '../helpers/images.js';
import { logEvents, postJson, suiteStack, type Stack } from '../helpers/stack.js';

/**
 * What Roboflow's clients (inference-sdk in both API modes) send, over HTTP against the real
 * stack: Python's spelling of booleans, numbers as strings, the confidence keywords, `/info`,
 * unloading the one model, Roboflow routes this server does not implement, and the multipart
 * and content-type variants clients produce. The stack serves the tiny detector from a file
 * (MODEL_PATH) whose metadata recommends a confidence of 0.95, as `shapes/1`.
 */
const dir = mkdtempSync(join(tmpdir(), 'sd-roboflow-client-'));
const modelPath = join(dir, 'shapes.onnx');
writeFileSync(modelPath, buildTinyDetector({ extraMetadata: { recommended_confidence: '0.95' } }));

let stack: Stack;
let scene: Buffer;
const SHAPES: Shape[] = [
  { colour: 'green', x: 50, y: 40, w: 100, h: 120 },
  { colour: 'blue', x: 260, y: 150, w: 140, h: 90 },
];

suiteStack({ env: { MODEL_PATH: modelPath, MODEL_ID: 'shapes/1' } }, (s) => {
  stack = s;
});

before(async () => {
  scene = await drawImage(420, 300, SHAPES);
});

after(() => {
  rmSync(dir, { recursive: true, force: true });
});

interface Answer {
  status: number;
  body: Record<string, unknown>;
}

async function call(
  path: string,
  init: { method?: string; body?: RequestInit['body']; type?: string } = {},
): Promise<Answer> {
  const res = await fetch(`${stack.url}${path}`, {
    method: init.method ?? 'POST',
    headers: init.type ? { 'content-type': init.type } : {},
    body: init.body ?? null,
  });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

const detectJson = (extra: Record<string, unknown>) =>
  postJson(stack, '/infer/object_detection', {
    image: { type: 'base64', value: scene.toString('base64') },
    ...extra,
  });

const predictionsOf = (body: unknown) => (body as DetectionResponse).predictions;

describe('booleans as Roboflow spells them', () => {
  test('JSON body: every spelling of true and false, in any case', async () => {
    for (const spelling of ['True', 'TRUE', 'true', '1', 'yes', 'On', 't', 'Y', 1, true]) {
      const res = await detectJson({ visualize_predictions: spelling });
      assert.equal(res.status, 200, `${String(spelling)}: ${JSON.stringify(res.body)}`);
      assert.equal(typeof (res.body as DetectionResponse).visualization, 'string', `${spelling}`);
    }
    for (const spelling of ['False', 'FALSE', '0', 'no', 'off', 'F', 'n', 0, false]) {
      const res = await detectJson({ visualize_predictions: spelling });
      assert.equal(res.status, 200, `${String(spelling)}: ${JSON.stringify(res.body)}`);
      assert.equal((res.body as DetectionResponse).visualization, undefined, `${spelling}`);
    }
    const bad = await detectJson({ class_agnostic_nms: 'maybe' });
    assert.equal(bad.status, 400);
    assert.match(
      JSON.stringify(bad.body),
      /class_agnostic_nms: expected a boolean: true\/1\/yes\/on\/t\/y or false/,
    );
  });

  test('query string of a raw image and of the legacy route (API v0 mode)', async () => {
    const raw = await call('/infer/object_detection?visualize_predictions=True', {
      body: scene,
      type: 'image/png',
    });
    assert.equal(raw.status, 200, JSON.stringify(raw.body));
    assert.equal(typeof raw.body['visualization'], 'string');
    for (const query of [
      'labels=True',
      'labels=False',
      'labels=1',
      'disable_preproc_auto_orient=True',
      'class_agnostic_nms=True',
      'class_agnostic_nms=OFF',
    ]) {
      const res = await call(`/shapes/1?api_key=x&format=image_and_json&${query}`, {
        body: scene.toString('base64'),
        type: 'application/x-www-form-urlencoded',
      });
      assert.equal(res.status, 200, `${query}: ${JSON.stringify(res.body)}`);
      assert.equal(predictionsOf(res.body).length, 2, query);
    }
    const bad = await call('/shapes/1?labels=maybe', {
      body: scene.toString('base64'),
      type: 'text/plain',
    });
    assert.equal(bad.status, 400);
    assert.match(String(bad.body['message']), /labels: expected a boolean/);
  });
});

describe('numbers as strings and the confidence keywords', () => {
  test('numeric strings are read as numbers, in JSON and in the query', async () => {
    const res = await detectJson({ confidence: '0.5', iou_threshold: '0.3', max_detections: '1' });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(predictionsOf(res.body).length, 1, 'max_detections "1" keeps one box');
    const legacy = await call('/shapes/1?confidence=50&max_detections=1', {
      body: scene.toString('base64'),
      type: 'text/plain',
    });
    assert.equal(legacy.status, 200, JSON.stringify(legacy.body));
    assert.equal(predictionsOf(legacy.body).length, 1);
    const bad = await detectJson({ confidence: 'high' });
    assert.equal(bad.status, 400);
    assert.match(
      JSON.stringify(bad.body),
      /confidence: expected a number 0..1, 'default' or 'best'/,
    );
  });

  test("'default' is the server's 0.4; 'best' the model's recommended 0.95", async () => {
    // With NMS off (IoU 1), the tiny model's near-duplicate of each shape (score 0.9) stays:
    // 0.4 keeps it, 0.95 does not.
    const noNms = { iou_threshold: 1 };
    const byDefault = await detectJson({ ...noNms, confidence: 'default' });
    assert.equal(byDefault.status, 200, JSON.stringify(byDefault.body));
    assert.equal(predictionsOf(byDefault.body).length, 4);
    const best = await detectJson({ ...noNms, confidence: 'best' });
    assert.equal(best.status, 200, JSON.stringify(best.body));
    assert.deepEqual(
      predictionsOf(best.body)
        .map((p) => p.confidence)
        .sort(),
      [1, 1],
    );
    const legacy = await call('/shapes/1?confidence=best&overlap=100', {
      body: scene.toString('base64'),
      type: 'text/plain',
    });
    assert.equal(legacy.status, 200, JSON.stringify(legacy.body));
    assert.equal(predictionsOf(legacy.body).length, 2);
    const legacyDefault = await call('/shapes/1?confidence=default&overlap=100', {
      body: scene.toString('base64'),
      type: 'text/plain',
    });
    assert.equal(predictionsOf(legacyDefault.body).length, 4);
  });
});

describe('GET /info', () => {
  test("answers Roboflow's ServerVersionInfo, with one uuid for every gateway of the stack", async () => {
    const res = await fetch(`${stack.url}/info`);
    assert.equal(res.status, 200);
    const info = (await res.json()) as Record<string, unknown>;
    assert.deepEqual(Object.keys(info).sort(), ['name', 'uuid', 'version']);
    assert.equal(info['name'], 'staged-detect');
    assert.match(String(info['version']), /^\d+\.\d+\.\d+$/);
    assert.match(
      String(info['uuid']),
      /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/,
    );
    // The answer is what the API documentation says it is.
    const doc = (await (await fetch(`${stack.url}/docs/json`)).json()) as {
      paths: Record<
        string,
        { get: { responses: Record<string, { content: Record<string, { schema: object }> }> } }
      >;
    };
    const schema = doc.paths['/info']?.get.responses['200']?.content['application/json']?.schema;
    assert.ok(schema, '/info is documented');
    const ajv = new Ajv({ strict: false });
    (addFormatsModule as unknown as (a: Ajv) => void)(ajv);
    const validate = ajv.compile(schema);
    assert.ok(validate(info), JSON.stringify(validate.errors));
    // A second gateway of the same stack, on its own port, gives the same id.
    const port = await freePort();
    const second = stack.add('gateway', { PORT: String(port) });
    try {
      let other: Record<string, unknown> | undefined;
      for (let i = 0; i < 100 && other === undefined; i++) {
        try {
          other = (await (await fetch(`http://127.0.0.1:${port}/info`)).json()) as Record<
            string,
            unknown
          >;
        } catch {
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      assert.deepEqual(other, info);
    } finally {
      second.process.kill('SIGTERM');
      await new Promise((r) => second.process.once('exit', r));
    }
  });
});

describe('unloading the one model (MODEL_PATH, not pinned)', () => {
  test('POST /model/remove unloads it; the next request loads it again', async () => {
    const removed = await postJson(stack, '/model/remove', { model_id: 'shapes/1' });
    assert.equal(removed.status, 200, JSON.stringify(removed.body));
    assert.deepEqual(removed.body, { models: [] });
    const models = (await (await fetch(`${stack.url}/models`)).json()) as {
      models: Array<{ loaded: boolean; pinned: boolean }>;
    };
    assert.deepEqual(
      models.models.map((m) => [m.loaded, m.pinned]),
      [[false, false]],
    );
    const again = await detectJson({});
    assert.equal(again.status, 200, JSON.stringify(again.body));
    assert.equal(predictionsOf(again.body).length, 2);
    const registry = (await (await fetch(`${stack.url}/model/registry`)).json()) as {
      models: Array<{ model_id: string }>;
    };
    assert.deepEqual(
      registry.models.map((m) => m.model_id),
      ['shapes/1'],
    );
    assert.ok(logEvents(stack, 'infer', 'model unloaded').length >= 1);
    // /model/clear unloads it too.
    const cleared = await postJson(stack, '/model/clear', {});
    assert.deepEqual(cleared.body, { models: [] });
  });
});

describe('Roboflow routes this server does not implement', () => {
  test('answer 501 NOT_IMPLEMENTED naming the feature, whatever the body', async () => {
    const cases: Array<[string, string, RegExp]> = [
      ['POST', '/workflows/run', /Workflows/],
      ['POST', '/infer/workflows', /Workflows/],
      ['POST', '/infer/workflows/my-workspace/my-workflow', /Workflows/],
      ['POST', '/my-workspace/workflows/my-workflow', /Workflows/],
      ['POST', '/infer/classification', /classification/],
      ['POST', '/infer/instance_segmentation', /instance segmentation/],
      ['POST', '/infer/keypoints_detection', /keypoint detection/],
      ['POST', '/infer/lmm/some/model', /multimodal/],
      ['POST', '/clip/compare', /CLIP/],
      ['POST', '/gaze/gaze_detection', /gaze/],
      ['POST', '/sam/segment_image', /Segment Anything/],
      ['POST', '/doctr/ocr', /OCR/],
      ['GET', '/inference_pipelines/list', /pipelines/],
    ];
    for (const [method, path, feature] of cases) {
      const res = await call(path, {
        method,
        ...(method === 'POST' && {
          body: JSON.stringify({ specification: { version: '1.0', steps: [] }, api_key: 'x' }),
          type: 'application/json',
        }),
      });
      assert.equal(res.status, 501, `${method} ${path}: ${JSON.stringify(res.body)}`);
      assert.equal(res.body['code'], 'NOT_IMPLEMENTED', path);
      assert.match(String(res.body['message']), feature, path);
      assert.match(String(res.body['message']), /not implemented/, path);
    }
    // Before its body is read: an unparseable one makes no difference.
    const odd = await call('/workflows/run', { body: 'x', type: 'application/x-unknown' });
    assert.equal(odd.status, 501);
    // The legacy route still takes two-segment model ids.
    const legacy = await call('/shapes/1', { body: scene.toString('base64'), type: 'text/plain' });
    assert.equal(legacy.status, 200, JSON.stringify(legacy.body));
  });
});

/** A multipart body written by hand, as a client (or an attacker) may send it. */
function multipartBody(parts: Array<{ disposition: string; type?: string; body: Buffer }>) {
  const boundary = 'sd-test-boundary';
  const chunks: Buffer[] = [];
  for (const p of parts) {
    chunks.push(
      Buffer.from(
        `--${boundary}\r\nContent-Disposition: form-data; ${p.disposition}\r\n` +
          (p.type ? `Content-Type: ${p.type}\r\n` : '') +
          '\r\n',
      ),
      p.body,
      Buffer.from('\r\n'),
    );
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(chunks), type: `multipart/form-data; boundary=${boundary}` };
}

const MULTIPART_ROUTES = ['/infer/object_detection', '/shapes/1'];

describe('multipart bodies', () => {
  test('malformed bodies are 400 INVALID_REQUEST on every multipart route', async () => {
    const head = `--b1\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n`;
    const bodies: Array<[string, { body: Buffer; type: string }]> = [
      [
        'no closing boundary',
        {
          body: Buffer.concat([Buffer.from(head), scene]),
          type: 'multipart/form-data; boundary=b1',
        },
      ],
      ['no boundary parameter', { body: Buffer.from(head), type: 'multipart/form-data' }],
      [
        'garbage after the header',
        {
          body: Buffer.from('\x00\x01garbage, no part at all'),
          type: 'multipart/form-data; boundary=b1',
        },
      ],
      [
        'a part with no header end',
        {
          body: Buffer.from('--b1\r\nContent-Disposition: form-data; name="file"'),
          type: 'multipart/form-data; boundary=b1',
        },
      ],
    ];
    for (const route of MULTIPART_ROUTES) {
      for (const [what, init] of bodies) {
        const res = await call(route, init);
        assert.equal(res.status, 400, `${route}, ${what}: ${JSON.stringify(res.body)}`);
        assert.equal(res.body['code'], 'INVALID_REQUEST', `${route}, ${what}`);
      }
    }
  });

  test('two files are refused, never half-served; a file under another name too', async () => {
    const file = (name: string) => ({
      disposition: `name="${name}"; filename="${name}.png"`,
      type: 'image/png',
      body: scene,
    });
    for (const route of MULTIPART_ROUTES) {
      const two = await call(route, multipartBody([file('file'), file('file')]));
      assert.equal(two.status, 400, `${route}: ${JSON.stringify(two.body)}`);
      assert.match(String(two.body['message']), /more than one file/);
      const other = await call(route, multipartBody([file('file'), file('image')]));
      assert.equal(other.status, 400, `${route}: ${JSON.stringify(other.body)}`);
      const renamed = await call(route, multipartBody([file('image')]));
      assert.equal(renamed.status, 400);
      assert.match(
        String(renamed.body['message']),
        /'image' is a file, but the image must be the part named 'file'/,
      );
      const none = await call(
        route,
        multipartBody([{ disposition: 'name="confidence"', body: Buffer.from('0.5') }]),
      );
      assert.equal(none.status, 400);
      assert.match(String(none.body['message']), /no part named 'file' \(it has: confidence\)/);
    }
  });

  test("a part named 'file' without filename= is the image, as bytes or base64", async () => {
    for (const route of MULTIPART_ROUTES) {
      const bytes = await call(
        route,
        multipartBody([{ disposition: 'name="file"', type: 'image/png', body: scene }]),
      );
      assert.equal(bytes.status, 200, `${route}: ${JSON.stringify(bytes.body)}`);
      assert.equal(predictionsOf(bytes.body).length, 2);
      const base64 = await call(
        route,
        multipartBody([
          { disposition: 'name="file"', body: Buffer.from(scene.toString('base64')) },
        ]),
      );
      assert.equal(base64.status, 200, `${route}: ${JSON.stringify(base64.body)}`);
      assert.equal(predictionsOf(base64.body).length, 2);
    }
  });
});

describe('media-type parameters', () => {
  test('are handled alike for every accepted type', async () => {
    const cases: Array<[string, string, Buffer | string]> = [
      ['/infer/object_detection', 'application/octet-stream; charset=binary', scene],
      ['/infer/object_detection', 'image/png; charset=binary', scene],
      ['/infer/object_detection', 'Application/Octet-Stream;charset=binary', scene],
      ['/shapes/1', 'application/octet-stream; charset=binary', scene],
      ['/shapes/1', 'IMAGE/PNG; charset=binary', scene],
      ['/shapes/1', 'text/plain; charset=utf-8', scene.toString('base64')],
      ['/shapes/1', 'application/x-www-form-urlencoded; charset=UTF-8', scene.toString('base64')],
    ];
    for (const [route, type, body] of cases) {
      const res = await call(route, { body, type });
      assert.equal(res.status, 200, `${route} ${type}: ${JSON.stringify(res.body)}`);
      assert.equal(predictionsOf(res.body).length, 2, `${route} ${type}`);
    }
    const json = await call('/infer/object_detection', {
      body: JSON.stringify({ image: { type: 'base64', value: scene.toString('base64') } }),
      type: 'application/json; charset=utf-8',
    });
    assert.equal(json.status, 200);
    // A type that is not accepted stays 415, parameters or not.
    const text = await call('/infer/object_detection', {
      body: 'x',
      type: 'text/csv; charset=utf-8',
    });
    assert.equal(text.status, 415);
  });
});
