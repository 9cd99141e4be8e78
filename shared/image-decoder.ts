import sharp, { type Metadata, type Sharp } from 'sharp';
import { decodeBmp, isBmp, readBmpHeader } from './bmp.js';
import { ErrorCode, PipelineError } from './errors.js';
import { decodeHeic } from './heic.js';

/**
 * The one place an image's bytes become pixels, for `pre` (letterboxing for the model) and `post`
 * (drawing the boxes), so both see the same image: the sharp adapter for decoding, with the
 * formats and colour spaces libvips alone would get wrong or cannot read.
 *
 * - Every format sharp reads (JPEG, PNG, WebP, GIF, TIFF, AVIF, SVG when allowed), and BMP
 *   (shared/bmp.ts) and HEIC (shared/heic.ts), which sharp's prebuilt libvips lacks.
 * - CMYK without an embedded colour profile is converted the way libjpeg's users (OpenCV, which
 *   Roboflow decodes with, and Pillow) convert it: R = (255 − C)(255 − K)/255, and likewise G from
 *   M and B from Y. libvips would use its built-in CMYK profile instead, which shifts colours by
 *   9–14/255 on average for files made by the naive RGB→CMYK conversion that Pillow and
 *   ImageMagick use, enough to move boxes by tens of pixels. CMYK with a profile goes through
 *   the profile (libvips), as colour management intends.
 * - The size is read from the header and checked against the pixel limit before any decoding,
 *   whatever the size (sharp's own 268-megapixel limit does not apply to the header read).
 */

/** What may be decoded. */
export interface DecodeLimits {
  /** Largest width × height accepted, checked from the header before decoding. */
  maxPixels: number;
  /** SVG can reference other files and URLs, so it is refused unless allowed. */
  allowSvg: boolean;
}

/** An image ready for one more sharp pipeline (resize, composite...), and its oriented size. */
export interface OpenedImage {
  /** The decoded image: 3 or 4 bands (alpha is the caller's to drop), sRGB or sharp's input. */
  image: Sharp;
  /** Width and height in pixels once oriented: the size boxes are reported in. */
  width: number;
  height: number;
}

// EXIF orientations 5–8 rotate by 90° or 270°, so width and height swap.
const SWAPS_AXES = new Set([5, 6, 7, 8]);

/**
 * Opens an image: reads its header, checks it, and returns a sharp pipeline that yields its
 * pixels, oriented by its EXIF orientation when `autoOrient` (HEIC's own rotation is always
 * applied). Animated and multi-page images: the first frame.
 *
 * @throws PipelineError IMAGE_TOO_LARGE over `limits.maxPixels`; UNSUPPORTED_IMAGE for SVG when
 *   not allowed and for formats nothing here decodes; IMAGE_DECODE_FAILED for bytes that are not
 *   a readable image.
 */
export async function openImage(
  bytes: Buffer,
  autoOrient: boolean,
  limits: DecodeLimits,
): Promise<OpenedImage> {
  try {
    if (isBmp(bytes)) {
      const header = readBmpHeader(bytes);
      checkSize(header.width, header.height, limits);
      const { width, height, pixels } = decodeBmp(bytes);
      return { image: sharp(pixels, { raw: { width, height, channels: 3 } }), width, height };
    }
    const meta = await readHeader(bytes, limits);
    if (meta.format === 'svg' && !limits.allowSvg) {
      throw new PipelineError(
        ErrorCode.UNSUPPORTED_IMAGE,
        'SVG images are not accepted here (they can reference other files); send a raster image',
      );
    }
    if (!meta.width || !meta.height) {
      throw new PipelineError(ErrorCode.IMAGE_DECODE_FAILED, 'the image has no readable size');
    }
    checkSize(meta.width, meta.height, limits);
    if (meta.format === 'heif' && meta.compression === 'hevc') {
      const { width, height, pixels } = await decodeHeic(bytes);
      return { image: sharp(pixels, { raw: { width, height, channels: 4 } }), width, height };
    }
    let image = sharp(bytes, { failOn: 'error', limitInputPixels: limits.maxPixels });
    if (autoOrient) image = image.rotate();
    if (meta.space === 'cmyk' && !meta.hasProfile) {
      // The CMYK bands as stored (libvips undoes Adobe's inversion, as libjpeg's users do).
      const { data, info } = await image
        .pipelineColourspace('cmyk')
        .toColourspace('cmyk')
        .raw({ depth: 'uchar' })
        .toBuffer({ resolveWithObject: true });
      const { width, height } = info;
      const rgb = cmykToRgb(data, info.channels);
      return { image: sharp(rgb, { raw: { width, height, channels: 3 } }), width, height };
    }
    const swap = autoOrient && SWAPS_AXES.has(meta.orientation ?? 1);
    return {
      image,
      width: swap ? meta.height : meta.width,
      height: swap ? meta.width : meta.height,
    };
  } catch (err) {
    throw err instanceof PipelineError ? err : decodeError(err);
  }
}

