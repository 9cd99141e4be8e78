import { CANDIDATE_STRIDE } from '../../shared/candidates.js';
import type { ModelLayout } from '../../shared/model-layout.js';

/**
 * Turns one image's slice of a detector's output into packed candidates (see
 * shared/candidates.ts: cx, cy, w, h in model-input pixels, score, class id), one decoder per
 * output layout (shared/model-layout.ts). Every decoder keeps candidates whose score is at
 * least the threshold (inclusive, compared in float32), lets only the allowed classes compete
 * for an anchor's best class, and keeps the `maxCandidates` highest scores (earlier anchors win
 * ties). This is the one place candidates are filtered: `post` runs NMS (which orders them) on
 * what comes out.
 */
export interface CandidateFilter {
  /** Keep anchors whose best (allowed) class score is at least this. */
  confidence: number;
  /** Only these class ids compete for an anchor's best class; null allows all. */
  allowedClassIds: readonly number[] | null;
  /** Keep at most this many candidates, the highest scores first. */
  maxCandidates: number;
}

/** Decodes image `batchIndex` of an output whose dims are `[batch, dims[1], dims[2]]`. */
export type Decoder = (
  output: Float32Array,
  dims: readonly [number, number, number],
  batchIndex: number,
  filter: CandidateFilter,
) => Float32Array;

/** The decoder of a layout; YOLOX's needs the input size for its grid. */
export function decoderFor(layout: ModelLayout, inputHeight: number, inputWidth: number): Decoder {
  switch (layout) {
    case 'yolov8':
      return (out, [, channels, anchors], b, f) => decodeYolov8(out, channels, anchors, b, f);
    case 'yolov5':
      return (out, [, anchors, channels], b, f) => decodeYolov5(out, anchors, channels, b, f);
    case 'yolox': {
      const grid = yoloxGrid(inputHeight, inputWidth);
      return (out, [, anchors, channels], b, f) => decodeYolox(out, anchors, channels, b, f, grid);
    }
    case 'end2end':
      return (out, [, detections], b, f) => decodeEnd2end(out, detections, b, f);
  }
}

/**
 * YOLOv8 / YOLO11: `[batch, 4 + classes, anchors]`; for each anchor cx, cy, w, h in input
 * pixels, then one already-sigmoided score per class; no objectness.
 *
 * The loops run class by class over contiguous anchors (the tensor's memory order) rather than
 * anchor by anchor across strided classes: on an 84×8400 output that is several times faster.
 */
export function decodeYolov8(
  output: Float32Array,
  channels: number,
  anchors: number,
  batchIndex: number,
  filter: CandidateFilter,
): Float32Array {
  const numClasses = channels - 4;
  const base = batchIndex * channels * anchors;
  // Scores are float32: compare with the threshold rounded the same way, so a score equal to it
  // is kept. Every anchor starts just below the threshold, so the hot loop reads one score and
  // compares it with a constant; nearly all scores are far below it and skip the rest.
  const threshold = Math.fround(filter.confidence);
  const floor = float32Below(threshold);
  const bestScore = new Float32Array(anchors).fill(floor);
  const bestClass = new Int32Array(anchors).fill(-1);
  // In ascending order, so that of classes with equal scores the lowest id wins.
  const classIds = filter.allowedClassIds
    ? [...filter.allowedClassIds].sort((x, y) => x - y)
    : range(numClasses);
  for (const c of classIds) {
    if (c < 0 || c >= numClasses) continue;
    const row = output.subarray(base + (4 + c) * anchors, base + (5 + c) * anchors);
    let a = 0;
    // Four scores per test: one branch for four anchors in the common all-below case.
    for (; a + 3 < anchors; a += 4) {
      if (row[a]! > floor || row[a + 1]! > floor || row[a + 2]! > floor || row[a + 3]! > floor)
        raiseBest(row, a, a + 4, floor, c, bestScore, bestClass);
    }
    raiseBest(row, a, anchors, floor, c, bestScore, bestClass);
  }
  const kept: number[] = [];
  for (let a = 0; a < anchors; a++) if (bestClass[a]! >= 0) kept.push(a);
  keepTop(kept, (a) => bestScore[a]!, filter.maxCandidates);
  const out = new Float32Array(kept.length * CANDIDATE_STRIDE);
  kept.forEach((a, k) => {
    const o = k * CANDIDATE_STRIDE;
    out[o] = output[base + a]!;
    out[o + 1] = output[base + anchors + a]!;
    out[o + 2] = output[base + 2 * anchors + a]!;
    out[o + 3] = output[base + 3 * anchors + a]!;
    out[o + 4] = bestScore[a]!;
    out[o + 5] = bestClass[a]!;
  });
  return out;
}

