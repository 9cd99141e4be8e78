import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test, type TestContext } from 'node:test';
import sharp from 'sharp';
import { PipelineError } from '../../shared/errors.js';
import { cmykToRgb, openImage, type DecodeLimits } from '../../shared/image-decoder.js';
import {
  encodeBmp,
  encodeRle8Bmp,
  heifDeclaring,
  jpegDeclaring,
  pngDeclaring,
} from '../helpers/image-files.js';
import { drawPixels, type Shape } from '../helpers/images.js';
import { cmykJpegs, magick, requireImageMagick } from '../helpers/imagemagick.js';
import { requireShared, sharedPath } from '../helpers/shared-data.js';

/**
 * shared/image-decoder.ts with real sharp: every format decodes to the pixels it holds, CMYK
 * without a profile as libjpeg's users (Roboflow's OpenCV) see it, and every image over the
 * pixel limit is IMAGE_TOO_LARGE from its header, whatever its size.
 */
const LIMITS: DecodeLimits = { maxPixels: 50_000_000, allowSvg: false };
const SHAPES: Shape[] = [
  { colour: 'red', x: 5, y: 7, w: 30, h: 20 },
  { colour: 'blue', x: 40, y: 30, w: 25, h: 33 },
];

/** Full-size RGB of an image as openImage decodes it. */
async function decode(bytes: Buffer, limits = LIMITS): Promise<Buffer> {
  const { image } = await openImage(bytes, true, limits);
  return image.removeAlpha().toColourspace('srgb').raw({ depth: 'uchar' }).toBuffer();
}

/** Mean absolute difference per byte, in 1/255 units. */
function meanError(a: Buffer, b: Buffer): number {
  assert.equal(a.length, b.length, 'same size');
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += Math.abs(a[i]! - b[i]!);
  return sum / a.length;
}

async function errorOf(bytes: Buffer, limits = LIMITS): Promise<PipelineError> {
  try {
    await decode(bytes, limits);
  } catch (err) {
    assert.ok(err instanceof PipelineError, String(err));
    return err;
  }
  assert.fail('decoded');
}

describe('BMP', () => {
  // Odd sizes, so rows need padding.
  const width = 71;
  const height = 65;
  const rgb = drawPixels(width, height, SHAPES);
  for (let i = 0; i < rgb.length; i++) rgb[i] = (rgb[i]! + i) & 0xff; // every byte differs

  const variants: Array<[string, Parameters<typeof encodeBmp>[3]]> = [
    ['24-bit, bottom-up', { bits: 24 }],
    ['24-bit, top-down', { bits: 24, topDown: true }],
    ['32-bit, bottom-up', { bits: 32 }],
    ['32-bit, top-down', { bits: 32, topDown: true }],
    ['32-bit v5 header with an alpha mask (alpha dropped)', { bits: 32, header: 'v5', alpha: 7 }],
    ['32-bit v5 header, top-down', { bits: 32, header: 'v5', topDown: true }],
  ];
  for (const [name, opts] of variants) {
    test(`${name}: the exact pixels`, async () => {
      const bmp = encodeBmp(rgb, width, height, opts);
      const { width: w, height: h } = await openImage(bmp, true, LIMITS);
      assert.deepEqual([w, h], [width, height]);
      assert.equal(meanError(await decode(bmp), rgb), 0);
    });
  }

  test('8-bit RLE with a palette', async () => {
    const palette = [
      [0, 0, 0],
      [255, 0, 0],
      [0, 0, 255],
    ] as const;
    const bmp = encodeRle8Bmp(
      palette,
      [
        [[5, 1]],
        [
          [2, 2],
          [3, 1],
        ],
      ],
      5,
    );
    const px = await decode(bmp);
    assert.deepEqual(
      [...px],
      [...[1, 1, 1, 1, 1], ...[2, 2, 1, 1, 1]].flatMap((i) => [...palette[i]!]),
    );
  });

  test('ImageMagick BMPs (palette, RLE, 16-bit, OS/2) decode as ImageMagick decodes them', async (t) => {
    const im = requireImageMagick(t);
    if (!im) return;
    const png = await sharp(rgb, { raw: { width, height, channels: 3 } })
      .png()
      .toBuffer();
    for (const args of [
      ['BMP3:-'],
      ['-colors', '200', '-type', 'Palette', 'BMP3:-'],
      ['-colors', '200', '-type', 'Palette', '-compress', 'RLE', 'BMP3:-'],
      ['-colors', '12', '-type', 'Palette', '-compress', 'None', 'BMP3:-'],
      ['-colors', '2', '-type', 'Palette', 'BMP3:-'],
      ['-define', 'bmp:subtype=RGB565', 'BMP:-'],
      ['BMP2:-'],
    ]) {
      const bmp = magick(im, ['png:-', ...args], png);
      const want = magick(im, ['bmp:-', '-depth', '8', 'rgb:-'], bmp);
      // RGB565: ImageMagick and this decoder scale 5 and 6 bits to 8 a little differently.
      const tolerance = args.includes('bmp:subtype=RGB565') ? 0.5 : 0;
      assert.ok(meanError(await decode(bmp), want) <= tolerance, args.join(' '));
    }
  });

  test('malformed, unsupported and oversized BMPs are refused with their codes', async () => {
    const bmp = encodeBmp(rgb, width, height, { bits: 24 });
    assert.equal((await errorOf(bmp.subarray(0, 2000))).code, 'IMAGE_DECODE_FAILED');
    const wrapped = Buffer.from(bmp);
    wrapped.writeUInt32LE(4, 30); // BI_JPEG
    const unsupported = await errorOf(wrapped);
    assert.equal(unsupported.code, 'UNSUPPORTED_IMAGE');
    assert.match(unsupported.message, /JPEG/);
    const huge = Buffer.from(bmp);
    huge.writeInt32LE(100_000, 18);
    huge.writeInt32LE(-100_000, 22);
    const big = await errorOf(huge);
    assert.equal(big.code, 'IMAGE_TOO_LARGE');
    assert.match(big.message, /100000x100000/);
  });
});

