/**
 * Tiny deterministic "detector" used by the tests and as the default model when no real model is
 * configured. It has no learned weights: it finds pure red, green and blue regions by thresholding
 * and reports one box per colour, in exactly the tensor layout of an Ultralytics YOLOv8 export, so
 * the whole pipeline (pre-processing, batching, decoding, NMS) can be exercised end to end with
 * exact expected boxes and sub-millisecond inference.
 *
 * What the model computes (S = inputSize, default 320; B = dynamic batch):
 *
 *   input  `images`  float32 ['batch', 3, S, S]   RGB, values 0..1, NCHW (like YOLOv8).
 *   output `output0` float32 ['batch', 7, 6]      YOLOv8 layout [batch, 4 + nc, anchors], nc = 3:
 *          rows 0..3 = box cx, cy, w, h in input pixels; rows 4..6 = class scores in 0..1
 *          (already "sigmoided"); no objectness.
 *
 * 1. Class masks. A 1×1 Conv with weights [[1,-1,-1],[-1,1,-1],[-1,-1,1]] and bias -0.5 gives
 *    d_red = R - G - B - 0.5, d_green = G - R - B - 0.5, d_blue = B - R - G - 0.5;
 *    mask = Cast<float>(d > 0), shape [B,3,S,S]. Pure red (1,0,0) sets only the red mask; white,
 *    black, letterbox grey (114/255) and the other pure colours set none.
 * 2. Per class k, reductions over H and W (xgrid = 0..S-1 along W, ygrid along H):
 *      presence_k = max(mask_k)                       (0 or 1)
 *      xmax_k = max(mask_k · (xgrid + 1))   xmin_k = S - max(mask_k · (S - xgrid))   (same for y)
 *    i.e. the bounding box of every pixel of that colour, edges inclusive: pixels 40..119 give
 *    xmin = 40, xmax = 120. Then cx = (xmin + xmax) / 2, w = xmax - xmin, and likewise cy, h.
 *    The box is multiplied by presence_k, so an absent class has box (0, 0, 0, 0).
 * 3. Anchors 0..2: anchor k carries the box of class k; score row j = presence_k if j == k, else 0.
 * 4. Anchors 3..5: a deliberate near-duplicate of anchors 0..2, so downstream NMS has work to do:
 *    the same box grown by 2 px in w and h (same centre; absent classes stay all-zero) with score
 *    0.9 × presence_k. IoU with the original is high (0.95 for an 80 px square), so per-class NMS
 *    at IoU 0.3–0.5 keeps only the score-1 box. IoU is (w·h)/((w+2)(h+2)), so for squares under
 *    ~5 px (0.5) or ~3 px (0.3) the duplicate survives NMS: test shapes should be larger.
 *
 * Metadata mimics an Ultralytics export: names = "{0: 'red', 1: 'green', 2: 'blue'}",
 * imgsz = "[S, S]", task = "detect", plus a short description, and `layout` = "yolov8": six
 * anchors match no grid of strides 8/16/32, so the layout is named for the server's layout
 * detection (services/infer/layout-detection.ts). Opset 13, IR version 7.
 * The bytes are fully deterministic for given options.
 *
 * The same detector can emit the other families' layouts, for tests of their decoders through
 * the whole stack (`layout` option):
 * - `yolov5`: `[batch, 6, 5 + nc]`, per anchor cx, cy, w, h, objectness, class scores; the
 *   objectness is the anchor's YOLOv8 score (presence, or 0.9 × presence for the duplicates) and
 *   the class scores are a constant one-hot of the anchor's class times TINY_YOLOV5_CLASS_SCORE,
 *   so a found shape scores 0.8 and an absent one 0 only when objectness is applied.
 * - `end2end`: `[batch, 6, 6]`, per anchor x1, y1, x2, y2, best score, best class (the YOLOv8
 *   anchors in corner form, as a model with NMS built in would emit them).
 */
import { GraphBuilder, DataType, attrInt, attrInts, encodeModel } from './onnx-builder.js';

export const TINY_CLASS_NAMES = ['red', 'green', 'blue'] as const;
export type TinyClassName = (typeof TINY_CLASS_NAMES)[number];

/** Default square input size, in pixels. */
export const TINY_DEFAULT_INPUT_SIZE = 320;
/** Number of anchors in the output: one per class plus one near-duplicate per class. */
export const TINY_NUM_ANCHORS = 2 * TINY_CLASS_NAMES.length;
/** Score of the near-duplicate anchors (3..5), relative to presence. */
export const TINY_DUPLICATE_SCORE = 0.9;
/** How many pixels the near-duplicate boxes are grown by, in w and in h. */
export const TINY_DUPLICATE_GROW_PX = 2;

