import { z } from 'zod';
import type { PadPlacement } from './model-layout.js';

/**
 * Letterbox arithmetic: scale the image to fit the model input while keeping its aspect ratio,
 * place it (centred as Ultralytics does, or at the top-left as YOLOX does) and pad the rest
 * (with grey 114, done by the caller). Pure functions so the geometry is unit-tested without an
 * image.
 */
const px = z.number().int().min(0);

/**
 * Where an image sits in the model input, in pixels. It travels in the `infer` and `post` job
 * payloads (contracts.ts), so it is a schema: the type and the check of a payload read from
 * Redis come from it.
 */
export const LetterboxSchema = z.object({
  /** Size of the (oriented) source image in pixels. */
  srcWidth: px,
  srcHeight: px,
  /** Size of the model input. */
  inputWidth: px,
  inputHeight: px,
  /** Size of the resized image inside the input, before padding. */
  resizedWidth: px,
  resizedHeight: px,
  /** Padding on the left and top; the right and bottom take the rest. */
  padLeft: px,
  padTop: px,
});
export type Letterbox = z.infer<typeof LetterboxSchema>;

/**
 * The letterbox of a `srcWidth`×`srcHeight` image in an `inputWidth`×`inputHeight` model input
 * (all pixels): scaled to fit with its aspect ratio kept, then placed. Centred placement
 * reproduces Ultralytics' `LetterBox` rounding (`round(pad / 2 - 0.1)` on the left/top).
 *
 * @throws RangeError when a size is not positive
 * @defaultValue placement `'centre'`
 */
export function computeLetterbox(
  srcWidth: number,
  srcHeight: number,
  inputWidth: number,
  inputHeight: number,
  placement: PadPlacement = 'centre',
): Letterbox {
  if (!(srcWidth > 0 && srcHeight > 0 && inputWidth > 0 && inputHeight > 0)) {
    throw new RangeError(`letterbox needs positive sizes, got ${srcWidth}x${srcHeight}`);
  }
  const scale = Math.min(inputWidth / srcWidth, inputHeight / srcHeight);
  const resizedWidth = clampInt(Math.round(srcWidth * scale), 1, inputWidth);
  const resizedHeight = clampInt(Math.round(srcHeight * scale), 1, inputHeight);
  // Ultralytics rounds (pad - 0.1) for the left/top side, so odd padding puts the extra pixel
  // on the right/bottom.
  const centred = placement === 'centre';
  const padLeft = centred ? Math.max(0, Math.round((inputWidth - resizedWidth) / 2 - 0.1)) : 0;
  const padTop = centred ? Math.max(0, Math.round((inputHeight - resizedHeight) / 2 - 0.1)) : 0;
  return {
    srcWidth,
    srcHeight,
    inputWidth,
    inputHeight,
    resizedWidth,
    resizedHeight,
    padLeft,
    padTop,
  };
}

/** Padding on each side, for an image library's extend/pad operation. */
export function letterboxPadding(lb: Letterbox): {
  top: number;
  bottom: number;
  left: number;
  right: number;
} {
  return {
    top: lb.padTop,
    bottom: lb.inputHeight - lb.resizedHeight - lb.padTop,
    left: lb.padLeft,
    right: lb.inputWidth - lb.resizedWidth - lb.padLeft,
  };
}

export interface Box {
  x1: number;
  y1: number;
  x2: number;
  y2: number;
}

/**
 * Maps a box from model-input pixels back to source-image pixels and clips it to the image.
 * Each axis uses its own scale (resized / source), which is exact after rounding.
 */
export function unletterboxBox(box: Box, lb: Letterbox): Box {
  const sx = lb.resizedWidth / lb.srcWidth;
  const sy = lb.resizedHeight / lb.srcHeight;
  return {
    x1: clamp((box.x1 - lb.padLeft) / sx, 0, lb.srcWidth),
    y1: clamp((box.y1 - lb.padTop) / sy, 0, lb.srcHeight),
    x2: clamp((box.x2 - lb.padLeft) / sx, 0, lb.srcWidth),
    y2: clamp((box.y2 - lb.padTop) / sy, 0, lb.srcHeight),
  };
}

function clamp(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v;
}

function clampInt(v: number, lo: number, hi: number): number {
  return clamp(Math.trunc(v), lo, hi);
}
