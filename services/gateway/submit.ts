import { randomUUID } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import type { Redis } from 'ioredis';
import type { Config } from '../../shared/config.js';
import type { DetectionParams, PreJob } from '../../shared/contracts.js';
import { withDeadline } from '../../shared/deadline.js';
import { ErrorCode, PipelineError } from '../../shared/errors.js';
import type { Keys } from '../../shared/keys.js';
import { resolveModel, type ModelDirectory } from '../../shared/model-directory.js';
import {
  imageJobOptions,
  queueFor,
  storeAndEnqueue as storeAndEnqueueOne,
  type StageQueue,
} from '../../shared/queues.js';
import { execMulti, execPipeline } from '../../shared/redis.js';
import { readMultipartForm } from './multipart-image.js';
import {
  parseJsonRequest,
  parseQueryRequest,
  resolveParams,
  type ParsedRequest,
} from './request.js';

/**
 * What the synchronous and the asynchronous inference routes share: reading the request (JSON,
 * multipart or a raw image), resolving its model and deadline, and putting its images into the
 * pipeline (stored in Redis, one job each on `fetch` or `pre`). They differ only in where the
 * results go (`replyTo`) and what they answer.
 */

/** A request's images, options and model, as they go into the pipeline. */
export interface Submission {
  modelId: string;
  /** The request's detection options, with `default`/`best` resolved for the model. */
  params: DetectionParams;
  /** Epoch ms when the request arrived. */
  receivedAt: number;
  /** Epoch ms after which nobody waits for a result; every job carries it. */
  deadline: number;
}

/** A request as read from HTTP: its images and options, and where else fields may be given. */
export interface HttpRequest {
  request: ParsedRequest;
  /**
   * The places a route's own field (the asynchronous route's `webhook_url`) may come from: the
   * JSON body and the query string; for multipart and raw images the query string and
   * (multipart) the text parts. A query parameter may be repeated (an array of strings).
   */
  fieldSources: FieldSource[];
}

/** One place of a request that holds named fields. */
export interface FieldSource {
  from: 'body' | 'query' | 'form';
  fields: Record<string, unknown>;
}

/**
 * Reads the request's body (or, for multipart and raw images, its query string) into a
 * ParsedRequest.
 *
 * @param maxImages the longest list of images taken
 * @throws PipelineError INVALID_REQUEST naming every bad field
 */
export async function parseHttpRequest(
  req: FastifyRequest,
  maxImages: number,
): Promise<HttpRequest> {
  const query = req.query as Record<string, unknown>;
  if (req.isMultipart()) {
    const form = await readMultipartForm(req);
    return {
      request: parseQueryRequest(query, form.image),
      fieldSources: [
        { from: 'query', fields: query },
        { from: 'form', fields: form.fields },
      ],
    };
  }
  if (Buffer.isBuffer(req.body)) {
    return {
      request: parseQueryRequest(query, req.body),
      fieldSources: [{ from: 'query', fields: query }],
    };
  }
  const request = parseJsonRequest(req.body, maxImages);
  return {
    request,
    fieldSources: [
      { from: 'body', fields: req.body as Record<string, unknown> },
      { from: 'query', fields: query },
    ],
  };
}

/**
 * The model and deadline of a parsed request.
 *
 * @param receivedAt epoch ms when the request arrived
 * @param timeoutMs the route's deadline from arrival (REQUEST_TIMEOUT_MS, ASYNC_TIMEOUT_MS); a
 *   request's `timeout_ms` may shorten it, not lengthen it
 * @param lookupBy epoch ms by which the served models must be known (a Redis that does not
 *   answer ends the request then)
 * @throws PipelineError INVALID_REQUEST (image URLs turned off), MODEL_NOT_FOUND, NOT_READY,
 *   DEADLINE_EXCEEDED
 */
export async function resolveSubmission(
  config: Config,
  models: ModelDirectory,
  parsed: ParsedRequest,
  receivedAt: number,
  timeoutMs: number,
  lookupBy: number,
): Promise<Submission> {
  if (!config.gateway.allowUrlInput && parsed.images.some((i) => i.kind === 'url')) {
    throw new PipelineError(
      ErrorCode.INVALID_REQUEST,
      "image URLs are turned off on this server: send the image's bytes",
    );
  }
  const deadline = receivedAt + Math.min(timeoutMs, parsed.timeoutMs ?? Infinity);
  const served = await withDeadline(
    models.all(),
    Math.min(deadline, lookupBy),
    () =>
      new PipelineError(
        ErrorCode.DEADLINE_EXCEEDED,
        'no result arrived before the request deadline',
      ),
  );
  const modelId = resolveModel(parsed.modelId, served).model_id;
  return {
    modelId,
    params: resolveParams(parsed.params, served.get(modelId)),
    receivedAt,
    deadline,
  };
}

