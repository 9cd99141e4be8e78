import type { PadPlacement } from './model-layout.js';

/**
 * Letterbox arithmetic: scale the image to fit the model input while keeping its aspect ratio,
 * place it (centred as Ultralytics does, or at the top-left as YOLOX does) and pad the rest
 * (with grey 114, done by the caller). Pure functions so the geometry is unit-tested without an
 * image.
 */
export interface Letterbox {
  /** Size of the (oriented) source image in pixels. */
  srcWidth: number;
  srcHeight: number;
  /** Size of the model input. */
  inputWidth: number;
  inputHeight: number;
  /** Size of the resized image inside the input, before padding. */
  resizedWidth: number;
  resizedHeight: number;
  /** Padding on the left and top; the right and bottom take the rest. */
  padLeft: number;
  padTop: number;
}

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
