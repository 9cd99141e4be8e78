import { randomUUID } from 'node:crypto';
import type { Candidate } from '../../shared/candidates.js';
import type { DetectionParams, DetectionResponse, Prediction } from '../../shared/contracts.js';
import { unletterboxBox, type Letterbox } from '../../shared/letterbox.js';
import { nonMaxSuppression } from './nms.js';

/**
 * Everything after the model, as plain functions: filter the candidates by confidence and
 * class, run NMS, keep at most max_detections, map boxes back to original-image pixels and
 * build Roboflow's response.
 */
export interface PostprocessInput {
  inferenceId: string;
  candidates: readonly Candidate[];
  params: DetectionParams;
  letterbox: Letterbox;
  classNames: readonly string[];
  /** Seconds since the gateway received the request. */
  elapsedSeconds: number;
}

export function buildResponse(input: PostprocessInput): DetectionResponse {
  const { params, letterbox, classNames } = input;
  const allowed = params.classFilter ? new Set(params.classFilter) : null;
  // Candidate scores are float32 (see output-decoder.ts): compare with the threshold rounded
  // the same way.
  const threshold = Math.fround(params.confidence);
  const eligible = input.candidates
    .filter(
      (c) => c.score >= threshold && (!allowed || allowed.has(className(classNames, c.classId))),
    )
    .sort((a, b) => b.score - a.score)
    .slice(0, params.maxCandidates);
  const kept = nonMaxSuppression(eligible, {
    iouThreshold: params.iouThreshold,
    classAgnostic: params.classAgnosticNms,
    maxDetections: params.maxDetections,
  });
  const predictions: Prediction[] = [];
  for (const c of kept) {
    const box = unletterboxBox(
      { x1: c.cx - c.w / 2, y1: c.cy - c.h / 2, x2: c.cx + c.w / 2, y2: c.cy + c.h / 2 },
      letterbox,
    );
    const width = box.x2 - box.x1;
    const height = box.y2 - box.y1;
    if (width <= 0 || height <= 0) continue;
    predictions.push({
      x: round(box.x1 + width / 2),
      y: round(box.y1 + height / 2),
      width: round(width),
      height: round(height),
      confidence: round(c.score, 4),
      class: className(classNames, c.classId),
      class_id: c.classId,
      detection_id: randomUUID(),
    });
  }
  return {
    inference_id: input.inferenceId,
    time: input.elapsedSeconds,
    image: { width: letterbox.srcWidth, height: letterbox.srcHeight },
    predictions,
  };
}

function className(names: readonly string[], id: number): string {
  return names[id] ?? `class_${id}`;
}

function round(v: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}
