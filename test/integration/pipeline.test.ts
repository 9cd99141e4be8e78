import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Queue } from 'bullmq';
import { QueueName, type DetectionResponse } from '../../shared/contracts.js';
import { assertShapes, drawImage, type Shape } from '../helpers/images.js';
import { suiteImageServer } from '../helpers/image-server.js';
import {
  keysOf,
  logEvents,
  postJson,
  suiteStack,
  type RedisHandle,
  type Stack,
} from '../helpers/stack.js';

/**
 * The whole pipeline with every role as its own process, a real redis-server and requests over
 * HTTP, serving the generated tiny detector (which finds red, green and blue rectangles
 * exactly, so boxes can be checked to the pixel).
 */
let redis: RedisHandle;
let stack: Stack;
const images = suiteImageServer();

const SCENE: Shape[] = [
  { colour: 'red', x: 40, y: 60, w: 120, h: 90 },
  { colour: 'blue', x: 300, y: 200, w: 150, h: 100 },
];

function base64Request(image: Buffer, extra: Record<string, unknown> = {}) {
  return { image: { type: 'base64', value: image.toString('base64') }, ...extra };
}

// The test's own image server is on loopback, which image URLs may not reach by default.
suiteStack({ env: { MAX_BATCH_DELAY_MS: '40', ALLOW_PRIVATE_URLS: 'true' } }, (s, r) => {
  stack = s;
  redis = r;
});