describe('pixel limit', () => {
  test('every image over the limit is IMAGE_TOO_LARGE from its header, whatever its size', async () => {
    const jpeg = await sharp(drawPixels(64, 48, SHAPES), {
      raw: { width: 64, height: 48, channels: 3 },
    })
      .jpeg()
      .toBuffer();
    const cases: Array<[string, Buffer]> = [
      ['PNG 10000x10000 (100 megapixels)', pngDeclaring(10_000, 10_000)],
      ['PNG 16384x16384 (over sharp’s 268-megapixel limit)', pngDeclaring(16_384, 16_384)],
      ['PNG 30000x30000', pngDeclaring(30_000, 30_000)],
      ['PNG 1000000x1000000', pngDeclaring(1_000_000, 1_000_000)],
      ['JPEG 30000x30000', jpegDeclaring(jpeg, 30_000, 30_000)],
      ['JPEG 65535x65535', jpegDeclaring(jpeg, 65_535, 65_535)],
      ['JPEG 7100x7100 (just over)', jpegDeclaring(jpeg, 7100, 7100)],
    ];
    for (const [name, bytes] of cases) {
      const err = await errorOf(bytes);
      assert.equal(err.code, 'IMAGE_TOO_LARGE', `${name}: ${err.message}`);
      assert.match(err.message, /more than the 50000000 allowed/);
    }
  });

  test('an image at the limit decodes', async () => {
    const png = await sharp(drawPixels(100, 50, SHAPES), {
      raw: { width: 100, height: 50, channels: 3 },
    })
      .png()
      .toBuffer();
    assert.equal((await decode(png, { maxPixels: 5000, allowSvg: false })).length, 15_000);
    assert.equal(
      (await errorOf(png, { maxPixels: 4999, allowSvg: false })).code,
      'IMAGE_TOO_LARGE',
    );
  });
});

