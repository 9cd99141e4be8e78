import { MODEL_LAYOUTS, type ModelLayout } from '../../shared/model-layout.js';
import { HEAD_STRIDES } from './output-decoder.js';

/**
 * Works out which detector family (shared/model-layout.ts) produced an output, in this order:
 *
 * 1. A layout set explicitly (MODEL_LAYOUT, or `layout` in the model's options).
 * 2. The model's own `layout` metadata entry (the project's generated models write one), or
 *    Ultralytics' `end2end: True`.
 * 3. The output shape against the grid of the input: with strides 8, 16 and 32, an H×W input has
 *    G = Σ ceil(H/s)·ceil(W/s) cells (8400 at 640×640, 3549 at 416×416), and
 *    - `[B, C, G]` with C > 4 is YOLOv8 (one prediction per cell, channels first),
 *    - `[B, G, C]` with C > 5 is YOLOX (one prediction per cell, channels last),
 *    - `[B, 3G, C]` with C > 5 is YOLOv5/v7 (three anchors per cell),
 *    - `[B, K, 6]` with K neither G nor 3G is an end-to-end model (detections after NMS).
 *    Exactly one rule must match; none or several is an error that names the shape and asks
 *    for MODEL_LAYOUT.
 *
 * A layout from 1 or 2 must still fit the shape (3 dims; C > 4 for YOLOv8, C > 5 for YOLOv5,
 * G cells and C > 5 for YOLOX, 6 columns for end2end).
 */
export interface LayoutQuery {
  /** Concrete output dims, from a run of the model. */
  outputShape: readonly number[];
  inputHeight: number;
  inputWidth: number;
  metadata: Readonly<Record<string, string>>;
  /** Set explicitly; undefined detects it. */
  configured: ModelLayout | undefined;
}

export interface DetectedLayout {
  layout: ModelLayout;
  /** What decided it, for the startup log. */
  source: 'configured' | 'metadata' | 'shape';
  /** Classes in the output, where the layout tells (all but end2end). */
  numClasses: number | undefined;
}

/** An output that fits no layout, or not the configured one. */
export class LayoutError extends Error {
  override readonly name = 'LayoutError';
}

/** Predictions of a one-per-cell head over strides 8, 16 and 32 for this input size. */
export function gridCells(inputHeight: number, inputWidth: number): number {
  return HEAD_STRIDES.reduce(
    (n, s) => n + Math.ceil(inputHeight / s) * Math.ceil(inputWidth / s),
    0,
  );
}

/**
 * The output layout of a model from its output shape, its metadata and the configured layout.
 *
 * @throws LayoutError when the configured layout does not fit the shape, or no layout does
 */
export function detectLayout(q: LayoutQuery): DetectedLayout {
  const shape = `[${q.outputShape.join(', ')}]`;
  const declared = q.configured ?? declaredLayout(q.metadata, shape);
  if (declared) {
    const misfit = whyNot(declared, q);
    if (misfit) {
      throw new LayoutError(
        `model output ${shape} does not fit the ${declared} layout ` +
          `(${q.configured ? 'MODEL_LAYOUT' : 'model metadata'}): ${misfit}`,
      );
    }
    return {
      layout: declared,
      source: q.configured ? 'configured' : 'metadata',
      numClasses: classesOf(declared, q.outputShape),
    };
  }
  const matches = MODEL_LAYOUTS.filter((l) => matchesShape(l, q));
  const [only] = matches;
  if (only && matches.length === 1) {
    return { layout: only, source: 'shape', numClasses: classesOf(only, q.outputShape) };
  }
  const cells = gridCells(q.inputHeight, q.inputWidth);
  const what =
    matches.length > 1
      ? `is ambiguous (it fits ${matches.join(' and ')})`
      : `matches no known layout (for a ${q.inputWidth}×${q.inputHeight} input: ` +
        `yolov8 [batch, 4 + classes, ${cells}], yolov5 [batch, ${3 * cells}, 5 + classes], ` +
        `yolox [batch, ${cells}, 5 + classes], end2end [batch, detections, 6])`;
  throw new LayoutError(
    `model output ${shape} ${what}; set MODEL_LAYOUT to one of ${MODEL_LAYOUTS.join(', ')}`,
  );
}

function declaredLayout(
  metadata: Readonly<Record<string, string>>,
  shape: string,
): ModelLayout | undefined {
  const named = metadata['layout'];
  if (named !== undefined) {
    const layout = MODEL_LAYOUTS.find((l) => l === named.trim().toLowerCase());
    if (!layout) {
      throw new LayoutError(
        `model metadata names layout '${named}' (output ${shape}); ` +
          `expected one of ${MODEL_LAYOUTS.join(', ')}`,
      );
    }
    return layout;
  }
  if (metadata['end2end']?.trim().toLowerCase() === 'true') return 'end2end';
  return undefined;
}

/** Why an output cannot have this layout; undefined when it can. */
function whyNot(layout: ModelLayout, q: LayoutQuery): string | undefined {
  const dims = q.outputShape;
  if (dims.length !== 3) return `expected 3 dimensions, got ${dims.length}`;
  const [, rows = 0, cols = 0] = dims;
  switch (layout) {
    case 'yolov8':
      return rows > 4 ? undefined : 'expected [batch, 4 + classes, anchors]';
    case 'yolov5':
      return cols > 5 ? undefined : 'expected [batch, anchors, 5 + classes]';
    case 'yolox': {
      if (cols <= 5) return 'expected [batch, cells, 5 + classes]';
      const cells = gridCells(q.inputHeight, q.inputWidth);
      return rows === cells
        ? undefined
        : `a ${q.inputWidth}×${q.inputHeight} input has ${cells} grid cells over strides 8, 16, 32`;
    }
    case 'end2end':
      return cols === 6 ? undefined : 'expected [batch, detections, 6]';
  }
}

function matchesShape(layout: ModelLayout, q: LayoutQuery): boolean {
  if (whyNot(layout, q) !== undefined) return false;
  const [, rows = 0, cols = 0] = q.outputShape;
  const cells = gridCells(q.inputHeight, q.inputWidth);
  switch (layout) {
    case 'yolov8':
      return cols === cells;
    case 'yolov5':
      return rows === 3 * cells;
    case 'yolox':
      return true; // whyNot already checked the cell count
    case 'end2end':
      return rows !== cells && rows !== 3 * cells;
  }
}

function classesOf(layout: ModelLayout, dims: readonly number[]): number | undefined {
  switch (layout) {
    case 'yolov8':
      return dims[1]! - 4;
    case 'yolov5':
    case 'yolox':
      return dims[2]! - 5;
    case 'end2end':
      return undefined;
  }
}
