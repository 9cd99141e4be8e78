/**
 * COCO-style mean average precision of object detections, computed the way Ultralytics' `val`
 * computes it, so the bench's accuracy number can be compared with Ultralytics' own:
 *  - a prediction is matched to ground truth per IoU threshold by
 *    `DetectionValidator.match_predictions` (ultralytics/engine/validator.py,
 *    `BaseValidator.match_predictions`): candidate pairs of the same class with IoU ≥ the
 *    threshold, sorted by IoU (highest first), one per prediction, then one per ground-truth box
 *    (NumPy `unique` keeps the first of each, in the order the previous step left them);
 *  - average precision per class and threshold by `ap_per_class` and `compute_ap`
 *    (ultralytics/utils/metrics.py): predictions of all images sorted by confidence,
 *    cumulative precision and recall, the precision envelope (running maximum from the right),
 *    sampled at 101 recall points (0, 0.01, …, 1) by linear interpolation (`np.interp`) and
 *    integrated with the trapezoidal rule (`np.trapz`);
 *  - mAP50 is the mean over classes at IoU 0.50, mAP50-95 the mean over classes and the ten
 *    thresholds 0.50:0.05:0.95, over the classes present in the ground truth only.
 * One consequence worth knowing: because the envelope ends at precision 0 at recall 1 and the
 * last sample is taken at exactly recall 1, perfect predictions score 0.995, not 1 (the familiar
 * ceiling of Ultralytics' mAP50).
 *
 * Pure functions, no I/O: unit-tested in test/unit/map-metric.test.ts.
 */

/** An axis-aligned box in pixels: left, top, right, bottom. */
export interface Box {
  x1: number;
  y1: number;
  x2: number;
  y2: number;
}

/** A labelled object; `classId` in the model's class order (COCO-80 for coco128). */
export interface GroundTruth extends Box {
  classId: number;
}

/** A detection with its confidence, 0..1. */
export interface Prediction extends Box {
  classId: number;
  confidence: number;
}

/** The detections and the ground truth of one image. */
export interface ImageDetections {
  predictions: readonly Prediction[];
  groundTruth: readonly GroundTruth[];
}

export interface MapResult {
  /** Mean AP over the ground truth's classes at IoU 0.50. */
  map50: number;
  /** Mean AP over the ground truth's classes and IoU 0.50, 0.55, …, 0.95. */
  map50to95: number;
  /** Classes present in the ground truth (those averaged over). */
  classes: number;
  groundTruthBoxes: number;
  predictions: number;
}

/** IoU thresholds 0.50:0.05:0.95, as `torch.linspace(0.5, 0.95, 10)`. */
export const IOU_THRESHOLDS: readonly number[] = Array.from(
  { length: 10 },
  (_, i) => 0.5 + (i * 0.45) / 9,
);

/** Ultralytics' `box_iou` eps, added to the union. */
const IOU_EPS = 1e-7;

/** Intersection over union of two boxes, as Ultralytics' `box_iou` (eps added to the union). */
export function boxIou(a: Box, b: Box): number {
  const w = Math.max(0, Math.min(a.x2, b.x2) - Math.max(a.x1, b.x1));
  const h = Math.max(0, Math.min(a.y2, b.y2) - Math.max(a.y1, b.y1));
  const inter = w * h;
  const areaA = (a.x2 - a.x1) * (a.y2 - a.y1);
  const areaB = (b.x2 - b.x1) * (b.y2 - b.y1);
  return inter / (areaA + areaB - inter + IOU_EPS);
}

/**
 * Which predictions of one image are true positives at each IoU threshold
 * ([predictions][thresholds]), as Ultralytics' `match_predictions` (use_scipy=False).
 */
export function matchPredictions(
  predictions: readonly Prediction[],
  groundTruth: readonly GroundTruth[],
  thresholds: readonly number[] = IOU_THRESHOLDS,
): boolean[][] {
  const correct = predictions.map(() => thresholds.map(() => false));
  const iou = groundTruth.map((g) =>
    predictions.map((p) => (p.classId === g.classId ? boxIou(g, p) : 0)),
  );
  thresholds.forEach((threshold, t) => {
    // Pairs [truth, prediction] in row-major order, as np.nonzero gives them.
    let pairs: Array<[number, number]> = [];
    iou.forEach((row, g) =>
      row.forEach((v, p) => {
        if (v >= threshold) pairs.push([g, p]);
      }),
    );
    if (pairs.length > 1) {
      const at = ([g, p]: [number, number]) => iou[g]![p]!;
      // Highest IoU first; the stable sort keeps np.nonzero's order among equal IoUs.
      pairs = [...pairs].sort((a, b) => at(b) - at(a));
      pairs = firstOfEach(pairs, 1);
      pairs = firstOfEach(pairs, 0);
    }
    for (const [, p] of pairs) correct[p]![t] = true;
  });
  return correct;
}