/**
 * YOLOv5 / YOLOv7: `[batch, anchors, 5 + classes]`, one row per anchor: cx, cy, w, h in input
 * pixels, objectness, then class scores (all sigmoided). Score = objectness × class score.
 */
export function decodeYolov5(
  output: Float32Array,
  anchors: number,
  channels: number,
  batchIndex: number,
  filter: CandidateFilter,
): Float32Array {
  return decodeWithObjectness(output, anchors, channels, batchIndex, filter, null);
}

/** Grid cell and stride of each YOLOX prediction, in output order. */
export interface YoloxGrid {
  x: Float32Array;
  y: Float32Array;
  stride: Float32Array;
}

/** Strides of the YOLOX (and YOLOv5/v8) heads, in output order. */
export const HEAD_STRIDES = [8, 16, 32] as const;

/**
 * The cells of YOLOX's three heads for an input size: row-major per stride, strides 8, 16, 32
 * in that order (as YOLOX concatenates its outputs).
 */
export function yoloxGrid(inputHeight: number, inputWidth: number): YoloxGrid {
  const cells = HEAD_STRIDES.map(
    (s) => [Math.ceil(inputHeight / s), Math.ceil(inputWidth / s), s] as const,
  );
  const total = cells.reduce((n, [h, w]) => n + h * w, 0);
  const grid = {
    x: new Float32Array(total),
    y: new Float32Array(total),
    stride: new Float32Array(total),
  };
  let i = 0;
  for (const [h, w, s] of cells) {
    for (let gy = 0; gy < h; gy++) {
      for (let gx = 0; gx < w; gx++, i++) {
        grid.x[i] = gx;
        grid.y[i] = gy;
        grid.stride[i] = s;
      }
    }
  }
  return grid;
}

/**
 * The raw YOLOX head: `[batch, cells, 5 + classes]` over the cells of `yoloxGrid`; per cell the
 * box offset x, y and log size w, h, then objectness and class scores (already sigmoided in
 * Megvii's exports). cx = (x + gx) × stride, w = exp(w) × stride; score = objectness × class.
 */
export function decodeYolox(
  output: Float32Array,
  anchors: number,
  channels: number,
  batchIndex: number,
  filter: CandidateFilter,
  grid: YoloxGrid,
): Float32Array {
  if (grid.x.length !== anchors) {
    throw new RangeError(
      `YOLOX output has ${anchors} cells; the input's grid has ${grid.x.length}`,
    );
  }
  return decodeWithObjectness(output, anchors, channels, batchIndex, filter, grid);
}

