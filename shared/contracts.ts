import { z } from 'zod';
import { ErrorBodySchema } from './errors.js';
import { LetterboxSchema } from './letterbox.js';
import { MODEL_LAYOUTS, PreprocessingSchema, DEFAULT_PREPROCESSING } from './model-layout.js';

/**
 * What the roles agree on: queue names, each queue's job payload, the result message, the model
 * description and the model commands. Each shape that crosses a process boundary is one zod
 * schema here: its TypeScript type is `z.infer` of it, the OpenAPI document is generated from it
 * (services/gateway/openapi.ts), and whatever reads it from Redis parses it with it
 * (shared/validation.ts' parseJson, and the stage worker for job payloads). Payloads are plain
 * JSON (BullMQ stores job data as JSON); image bytes and tensors never travel in them, only the
 * Redis keys that hold them (see keys.ts).
 */
export const QueueName = {
  /** Images given by URL: downloaded (by `pre` processes, apart from decoding), then `pre`. */
  fetch: 'fetch',
  pre: 'pre',
  /**
   * Asynchronous requests' images to decode, served by the `pre` processes with one job at a
   * time each, at the inference process's pace (services/pre/async-pacing.ts): a long list is
   * decoded as the model gets to it, not all at once beside synchronous images.
   */
  preAsync: 'pre-async',
  infer: 'infer',
  /**
   * Asynchronous requests' images for the inference process, which serves both queues: kept
   * apart from `infer` so that they never hold the inference worker's job slots (each held until
   * its batch has run) that synchronous images need. `fetch` and `post` share one queue for
   * both, synchronous jobs going first (BullMQ priority; see shared/queues.ts).
   */
  inferAsync: 'infer-async',
  post: 'post',
} as const;
export type QueueName = (typeof QueueName)[keyof typeof QueueName];

/** Epoch milliseconds (wall clock). */
const epochMs = z.number().nonnegative();

/** How `post` draws the predictions for the response's `visualization`. */
export const VisualizeParamsSchema = z.object({
  labels: z.boolean(),
  /** Box outline width, pixels. */
  strokeWidth: z.number().int().min(1),
  /** Whether `pre` applied the EXIF orientation (the boxes are in that image's pixels). */
  autoOrient: z.boolean(),
});
export type VisualizeParams = z.infer<typeof VisualizeParamsSchema>;

/** Detection options of one request, as validated by the gateway (services/gateway/request.ts). */
export const DetectionParamsSchema = z.object({
  /** Minimum score, 0..1. */
  confidence: z.number().min(0).max(1),
  /** NMS overlap, 0..1. */
  iouThreshold: z.number().min(0).max(1),
  classAgnosticNms: z.boolean(),
  /** Class names to keep; null keeps every class. */
  classFilter: z.array(z.string()).nullable(),
  maxDetections: z.number().int().min(1),
  maxCandidates: z.number().int().min(1),
  /** Draw the predictions on the image (`visualize_predictions`); absent: not drawn. */
  visualize: VisualizeParamsSchema.optional(),
});
export type DetectionParams = z.infer<typeof DetectionParamsSchema>;

/**
 * Epoch-ms marks of one image's way through the stages (wall clock, so stages on different
 * machines need synchronised clocks). The gateway turns them into the `Server-Timing` header.
 */
export const StageMarksSchema = z.object({
  preStart: epochMs.optional(),
  preEnd: epochMs.optional(),
  /** When the batch holding the image went to the model. */
  inferStart: epochMs.optional(),
  inferEnd: epochMs.optional(),
  postStart: epochMs.optional(),
  postEnd: epochMs.optional(),
});
export type StageMarks = z.infer<typeof StageMarksSchema>;

/** Carried by every job of one image through every stage. */
export const RequestContextSchema = z.object({
  /** The inference id: also the BullMQ job id in every queue and part of every key. */
  id: z.string().min(1),
  modelId: z.string().min(1),
  params: DetectionParamsSchema,
  /** Gateway instance whose reply list receives the result. */
  replyTo: z.string().min(1),
  /** Epoch ms when the gateway received the request. */
  receivedAt: epochMs,
  /** Epoch ms after which nobody waits for the result. */
  deadline: epochMs,
  /** When each stage started and finished with the image so far. */
  marks: StageMarksSchema,
});
export type RequestContext = z.infer<typeof RequestContextSchema>;

/** Where `pre` finds the image: stored in Redis by the gateway (or `fetch`), or still a URL. */
export const ImageSourceSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('stored') }),
  z.object({ kind: z.literal('url'), url: z.string().min(1) }),
]);
export type ImageSource = z.infer<typeof ImageSourceSchema>;