/**
 * RGB from CMYK as libjpeg's users convert it without a colour profile (OpenCV's
 * `icvCvt_CMYK2BGR_8u_C4C3R`, Pillow's `cmyk2rgb`): R = (255 − C)(255 − K)/255, G from M, B from
 * Y, rounded.
 *
 * @param cmyk - pixels of `channels` bytes each, C, M, Y, K first (ink amounts: 0 is no ink);
 *   further bands (alpha) are dropped.
 * @returns 3 bytes a pixel, RGB.
 */
export function cmykToRgb(cmyk: Buffer, channels = 4): Buffer {
  const count = Math.floor(cmyk.length / channels);
  const rgb = Buffer.allocUnsafe(count * 3);
  for (let i = 0, o = 0; o < rgb.length; i += channels, o += 3) {
    const white = 255 - cmyk[i + 3]!;
    // (a·b + 127) / 255, rounded, without a division per band.
    rgb[o] = div255((255 - cmyk[i]!) * white);
    rgb[o + 1] = div255((255 - cmyk[i + 1]!) * white);
    rgb[o + 2] = div255((255 - cmyk[i + 2]!) * white);
  }
  return rgb;
}

/** round(x / 255) for 0 ≤ x ≤ 255², exact (Blinn's integer trick). */
function div255(x: number): number {
  const t = x + 128;
  return (t + (t >> 8)) >> 8;
}

/**
 * The header only: no pixel is decoded, and sharp's own pixel limit does not apply. A header
 * libvips refuses but that declares a size over the limit (libjpeg stops at 65500 pixels a
 * side) is IMAGE_TOO_LARGE like any other.
 */
async function readHeader(bytes: Buffer, limits: DecodeLimits): Promise<Metadata> {
  try {
    return await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch (err) {
    const size = declaredSize(bytes);
    if (size) checkSize(size[0], size[1], limits);
    throw decodeError(err);
  }
}

/**
 * Width and height as a JPEG's start of frame, a PNG's IHDR or a GIF's screen descriptor
 * declares them, read without any library; undefined for other bytes.
 */
export function declaredSize(bytes: Buffer): [number, number] | undefined {
  if (
    bytes.length >= 24 &&
    bytes.readUInt32BE(0) === 0x89504e47 &&
    bytes.toString('latin1', 12, 16) === 'IHDR'
  )
    return [bytes.readUInt32BE(16), bytes.readUInt32BE(20)];
  if (bytes.length >= 10 && bytes.toString('latin1', 0, 4) === 'GIF8')
    return [bytes.readUInt16LE(6), bytes.readUInt16LE(8)];
  if (bytes.length < 4 || bytes[0] !== 0xff || bytes[1] !== 0xd8) return undefined;
  for (let pos = 2; pos + 9 <= bytes.length;) {
    if (bytes[pos] !== 0xff) return undefined;
    const marker = bytes[pos + 1]!;
    // Fill bytes, and markers without a length.
    if (marker === 0xff) {
      pos++;
      continue;
    }
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd8)) {
      pos += 2;
      continue;
    }
    // SOF0–SOF15, except DHT (C4), JPG (C8) and DAC (CC): precision, height, width.
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc)
      return [bytes.readUInt16BE(pos + 7), bytes.readUInt16BE(pos + 5)];
    pos += 2 + bytes.readUInt16BE(pos + 2);
  }
  return undefined;
}

/** A decompression bomb declares a huge size in a small file: refuse it before decoding. */
function checkSize(width: number, height: number, limits: DecodeLimits): void {
  if (width * height > limits.maxPixels) {
    throw new PipelineError(
      ErrorCode.IMAGE_TOO_LARGE,
      `the image is ${width}x${height} pixels, more than the ${limits.maxPixels} allowed`,
    );
  }
}

/**
 * IMAGE_DECODE_FAILED for a decoder's error, with the first line of its message only (libvips
 * writes several lines of its internals).
 *
 * @param what what failed, before the reason
 * @defaultValue what 'the image could not be decoded'
 */
export function decodeError(err: unknown, what = 'the image could not be decoded'): PipelineError {
  const reason = (err instanceof Error ? err.message : String(err)).split('\n')[0]!.trim();
  return new PipelineError(ErrorCode.IMAGE_DECODE_FAILED, `${what}: ${reason}`);
}
