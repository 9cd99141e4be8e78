import { z } from 'zod';
import type { DetectionParams, ModelDescription } from '../../shared/contracts.js';
import { ErrorCode, PipelineError } from '../../shared/errors.js';
import { formatIssues } from '../../shared/validation.js';
import { laxBoolean, laxConfidence, laxNumber, type ConfidenceSetting } from './lax-values.js';

/**
 * Parsing and validation of `POST /infer/object_detection`, as Roboflow's
 * ObjectDetectionInferenceRequest. Pure functions: the HTTP layer hands in the parsed JSON body
 * (or the query string and the raw image for multipart and raw bodies).
 */
export type ImageInput = { kind: 'bytes'; bytes: Buffer } | { kind: 'url'; url: string };

/** Detection options as a request gives them: the confidence may still be a keyword. */
export type RequestParams = Omit<DetectionParams, 'confidence'> & {
  confidence: ConfidenceSetting;
};

export interface ParsedRequest {
  images: ImageInput[];
  /** True when the client sent a list, so the response must be a list too. */
  isList: boolean;
  modelId: string | undefined;
  /** The options; resolveParams turns them into a job's DetectionParams once the model is known. */
  params: RequestParams;
  autoOrient: boolean;
  /** The client's own deadline in ms, if it asked for one. */
  timeoutMs: number | undefined;
}

const ImageSchema = z.looseObject({
  type: z.string({ error: 'image.type is required' }),
  value: z.unknown(),
});

/** The server's default confidence, what `confidence: 'default'` and an absent one mean. */
export const DEFAULT_CONFIDENCE = 0.4;

const OptionsSchema = z.looseObject({
  model_id: z
    .string()
    .min(1)
    .optional()
    .describe('Served model; optional when one model is served.'),
  confidence: laxConfidence(1)
    .default(DEFAULT_CONFIDENCE)
    .describe(
      "Minimum score of a prediction, 0..1; 'default' is the server's default (0.4), 'best' the model's recommended threshold.",
    ),
  iou_threshold: laxNumber(z.number().min(0).max(1))
    .default(0.3)
    .describe('NMS overlap above which the weaker of two boxes is dropped.'),
  class_agnostic_nms: laxBoolean()
    .default(false)
    .describe('Suppress overlapping boxes across classes.'),
  class_filter: z.array(z.string()).nullable().optional().describe('Class names to keep.'),
  max_detections: laxNumber(z.number().int().min(1).max(100_000))
    .default(300)
    .describe('Boxes kept per image.'),
  max_candidates: laxNumber(z.number().int().min(1).max(1_000_000))
    .default(3000)
    .describe('Candidates considered by NMS, best first.'),
  disable_preproc_auto_orient: laxBoolean().default(false).describe('Ignore the EXIF orientation.'),
  timeout_ms: laxNumber(z.number().int().min(1))
    .optional()
    .describe('A deadline shorter than the server default (REQUEST_TIMEOUT_MS); longer is capped.'),
  visualize_predictions: laxBoolean()
    .default(false)
    .describe('Also return `visualization`: the image with the boxes drawn, base64 JPEG.'),
  visualization_labels: laxBoolean()
    .default(true)
    .describe('Draw class names and confidences on the visualization.'),
  visualization_stroke_width: laxNumber(z.number().int().min(1).max(100))
    .default(1)
    .describe('Box outline width of the visualization, in pixels.'),
});

const BodySchema = OptionsSchema.extend({
  image: z.union([ImageSchema, z.array(ImageSchema)], {
    error: 'image must be an object or a list of objects',
  }),
});

/**
 * The request body as the API documentation shows it (openapi.ts): the parsing schema's options,
 * with the image described exactly (parsing keeps `image` loose so that its errors can name the
 * supported types; parseImageValue then accepts exactly what this describes).
 */
const DocImageSchema = z.object({
  type: z.enum(['base64', 'url']),
  value: z
    .string()
    .describe('Base64 image bytes (a data: URL prefix is accepted), or an http(s) URL.'),
});
export const RequestBodyDocSchema = OptionsSchema.extend({
  image: z
    .union([DocImageSchema, z.array(DocImageSchema).min(1)])
    .describe('One image, or a list of images (the response is then a list in the same order).'),
});

/**
 * `webhook_url` of the asynchronous route: in the JSON body, or in the query string with
 * multipart and raw bodies (async-routes.ts parses it; the API documentation shows it).
 */
export const WebhookUrlSchema = z
  .string()
  .max(2048, 'must be at most 2048 characters')
  .pipe(z.url({ protocol: /^https?$/, error: 'must be an http or https URL' }))
  // zod runs this check on a value the URL check refused too: that one has reported it.
  .refine(
    (url) => !URL.canParse(url) || new URL(url).port !== '0',
    'port 0 is no port a webhook can reach',
  )
  .optional()
  .describe(
    'POST the finished status document here (JSON, signed: X-Signature-256 = sha256=<hex HMAC-SHA256 of the body with WEBHOOK_SECRET>). With multipart and raw bodies, a query parameter. Refused (400) when the server has no WEBHOOK_SECRET.',
  );

type Options = z.infer<typeof OptionsSchema>;

/** Parses a JSON body. Throws INVALID_REQUEST naming every bad field. */
export function parseJsonRequest(body: unknown, maxImages: number): ParsedRequest {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new PipelineError(ErrorCode.INVALID_REQUEST, 'the request body must be a JSON object');
  }
  const parsed = BodySchema.safeParse(body);
  if (!parsed.success) throw invalidRequest(parsed.error);
  const isList = Array.isArray(parsed.data.image);
  const rawImages = Array.isArray(parsed.data.image) ? parsed.data.image : [parsed.data.image];
  checkImageCount(rawImages.length, maxImages);
  const images = rawImages.map((img, i) => parseImage(img, isList ? `image[${i}]` : 'image'));
  return { images, isList, ...options(parsed.data) };
}

