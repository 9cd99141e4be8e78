import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import sharp from 'sharp';
import type { DetectionResponse } from '../../shared/contracts.js';
import { encodeBmp, jpegDeclaring, pngDeclaring } from '../helpers/image-files.js';
import { magick, requireImageMagick } from '../helpers/imagemagick.js';
import { assertShapes, drawImage, drawPixels, expectedBox, type Shape } from '../helpers/images.js';
import { keysOf, postJson, suiteStack, type RedisHandle, type Stack } from '../helpers/stack.js';

/**
 * A corpus of bad and unusual inputs: each bad one gets a clear 4xx JSON error with a stable
 * code, each unusual but valid one is served, the server keeps serving, and nothing is left in
 * Redis.
 */
let redis: RedisHandle;
let stack: Stack;

suiteStack(
  {
    env: { MAX_IMAGE_PIXELS: '1000000', MAX_BODY_BYTES: '2000000', MAX_IMAGES_PER_REQUEST: '4' },
  },
  (s, r) => {
    stack = s;
    redis = r;
  },
);

const RED: Shape = { colour: 'red', x: 20, y: 30, w: 60, h: 40 };
const BLUE: Shape = { colour: 'blue', x: 100, y: 60, w: 50, h: 50 };

async function raw(bytes: Buffer | string, contentType = 'application/octet-stream') {
  const res = await fetch(`${stack.url}/infer/object_detection`, {
    method: 'POST',
    headers: { 'content-type': contentType },
    body: bytes,
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

const b64 = (bytes: Buffer, extra: Record<string, unknown> = {}) =>
  postJson(stack, '/infer/object_detection', {
    image: { type: 'base64', value: bytes.toString('base64') },
    ...extra,
  });

function assertError(res: { status: number; body: unknown }, status: number, code: string): void {
  assert.equal(res.status, status, JSON.stringify(res.body));
  const body = res.body as { code: string; message: string };
  assert.equal(body.code, code);
  assert.ok(body.message.length > 10, 'a message a person can act on');
}

const classes = (res: { body: unknown }) =>
  (res.body as DetectionResponse).predictions.map((p) => p.class).sort();

describe('bad input gets a clear 4xx', () => {
  test('bodies that are not images', async () => {
    assertError(await raw(Buffer.alloc(0), 'image/jpeg'), 400, 'INVALID_REQUEST');
    assertError(await raw('', 'application/json'), 400, 'INVALID_REQUEST');
    assertError(
      await raw(Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919) % 256))),
      400,
      'IMAGE_DECODE_FAILED',
    );
    const jpeg = await drawImage(200, 150, [RED], { format: 'jpeg' });
    assertError(
      await b64(jpeg.subarray(0, Math.floor(jpeg.length * 0.6))),
      400,
      'IMAGE_DECODE_FAILED',
    );
    const form = new FormData();
    form.append(
      'file',
      new Blob(['just some text, not a photo'], { type: 'image/jpeg' }),
      'photo.jpg',
    );
    const text = await fetch(`${stack.url}/infer/object_detection`, { method: 'POST', body: form });
    assertError({ status: text.status, body: await text.json() }, 400, 'IMAGE_DECODE_FAILED');
    assertError(
      await raw('{"image": {"type": "base64", "value": ', 'application/json'),
      400,
      'INVALID_REQUEST',
    );
    assertError(await raw('hello', 'text/plain'), 415, 'UNSUPPORTED_MEDIA_TYPE');
  });

  test('fields of the wrong type or out of range', async () => {
    const png = await drawImage(100, 80, [RED]);
    const image = { type: 'base64', value: png.toString('base64') };
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ image, confidence: 'high' }, /confidence/],
      [{ image, confidence: 1.5 }, /confidence/],
      [{ image, iou_threshold: -1 }, /iou_threshold/],
      [{ image, class_agnostic_nms: 'maybe' }, /class_agnostic_nms/],
      [{ image, max_detections: 0 }, /max_detections/],
      [{ image: { type: 'numpy', value: 'AAAA' } }, /numpy/],
      [{ image: { type: 'base64', value: 42 } }, /value/],
      [{ image: [] }, /empty/],
      [{ image: [image, image, image, image, image] }, /at most 4/],
      [{ image: 'not an object' }, /image/],
      [{ images: [image] }, /image/],
    ];
    for (const [body, why] of cases) {
      const res = await postJson(stack, '/infer/object_detection', body);
      assertError(res, 400, 'INVALID_REQUEST');
      assert.match(
        (res.body as { message: string }).message,
        why,
        JSON.stringify(body).slice(0, 80),
      );
    }
  });

  test('a body over MAX_BODY_BYTES is a 413', async () => {
    assertError(await raw(Buffer.alloc(2_100_000, 1), 'image/png'), 413, 'PAYLOAD_TOO_LARGE');
  });

  test('an image over MAX_IMAGE_PIXELS is refused from its header, before decoding', async () => {
    const bomb = await sharp({
      create: { width: 2000, height: 1000, channels: 3, background: '#808080' },
    })
      .png()
      .toBuffer();
    assert.ok(bomb.length < 100_000, 'a small file that declares 2 megapixels');
    assertError(await b64(bomb), 400, 'IMAGE_TOO_LARGE');
    // Past sharp's own limit (268 megapixels) and past libjpeg's (65500 a side): the same code.
    const jpeg = await drawImage(64, 48, [RED], { format: 'jpeg' });
    for (const huge of [
      pngDeclaring(30_000, 30_000),
      jpegDeclaring(jpeg, 30_000, 30_000),
      jpegDeclaring(jpeg, 65_535, 65_535),
    ]) {
      const res = await b64(huge);
      assertError(res, 400, 'IMAGE_TOO_LARGE');
      assert.match((res.body as { message: string }).message, /more than the 1000000 allowed/);
    }
  });

  test('SVG is refused (it can reference other files)', async () => {
    const svg = Buffer.from(
      '<svg xmlns="http://www.w3.org/2000/svg" width="100" height="80"><rect x="10" y="10" width="40" height="30" fill="red"/></svg>',
    );
    assertError(await b64(svg), 400, 'UNSUPPORTED_IMAGE');
  });
});

