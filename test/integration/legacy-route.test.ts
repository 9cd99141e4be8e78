import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import sharp from 'sharp';
import type { DetectionResponse } from '../../shared/contracts.js';
import { drawImage, expectedBox, type Shape } from '../helpers/images.js';
import { startStack, suiteStack, type RedisHandle, type Stack } from '../helpers/stack.js';

/**
 * Roboflow's legacy route, `POST /{dataset_id}/{version_id}`, against the stack serving the
 * tiny detector as `shapes/1`: every way to send the image, every format, both confidence
 * scales, and clear errors for bad input.
 */
let stack: Stack;
let redis: RedisHandle;
let imageServer: Server;
let imageServerUrl: string;
let scene: Buffer;

const SHAPES: Shape[] = [
  { colour: 'green', x: 50, y: 40, w: 100, h: 120 },
  { colour: 'blue', x: 260, y: 150, w: 140, h: 90 },
];

suiteStack({ env: { MODEL_ID: 'shapes/1', ALLOW_PRIVATE_URLS: 'true' } }, (s, r) => {
  stack = s;
  redis = r;
});

before(async () => {
  scene = await drawImage(420, 300, SHAPES);
  imageServer = createServer((req, res) => {
    if (req.url !== '/scene.png') return void res.writeHead(404).end();
    res.writeHead(200, { 'content-type': 'image/png' }).end(scene);
  });
  await new Promise<void>((r) => imageServer.listen(0, '127.0.0.1', r));
  imageServerUrl = `http://127.0.0.1:${(imageServer.address() as AddressInfo).port}`;
});

after(() => {
  imageServer?.close();
});

async function legacy(
  path: string,
  init: { body?: RequestInit['body']; type?: string } = {},
): Promise<{ status: number; type: string; bytes: Buffer; json: () => unknown }> {
  const res = await fetch(`${stack.url}${path}`, {
    method: 'POST',
    headers: init.type ? { 'content-type': init.type } : {},
    body: init.body ?? null,
  });
  const bytes = Buffer.from(await res.arrayBuffer());
  return {
    status: res.status,
    type: res.headers.get('content-type') ?? '',
    bytes,
    json: () => JSON.parse(bytes.toString('utf8')) as unknown,
  };
}

/** The base64 body `base64 image.png | curl -d @- URL` sends. */
const base64Body = () => ({
  body: scene.toString('base64'),
  type: 'application/x-www-form-urlencoded',
});

function assertShapes(body: DetectionResponse): void {
  assert.deepEqual(body.image, { width: 420, height: 300 });
  assert.deepEqual(body.predictions.map((p) => p.class).sort(), ['blue', 'green']);
  for (const s of SHAPES) {
    const p = body.predictions.find((q) => q.class === s.colour)!;
    const want = expectedBox(s);
    for (const k of ['x', 'y', 'width', 'height'] as const)
      assert.ok(Math.abs(p[k] - want[k]) <= 2, `${s.colour}.${k}: ${p[k]} vs ${want[k]}`);
  }
}