/** Class score of the `yolov5` variant's one-hot class columns. */
export const TINY_YOLOV5_CLASS_SCORE = 0.8;

export interface TinyDetectorOptions {
  /** Square input size S in pixels (integer, 1..8192). Default 320. */
  inputSize?: number;
  /** Output layout. Default `yolov8`. */
  layout?: 'yolov8' | 'yolov5' | 'end2end';
  /** Write the `layout` metadata entry. Default true. */
  layoutMetadata?: boolean;
  /** More metadata_props entries (e.g. `recommended_confidence`), written after the others. */
  extraMetadata?: Readonly<Record<string, string>>;
}

/** Builds the tiny detector described above and returns the serialized ONNX ModelProto. */
export function buildTinyDetector(options: TinyDetectorOptions = {}): Uint8Array {
  const S = options.inputSize ?? TINY_DEFAULT_INPUT_SIZE;
  // Upper bound keeps every pixel coordinate exactly representable and the grids small.
  if (!Number.isInteger(S) || S < 1 || S > 8192) {
    throw new RangeError(`inputSize must be an integer in 1..8192, got ${S}`);
  }
  const nc = TINY_CLASS_NAMES.length;
  const g = new GraphBuilder();
  const images = g.reserve('images');

  // 1. Class masks.
  const w = g.constFloat('class_w', [nc, 3, 1, 1], [1, -1, -1, -1, 1, -1, -1, -1, 1]);
  const b = g.constFloat('class_b', [nc], [-0.5, -0.5, -0.5]);
  const zero = g.constFloat('zero', [], [0]);
  const d = g.op('Conv', [images, w, b], 'class_d', { kernel_shape: attrInts([1, 1]) });
  const above = g.op('Greater', [d, zero], 'class_above');
  const mask = g.op('Cast', [above], 'mask', { to: attrInt(DataType.FLOAT) });

  // 2. Presence and per-axis extents. ReduceMax takes `axes` as an attribute up to opset 17.
  const reduceHW = { axes: attrInts([2, 3]), keepdims: attrInt(0) };
  const presence = g.op('ReduceMax', [mask], 'presence', reduceHW); // [B,nc]
  const one = g.constFloat('one', [], [1]);
  const size = g.constFloat('size', [], [S]);
  const half = g.constFloat('half', [], [0.5]);
  const coords = Array.from({ length: S }, (_, i) => i);
  const extent = (axis: 'x' | 'y'): { centre: string; length: string } => {
    const grid = g.constFloat(`${axis}grid`, axis === 'x' ? [1, 1, 1, S] : [1, 1, S, 1], coords);
    const plus1 = g.op('Add', [grid, one], `${axis}grid_plus1`);
    const rev = g.op('Sub', [size, grid], `${axis}grid_rev`);
    const max = g.op(
      'ReduceMax',
      [g.op('Mul', [mask, plus1], `${axis}_hi`)],
      `${axis}max`,
      reduceHW,
    );
    const revMax = g.op(
      'ReduceMax',
      [g.op('Mul', [mask, rev], `${axis}_lo`)],
      `${axis}rev_max`,
      reduceHW,
    );
    const min = g.op('Sub', [size, revMax], `${axis}min`);
    return {
      centre: g.op('Mul', [g.op('Add', [min, max], `${axis}_sum`), half], `c${axis}`),
      length: g.op('Sub', [max, min], axis === 'x' ? 'w' : 'h'),
    };
  };
  const x = extent('x');
  const y = extent('y');

  // 3. Boxes [B,4,nc]: stack cx, cy, w, h on axis 1. Unsqueeze takes axes as an input in opset 13.
  const axis1 = g.constInt64('axis1', [1], [1]);
  const rows = [x.centre, y.centre, x.length, y.length].map((t) =>
    g.op('Unsqueeze', [t, axis1], `${t}_row`),
  );
  const boxesRaw = g.op('Concat', rows, 'boxes_raw', { axis: attrInt(1) });
  const presenceRow = g.op('Unsqueeze', [presence, axis1], 'presence_row'); // [B,1,nc]
  const boxes = g.op('Mul', [boxesRaw, presenceRow], 'boxes');
  const eyeValues = Array.from({ length: nc * nc }, (_, i) => (i % (nc + 1) === 0 ? 1 : 0));
  const eye = g.constFloat('eye', [nc, nc], eyeValues);
  const scores = g.op('Mul', [presenceRow, eye], 'scores'); // [B,nc,nc]: [b,j,k] = p[b,k]·I[j,k]

  // 4. Near-duplicates: grow w and h, scale the score.
  const grow = g.constFloat(
    'grow',
    [1, 4, 1],
    [0, 0, TINY_DUPLICATE_GROW_PX, TINY_DUPLICATE_GROW_PX],
  );
  const grown = g.op('Add', [boxesRaw, grow], 'boxes_grown');
  const boxesDup = g.op('Mul', [grown, presenceRow], 'boxes_dup');
  const dupScale = g.constFloat('dup_score', [], [TINY_DUPLICATE_SCORE]);
  const scoresDup = g.op('Mul', [scores, dupScale], 'scores_dup');

  const top = g.op('Concat', [boxes, boxesDup], 'box_rows', { axis: attrInt(2) }); // [B,4,2nc]
  const bottom = g.op('Concat', [scores, scoresDup], 'score_rows', { axis: attrInt(2) }); // [B,nc,2nc]
  const layout = options.layout ?? 'yolov8';
  const anchors = TINY_NUM_ANCHORS;
  let output0: string;
  let outDims: [string, number, number];
  if (layout === 'yolov8') {
    output0 = g.op('Concat', [top, bottom], 'output0', { axis: attrInt(1) }); // [B,4+nc,2nc]
    outDims = ['batch', 4 + nc, anchors];
  } else if (layout === 'yolov5') {
    const objectness = g.op('ReduceMax', [bottom], 'objectness', {
      axes: attrInts([1]),
      keepdims: attrInt(1),
    }); // [B,1,2nc]
    const oneHot = Array.from({ length: nc * anchors }, (_, i) =>
      Math.floor(i / anchors) === (i % anchors) % nc ? TINY_YOLOV5_CLASS_SCORE : 0,
    );
    const classes = g.op(
      'Add',
      [
        g.op('Mul', [bottom, zero], 'class_zeros'),
        g.constFloat('one_hot', [1, nc, anchors], oneHot),
      ],
      'class_scores',
    ); // [B,nc,2nc], broadcast over the batch
    const rows = g.op('Concat', [top, objectness, classes], 'v5_rows', { axis: attrInt(1) });
    output0 = g.op('Transpose', [rows], 'output0', { perm: attrInts([0, 2, 1]) }); // [B,2nc,5+nc]
    outDims = ['batch', anchors, 5 + nc];
  } else {
    const slice = (from: number, to: number, name: string) =>
      g.op(
        'Slice',
        [
          top,
          g.constInt64(`${name}_from`, [1], [from]),
          g.constInt64(`${name}_to`, [1], [to]),
          axis1,
        ],
        name,
      );
    const centres = slice(0, 2, 'centres'); // [B,2,2nc]
    const halfSizes = g.op('Mul', [slice(2, 4, 'sizes'), half], 'half_sizes');
    const corners = g.op(
      'Concat',
      [
        g.op('Sub', [centres, halfSizes], 'top_left'),
        g.op('Add', [centres, halfSizes], 'bottom_right'),
      ],
      'corners',
      { axis: attrInt(1) },
    ); // [B,4,2nc]
    const reduce1 = { axes: attrInts([1]), keepdims: attrInt(1) };
    const best = g.op('ReduceMax', [bottom], 'best_score', reduce1);
    const bestClass = g.op(
      'Cast',
      [g.op('ArgMax', [bottom], 'best_class_i64', { axis: attrInt(1), keepdims: attrInt(1) })],
      'best_class',
      { to: attrInt(DataType.FLOAT) },
    );
    const rows = g.op('Concat', [corners, best, bestClass], 'e2e_rows', { axis: attrInt(1) });
    output0 = g.op('Transpose', [rows], 'output0', { perm: attrInts([0, 2, 1]) }); // [B,2nc,6]
    outDims = ['batch', anchors, 6];
  }

  const names = `{${TINY_CLASS_NAMES.map((n, i) => `${i}: '${n}'`).join(', ')}}`;
  return encodeModel({
    graphName: 'tiny_rgb_detector',
    producerName: 'staged-detect tiny-model',
    producerVersion: '1',
    irVersion: 7,
    opsetVersion: 13,
    nodes: g.nodes,
    initializers: g.initializers,
    inputs: [{ name: images, elemType: DataType.FLOAT, dims: ['batch', 3, S, S] }],
    outputs: [{ name: output0, elemType: DataType.FLOAT, dims: outDims }],
    metadata: {
      description:
        'Tiny deterministic test detector (no learned weights): one box per pure red/green/blue ' +
        `region, plus a 0.9-score near-duplicate of each so NMS is exercised. ${layout} output layout.`,
      task: 'detect',
      imgsz: `[${S}, ${S}]`,
      names,
      ...(options.layoutMetadata === false ? {} : { layout }),
      ...options.extraMetadata,
    },
  });
}
