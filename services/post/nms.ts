import type { Candidate } from '../../shared/candidates.js';

/**
 * Greedy non-maximum suppression: candidates are taken best score first (ties broken by their
 * original order, so results are deterministic); a candidate is dropped when its IoU with an
 * already kept box of the same class (or of any class, when class-agnostic) is above the
 * threshold. Stops once maxDetections boxes are kept.
 */
export interface NmsOptions {
  iouThreshold: number;
  classAgnostic: boolean;
  maxDetections: number;
}

/**
 * Greedy NMS over `candidates` (model-input pixels, any order).
 *
 * @returns the kept candidates, best score first (ties in input order), at most
 *   `opts.maxDetections`
 */
export function nonMaxSuppression(candidates: readonly Candidate[], opts: NmsOptions): Candidate[] {
  const order = candidates
    .map((_, i) => i)
    .sort((a, b) => candidates[b]!.score - candidates[a]!.score || a - b);
  const kept: Candidate[] = [];
  for (const i of order) {
    if (kept.length >= opts.maxDetections) break;
    const c = candidates[i]!;
    let suppressed = false;
    for (const k of kept) {
      if ((opts.classAgnostic || k.classId === c.classId) && iou(c, k) > opts.iouThreshold) {
        suppressed = true;
        break;
      }
    }
    if (!suppressed) kept.push(c);
  }
  return kept;
}

/** Intersection over union of two centre-format boxes; 0 when either has no area. */
export function iou(a: Candidate, b: Candidate): number {
  const ix = Math.min(a.cx + a.w / 2, b.cx + b.w / 2) - Math.max(a.cx - a.w / 2, b.cx - b.w / 2);
  const iy = Math.min(a.cy + a.h / 2, b.cy + b.h / 2) - Math.max(a.cy - a.h / 2, b.cy - b.h / 2);
  if (ix <= 0 || iy <= 0) return 0;
  const inter = ix * iy;
  const union = a.w * a.h + b.w * b.h - inter;
  return union > 0 ? inter / union : 0;
}
