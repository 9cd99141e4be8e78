import sharp, { type Metadata } from 'sharp';
import { ErrorCode, PipelineError } from '../../shared/errors.js';
import { computeLetterbox, letterboxPadding, type Letterbox } from '../../shared/letterbox.js';
import type { PadPlacement } from '../../shared/model-layout.js';

/**
 * The sharp adapter of the `pre` stage: decode an image, apply its EXIF orientation, and
 * letterbox it to the model input (centred or at the top-left, as the model wants) as RGB uint8
 * pixels (HWC), the form `infer` expects; `infer` reorders channels and scales for the model.
 */
export interface Preprocessed {
  /** inputWidth × inputHeight × 3 bytes, RGB, row-major. */
  pixels: Buffer;
  letterbox: Letterbox;
}

const PAD = { r: 114, g: 114, b: 114 } as const;

// EXIF orientations 5–8 rotate by 90° or 270°, so width and height swap.
const SWAPS_AXES = new Set([5, 6, 7, 8]);

export interface DecodeLimits {
  /** Largest width × height accepted, checked from the header before decoding. */
  maxPixels: number;
  /** SVG can reference other files and URLs, so it is refused unless allowed. */
  allowSvg: boolean;
}

export async function letterboxImage(
  bytes: Buffer,
  inputWidth: number,
  inputHeight: number,
  autoOrient: boolean,
  limits: DecodeLimits,
  placement: PadPlacement = 'centre',
): Promise<Preprocessed> {
  let meta: Metadata;
  try {
    // Reads the header only: sizes and format are known before any pixel is decoded.
    meta = await sharp(bytes).metadata();
  } catch (err) {
    throw decodeError(err);
  }
  if (meta.format === 'svg' && !limits.allowSvg) {
    throw new PipelineError(
      ErrorCode.UNSUPPORTED_IMAGE,
      'SVG images are not accepted here (they can reference other files); send a raster image',
    );
  }
  if (!meta.width || !meta.height) {
    throw new PipelineError(ErrorCode.IMAGE_DECODE_FAILED, 'the image has no readable size');
  }
  // A decompression bomb declares a huge size in a small file: refuse it before decoding.
  if (meta.width * meta.height > limits.maxPixels) {
    throw new PipelineError(
      ErrorCode.IMAGE_TOO_LARGE,
      `the image is ${meta.width}x${meta.height} pixels, more than the ${limits.maxPixels} allowed`,
    );
  }
  const swap = autoOrient && SWAPS_AXES.has(meta.orientation ?? 1);
  const srcWidth = swap ? meta.height : meta.width;
  const srcHeight = swap ? meta.width : meta.height;
  const letterbox = computeLetterbox(srcWidth, srcHeight, inputWidth, inputHeight, placement);

  // One pipeline: libvips orients, shrinks on load where the format allows (JPEG), resizes,
  // pads and converts to 8-bit sRGB without intermediate buffers.
  // Animated and multi-page images: the first frame (sharp's default).
  let image = sharp(bytes, { failOn: 'error', limitInputPixels: limits.maxPixels });
  if (autoOrient) image = image.rotate();
  try {
    const { data, info } = await image
      .resize(letterbox.resizedWidth, letterbox.resizedHeight, { fit: 'fill', kernel: 'linear' })
      .removeAlpha()
      .extend({ ...letterboxPadding(letterbox), background: PAD })
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    if (info.width !== inputWidth || info.height !== inputHeight || info.channels !== 3) {
      throw new PipelineError(
        ErrorCode.IMAGE_DECODE_FAILED,
        `unexpected decoded layout ${info.width}x${info.height}x${info.channels}`,
      );
    }
    return { pixels: data, letterbox };
  } catch (err) {
    throw err instanceof PipelineError ? err : decodeError(err);
  }
}

function decodeError(err: unknown): PipelineError {
  const reason = err instanceof Error ? err.message : String(err);
  return new PipelineError(
    ErrorCode.IMAGE_DECODE_FAILED,
    `the image could not be decoded: ${reason}`,
  );
}
