import type { ErrorBody } from './errors.js';
import type { Letterbox } from './letterbox.js';
import type { ModelLayout, Preprocessing } from './model-layout.js';

/**
 * What the roles agree on: queue names, each queue's job payload, the result message and the
 * model description. Payloads are plain JSON (BullMQ stores job data as JSON); image bytes and
 * tensors never travel in them, only the Redis keys that hold them (see keys.ts).
 */
export const QueueName = {
  /** Images given by URL: downloaded (by `pre` processes, apart from decoding), then `pre`. */
  fetch: 'fetch',
  pre: 'pre',
  infer: 'infer',
  post: 'post',
} as const;
export type QueueName = (typeof QueueName)[keyof typeof QueueName];

/** Detection options of one request, as validated by the gateway. */
export interface DetectionParams {
  confidence: number;
  iouThreshold: number;
  classAgnosticNms: boolean;
  /** Class names to keep; null keeps every class. */
  classFilter: string[] | null;
  maxDetections: number;
  maxCandidates: number;
  /** Draw the predictions on the image (`visualize_predictions`); absent: not drawn. */
  visualize?: VisualizeParams;
}

/** How `post` draws the predictions for the response's `visualization`. */
export interface VisualizeParams {
  labels: boolean;
  strokeWidth: number;
  /** Whether `pre` applied the EXIF orientation (the boxes are in that image's pixels). */
  autoOrient: boolean;
}

/** Carried by every job of one image through every stage. */
export interface RequestContext {
  /** The inference id: also the BullMQ job id in every queue and part of every key. */
  id: string;
  modelId: string;
  params: DetectionParams;
  /** Gateway instance whose reply list receives the result. */
  replyTo: string;
  /** Epoch ms when the gateway received the request. */
  receivedAt: number;
  /** Epoch ms after which nobody waits for the result. */
  deadline: number;
  /** When each stage started and finished with the image so far. */
  marks: StageMarks;
}

/**
 * Epoch-ms marks of one image's way through the stages (wall clock, so stages on different
 * machines need synchronised clocks). The gateway turns them into the `Server-Timing` header.
 */
export interface StageMarks {
  preStart?: number;
  preEnd?: number;
  /** When the batch holding the image went to the model. */
  inferStart?: number;
  inferEnd?: number;
  postStart?: number;
  postEnd?: number;
}

export type ImageSource = { kind: 'stored' } | { kind: 'url'; url: string };

export interface PreJob extends RequestContext {
  source: ImageSource;
  autoOrient: boolean;
}

export interface InferJob extends RequestContext {
  letterbox: Letterbox;
}

export interface PostJob extends RequestContext {
  letterbox: Letterbox;
  /** Images in the batch that held this image, for the logs. */
  batchSize: number;
}

/** Job payload type by queue, so a processor's payload follows from its queue name. */
export interface JobPayloads {
  fetch: PreJob;
  pre: PreJob;
  infer: InferJob;
  post: PostJob;
}

/** One prediction, as in Roboflow's ObjectDetectionPrediction. */
export interface Prediction {
  x: number;
  y: number;
  width: number;
  height: number;
  confidence: number;
  class: string;
  class_id: number;
  detection_id: string;
}

/** Roboflow's ObjectDetectionInferenceResponse. */
export interface DetectionResponse {
  inference_id: string;
  time: number;
  image: { width: number; height: number };
  predictions: Prediction[];
  /** The image with the predictions drawn, base64 JPEG, when `visualize_predictions` was set. */
  visualization?: string;
}

/** What a stage pushes onto a gateway's reply list when an image is finished. */
export type ResultMessage =
  | { id: string; ok: true; response: DetectionResponse; marks: StageMarks }
  | { id: string; ok: false; error: ErrorBody };

/** Published by the inference process with its heartbeat; read by the gateway and `post`. */
export interface ModelDescription {
  model_id: string;
  task_type: 'object-detection';
  /** Largest batch the inference process runs. */
  batch_size: number;
  input_width: number;
  input_height: number;
  class_names: string[];
  execution_provider: string;
  /** Whether the model is loaded now (listed models load on first use). */
  loaded: boolean;
  /** Pinned models are loaded at start and never unloaded. */
  pinned: boolean;
  /** Output layout `infer` decodes (see shared/model-layout.ts). */
  layout: ModelLayout;
  /** How images become the model's input: `pre` letterboxes with `pad`, `infer` does the rest. */
  preprocessing: Preprocessing;
  /**
   * The model's recommended confidence threshold, 0..1, from its ONNX metadata entry
   * `recommended_confidence`; what a request's `confidence: 'best'` means. Null when the model
   * gives none (absent in descriptions published before it existed).
   */
  recommended_confidence?: number | null;
}

/** A command from the gateway's model routes to the inference process. */
export type ModelCommand =
  { op: 'add'; modelId: string } | { op: 'remove'; modelId: string } | { op: 'clear' };

/** The request context of a job, without the stage-specific fields, for the next stage's job. */
export function contextOf(job: RequestContext): RequestContext {
  const { id, modelId, params, replyTo, receivedAt, deadline, marks } = job;
  return { id, modelId, params, replyTo, receivedAt, deadline, marks };
}

/** Epoch ms with sub-millisecond precision, for stage marks. */
export function nowMs(): number {
  return performance.timeOrigin + performance.now();
}