/** Payload of the `fetch` and `pre` queues: one image to download and/or letterbox. */
export const PreJobSchema = RequestContextSchema.extend({
  source: ImageSourceSchema,
  autoOrient: z.boolean(),
});
export type PreJob = z.infer<typeof PreJobSchema>;

/** Payload of the `infer` queue: one letterboxed image, its pixels in Redis. */
export const InferJobSchema = RequestContextSchema.extend({ letterbox: LetterboxSchema });
export type InferJob = z.infer<typeof InferJobSchema>;

/** Payload of the `post` queue: one image's candidates, in Redis, to finish. */
export const PostJobSchema = RequestContextSchema.extend({
  letterbox: LetterboxSchema,
  /** Images in the batch that held this image, for the logs. */
  batchSize: z.number().int().min(1),
});
export type PostJob = z.infer<typeof PostJobSchema>;

/**
 * The job payload schema of each queue: a worker parses every job's data with its queue's
 * schema (shared/queues.ts), and a processor's payload type follows from its queue name.
 */
export const JobPayloadSchemas = {
  fetch: PreJobSchema,
  pre: PreJobSchema,
  'pre-async': PreJobSchema,
  infer: InferJobSchema,
  'infer-async': InferJobSchema,
  post: PostJobSchema,
} as const satisfies Record<QueueName, z.ZodType>;

/** Job payload type by queue, derived from JobPayloadSchemas. */
export type JobPayloads = {
  [Q in QueueName]: z.infer<(typeof JobPayloadSchemas)[Q]>;
};

/** One prediction, as in Roboflow's ObjectDetectionPrediction. */
export const PredictionSchema = z.object({
  x: z.number().describe('Box centre, pixels of the original (oriented) image.'),
  y: z.number().describe('Box centre, pixels of the original (oriented) image.'),
  width: z.number().describe('Box width, pixels of the original (oriented) image.'),
  height: z.number().describe('Box height, pixels of the original (oriented) image.'),
  confidence: z.number().min(0).max(1),
  class: z.string(),
  class_id: z.number().int().min(0),
  detection_id: z.uuid(),
});
export type Prediction = z.infer<typeof PredictionSchema>;

/** Roboflow's ObjectDetectionInferenceResponse: the answer for one image. */
export const DetectionResponseSchema = z.object({
  inference_id: z.uuid(),
  time: z.number().describe('Seconds from the request arriving to the result.'),
  image: z
    .object({ width: z.number().int().min(1), height: z.number().int().min(1) })
    .describe('Size of the original (oriented) image, pixels.'),
  predictions: z.array(PredictionSchema),
  visualization: z
    .base64()
    .optional()
    .describe('The image with the predictions drawn, base64 JPEG (visualize_predictions).'),
});
export type DetectionResponse = z.infer<typeof DetectionResponseSchema>;

/**
 * What a stage pushes onto a gateway's reply list (shared/reply.ts) when an image is finished:
 * its response, or the error that ended it.
 */
export const ResultMessageSchema = z.discriminatedUnion('ok', [
  z.object({
    id: z.string().min(1),
    ok: z.literal(true),
    response: DetectionResponseSchema,
    marks: StageMarksSchema,
  }),
  z.object({ id: z.string().min(1), ok: z.literal(false), error: ErrorBodySchema }),
]);
export type ResultMessage = z.infer<typeof ResultMessageSchema>;

/**
 * Queues of asynchronous requests, apart from the stage queues: `webhook` delivers a finished
 * request's status document to its `webhook_url`, `async-deadline` holds one delayed job per
 * request that finishes it at its deadline if its images have not all finished by then. Both
 * are served by the `pre` processes (services/pre/async-workers.ts).
 */
export const AsyncQueueName = {
  webhook: 'webhook',
  deadline: 'async-deadline',
} as const;
export type AsyncQueueName = (typeof AsyncQueueName)[keyof typeof AsyncQueueName];

/** Payload of the `webhook` and `async-deadline` queues: which asynchronous request. */
export const AsyncJobSchema = z.object({ requestId: z.string().min(1) });
export type AsyncJob = z.infer<typeof AsyncJobSchema>;

/**
 * What the gateway stores about an asynchronous request when it accepts it (the `meta` field
 * of its record, shared/async-requests.ts).
 */
export const AsyncMetaSchema = z.object({
  /** Epoch ms when the request arrived. */
  createdAt: epochMs,
  /** Epoch ms by which every image is finished, with its result or DEADLINE_EXCEEDED. */
  deadline: epochMs,
  /** The inference ids of its images, in the request's order. */
  images: z.array(z.string().min(1)).min(1),
  /** Whether the client sent a list (the result is then a list). */
  isList: z.boolean(),
  webhookUrl: z.string().optional(),
});
export type AsyncMeta = z.infer<typeof AsyncMetaSchema>;

