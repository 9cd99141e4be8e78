import { ErrorCode, PipelineError } from '../../shared/errors.js';
import { decodeError, openImage, type DecodeLimits } from '../../shared/image-decoder.js';
import { computeLetterbox, letterboxPadding, type Letterbox } from '../../shared/letterbox.js';
import type { PadPlacement } from '../../shared/model-layout.js';

/**
 * The sharp pipeline of the `pre` stage: an image decoded and oriented by
 * shared/image-decoder.ts, letterboxed to the model input (centred or at the top-left, as the
 * model wants) as RGB uint8 pixels (HWC), the form `infer` expects; `infer` reorders channels
 * and scales for the model.
 */
export interface Preprocessed {
  /** inputWidth × inputHeight × 3 bytes, RGB, row-major. */
  pixels: Buffer;
  letterbox: Letterbox;
}

export type { DecodeLimits };

const PAD = { r: 114, g: 114, b: 114 } as const;

/**
 * Decodes an image and letterboxes it to `inputWidth` × `inputHeight`: resized bilinearly to fit,
 * padded with grey 114 where `placement` says.
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
  // One pipeline: libvips shrinks on load where the format allows (JPEG), resizes, pads and
  // converts to 8-bit sRGB without intermediate buffers.
  try {
    const { data, info } = await source.image
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
    if (err instanceof PipelineError) throw err;
    throw decodeError(err);
  }
}
