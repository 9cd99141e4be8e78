import type { FastifyInstance, FastifyReply, FastifyRequest, onRequestHookHandler } from 'fastify';
import type { DetectionResponse } from '../../shared/contracts.js';
import { ErrorCode, PipelineError } from '../../shared/errors.js';
import { z } from 'zod';
import { LegacyQuerySchema, parseLegacyRequest, type LegacyBody } from './legacy-request.js';
import type { KeyGuard } from './auth.js';
import { readMultipartImage } from './multipart-image.js';
import { detectionResponseDoc, errorResponses, openApiSchema } from './openapi.js';
import type { ParsedRequest } from './request.js';

/**
 * Roboflow's legacy route, `POST /{dataset_id}/{version_id}` (its hosted API v1, which its
 * `roboflow` Python package and many scripts call): the model is `dataset_id/version_id`, the
 * options come from the query string, and the image is `?image=<url>`, a base64 body (as
 * `curl -d @-` sends it: `application/x-www-form-urlencoded`), a multipart part `file` or a raw
 * image body. `format=image` answers the drawn image itself (image/jpeg), `image_and_json` the
 * JSON with `visualization`.
 */
export interface LegacyRouteDeps {
  /** The inference route's admission hook, run before the body is read. */
  admit: onRequestHookHandler;
  /** The API-key guard, run once the body is parsed. */
  guard: KeyGuard;
  /** Runs one image through the pipeline and returns its response (headers set on `reply`). */
  detectOne: (
    req: FastifyRequest,
    reply: FastifyReply,
    parsed: ParsedRequest,
  ) => Promise<DetectionResponse>;
}

/** Content types whose body is the image as base64 text. */
const BASE64_TYPES = ['application/x-www-form-urlencoded', 'text/plain', 'application/json'];

/**
 * Registers `POST` (and `GET`) `/{dataset_id}/{version_id}` (Roboflow's hosted API v1): the model id is
 * `dataset_id/version_id`, options come from the query, the image from the body or `?image=`.
 * Answers as `detectOne` does, in Roboflow's legacy response formats.
 */
export async function registerLegacyRoute(
  app: FastifyInstance,
  deps: LegacyRouteDeps,
): Promise<void> {
  // In its own scope: these body parsers apply to this route only.
  await app.register((scope, _opts, done) => {
    for (const type of BASE64_TYPES) {
      if (scope.hasContentTypeParser(type)) scope.removeContentTypeParser(type);
      scope.addContentTypeParser(type, { parseAs: 'string' }, (_req, body, done) =>
        done(null, { base64: body }),
      );
    }
    // GET too, as Roboflow's server takes it: then the image is `?image=<url>`.
    scope.route({
      method: ['GET', 'POST'],
      url: '/:dataset_id/:version_id',
      schema: legacySchema,
      onRequest: deps.admit,
      preHandler: deps.guard,
      handler: async (req, reply) => {
        const { dataset_id, version_id } = LegacyParams.parse(req.params);
        const body = await readBody(req);
        const { parsed, format } = parseLegacyRequest(
          `${dataset_id}/${version_id}`,
          req.query as Record<string, unknown>,
          body,
        );
        const response = await deps.detectOne(req, reply, parsed);
        if (format !== 'image') return response;
        if (response.visualization === undefined)
          throw new PipelineError(ErrorCode.INTERNAL, 'the visualization is missing');
        void reply.header('content-type', 'image/jpeg');
        return Buffer.from(response.visualization, 'base64');
      },
    });
    done();
  });
}

async function readBody(req: FastifyRequest): Promise<LegacyBody> {
  if (req.isMultipart()) return { kind: 'bytes', bytes: await readMultipartImage(req) };
  const body = req.body;
  if (Buffer.isBuffer(body)) return { kind: 'bytes', bytes: body };
  if (body && typeof body === 'object' && 'base64' in body && typeof body.base64 === 'string')
    return { kind: 'base64', text: body.base64 };
  return null;
}

/** The route's path parameters: the model is `dataset_id/version_id`. */
const LegacyParams = z.object({ dataset_id: z.string().min(1), version_id: z.string().min(1) });

const legacySchema = {
  summary: "Roboflow's legacy (hosted API v1) detection route",
  description:
    'The model is `dataset_id/version_id` (serve it with MODEL_ID=dataset/version). The image is ' +
    '`?image=<url>`, a base64 body (application/x-www-form-urlencoded, text/plain or ' +
    "application/json), a multipart part 'file' or a raw image body.",
  params: openApiSchema(LegacyParams),
  querystring: openApiSchema(LegacyQuerySchema, 'input'),
  response: {
    200: {
      description: 'JSON (format json or image_and_json) or image/jpeg (format image)',
      ...detectionResponseDoc,
    },
    ...errorResponses(400, 401, 404, 413, 415, 500, 503, 504),
  },
};