/** States of an asynchronous request, as its status document tells them. */
export const ASYNC_STATUSES = ['queued', 'running', 'completed', 'failed'] as const;

/** The answer to `POST /async/infer/object_detection` (202). */
export const AsyncAcceptedSchema = z.object({
  inference_id: z.string().describe('Id of the asynchronous request.'),
  status: z.literal('queued'),
  status_url: z.string().describe('Where to poll: /async/<inference_id>.'),
});
export type AsyncAccepted = z.infer<typeof AsyncAcceptedSchema>;

/**
 * The status document of an asynchronous request: what `GET /async/<id>` answers, and the body
 * POSTed to its webhook once it is finished.
 */
export const AsyncStatusSchema = z.object({
  inference_id: z.string(),
  status: z
    .enum(ASYNC_STATUSES)
    .describe(
      'queued: no image started; running: some did; completed: every image has its result; failed: at least one image failed (see error).',
    ),
  created_at: z.iso.datetime().describe('When the request arrived (ISO 8601, UTC).'),
  completed_at: z.iso.datetime().optional().describe('When it finished (completed or failed).'),
  images_total: z.number().int().min(1),
  images_done: z
    .number()
    .int()
    .min(0)
    .describe('Images finished so far, with a result or an error.'),
  result: z
    .union([DetectionResponseSchema, z.array(DetectionResponseSchema)])
    .optional()
    .describe(
      'When completed: exactly the body the synchronous route answers (one response or a list).',
    ),
  error: ErrorBodySchema.optional().describe(
    "When failed: the error of the first image (in the request's order) that failed.",
  ),
});
export type AsyncStatus = z.infer<typeof AsyncStatusSchema>;

/**
 * One served model, published by the inference process as part of its heartbeat's value (a
 * JSON array of these, see model-directory.ts); read by the gateway and `pre`/`post`. The
 * public model routes answer parts of it, with these field names.
 */
export const ModelDescriptionSchema = z.object({
  model_id: z.string().min(1),
  task_type: z.literal('object-detection'),
  /** Largest batch the inference process runs. */
  batch_size: z.number().int().min(1).describe('Largest batch the server runs.'),
  input_width: z.number().int().min(1).describe('Model input width, pixels.'),
  input_height: z.number().int().min(1).describe('Model input height, pixels.'),
  class_names: z.array(z.string()).describe('Class names, by class id.'),
  execution_provider: z.string().describe('onnxruntime execution provider.'),
  /** Whether the model is loaded now (listed models load on first use). */
  loaded: z.boolean().describe('Loaded now (served models load on first use).'),
  /** Pinned models are loaded at start and never unloaded. */
  pinned: z.boolean().describe('Loaded at start and never unloaded.'),
  /** Output layout `infer` decodes (see model-layout.ts). */
  layout: z.enum(MODEL_LAYOUTS).describe('Output layout of the model.'),
  /**
   * How images become the model's input: `pre` letterboxes with `pad`, `infer` does the rest.
   * A description published before models carried it means Ultralytics' (centred).
   */
  preprocessing: PreprocessingSchema.default(DEFAULT_PREPROCESSING.yolov8),
  /**
   * The model's recommended confidence threshold, 0..1, from its ONNX metadata entry
   * `recommended_confidence`; what a request's `confidence: 'best'` means. Null when the model
   * gives none (absent in descriptions published before it existed).
   */
  recommended_confidence: z.number().min(0).max(1).nullable().optional(),
});
export type ModelDescription = z.infer<typeof ModelDescriptionSchema>;

/** The value of an inference process's heartbeat: the descriptions of the models it serves. */
export const ModelDescriptionsSchema = z.array(ModelDescriptionSchema);

/**
 * A command from the gateway's model routes to the inference process, on the model-control
 * pub/sub channel: load a served model, unload one, unload every model that is not pinned.
 */
export const ModelCommandSchema = z.discriminatedUnion('op', [
  z.object({ op: z.literal('add'), modelId: z.string().min(1) }),
  z.object({ op: z.literal('remove'), modelId: z.string().min(1) }),
  z.object({ op: z.literal('clear') }),
]);
export type ModelCommand = z.infer<typeof ModelCommandSchema>;

/** The request context of a job, without the stage-specific fields, for the next stage's job. */
export function contextOf(job: RequestContext): RequestContext {
  const { id, modelId, params, replyTo, receivedAt, deadline, marks } = job;
  return { id, modelId, params, replyTo, receivedAt, deadline, marks };
}

/** Epoch ms with sub-millisecond precision, for stage marks. */
export function nowMs(): number {
  return performance.timeOrigin + performance.now();
}