/**
 * Parses the options of a multipart or raw-image request from its query string, where every
 * value is a string (the schemas read numbers and booleans from text, as for JSON bodies); a
 * repeated parameter counts once, its last value, except class_filter, which may be repeated or
 * comma-separated.
 */
export function parseQueryRequest(query: Record<string, unknown>, image: Buffer): ParsedRequest {
  const converted: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(query)) {
    const v = Array.isArray(value) ? (value as unknown[]) : [value];
    if (key === 'class_filter') {
      converted[key] = v
        .flatMap((s) => String(s).split(','))
        .map((s) => s.trim())
        .filter(Boolean);
    } else {
      converted[key] = String(v[v.length - 1]);
    }
  }
  const parsed = OptionsSchema.safeParse(converted);
  if (!parsed.success) throw invalidRequest(parsed.error);
  if (image.byteLength === 0)
    throw new PipelineError(ErrorCode.INVALID_REQUEST, 'the image is empty');
  return { images: [{ kind: 'bytes', bytes: image }], isList: false, ...options(parsed.data) };
}

/**
 * The confidence threshold a setting means for a model: a number as given; `default` the
 * server's DEFAULT_CONFIDENCE; `best` the model's recommended threshold (its
 * `recommended_confidence`, from the ONNX metadata) when it has one, else the default.
 */
export function resolveConfidence(
  setting: ConfidenceSetting,
  model: Pick<ModelDescription, 'recommended_confidence'> | undefined,
): number {
  if (typeof setting === 'number') return setting;
  if (setting === 'best') return model?.recommended_confidence ?? DEFAULT_CONFIDENCE;
  return DEFAULT_CONFIDENCE;
}

/** A request's options as a job's DetectionParams, for the model that will run them. */
export function resolveParams(
  params: RequestParams,
  model: Pick<ModelDescription, 'recommended_confidence'> | undefined,
): DetectionParams {
  return { ...params, confidence: resolveConfidence(params.confidence, model) };
}

function options(o: Options): Omit<ParsedRequest, 'images' | 'isList'> {
  return {
    modelId: o.model_id,
    autoOrient: !o.disable_preproc_auto_orient,
    timeoutMs: o.timeout_ms,
    params: {
      confidence: o.confidence,
      iouThreshold: o.iou_threshold,
      classAgnosticNms: o.class_agnostic_nms,
      classFilter: o.class_filter && o.class_filter.length > 0 ? o.class_filter : null,
      maxDetections: o.max_detections,
      maxCandidates: o.max_candidates,
      ...(o.visualize_predictions && {
        visualize: {
          labels: o.visualization_labels,
          strokeWidth: o.visualization_stroke_width,
          autoOrient: !o.disable_preproc_auto_orient,
        },
      }),
    },
  };
}

function checkImageCount(count: number, maxImages: number): void {
  if (count === 0)
    throw new PipelineError(ErrorCode.INVALID_REQUEST, 'image: the list of images is empty');
  if (count > maxImages) {
    throw new PipelineError(
      ErrorCode.INVALID_REQUEST,
      `image: ${count} images in one request; at most ${maxImages} are allowed`,
    );
  }
}

const BASE64 = /^[A-Za-z0-9+/\-_\s]*={0,2}\s*$/;

function parseImage(img: z.infer<typeof ImageSchema>, field: string): ImageInput {
  if (typeof img.value !== 'string' || img.value.length === 0) {
    throw new PipelineError(ErrorCode.INVALID_REQUEST, `${field}.value must be a non-empty string`);
  }
  return parseImageValue(img.type, img.value, `${field}.value`, field);
}

/**
 * One image given as base64 text or a URL. `field` names the value in error messages, `owner`
 * the image (they differ for `{type, value}` objects).
 */
export function parseImageValue(
  type: string,
  value: string,
  field: string,
  owner = field,
): ImageInput {
  switch (type) {
    case 'base64': {
      const comma = value.startsWith('data:') ? value.indexOf(',') : -1;
      const payload = comma >= 0 ? value.slice(comma + 1) : value;
      if (!BASE64.test(payload)) {
        throw new PipelineError(ErrorCode.INVALID_REQUEST, `${field} is not valid base64`);
      }
      const bytes = Buffer.from(payload, 'base64');
      if (bytes.byteLength === 0)
        throw new PipelineError(ErrorCode.INVALID_REQUEST, `${owner}: the image is empty`);
      return { kind: 'bytes', bytes };
    }
    case 'url': {
      let url: URL;
      try {
        url = new URL(value);
      } catch {
        throw new PipelineError(ErrorCode.INVALID_REQUEST, `${field} is not a valid URL`);
      }
      if (url.protocol !== 'http:' && url.protocol !== 'https:') {
        throw new PipelineError(ErrorCode.INVALID_REQUEST, `${field} must be an http or https URL`);
      }
      return { kind: 'url', url: url.toString() };
    }
    default:
      throw new PipelineError(
        ErrorCode.INVALID_REQUEST,
        `${owner}.type '${type}' is not supported; use 'base64' or 'url' (or send the file as multipart or a raw body)`,
      );
  }
}

/**
 * INVALID_REQUEST naming every problem zod found (`field: message`, joined with `; `), with the
 * list in `details.issues`.
 *
 * @param root what a problem with the whole value is called
 * @defaultValue root `'body'`
 */
export function invalidRequest(error: z.ZodError, root = 'body'): PipelineError {
  const details = formatIssues(error, root);
  return new PipelineError(ErrorCode.INVALID_REQUEST, details.join('; '), { issues: details });
}