describe('POST /{dataset_id}/{version_id}', () => {
  test('a base64 body (as curl -d @- sends it) gives the JSON predictions', async () => {
    const res = await legacy('/shapes/1?api_key=anything', base64Body());
    assert.equal(res.status, 200, res.bytes.toString());
    assert.match(res.type, /application\/json/);
    const body = res.json() as DetectionResponse;
    assertShapes(body);
    assert.equal(body.visualization, undefined);
  });

  test('a base64 body as text/plain or application/json, with a data: prefix', async () => {
    const text = await legacy('/shapes/1', { body: scene.toString('base64'), type: 'text/plain' });
    assert.equal(text.status, 200, text.bytes.toString());
    assertShapes(text.json() as DetectionResponse);
    const dataUrl = `data:image/png;base64,${scene.toString('base64')}`;
    const json = await legacy('/shapes/1', { body: dataUrl, type: 'application/json' });
    assert.equal(json.status, 200, json.bytes.toString());
    assertShapes(json.json() as DetectionResponse);
  });

  test('a multipart file, a raw image body and an image URL', async () => {
    const form = new FormData();
    form.append('file', new Blob([scene], { type: 'image/png' }), 'scene.png');
    const multipart = await legacy('/shapes/1', { body: form });
    assert.equal(multipart.status, 200, multipart.bytes.toString());
    assertShapes(multipart.json() as DetectionResponse);
    const raw = await legacy('/shapes/1', { body: scene, type: 'image/png' });
    assert.equal(raw.status, 200, raw.bytes.toString());
    assertShapes(raw.json() as DetectionResponse);
    const url = encodeURIComponent(`${imageServerUrl}/scene.png`);
    const fromUrl = await legacy(`/shapes/1?image=${url}`);
    assert.equal(fromUrl.status, 200, fromUrl.bytes.toString());
    assertShapes(fromUrl.json() as DetectionResponse);
    // GET takes the image URL as Roboflow's server does.
    const get = await fetch(`${stack.url}/shapes/1?image=${url}`);
    assert.equal(get.status, 200);
    assertShapes((await get.json()) as DetectionResponse);
  });

  test("GET /readiness is Roboflow's name for /readyz", async () => {
    const [a, b] = await Promise.all([
      fetch(`${stack.url}/readiness`),
      fetch(`${stack.url}/readyz`),
    ]);
    assert.equal(a.status, b.status);
    assert.deepEqual(await a.json(), await b.json());
  });

  test('format=image answers the drawn JPEG itself', async () => {
    const res = await legacy('/shapes/1?format=image&stroke=4&labels=true', base64Body());
    assert.equal(res.status, 200, res.bytes.toString());
    assert.equal(res.type, 'image/jpeg');
    const meta = await sharp(res.bytes).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], ['jpeg', 420, 300]);
    // The green box's left edge is outlined in its class colour, not green any more.
    const { data } = await sharp(res.bytes).raw().toBuffer({ resolveWithObject: true });
    const green = SHAPES[0]!;
    const o = ((green.y + green.h / 2) * 420 + green.x) * 3;
    assert.ok(data[o + 1]! < 150, `edge pixel ${data[o]},${data[o + 1]},${data[o + 2]}`);
  });

  test('format=image_and_json answers the JSON with the visualization', async () => {
    const res = await legacy('/shapes/1?format=image_and_json', base64Body());
    assert.equal(res.status, 200, res.bytes.toString());
    const body = res.json() as DetectionResponse;
    assertShapes(body);
    const meta = await sharp(Buffer.from(body.visualization ?? '', 'base64')).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], ['jpeg', 420, 300]);
  });

  test('confidence and overlap as percentages (0..100) or fractions (0..1)', async () => {
    const [percent, fraction] = await Promise.all([
      legacy('/shapes/1?confidence=50&overlap=30', base64Body()),
      legacy('/shapes/1?confidence=0.5&overlap=0.3', base64Body()),
    ]);
    assert.equal(percent.status, 200, percent.bytes.toString());
    assert.equal(fraction.status, 200, fraction.bytes.toString());
    assertShapes(percent.json() as DetectionResponse);
    assertShapes(fraction.json() as DetectionResponse);
    const tooHigh = await legacy('/shapes/1?confidence=150', base64Body());
    assert.equal(tooHigh.status, 400);
    assert.match((tooHigh.json() as { message: string }).message, /confidence/);
  });

  test('classes keeps the named classes only', async () => {
    const res = await legacy('/shapes/1?classes=blue', base64Body());
    assert.equal(res.status, 200);
    const body = res.json() as DetectionResponse;
    assert.deepEqual(
      body.predictions.map((p) => p.class),
      ['blue'],
    );
  });

  test('bad input gets a clear 4xx with a code, and the server keeps serving', async () => {
    const cases: Array<
      [string, { body?: RequestInit['body']; type?: string }, number, string, RegExp]
    > = [
      ['/other/1', base64Body(), 404, 'MODEL_NOT_FOUND', /other\/1.*served: shapes\/1/],
      ['/shapes/1', {}, 400, 'INVALID_REQUEST', /no image/],
      [
        '/shapes/1',
        { body: '', type: 'application/x-www-form-urlencoded' },
        400,
        'INVALID_REQUEST',
        /no image/,
      ],
      ['/shapes/1?format=xml', base64Body(), 400, 'INVALID_REQUEST', /format/],
      ['/shapes/1?stroke=0', base64Body(), 400, 'INVALID_REQUEST', /stroke/],
      ['/shapes/1?confidence=abc', base64Body(), 400, 'INVALID_REQUEST', /confidence/],
      [
        '/shapes/1',
        { body: 'not base64 at all!', type: 'application/x-www-form-urlencoded' },
        400,
        'INVALID_REQUEST',
        /base64/,
      ],
      [
        '/shapes/1',
        { body: Buffer.from('not an image').toString('base64'), type: 'text/plain' },
        400,
        'IMAGE_DECODE_FAILED',
        /decoded/,
      ],
      ['/shapes/1?image=ftp://example.com/a.png', {}, 400, 'INVALID_REQUEST', /http/],
      [
        `/shapes/1?image=${encodeURIComponent('http://example.com/a.png')}`,
        base64Body(),
        400,
        'INVALID_REQUEST',
        /not both/,
      ],
    ];
    for (const [path, init, status, code, message] of cases) {
      const res = await legacy(path, init);
      assert.equal(res.status, status, `${path}: ${res.bytes.toString()}`);
      const body = res.json() as { code: string; message: string };
      assert.equal(body.code, code, `${path}: ${body.message}`);
      assert.match(body.message, message);
    }
    const form = new FormData();
    form.append('image', new Blob([scene], { type: 'image/png' }), 'scene.png');
    const wrongPart = await legacy('/shapes/1', { body: form });
    assert.equal(wrongPart.status, 400);
    assert.match((wrongPart.json() as { message: string }).message, /file/);
    const ok = await legacy('/shapes/1', base64Body());
    assert.equal(ok.status, 200);
  });

  test('the other routes are unchanged', async () => {
    const res = await fetch(`${stack.url}/infer/object_detection`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        model_id: 'shapes/1',
        image: { type: 'base64', value: scene.toString('base64') },
      }),
    });
    assert.equal(res.status, 200);
    assertShapes((await res.json()) as DetectionResponse);
    const urlencoded = await fetch(`${stack.url}/infer/object_detection`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: scene.toString('base64'),
    });
    assert.equal(urlencoded.status, 415);
    assert.equal((await fetch(`${stack.url}/model/registry`)).status, 200);
  });

  test('with API keys, the api_key query parameter (as Roboflow) or a Bearer key is required', async () => {
    const keyed = await startStack({
      redisUrl: redis.url,
      env: { MODEL_ID: 'shapes/1', API_KEYS: 'legacy-key' },
    });
    try {
      const post = (path: string, headers: Record<string, string> = {}) =>
        fetch(`${keyed.url}${path}`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
          body: scene.toString('base64'),
        });
      const missing = await post('/shapes/1');
      assert.equal(missing.status, 401);
      assert.equal(((await missing.json()) as { code: string }).code, 'UNAUTHORIZED');
      assert.equal((await post('/shapes/1?api_key=wrong')).status, 401);
      const ok = await post('/shapes/1?api_key=legacy-key');
      assert.equal(ok.status, 200);
      assertShapes((await ok.json()) as DetectionResponse);
      assert.equal((await post('/shapes/1', { authorization: 'Bearer legacy-key' })).status, 200);
    } finally {
      await keyed.stop();
    }
  });
});
