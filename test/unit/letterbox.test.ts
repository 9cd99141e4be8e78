import { test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { letterboxImage } from '../../services/pre/preprocess.js';
import { computeLetterbox, letterboxPadding, unletterboxBox } from '../../shared/letterbox.js';
import type { Box, Letterbox } from '../../shared/letterbox.js';

function assertPaddingConsistent(lb: Letterbox): void {
  const p = letterboxPadding(lb);
  assert.ok(p.top >= 0 && p.bottom >= 0 && p.left >= 0 && p.right >= 0, JSON.stringify(p));
  assert.equal(p.left + lb.resizedWidth + p.right, lb.inputWidth);
  assert.equal(p.top + lb.resizedHeight + p.bottom, lb.inputHeight);
}

/** Maps a box in source pixels to model-input pixels, as the model would see it. */
function toInput(box: Box, lb: Letterbox): Box {
  const sx = lb.resizedWidth / lb.srcWidth;
  const sy = lb.resizedHeight / lb.srcHeight;
  return {
    x1: box.x1 * sx + lb.padLeft,
    y1: box.y1 * sy + lb.padTop,
    x2: box.x2 * sx + lb.padLeft,
    y2: box.y2 * sy + lb.padTop,
  };
}

function assertBoxClose(actual: Box, expected: Box, tol: number): void {
  for (const k of ['x1', 'y1', 'x2', 'y2'] as const) {
    assert.ok(
      Math.abs(actual[k] - expected[k]) <= tol,
      `${k}: got ${actual[k]}, expected ${expected[k]} (±${tol})`,
    );
  }
}

void test('computeLetterbox: landscape 1280x720 into 640x640', () => {
  const lb = computeLetterbox(1280, 720, 640, 640);
  assert.deepEqual(lb, {
    srcWidth: 1280,
    srcHeight: 720,
    inputWidth: 640,
    inputHeight: 640,
    resizedWidth: 640,
    resizedHeight: 360,
    padLeft: 0,
    padTop: 140,
  });
  assert.deepEqual(letterboxPadding(lb), { top: 140, bottom: 140, left: 0, right: 0 });
});

void test('computeLetterbox: portrait 810x1080 into 640x640', () => {
  const lb = computeLetterbox(810, 1080, 640, 640);
  assert.equal(lb.resizedWidth, 480);
  assert.equal(lb.resizedHeight, 640);
  assert.equal(lb.padLeft, 80);
  assert.equal(lb.padTop, 0);
  assert.deepEqual(letterboxPadding(lb), { top: 0, bottom: 0, left: 80, right: 80 });
});

void test('computeLetterbox: square image fills the input without padding', () => {
  for (const size of [320, 640, 1000, 4096]) {
    const lb = computeLetterbox(size, size, 640, 640);
    assert.equal(lb.resizedWidth, 640, `size ${size}`);
    assert.equal(lb.resizedHeight, 640, `size ${size}`);
    assert.deepEqual(letterboxPadding(lb), { top: 0, bottom: 0, left: 0, right: 0 });
  }
});

void test('computeLetterbox: tiny images are scaled up', () => {
  const lb = computeLetterbox(50, 30, 320, 320);
  assert.equal(lb.resizedWidth, 320);
  assert.equal(lb.resizedHeight, 192);
  assert.equal(lb.padLeft, 0);
  assert.equal(lb.padTop, 64);
  assertPaddingConsistent(lb);

  const one = computeLetterbox(1, 1, 640, 640);
  assert.equal(one.resizedWidth, 640);
  assert.equal(one.resizedHeight, 640);

  // An extremely thin image still gets at least one row.
  const thin = computeLetterbox(10000, 1, 640, 640);
  assert.equal(thin.resizedWidth, 640);
  assert.equal(thin.resizedHeight, 1);
  assert.equal(thin.padTop, 319);
  assert.deepEqual(letterboxPadding(thin), { top: 319, bottom: 320, left: 0, right: 0 });
});

void test('computeLetterbox: odd padding puts the extra pixel on the right/bottom', () => {
  // 1000x999 -> 640x639: one pixel of vertical padding, all at the bottom.
  const lb = computeLetterbox(1000, 999, 640, 640);
  assert.equal(lb.resizedHeight, 639);
  assert.deepEqual(letterboxPadding(lb), { top: 0, bottom: 1, left: 0, right: 0 });

  // 999x1000 -> 639x640: the extra pixel goes to the right.
  const lb2 = computeLetterbox(999, 1000, 640, 640);
  assert.equal(lb2.resizedWidth, 639);
  assert.deepEqual(letterboxPadding(lb2), { top: 0, bottom: 0, left: 0, right: 1 });

  // 640x427 -> 640x427 exactly: 213 of padding, 106 on top and 107 below.
  const lb3 = computeLetterbox(640, 427, 640, 640);
  assert.equal(lb3.resizedHeight, 427);
  assert.deepEqual(letterboxPadding(lb3), { top: 106, bottom: 107, left: 0, right: 0 });
});

void test('letterboxPadding: paddings always sum to the input size', () => {
  const sizes: [number, number][] = [
    [1280, 720],
    [810, 1080],
    [1, 1],
    [7, 3],
    [3, 7],
    [1921, 1079],
    [333, 777],
    [640, 641],
    [100000, 3],
  ];
  for (const [w, h] of sizes) {
    for (const [iw, ih] of [
      [640, 640],
      [640, 480],
      [480, 640],
      [321, 257],
    ] as const) {
      const lb = computeLetterbox(w, h, iw, ih);
      assert.ok(lb.resizedWidth >= 1 && lb.resizedWidth <= iw, `${w}x${h}->${iw}x${ih}`);
      assert.ok(lb.resizedHeight >= 1 && lb.resizedHeight <= ih, `${w}x${h}->${iw}x${ih}`);
      // One side always fills the input.
      assert.ok(lb.resizedWidth === iw || lb.resizedHeight === ih, `${w}x${h}->${iw}x${ih}`);
      const p = letterboxPadding(lb);
      assert.ok(p.left <= p.right && p.right - p.left <= 1, `${w}x${h}->${iw}x${ih}`);
      assert.ok(p.top <= p.bottom && p.bottom - p.top <= 1, `${w}x${h}->${iw}x${ih}`);
      assertPaddingConsistent(lb);
    }
  }
});

void test('computeLetterbox: non-square model input', () => {
  // 1280x720 into 640 wide x 480 high: the width limits (scale 0.5).
  const lb = computeLetterbox(1280, 720, 640, 480);
  assert.equal(lb.resizedWidth, 640);
  assert.equal(lb.resizedHeight, 360);
  assert.equal(lb.padLeft, 0);
  assert.equal(lb.padTop, 60);
  assert.deepEqual(letterboxPadding(lb), { top: 60, bottom: 60, left: 0, right: 0 });

  // Portrait into the same input: the height limits (scale 480/1080).
  const lb2 = computeLetterbox(810, 1080, 640, 480);
  assert.equal(lb2.resizedWidth, 360);
  assert.equal(lb2.resizedHeight, 480);
  assert.equal(lb2.padLeft, 140);
  assert.equal(lb2.padTop, 0);

  // An image with the same aspect as the input needs no padding.
  const lb3 = computeLetterbox(1280, 960, 640, 480);
  assert.deepEqual(letterboxPadding(lb3), { top: 0, bottom: 0, left: 0, right: 0 });
});

void test('computeLetterbox: RangeError on zero or negative sizes', () => {
  assert.throws(() => computeLetterbox(0, 720, 640, 640), RangeError);
  assert.throws(() => computeLetterbox(1280, 0, 640, 640), RangeError);
  assert.throws(() => computeLetterbox(1280, 720, 0, 640), RangeError);
  assert.throws(() => computeLetterbox(1280, 720, 640, 0), RangeError);
  assert.throws(() => computeLetterbox(-5, 720, 640, 640), RangeError);
  assert.throws(() => computeLetterbox(Number.NaN, 720, 640, 640), RangeError);
});

void test('unletterboxBox: landscape box maps back to its original coordinates', () => {
  const lb = computeLetterbox(1280, 720, 640, 640);
  const original: Box = { x1: 100, y1: 50, x2: 400, y2: 700 };
  const inInput = toInput(original, lb);
  // Sanity check of the forward mapping against hand arithmetic.
  assertBoxClose(inInput, { x1: 50, y1: 165, x2: 200, y2: 490 }, 1e-9);
  assertBoxClose(unletterboxBox(inInput, lb), original, 0.5);
});

void test('unletterboxBox: portrait box maps back to its original coordinates', () => {
  const lb = computeLetterbox(810, 1080, 640, 640);
  const original: Box = { x1: 13.5, y1: 200, x2: 800, y2: 1079 };
  const inInput = toInput(original, lb);
  // x: 13.5 * 480/810 + 80 = 88; y: 200 * 640/1080.
  assert.ok(Math.abs(inInput.x1 - 88) < 1e-9);
  assertBoxClose(unletterboxBox(inInput, lb), original, 0.5);
});

void test('unletterboxBox: round trip holds for awkward sizes and non-square inputs', () => {
  const cases: [number, number, number, number][] = [
    [1000, 999, 640, 640],
    [333, 777, 640, 640],
    [1921, 1079, 640, 480],
    [50, 30, 320, 320],
    [4032, 3024, 416, 416],
  ];
  for (const [w, h, iw, ih] of cases) {
    const lb = computeLetterbox(w, h, iw, ih);
    const original: Box = { x1: w * 0.1, y1: h * 0.2, x2: w * 0.7, y2: h * 0.95 };
    assertBoxClose(unletterboxBox(toInput(original, lb), lb), original, 0.5);
  }
});

void test('unletterboxBox: a box covering the whole resized area maps to the full image', () => {
  const lb = computeLetterbox(1280, 720, 640, 640);
  const box = unletterboxBox({ x1: 0, y1: 140, x2: 640, y2: 500 }, lb);
  assertBoxClose(box, { x1: 0, y1: 0, x2: 1280, y2: 720 }, 1e-9);
});

void test('unletterboxBox: boxes extending into the padding are clipped to the image', () => {
  const lb = computeLetterbox(1280, 720, 640, 640); // padTop 140, content y in [140, 500]
  // Top edge in the top padding, bottom edge in the bottom padding.
  const box = unletterboxBox({ x1: 100, y1: 100, x2: 300, y2: 600 }, lb);
  assertBoxClose(box, { x1: 200, y1: 0, x2: 600, y2: 720 }, 1e-9);

  // Portrait: x padding of 80 on both sides.
  const lb2 = computeLetterbox(810, 1080, 640, 640);
  const box2 = unletterboxBox({ x1: -20, y1: -5, x2: 700, y2: 660 }, lb2);
  assertBoxClose(box2, { x1: 0, y1: 0, x2: 810, y2: 1080 }, 1e-9);

  // A box entirely inside the padding collapses to zero area.
  const box3 = unletterboxBox({ x1: 10, y1: 10, x2: 200, y2: 120 }, lb);
  assert.equal(box3.y1, 0);
  assert.equal(box3.y2, 0);
  const box4 = unletterboxBox({ x1: 10, y1: 520, x2: 200, y2: 630 }, lb);
  assert.equal(box4.y1, 720);
  assert.equal(box4.y2, 720);
});

void test('computeLetterbox: top-left placement (YOLOX) pads only the right and bottom', () => {
  // bus.jpg into YOLOX-Nano: r = 416 / 1080, 312 × 416 at the left, 104 columns of padding.
  const lb = computeLetterbox(810, 1080, 416, 416, 'top-left');
  assert.deepEqual(lb, {
    srcWidth: 810,
    srcHeight: 1080,
    inputWidth: 416,
    inputHeight: 416,
    resizedWidth: 312,
    resizedHeight: 416,
    padLeft: 0,
    padTop: 0,
  });
  assert.deepEqual(letterboxPadding(lb), { top: 0, bottom: 0, left: 0, right: 104 });
  const wide = computeLetterbox(1280, 720, 416, 416, 'top-left');
  assert.deepEqual(letterboxPadding(wide), { top: 0, bottom: 182, left: 0, right: 0 });
  // The same sizes as centred placement; only where the image sits differs.
  const centred = computeLetterbox(1280, 720, 416, 416, 'centre');
  assert.equal(centred.resizedHeight, wide.resizedHeight);
  assert.deepEqual([centred.padLeft, centred.padTop], [0, 91]);
  assert.deepEqual(computeLetterbox(1280, 720, 416, 416), centred);
});

void test('unletterboxBox: round trip with top-left placement', () => {
  const cases: [number, number, number, number][] = [
    [810, 1080, 416, 416],
    [1280, 720, 416, 416],
    [333, 777, 640, 480],
    [50, 30, 320, 320],
  ];
  for (const [w, h, iw, ih] of cases) {
    const lb = computeLetterbox(w, h, iw, ih, 'top-left');
    assertPaddingConsistent(lb);
    const original: Box = { x1: w * 0.1, y1: h * 0.2, x2: w * 0.7, y2: h * 0.95 };
    assertBoxClose(unletterboxBox(toInput(original, lb), lb), original, 0.5);
  }
  // A box in the right-hand padding of a portrait image is clipped to the right edge.
  const lb = computeLetterbox(810, 1080, 416, 416, 'top-left');
  assertBoxClose(
    unletterboxBox({ x1: 300, y1: 0, x2: 400, y2: 416 }, lb),
    { x1: (300 * 810) / 312, y1: 0, x2: 810, y2: 1080 },
    1e-9,
  );
});

void test('letterboxImage: the image resized to fit, without padding; the letterbox says where it goes', async () => {
  // A 40 × 80 red image into 64 × 64: resized to 32 × 64, placed at the left or centred.
  const red = await sharp({
    create: { width: 40, height: 80, channels: 3, background: { r: 255, g: 0, b: 0 } },
  })
    .png()
    .toBuffer();
  const limits = { maxPixels: 1e6, allowSvg: false };
  const topLeft = await letterboxImage(red, 64, 64, true, limits, 'top-left');
  assert.deepEqual([topLeft.letterbox.padLeft, topLeft.letterbox.padTop], [0, 0]);
  assert.deepEqual([topLeft.letterbox.resizedWidth, topLeft.letterbox.resizedHeight], [32, 64]);
  assert.equal(topLeft.pixels.length, 32 * 64 * 3);
  for (let i = 0; i < topLeft.pixels.length; i += 3)
    assert.deepEqual([...topLeft.pixels.subarray(i, i + 3)], [255, 0, 0], `pixel ${i / 3}`);
  // Centred (the default): 16 grey columns on each side, added by `infer`.
  const centred = await letterboxImage(red, 64, 64, true, limits);
  assert.deepEqual([centred.letterbox.padLeft, centred.letterbox.padTop], [16, 0]);
  assert.ok(centred.pixels.equals(topLeft.pixels));
});

void test('letterboxImage: an image that already fits is not resampled', async () => {
  // Random pixels: any resampling would change some of them.
  const raw = Buffer.from(Array.from({ length: 64 * 48 * 3 }, (_, i) => (i * 7919) % 256));
  const png = await sharp(raw, { raw: { width: 64, height: 48, channels: 3 } })
    .png()
    .toBuffer();
  const out = await letterboxImage(png, 64, 64, true, { maxPixels: 1e6, allowSvg: false });
  assert.deepEqual([out.letterbox.resizedWidth, out.letterbox.resizedHeight], [64, 48]);
  assert.equal(out.letterbox.padTop, 8);
  assert.ok(out.pixels.equals(raw));
});