function decodeWithObjectness(
  output: Float32Array,
  anchors: number,
  channels: number,
  batchIndex: number,
  filter: CandidateFilter,
  grid: YoloxGrid | null,
): Float32Array {
  const numClasses = channels - 5;
  const base = batchIndex * anchors * channels;
  const threshold = Math.fround(filter.confidence);
  const classIds = (filter.allowedClassIds ?? range(numClasses)).filter(
    (c) => c >= 0 && c < numClasses,
  );
  const allClasses = classIds.length === numClasses && filter.allowedClassIds === null;
  const kept: number[] = [];
  const scores: number[] = [];
  const classes: number[] = [];
  if (classIds.length > 0) {
    for (let a = 0; a < anchors; a++) {
      const row = base + a * channels;
      const objectness = output[row + 4]!;
      // Class scores are at most 1: an anchor whose objectness is under the threshold cannot
      // reach it, and most anchors of a real image end here.
      if (objectness < threshold) continue;
      let best = -1;
      let bestClass = 0;
      if (allClasses) {
        for (let c = 0, p = row + 5; c < numClasses; c++, p++) {
          const s = output[p]!;
          if (s > best) {
            best = s;
            bestClass = c;
          }
        }
      } else {
        for (const c of classIds) {
          const s = output[row + 5 + c]!;
          if (s > best) {
            best = s;
            bestClass = c;
          }
        }
      }
      const score = Math.fround(objectness * best);
      if (score >= threshold) {
        kept.push(a);
        scores.push(score);
        classes.push(bestClass);
      }
    }
  }
  const order = range(kept.length);
  keepTop(order, (i) => scores[i]!, filter.maxCandidates);
  const out = new Float32Array(order.length * CANDIDATE_STRIDE);
  order.forEach((i, k) => {
    const a = kept[i]!;
    const row = base + a * channels;
    const o = k * CANDIDATE_STRIDE;
    if (grid) {
      const s = grid.stride[a]!;
      out[o] = (output[row]! + grid.x[a]!) * s;
      out[o + 1] = (output[row + 1]! + grid.y[a]!) * s;
      out[o + 2] = Math.exp(output[row + 2]!) * s;
      out[o + 3] = Math.exp(output[row + 3]!) * s;
    } else {
      out[o] = output[row]!;
      out[o + 1] = output[row + 1]!;
      out[o + 2] = output[row + 2]!;
      out[o + 3] = output[row + 3]!;
    }
    out[o + 4] = scores[i]!;
    out[o + 5] = classes[i]!;
  });
  return out;
}

/**
 * Models with NMS built in (YOLOv10, Ultralytics end2end exports): `[batch, detections, 6]`,
 * per row x1, y1, x2, y2 in input pixels, score, class id. Rows are turned into centre and size;
 * `post` runs its NMS over them again, which keeps them all unless they overlap more than its
 * IoU threshold.
 */
export function decodeEnd2end(
  output: Float32Array,
  detections: number,
  batchIndex: number,
  filter: CandidateFilter,
): Float32Array {
  const base = batchIndex * detections * 6;
  const threshold = Math.fround(filter.confidence);
  const allowed = filter.allowedClassIds ? new Set(filter.allowedClassIds) : null;
  const kept: number[] = [];
  for (let d = 0; d < detections; d++) {
    const row = base + d * 6;
    const classId = Math.round(output[row + 5]!);
    if (output[row + 4]! < threshold || classId < 0) continue;
    if (allowed && !allowed.has(classId)) continue;
    kept.push(d);
  }
  keepTop(kept, (d) => output[base + d * 6 + 4]!, filter.maxCandidates);
  const out = new Float32Array(kept.length * CANDIDATE_STRIDE);
  kept.forEach((d, k) => {
    const row = base + d * 6;
    const o = k * CANDIDATE_STRIDE;
    const x1 = output[row]!;
    const y1 = output[row + 1]!;
    const x2 = output[row + 2]!;
    const y2 = output[row + 3]!;
    out[o] = (x1 + x2) / 2;
    out[o + 1] = (y1 + y2) / 2;
    out[o + 2] = x2 - x1;
    out[o + 3] = y2 - y1;
    out[o + 4] = output[row + 4]!;
    out[o + 5] = Math.round(output[row + 5]!);
  });
  return out;
}

/** Cuts `ids` (in ascending order) to the `max` highest scores, earlier ids first on ties. */
function keepTop(ids: number[], score: (id: number) => number, max: number): void {
  if (ids.length <= max) return;
  ids.sort((i, j) => score(j) - score(i) || i - j);
  ids.length = max;
}

/** Makes class `c` the best of anchors `from..to` where its score is above `floor` and theirs. */
function raiseBest(
  row: Float32Array,
  from: number,
  to: number,
  floor: number,
  c: number,
  bestScore: Float32Array,
  bestClass: Int32Array,
): void {
  for (let k = from; k < to; k++) {
    const s = row[k]!;
    if (s > floor && s > bestScore[k]!) {
      bestScore[k] = s;
      bestClass[k] = c;
    }
  }
}

/** The largest float32 below `x` (a float32 itself). */
function float32Below(x: number): number {
  // The smallest negative float32 (a subnormal).
  if (x === 0) return -1.401298464324817e-45;
  const f = new Float32Array([x]);
  const bits = new Int32Array(f.buffer);
  bits[0]! += x > 0 ? -1 : 1;
  return f[0]!;
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}