describe('image URLs that are not http(s) URLs', () => {
  // Which addresses a URL may reach is tested in a network namespace with only loopback
  // (url-guard-netns.test.ts), so that a guard that let one through reaches nothing.
  test('are refused before anything is fetched', async () => {
    for (const value of ['file:///etc/passwd', 'ftp://example.com/a.png', 'not a url']) {
      assertError(
        await postJson(stack, '/infer/object_detection', { image: { type: 'url', value } }),
        400,
        'INVALID_REQUEST',
      );
    }
  });
});

describe('unusual but valid images are served', () => {
  test('animated GIF: the first frame', async () => {
    const w = 200;
    const h = 150;
    const frames = Buffer.concat([drawPixels(w, h, [RED]), drawPixels(w, h, [BLUE])]);
    const gif = await sharp(frames, {
      raw: { width: w, height: h * 2, channels: 3, pageHeight: h },
    })
      .gif()
      .toBuffer();
    assert.equal((await sharp(gif).metadata()).pages, 2);
    const res = await b64(gif);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual((res.body as DetectionResponse).image, { width: w, height: h });
    assert.deepEqual(classes(res), ['red']);
  });

  test('16-bit PNG, PNG with alpha, CMYK JPEG, grayscale', async () => {
    const rgb = drawPixels(200, 150, [RED, BLUE]);
    const input = () => sharp(rgb, { raw: { width: 200, height: 150, channels: 3 } });
    const png16 = await input().toColourspace('rgb16').png().toBuffer();
    assert.equal((await sharp(png16).metadata()).depth, 'ushort');
    assert.deepEqual(classes(await b64(png16)), ['blue', 'red']);

    const alpha = await input().ensureAlpha(0.5).png().toBuffer();
    assert.equal((await sharp(alpha).metadata()).channels, 4);
    assert.deepEqual(classes(await b64(alpha)), ['blue', 'red']);

    // CMYK without a profile is converted as libjpeg's users do (image-decoder.test.ts
    // measures the colours): both shapes stay in the shape detector's colour range.
    const cmyk = await input().toColourspace('cmyk').jpeg({ quality: 95 }).toBuffer();
    assert.equal((await sharp(cmyk).metadata()).space, 'cmyk');
    assert.deepEqual(classes(await b64(cmyk)), ['blue', 'red']);

    const grey = await input().greyscale().png().toBuffer();
    const res = await b64(grey);
    assert.equal(res.status, 200);
    assert.deepEqual((res.body as DetectionResponse).image, { width: 200, height: 150 });
    assert.deepEqual(classes(res), [], 'no colour, so nothing for the shape detector');
  });

  test('BMP: 24-bit bottom-up and 32-bit top-down, with the visualization drawn on it', async () => {
    const w = 201;
    const h = 151;
    const rgb = drawPixels(w, h, [RED, BLUE]);
    for (const bmp of [
      encodeBmp(rgb, w, h, { bits: 24 }),
      encodeBmp(rgb, w, h, { bits: 32, topDown: true }),
    ]) {
      const res = await b64(bmp, { visualize_predictions: true });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      const body = res.body as DetectionResponse;
      assertShapes(body.predictions, [RED, BLUE]);
      const drawn = await sharp(Buffer.from(body.visualization ?? '', 'base64')).metadata();
      assert.deepEqual([drawn.format, drawn.width, drawn.height], ['jpeg', w, h]);
    }
    const body = await raw(encodeBmp(rgb, w, h, { bits: 24 }), 'image/bmp');
    assert.equal(body.status, 200, JSON.stringify(body.body));
  });

  test('HEIC', async (t) => {
    const im = requireImageMagick(t, 'HEIC');
    if (!im) return;
    const png = await drawImage(200, 150, [RED, BLUE]);
    const res = await b64(magick(im, ['png:-', '-quality', '95', 'heic:-'], png));
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual((res.body as DetectionResponse).image, { width: 200, height: 150 });
    // Lossy: the classes, and boxes within 3 px.
    const predictions = (res.body as DetectionResponse).predictions;
    assert.deepEqual(classes(res), ['blue', 'red']);
    for (const s of [RED, BLUE]) {
      const p = predictions.find((q) => q.class === s.colour)!;
      const want = expectedBox(s);
      for (const k of ['x', 'y', 'width', 'height'] as const)
        assert.ok(Math.abs(p[k] - want[k]) <= 3, `${s.colour}.${k}: ${p[k]} vs ${want[k]}`);
    }
  });

  test('after all that, the server still serves and Redis holds no request data', async () => {
    assert.deepEqual(classes(await b64(await drawImage(200, 150, [RED]))), ['red']);
    await new Promise((r) => setTimeout(r, 300));
    const left = (await keysOf(redis.client, stack.prefix)).filter((k) =>
      /:(img|px|cand|reply):/.test(k),
    );
    assert.deepEqual(left, []);
  });
});
