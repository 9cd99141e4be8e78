import { randomUUID } from 'node:crypto';
import type { Candidate } from '../../shared/candidates.js';
import type { DetectionParams, DetectionResponse, Prediction } from '../../shared/contracts.js';
import { unletterboxBox, type Letterbox } from '../../shared/letterbox.js';
import { nonMaxSuppression } from './nms.js';

/**
 * Everything after the model, as plain functions: run NMS on the candidates (already filtered by
 * confidence, class and max_candidates by the inference process's decoder), keep at most
 * max_detections, map boxes back to original-image pixels and build Roboflow's response.
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

/**
 * Roboflow's response for one image.
 *
 * @param input.candidates in model-input pixels, as `infer` decoded and filtered them
 * @returns predictions in original-image pixels, centres and sizes rounded to 2 digits,
 *   confidences to 4
 */
export function buildResponse(input: PostprocessInput): DetectionResponse {
  const { params, letterbox, classNames } = input;
  const kept = nonMaxSuppression(input.candidates, {
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
