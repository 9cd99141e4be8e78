import { z } from 'zod';
import { ErrorCode, PipelineError } from '../../shared/errors.js';
import { laxBoolean, laxConfidence, laxNumber } from './lax-values.js';
import { invalidRequest, parseImageValue, type ParsedRequest } from './request.js';

/**
 * Parsing of Roboflow's legacy (hosted API v1) request, `POST /{dataset_id}/{version_id}`:
 * options in the query string, the image as `?image=<url>`, a base64 body or a file. Pure
 * functions: the route hands in the query string and what it read of the body.
 */
export const LegacyFormat = {
  json: 'json',
  image: 'image',
  imageAndJson: 'image_and_json',
} as const;
export type LegacyFormat = (typeof LegacyFormat)[keyof typeof LegacyFormat];

export interface LegacyRequest {
  parsed: ParsedRequest;
  format: LegacyFormat;
}

/** What the route read of the body: a base64 text, raw image bytes, or nothing. */
export type LegacyBody = { kind: 'base64'; text: string } | { kind: 'bytes'; bytes: Buffer } | null;

/**
 * The legacy route's query string: parsed with this, and documented from it (legacy-route.ts).
 * `api_key` is read by the key guard (auth.ts), listed here for the documentation.
 */
export const LegacyQuerySchema = z.looseObject({
  format: z
    .enum(['json', 'image', 'image_and_json'], {
      error: "must be 'json', 'image' or 'image_and_json'",
    })
    .default('json'),
  // Roboflow's hosted API takes a percentage (0..100) where its server takes 0..1: a value of
  // 1 or more is read as a percentage, as Roboflow's own server does. 'default' and 'best'
  // are resolved against the model like the JSON route's.
  confidence: laxConfidence(100)
    .default(40)
    .describe(
      "0..1, or a percentage when 1 or more; 'default' (40 %) or 'best' (the model's recommended threshold)",
    ),
  overlap: laxNumber(z.number().min(0).max(100))
    .default(30)
    .describe('NMS IoU: 0..1, or a percentage'),
  classes: z.string().optional().describe('Comma-separated class names to keep'),
  labels: laxBoolean()
    .default(false)
    .describe('Draw labels on the image (true/false, True/False, 1/0, yes/no, on/off)'),
  stroke: laxNumber(z.number().int().min(1).max(100))
    .default(1)
    .describe('Box outline width of the image, pixels'),
  max_detections: laxNumber(z.number().int().min(1).max(100_000)).default(300),
  max_candidates: laxNumber(z.number().int().min(1).max(1_000_000)).default(3000),
  class_agnostic_nms: laxBoolean().default(false),
  disable_preproc_auto_orient: laxBoolean().default(false),
  timeout_ms: laxNumber(z.number().int().min(1)).optional(),
  image: z.string().min(1).optional().describe('URL of the image'),
  api_key: z.string().optional(),
});

/** A 0..1 fraction from a value that may be a percentage (1..100), as Roboflow reads them. */
export function fraction(v: number): number {
  return v >= 1 ? v / 100 : v;
}

/**
 * Parses a legacy request for the model `modelId` (`dataset_id/version_id`). Throws
 * INVALID_REQUEST naming every bad parameter, or when the request has no image or two.
 */
export function parseLegacyRequest(
  modelId: string,
  query: Record<string, unknown>,
  body: LegacyBody,
): LegacyRequest {
  const flat: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(query)) {
    flat[key] = Array.isArray(value) ? (value as unknown[])[value.length - 1] : value;
  }
  const result = LegacyQuerySchema.safeParse(flat);
  if (!result.success) throw invalidRequest(result.error, 'query');
  const q = result.data;
  const hasBody = body !== null && (body.kind === 'bytes' || body.text.trim() !== '');
  if (q.image !== undefined && hasBody) {
    throw new PipelineError(
      ErrorCode.INVALID_REQUEST,
      'send the image either as ?image=<url> or in the body, not both',
    );
  }
  let image: ParsedRequest['images'][number];
  if (q.image !== undefined) {
    image = parseImageValue('url', q.image, 'image');
  } else if (body?.kind === 'bytes') {
    if (body.bytes.byteLength === 0)
      throw new PipelineError(ErrorCode.INVALID_REQUEST, 'the image is empty');
    image = { kind: 'bytes', bytes: body.bytes };
  } else if (hasBody && body?.kind === 'base64') {
    image = parseImageValue('base64', body.text, 'body');
  } else {
    throw new PipelineError(
      ErrorCode.INVALID_REQUEST,
      'no image: send ?image=<url>, a base64 body, or a multipart part named file',
    );
  }
  const drawn = q.format !== 'json';
  const classes = (q.classes ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  return {
    format: q.format,
    parsed: {
      images: [image],
      isList: false,
      modelId,
      autoOrient: !q.disable_preproc_auto_orient,
      timeoutMs: q.timeout_ms,
      params: {
        confidence: typeof q.confidence === 'number' ? fraction(q.confidence) : q.confidence,
        iouThreshold: fraction(q.overlap),
        classAgnosticNms: q.class_agnostic_nms,
        classFilter: classes.length > 0 ? classes : null,
        maxDetections: q.max_detections,
        maxCandidates: q.max_candidates,
        ...(drawn && {
          visualize: {
            labels: q.labels,
            strokeWidth: q.stroke,
            autoOrient: !q.disable_preproc_auto_orient,
          },
        }),
      },
    },
  };
}
