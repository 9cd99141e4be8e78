import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import sharp from 'sharp';
import {
  parseJsonRequest,
  parseQueryRequest,
  resolveConfidence,
} from '../../services/gateway/request.js';
import { letterboxImage } from '../../services/pre/preprocess.js';
import { ErrorCode, PipelineError } from '../../shared/errors.js';
import { computeLetterbox, letterboxPadding, unletterboxBox } from '../../shared/letterbox.js';

/**
 * Property-based tests over what faces untrusted input: the request parser and the image
 * decoder must either succeed with a well-formed result or fail with a PipelineError of an
 * input code, whatever they are given.
 */
const limits = { maxPixels: 4_000_000, allowSvg: false };
const inputErrors = new Set<string>([
  ErrorCode.IMAGE_DECODE_FAILED,
  ErrorCode.IMAGE_TOO_LARGE,
  ErrorCode.UNSUPPORTED_IMAGE,
]);

function expectInputError(err: unknown, codes: ReadonlySet<string>): void {
  assert.ok(err instanceof PipelineError, `not a PipelineError: ${String(err)}`);
  assert.ok(codes.has(err.code), `unexpected code ${err.code}`);
  assert.ok(err.unrecoverable, 'input errors are not retried');
}

const fieldValue = fc.oneof(
  fc.jsonValue(),
  fc.double(),
  fc.constant(null),
  fc.string(),
  fc.array(fc.string(), { maxLength: 3 }),
);
const imageValue = fc.oneof(
  fc.jsonValue(),
  fc.record({
    type: fc.constantFrom('base64', 'url', 'numpy', ''),
    value: fc.oneof(fc.string(), fc.base64String(), fc.webUrl(), fc.integer()),
  }),
  fc.array(
    fc.record({
      type: fc.constantFrom('base64', 'url'),
      value: fc.oneof(fc.base64String({ minLength: 4 }), fc.webUrl()),
    }),
    { maxLength: 6 },
  ),
);
const body = fc.oneof(
  fc.jsonValue(),
  fc.record(
    {
      image: imageValue,
      model_id: fieldValue,
      confidence: fieldValue,
      iou_threshold: fieldValue,
      class_agnostic_nms: fieldValue,
      class_filter: fieldValue,
      max_detections: fieldValue,
      max_candidates: fieldValue,
      disable_preproc_auto_orient: fieldValue,
      timeout_ms: fieldValue,
      api_key: fieldValue,
    },
    { requiredKeys: ['image'] },
  ),
);

void test('parseJsonRequest: a valid request or INVALID_REQUEST, for any JSON', () => {
  fc.assert(
    fc.property(body, (b) => {
      try {
        const parsed = parseJsonRequest(b, 4);
        assert.ok(parsed.images.length >= 1 && parsed.images.length <= 4);
        const p = parsed.params;
        const confidence = resolveConfidence(p.confidence, undefined);
        assert.ok(confidence >= 0 && confidence <= 1);
        assert.ok(p.iouThreshold >= 0 && p.iouThreshold <= 1);
        assert.ok(Number.isInteger(p.maxDetections) && p.maxDetections >= 1);
        for (const img of parsed.images) {
          if (img.kind === 'bytes') assert.ok(img.bytes.byteLength > 0);
          else assert.match(img.url, /^https?:\/\//);
        }
      } catch (err) {
        expectInputError(err, new Set([ErrorCode.INVALID_REQUEST]));
      }
    }),
    { numRuns: 2000 },
  );
});

void test('parseQueryRequest: a valid request or INVALID_REQUEST, for any query string', () => {
  fc.assert(
    fc.property(
      fc.dictionary(
        fc.constantFrom(
          'confidence',
          'iou_threshold',
          'class_filter',
          'max_detections',
          'model_id',
          'x',
        ),
        fc.oneof(fc.string(), fc.array(fc.string(), { maxLength: 3 })),
      ),
      fc.uint8Array({ maxLength: 16 }),
      (query, bytes) => {
        try {
          const parsed = parseQueryRequest(query, Buffer.from(bytes));
          assert.equal(parsed.images.length, 1);
          const confidence = resolveConfidence(parsed.params.confidence, undefined);
          assert.ok(confidence >= 0 && confidence <= 1);
        } catch (err) {
          expectInputError(err, new Set([ErrorCode.INVALID_REQUEST]));
        }
      },
    ),
    { numRuns: 1000 },
  );
});

void test('letterboxImage: random bytes are refused as input errors', async () => {
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ minLength: 0, maxLength: 2048 }), async (bytes) => {
      try {
        const out = await letterboxImage(Buffer.from(bytes), 64, 64, true, limits);
        assert.equal(out.pixels.length, 64 * 64 * 3);
      } catch (err) {
        expectInputError(err, inputErrors);
      }
    }),
    { numRuns: 300 },
  );
});

void test('letterboxImage: damaged real images decode or fail as input errors, never worse', async () => {
  const originals = await Promise.all(
    (['png', 'jpeg', 'webp', 'gif', 'tiff'] as const).map((format) =>
      sharp({
        create: { width: 48, height: 32, channels: 3, background: { r: 200, g: 30, b: 60 } },
      })
        .toFormat(format)
        .toBuffer(),
    ),
  );
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(...originals),
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), {
        minLength: 1,
        maxLength: 8,
      }),
      fc.option(fc.nat(), { nil: undefined }),
      async (original, flips, cut) => {
        const damaged = Buffer.from(original);
        for (const [at, value] of flips) damaged[at % damaged.length] = value;
        const bytes = cut === undefined ? damaged : damaged.subarray(0, cut % damaged.length);
        try {
          const out = await letterboxImage(bytes, 40, 40, true, limits);
          const { resizedWidth, resizedHeight } = out.letterbox;
          assert.equal(out.pixels.length, resizedWidth * resizedHeight * 3);
          assert.ok(out.letterbox.srcWidth > 0 && out.letterbox.srcHeight > 0);
        } catch (err) {
          expectInputError(err, inputErrors);
        }
      },
    ),
    { numRuns: 400 },
  );
});

void test('letterbox geometry: padding fits exactly and boxes map back', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 8000 }),
      fc.integer({ min: 1, max: 8000 }),
      fc.integer({ min: 16, max: 1280 }),
      fc.integer({ min: 16, max: 1280 }),
      fc.double({ min: 0, max: 1, noNaN: true }),
      fc.double({ min: 0, max: 1, noNaN: true }),
      (w, h, iw, ih, fx, fy) => {
        const lb = computeLetterbox(w, h, iw, ih);
        const pad = letterboxPadding(lb);
        for (const v of Object.values(pad)) assert.ok(v >= 0);
        assert.equal(pad.left + lb.resizedWidth + pad.right, iw);
        assert.equal(pad.top + lb.resizedHeight + pad.bottom, ih);
        // A point of the source mapped into the input and back lands where it started.
        const x = fx * w;
        const y = fy * h;
        const inX = lb.padLeft + (x * lb.resizedWidth) / w;
        const inY = lb.padTop + (y * lb.resizedHeight) / h;
        const back = unletterboxBox({ x1: inX, y1: inY, x2: inX, y2: inY }, lb);
        assert.ok(Math.abs(back.x1 - x) < 1e-6 * Math.max(1, w), `${back.x1} vs ${x}`);
        assert.ok(Math.abs(back.y1 - y) < 1e-6 * Math.max(1, h), `${back.y1} vs ${y}`);
      },
    ),
    { numRuns: 3000 },
  );
});