/**
 * `pairs[np.unique(pairs[:, col], return_index=True)[1]]`: the first pair of each distinct
 * value of column `col`, ordered by that value.
 */
function firstOfEach(pairs: Array<[number, number]>, col: 0 | 1): Array<[number, number]> {
  const first = new Map<number, [number, number]>();
  for (const pair of pairs) if (!first.has(pair[col])) first.set(pair[col], pair);
  return [...first.entries()].sort((a, b) => a[0] - b[0]).map(([, pair]) => pair);
}

/**
 * Average precision of one precision/recall curve (points in order of falling confidence), as
 * Ultralytics' `compute_ap` with method 'interp': 101-point interpolated envelope, trapezoidal
 * integral.
 */
export function computeAp(recall: readonly number[], precision: readonly number[]): number {
  const mrec = [0, ...recall, 1];
  const mpre = [1, ...precision, 0];
  for (let i = mpre.length - 2; i >= 0; i--) mpre[i] = Math.max(mpre[i]!, mpre[i + 1]!);
  let ap = 0;
  let prev = interp(0, mrec, mpre);
  for (let k = 1; k <= 100; k++) {
    const y = interp(k / 100, mrec, mpre);
    ap += ((prev + y) / 2) * 0.01;
    prev = y;
  }
  return ap;
}

/**
 * `np.interp(x, xp, fp)` for a non-decreasing `xp`: the segment [xp[j], xp[j+1]) holding x, with
 * j the last index where xp[j] ≤ x; x at or past the last point takes the last value.
 */
function interp(x: number, xp: readonly number[], fp: readonly number[]): number {
  const last = xp.length - 1;
  if (x < xp[0]!) return fp[0]!;
  if (x >= xp[last]!) return fp[last]!;
  let j = 0;
  while (j + 1 <= last && xp[j + 1]! <= x) j++;
  const x0 = xp[j]!;
  const x1 = xp[j + 1]!;
  return fp[j]! + ((fp[j + 1]! - fp[j]!) * (x - x0)) / (x1 - x0);
}

/** mAP50 and mAP50-95 over a set of images (Ultralytics' `ap_per_class`). */
export function meanAveragePrecision(images: readonly ImageDetections[]): MapResult {
  const thresholds = IOU_THRESHOLDS;
  const scored: Array<{ confidence: number; classId: number; tp: boolean[] }> = [];
  const truthPerClass = new Map<number, number>();
  for (const image of images) {
    // Ultralytics matches NMS output, which comes sorted by confidence.
    const preds = [...image.predictions].sort((a, b) => b.confidence - a.confidence);
    const tp = matchPredictions(preds, image.groundTruth, thresholds);
    preds.forEach((p, i) =>
      scored.push({ confidence: p.confidence, classId: p.classId, tp: tp[i]! }),
    );
    for (const g of image.groundTruth)
      truthPerClass.set(g.classId, (truthPerClass.get(g.classId) ?? 0) + 1);
  }
  scored.sort((a, b) => b.confidence - a.confidence);

  const apPerClass: number[][] = [];
  for (const [classId, nTruth] of truthPerClass) {
    const mine = scored.filter((s) => s.classId === classId);
    apPerClass.push(
      thresholds.map((_, t) => {
        if (mine.length === 0) return 0;
        const recall: number[] = [];
        const precision: number[] = [];
        let tpc = 0;
        let fpc = 0;
        for (const s of mine) {
          if (s.tp[t]) tpc++;
          else fpc++;
          recall.push(tpc / (nTruth + 1e-16));
          precision.push(tpc / (tpc + fpc));
        }
        return computeAp(recall, precision);
      }),
    );
  }
  const mean = (v: readonly number[]) =>
    v.length > 0 ? v.reduce((a, b) => a + b, 0) / v.length : 0;
  return {
    map50: mean(apPerClass.map((a) => a[0]!)),
    map50to95: mean(apPerClass.map(mean)),
    classes: truthPerClass.size,
    groundTruthBoxes: [...truthPerClass.values()].reduce((a, b) => a + b, 0),
    predictions: scored.length,
  };
}

/**
 * YOLO-format label lines (`class cx cy w h`, normalised to 0..1 of the image) as pixel boxes
 * of a `width` × `height` image.
 */
export function parseYoloLabels(text: string, width: number, height: number): GroundTruth[] {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .map((line) => {
      const [c, cx, cy, w, h] = line.split(/\s+/).map(Number) as [
        number,
        number,
        number,
        number,
        number,
      ];
      return {
        classId: c,
        x1: (cx - w / 2) * width,
        y1: (cy - h / 2) * height,
        x2: (cx + w / 2) * width,
        y2: (cy + h / 2) * height,
      };
    });
}