/** One `fetch` or `pre` job per image, each with a new inference id, answered to `replyTo`. */
export function imageJobs(parsed: ParsedRequest, run: Submission, replyTo: string): PreJob[] {
  return parsed.images.map((img) => ({
    id: randomUUID(),
    modelId: run.modelId,
    params: run.params,
    replyTo,
    receivedAt: run.receivedAt,
    deadline: run.deadline,
    marks: {},
    autoOrient: parsed.autoOrient,
    source: img.kind === 'url' ? { kind: 'url', url: img.url } : { kind: 'stored' },
  }));
}

/** What putting images into the pipeline needs. */
export interface PipelineInput {
  config: Config;
  keys: Keys;
  redis: Redis;
  preQueue: StageQueue<'pre'>;
  /** Asynchronous requests' images to decode (paced by the model; services/pre/async-pacing.ts). */
  preAsyncQueue: StageQueue<'pre-async'>;
  fetchQueue: StageQueue<'fetch'>;
}

/**
 * Images stored and enqueued per step of storeAndEnqueue. Storing and enqueueing a 400-image
 * list in one step (building ~800 Redis commands and their job payloads) held the gateway's
 * event loop for about 40 ms, and every synchronous request arriving meanwhile waited that long.
 */
export const SUBMIT_CHUNK_IMAGES = 50;

/**
 * Stores the uploaded images (TTL `ttlSeconds`), then adds one job per image: `fetch` for URLs,
 * `pre` for bytes (`pre-async` for an asynchronous request's; imageJobOptions: asynchronous
 * images get their priority). It works in steps
 * of SUBMIT_CHUNK_IMAGES images, yielding to the event loop between steps so that other
 * requests are served meanwhile.
 *
 * Without `alsoWrite` a step is one round trip: the images' SETs (a pipeline: they need no
 * transaction among themselves) and the jobs' adds go out together on the one connection the
 * queues share, and Redis runs them in order, so no job is seen before its image; a Redis at
 * its maxmemory refuses the SETs and the jobs' scripts alike. What `alsoWrite` adds is written
 * in one transaction with the first step's images, and the jobs are added only once it
 * succeeded. A request of one uploaded image without `alsoWrite` takes the stages' own hand-off
 * (storeAndEnqueue of shared/queues.ts: the same order on the same connection, without building
 * the two pipelines and with its bytes written as they are, setValue).
 *
 * @param signal once aborted (the caller gave up on the request), no further step starts;
 *   the promise rejects with the signal's reason
 */
export async function storeAndEnqueue(
  input: PipelineInput,
  parsed: ParsedRequest,
  jobs: PreJob[],
  ttlSeconds: number,
  alsoWrite?: (multi: ReturnType<Redis['multi']>) => void,
  signal?: AbortSignal,
): Promise<void> {
  const [only] = jobs;
  const onlyImage = parsed.images[0];
  if (jobs.length === 1 && only && !alsoWrite && onlyImage?.kind === 'bytes') {
    // One uploaded image (most requests): stored and enqueued as every stage hands an image on,
    // without the two pipelines below and without copying its bytes (setValue).
    await storeAndEnqueueOne(
      input.redis,
      input.keys.image(only.id),
      onlyImage.bytes,
      ttlSeconds,
      queueFor(only.replyTo, input.preQueue, input.preAsyncQueue) as StageQueue<'pre'>,
      only,
    );
    return;
  }
  // The first step runs even without images: it holds `alsoWrite`.
  for (let from = 0; from === 0 || from < jobs.length; from += SUBMIT_CHUNK_IMAGES) {
    if (from > 0) {
      await new Promise((resolve) => setImmediate(resolve));
      signal?.throwIfAborted();
    }
    const chunk = jobs.slice(from, from + SUBMIT_CHUNK_IMAGES);
    const transaction = from === 0 ? alsoWrite : undefined;
    const store = transaction ? input.redis.multi() : input.redis.pipeline();
    chunk.forEach((job, i) => {
      const img = parsed.images[from + i]!;
      if (img.kind === 'bytes') store.set(input.keys.image(job.id), img.bytes, 'EX', ttlSeconds);
    });
    const byUrl = chunk.filter((j) => j.source.kind === 'url');
    const stored = chunk.filter((j) => j.source.kind === 'stored');
    const decodeQueue = queueFor(stored[0]?.replyTo ?? '', input.preQueue, input.preAsyncQueue);
    const add = () =>
      Promise.all([
        byUrl.length > 0 &&
          input.fetchQueue.addBulk(
            byUrl.map((data) => ({ name: 'fetch', data, opts: imageJobOptions(data) })),
          ),
        stored.length > 0 &&
          // One request's images: all synchronous or all of one asynchronous request.
          decodeQueue.addBulk(
            stored.map((data) => ({
              name: decodeQueue.name as never,
              data,
              opts: imageJobOptions(data),
            })),
          ),
      ]);
    if (transaction) {
      transaction(store);
      await execMulti(store);
      await add();
    } else {
      await Promise.all([execPipeline(store), add()]);
    }
  }
}
