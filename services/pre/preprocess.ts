import { ErrorCode, PipelineError } from '../../shared/errors.js';
import { decodeError, openImage, type DecodeLimits } from '../../shared/image-decoder.js';
import { computeLetterbox, type Letterbox } from '../../shared/letterbox.js';
import type { PadPlacement } from '../../shared/model-layout.js';

/**
 * The sharp pipeline of the `pre` stage: an image decoded and oriented by
 * shared/image-decoder.ts and resized to fit the model input, as RGB uint8 pixels (HWC), the
 * form `infer` expects; `infer` places it in the letterbox, reorders channels and scales for
 * the model.
 */
export interface Preprocessed {
  /**
   * letterbox.resizedWidth × letterbox.resizedHeight × 3 bytes, RGB, row-major: the image
   * resized to fit the model input, without the padding (`infer` pads while it builds the
   * float32 tensor, services/infer/input-tensor.ts).
   */
  pixels: Buffer;
  letterbox: Letterbox;
}

export type { DecodeLimits };

/**
 * Decodes an image and resizes it (bilinearly) to fit `inputWidth` × `inputHeight` with its
 * aspect ratio kept; `letterbox` says where `infer` places it (centred or at the top-left, as
 * `placement` says). An image that already has the letterbox's size is not resampled.
 *
 * @throws PipelineError IMAGE_TOO_LARGE, UNSUPPORTED_IMAGE or IMAGE_DECODE_FAILED (openImage).
 */
export async function letterboxImage(
  bytes: Buffer,
  inputWidth: number,
  inputHeight: number,
  autoOrient: boolean,
  limits: DecodeLimits,
  placement: PadPlacement = 'centre',
): Promise<Preprocessed> {
  const source = await openImage(bytes, autoOrient, limits);
  const letterbox = computeLetterbox(
    source.width,
    source.height,
    inputWidth,
    inputHeight,
    placement,
  );
  const { resizedWidth: width, resizedHeight: height } = letterbox;
  // One pipeline: libvips shrinks on load where the format allows (JPEG), resizes and converts
  // to 8-bit sRGB without intermediate buffers.
  try {
    const resized =
      width === source.width && height === source.height
        ? source.image
        : source.image.resize(width, height, { fit: 'fill', kernel: 'linear' });
    const { data, info } = await resized
      .removeAlpha()
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    if (info.width !== width || info.height !== height || info.channels !== 3) {
      throw new PipelineError(
        ErrorCode.IMAGE_DECODE_FAILED,
        `unexpected decoded layout ${info.width}x${info.height}x${info.channels}`,
      );
    }
    return { pixels: data, letterbox };
  } catch (err) {
    if (err instanceof PipelineError) throw err;
    throw decodeError(err);
  }
}
