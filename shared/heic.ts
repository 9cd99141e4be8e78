import { ErrorCode, PipelineError } from './errors.js';

/**
 * The heic-decode adapter: HEIC photos (HEIF with HEVC-coded images, what phones take), which
 * sharp's prebuilt libvips cannot decode (its libheif has no HEVC decoder). heic-decode runs
 * libheif with libde265 compiled to WebAssembly (libheif-js, LGPL-3.0): about 40 ms for a
 * 0.9-megapixel photo here. It is loaded on the first HEIC image, not at start.
 */

/** A decoded HEIC image: width × height × 4 bytes, RGBA. */
export interface HeicImage {
  width: number;
  height: number;
  pixels: Buffer;
}

/**
 * Decodes the primary image of a HEIC file, with the file's rotation and mirroring (`irot`,
 * `imir`) applied: in HEIF these are part of the image, not optional metadata like EXIF
 * orientation. Check the size against the pixel limit from the header before calling.
 *
 * @throws PipelineError IMAGE_DECODE_FAILED when the file cannot be decoded.
 */
export async function decodeHeic(bytes: Buffer): Promise<HeicImage> {
  try {
    const { default: decode } = await import('heic-decode');
    const { width, height, data } = await decode({ buffer: bytes });
    return { width, height, pixels: Buffer.from(data.buffer, data.byteOffset, data.byteLength) };
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new PipelineError(
      ErrorCode.IMAGE_DECODE_FAILED,
      `the HEIC image could not be decoded: ${reason}`,
    );
  }
}