describe('HEIC', () => {
  test('a HEIC photo decodes to its pixels; one that declares too many is refused first', async (t) => {
    const im = requireImageMagick(t, 'HEIC');
    if (!im) return;
    const rgb = drawPixels(120, 90, SHAPES);
    const png = await sharp(rgb, { raw: { width: 120, height: 90, channels: 3 } })
      .png()
      .toBuffer();
    const heic = magick(im, ['png:-', '-quality', '95', 'heic:-'], png);
    const meta = await sharp(heic).metadata();
    assert.deepEqual([meta.format, meta.compression], ['heif', 'hevc'], 'an HEVC-coded HEIF');
    const { width, height } = await openImage(heic, true, LIMITS);
    assert.deepEqual([width, height], [120, 90]);
    const error = meanError(await decode(heic), rgb);
    t.diagnostic(`HEIC mean colour error ${error.toFixed(2)}/255`);
    assert.ok(error < 4, `lossy, but the same picture: ${error}`);
    const err = await errorOf(heifDeclaring(heic, 30_000, 30_000));
    assert.equal(err.code, 'IMAGE_TOO_LARGE', err.message);
  });
});

describe('CMYK', () => {
  test('cmykToRgb is R = (255 − C)(255 − K)/255 rounded, for every C and K', () => {
    const cmyk = Buffer.alloc(256 * 256 * 4);
    for (let c = 0; c < 256; c++) {
      for (let k = 0; k < 256; k++) {
        const i = (c * 256 + k) * 4;
        cmyk.set([c, 255 - c, c >> 1, k], i);
      }
    }
    const rgb = cmykToRgb(cmyk);
    for (let c = 0; c < 256; c++) {
      for (let k = 0; k < 256; k++) {
        const o = (c * 256 + k) * 3;
        const f = (x: number) => Math.round(((255 - x) * (255 - k)) / 255);
        assert.deepEqual([rgb[o], rgb[o + 1], rgb[o + 2]], [f(c), f(255 - c), f(c >> 1)]);
      }
    }
    // A fifth band (alpha) is dropped.
    assert.deepEqual([...cmykToRgb(Buffer.from([0, 255, 255, 0, 9]), 5)], [255, 0, 0]);
  });

  async function checkColours(
    t: TestContext,
    im: string,
    rgb: Buffer,
    width: number,
    height: number,
    bound: number,
  ) {
    for (const [style, jpeg] of cmykJpegs(im, rgb, width, height)) {
      const meta = await sharp(jpeg).metadata();
      assert.deepEqual([meta.space, meta.channels, meta.hasProfile], ['cmyk', 4, false], style);
      const ours = meanError(await decode(jpeg), rgb);
      // What libvips alone makes of it: its built-in CMYK profile.
      const libvips = meanError(await sharp(jpeg).toColourspace('srgb').raw().toBuffer(), rgb);
      t.diagnostic(
        `${style}: mean colour error ${ours.toFixed(2)}/255 (libvips' profile: ${libvips.toFixed(2)})`,
      );
      assert.ok(ours < bound, `${style}: ${ours}`);
      assert.ok(
        libvips > 5,
        `${style}: the profile conversion differs (${libvips}), so this test can fail`,
      );
    }
  }

  test('CMYK JPEGs without a profile decode as libjpeg’s users see them: drawn shapes', async (t) => {
    const im = requireImageMagick(t);
    if (!im) return;
    const width = 160;
    const height = 120;
    const rgb = drawPixels(width, height, [
      ...SHAPES,
      { colour: 'green', x: 100, y: 10, w: 50, h: 90 },
    ]);
    await checkColours(t, im, rgb, width, height, 1.5);
  });

  test('CMYK JPEGs without a profile decode as libjpeg’s users see them: bus.jpg', async (t) => {
    if (!requireShared(t, 'data/samples/bus.jpg')) return;
    const im = requireImageMagick(t);
    if (!im) return;
    const { data, info } = await sharp(readFileSync(sharedPath('data/samples/bus.jpg')))
      .raw()
      .toBuffer({ resolveWithObject: true });
    await checkColours(t, im, data, info.width, info.height, 1);
  });

  test('CMYK with an embedded profile goes through the profile', async () => {
    const rgb = drawPixels(80, 60, SHAPES);
    const jpeg = await sharp(rgb, { raw: { width: 80, height: 60, channels: 3 } })
      .toColourspace('cmyk')
      .keepIccProfile()
      .jpeg({ quality: 95 })
      .toBuffer();
    const meta = await sharp(jpeg).metadata();
    assert.deepEqual([meta.space, meta.hasProfile], ['cmyk', true]);
    const viaProfile = await sharp(jpeg).toColourspace('srgb').raw().toBuffer();
    assert.equal(meanError(await decode(jpeg), viaProfile), 0);
  });
});