describe('object detection over HTTP', () => {
  test('base64 JSON: a landscape PNG gives exact classes and boxes in original pixels', async () => {
    const image = await drawImage(480, 360, SCENE);
    const res = await postJson(stack, '/infer/object_detection', base64Request(image));
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const body = res.body as DetectionResponse;
    assert.deepEqual(body.image, { width: 480, height: 360 });
    assert.match(body.inference_id, /^[0-9a-f-]{36}$/);
    assert.ok(body.time > 0 && body.time < 30);
    // The tiny detector emits a near-duplicate of every box: NMS must have removed it.
    assertShapes(body.predictions, SCENE);
    // Where the time went, stage by stage.
    const timing = Object.fromEntries(
      (res.headers.get('server-timing') ?? '').split(', ').map((entry): [string, number] => {
        const [name, dur] = entry.split(';dur=');
        return [name ?? '', Number(dur)];
      }),
    );
    const stages = ['pre-queue', 'pre', 'infer-queue', 'infer', 'post-queue', 'post', 'total'];
    assert.deepEqual(Object.keys(timing), stages, res.headers.get('server-timing') ?? 'none');
    for (const name of stages) assert.ok(timing[name]! >= 0, `${name}: ${timing[name]}`);
    const parts = stages.slice(0, -1).reduce((sum, name) => sum + timing[name]!, 0);
    assert.ok(parts <= timing['total']! + 1, `stages ${parts} ms > total ${timing['total']} ms`);
    assert.ok(timing['infer']! > 0 && timing['pre']! > 0, JSON.stringify(timing));
  });

  test('a portrait image and a data: URL prefix', async () => {
    const shapes: Shape[] = [{ colour: 'green', x: 20, y: 500, w: 200, h: 120 }];
    const image = await drawImage(300, 700, shapes);
    const res = await postJson(stack, '/infer/object_detection', {
      image: { type: 'base64', value: `data:image/png;base64,${image.toString('base64')}` },
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual((res.body as DetectionResponse).image, { width: 300, height: 700 });
    assertShapes((res.body as DetectionResponse).predictions, shapes);
  });

  test('a JPEG with an EXIF rotation is detected in oriented coordinates', async () => {
    const shapes: Shape[] = [
      { colour: 'red', x: 30, y: 40, w: 100, h: 60 },
      { colour: 'green', x: 200, y: 400, w: 80, h: 120 },
    ];
    const image = await drawImage(320, 560, shapes, { format: 'jpeg', orientation: 6 });
    const res = await postJson(stack, '/infer/object_detection', base64Request(image));
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const body = res.body as DetectionResponse;
    assert.deepEqual(body.image, { width: 320, height: 560 });
    assertShapes(body.predictions, shapes);

    const raw = await postJson(
      stack,
      '/infer/object_detection',
      base64Request(image, { disable_preproc_auto_orient: true }),
    );
    assert.equal(raw.status, 200);
    assert.deepEqual((raw.body as DetectionResponse).image, { width: 560, height: 320 });
  });

  test('options: confidence, class_filter, class-agnostic NMS and max_detections', async () => {
    const image = await drawImage(480, 360, SCENE);
    const filtered = await postJson(
      stack,
      '/infer/object_detection',
      base64Request(image, { class_filter: ['blue'] }),
    );
    assert.deepEqual(
      (filtered.body as DetectionResponse).predictions.map((p) => p.class),
      ['blue'],
    );

    // Without NMS suppressing it, the 0.9 duplicate shows up once its IoU is allowed.
    const loose = await postJson(
      stack,
      '/infer/object_detection',
      base64Request(image, { iou_threshold: 0.99 }),
    );
    const scores = (loose.body as DetectionResponse).predictions.map((p) => p.confidence).sort();
    assert.deepEqual(scores, [0.9, 0.9, 1, 1]);

    const capped = await postJson(
      stack,
      '/infer/object_detection',
      base64Request(image, { max_detections: 1 }),
    );
    assert.equal((capped.body as DetectionResponse).predictions.length, 1);

    // A blue box inside a red one: per-class NMS keeps both, class-agnostic NMS only one.
    const nested = await drawImage(300, 300, [
      { colour: 'red', x: 40, y: 60, w: 120, h: 90 },
      { colour: 'blue', x: 50, y: 70, w: 100, h: 70 },
    ]);
    const perClass = await postJson(stack, '/infer/object_detection', base64Request(nested));
    assert.deepEqual((perClass.body as DetectionResponse).predictions.map((p) => p.class).sort(), [
      'blue',
      'red',
    ]);
    const agnostic = await postJson(
      stack,
      '/infer/object_detection',
      base64Request(nested, { class_agnostic_nms: true }),
    );
    assert.equal((agnostic.body as DetectionResponse).predictions.length, 1);

    const high = await postJson(
      stack,
      '/infer/object_detection',
      base64Request(image, { iou_threshold: 0.99, confidence: 0.95 }),
    );
    assert.equal((high.body as DetectionResponse).predictions.length, 2);
  });

  test('a list of images answers with a list in the same order', async () => {
    const a = await drawImage(200, 200, [{ colour: 'red', x: 10, y: 10, w: 50, h: 50 }]);
    const b = await drawImage(260, 180, [{ colour: 'blue', x: 100, y: 60, w: 60, h: 40 }]);
    const c = await drawImage(200, 300, []);
    const res = await postJson(stack, '/infer/object_detection', {
      image: [a, b, c].map((img) => ({ type: 'base64', value: img.toString('base64') })),
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const list = res.body as DetectionResponse[];
    assert.equal(list.length, 3);
    assert.deepEqual(
      list.map((r) => r.image),
      [
        { width: 200, height: 200 },
        { width: 260, height: 180 },
        { width: 200, height: 300 },
      ],
    );
    assert.deepEqual(
      list.map((r) => r.predictions.map((p) => p.class)),
      [['red'], ['blue'], []],
    );
    assert.equal(new Set(list.map((r) => r.inference_id)).size, 3);
  });

  test('an image by URL, fetched by the pre stage', async () => {
    images.served.set('/scene.png', await drawImage(480, 360, SCENE));
    const res = await postJson(stack, '/infer/object_detection', {
      image: { type: 'url', value: `${images.url}/scene.png` },
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assertShapes((res.body as DetectionResponse).predictions, SCENE);

    const missing = await postJson(stack, '/infer/object_detection', {
      image: { type: 'url', value: `${images.url}/nope.png` },
    });
    assert.equal(missing.status, 400);
    assert.equal((missing.body as { code: string }).code, 'IMAGE_FETCH_FAILED');
  });

  test('multipart upload and raw image body, with options in the query string', async () => {
    const image = await drawImage(480, 360, SCENE);
    const form = new FormData();
    form.append('file', new Blob([image], { type: 'image/png' }), 'scene.png');
    const multipart = await fetch(`${stack.url}/infer/object_detection?confidence=0.5`, {
      method: 'POST',
      body: form,
    });
    assert.equal(multipart.status, 200);
    assertShapes(((await multipart.json()) as DetectionResponse).predictions, SCENE);

    const raw = await fetch(`${stack.url}/infer/object_detection?class_filter=red`, {
      method: 'POST',
      headers: { 'content-type': 'image/png' },
      body: image,
    });
    assert.equal(raw.status, 200);
    assert.deepEqual(
      ((await raw.json()) as DetectionResponse).predictions.map((p) => p.class),
      ['red'],
    );
  });

  test('bad input gets a clear 4xx and the server keeps serving', async () => {
    const corrupt = await postJson(
      stack,
      '/infer/object_detection',
      base64Request(Buffer.from('this is not an image at all')),
    );
    assert.equal(corrupt.status, 400);
    assert.equal((corrupt.body as { code: string }).code, 'IMAGE_DECODE_FAILED');

    const png = await drawImage(100, 100, []);
    const truncated = await postJson(
      stack,
      '/infer/object_detection',
      base64Request(png.subarray(0, png.length / 2)),
    );
    assert.equal(truncated.status, 400);
    assert.equal((truncated.body as { code: string }).code, 'IMAGE_DECODE_FAILED');

    const unknownModel = await postJson(
      stack,
      '/infer/object_detection',
      base64Request(png, { model_id: 'no-such-model' }),
    );
    assert.equal(unknownModel.status, 404);
    assert.equal((unknownModel.body as { code: string }).code, 'MODEL_NOT_FOUND');

    const badField = await postJson(
      stack,
      '/infer/object_detection',
      base64Request(png, { confidence: 3 }),
    );
    assert.equal(badField.status, 400);
    assert.match((badField.body as { message: string }).message, /confidence/);

    const malformed = await fetch(`${stack.url}/infer/object_detection`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"image": ',
    });
    assert.equal(malformed.status, 400);
    assert.equal(((await malformed.json()) as { code: string }).code, 'INVALID_REQUEST');

    // A list whose first image fails fast while the rest are still being enqueued: the
    // request gets the error and the gateway lives on.
    const good = (await drawImage(480, 360, SCENE)).toString('base64');
    const mixed = await postJson(stack, '/infer/object_detection', {
      image: [
        { type: 'base64', value: Buffer.from('broken').toString('base64') },
        ...Array.from({ length: 8 }, () => ({ type: 'base64', value: good })),
      ],
    });
    assert.equal(mixed.status, 400);
    assert.equal((mixed.body as { code: string }).code, 'IMAGE_DECODE_FAILED');

    const ok = await postJson(
      stack,
      '/infer/object_detection',
      base64Request(await drawImage(480, 360, SCENE)),
    );
    assert.equal(ok.status, 200);
  });

  test('images that arrive while the model runs are batched together', async () => {
    // The tiny model runs in a few milliseconds, faster than `pre` delivers, so an image almost
    // always finds it idle and runs at once, alone. To have images arrive while a batch runs,
    // the `infer` queue is paused until all 16 wait in it: once resumed, the first runs alone
    // and the others, fetched during its run, form the next batches.
    const inferQueue = new Queue(QueueName.infer, {
      connection: { url: redis.url },
      prefix: stack.prefix,
    });
    try {
      await inferQueue.pause();
      const image = await drawImage(480, 360, SCENE);
      const pending = Promise.all(
        Array.from({ length: 16 }, () =>
          postJson(stack, '/infer/object_detection', base64Request(image)),
        ),
      );
      const until = Date.now() + 20_000;
      while ((await inferQueue.getWaitingCount()) < 16) {
        assert.ok(Date.now() < until, 'the 16 images never all reached the infer queue');
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      await inferQueue.resume();
      const responses = await pending;
      for (const r of responses) {
        assert.equal(r.status, 200);
        assertShapes((r.body as DetectionResponse).predictions, SCENE);
      }
    } finally {
      await inferQueue.resume();
      await inferQueue.close();
    }
    const sizes = logEvents(stack, 'infer', 'batch done').map((e) => e['size'] as number);
    assert.ok(
      sizes.some((s) => s > 1),
      `batch sizes seen: ${sizes.join(', ')}`,
    );
    assert.ok(
      sizes.every((s) => s <= 8),
      `no batch over MAX_BATCH_SIZE: ${sizes.join(', ')}`,
    );
  });

  test('model registry and model/add, as the inference SDK asks', async () => {
    const registry = (await (await fetch(`${stack.url}/model/registry`)).json()) as {
      models: unknown[];
    };
    assert.deepEqual(registry.models, [
      {
        model_id: 'tiny-shapes',
        task_type: 'object-detection',
        batch_size: 8,
        input_height: 320,
        input_width: 320,
      },
    ]);
    assert.equal((await postJson(stack, '/model/add', { model_id: 'tiny-shapes' })).status, 200);
    const unknown = await postJson(stack, '/model/add', { model_id: 'coco/3' });
    assert.equal(unknown.status, 404);
    assert.equal((await fetch(`${stack.url}/healthz`)).status, 200);
    assert.equal((await fetch(`${stack.url}/readyz`)).status, 200);
  });

  test('no per-request keys or finished jobs are left in Redis', async () => {
    // Give the last deletes a moment; every one happens right after the reply is sent.
    await new Promise((r) => setTimeout(r, 300));
    const keys = await keysOf(redis.client, stack.prefix);
    const leftovers = keys.filter(
      (k) =>
        /:(img|px|cand|reply):/.test(k) ||
        /^[^:]+:(pre|infer|post):[0-9a-f]{8}-[0-9a-f-]{27}$/.test(k),
    );
    assert.deepEqual(leftovers, []);
    for (const queue of ['pre', 'infer', 'post']) {
      for (const list of ['wait', 'active', 'completed', 'failed', 'delayed']) {
        const key = `${stack.prefix}:${queue}:${list}`;
        const type = await redis.client.type(key);
        const size =
          type === 'zset'
            ? await redis.client.zcard(key)
            : type === 'list'
              ? await redis.client.llen(key)
              : 0;
        assert.equal(size, 0, `${key} holds ${size} entries`);
      }
    }
  });
});
