import { randomUUID } from 'node:crypto';
import { isIP } from 'node:net';
import type { FastifyInstance, FastifyReply, FastifyRequest, RouteShorthandOptions } from 'fastify';
import { z } from 'zod';
import type { AsyncRequests } from '../../shared/async-requests.js';
import { asyncReplyTo, statusDocument } from '../../shared/async-requests.js';
import type { Config } from '../../shared/config.js';
import type { AsyncAccepted } from '../../shared/contracts.js';
import { AsyncQueueName, type QueueName } from '../../shared/contracts.js';
import { dataTtlSeconds, withDeadline } from '../../shared/deadline.js';
import { ErrorCode, PipelineError } from '../../shared/errors.js';
import type { ModelDirectory } from '../../shared/model-directory.js';
import type { AsyncQueue, StageQueue } from '../../shared/queues.js';
import { isPublicAddress } from '../../shared/url-guard.js';
import type { Admission } from './admission.js';
import type { GatewayMetrics } from './metrics.js';
import {
  asyncDeleteRouteSchema,
  asyncInferRouteSchema,
  asyncStatusRouteSchema,
} from './openapi.js';
import { invalidRequest, WebhookUrlSchema } from './request.js';
import {
  imageJobs,
  parseHttpRequest,
  resolveSubmission,
  storeAndEnqueue,
  type PipelineInput,
  type FieldSource,
} from './submit.js';

/**
 * The asynchronous routes: `POST /async/infer/object_detection` takes every body the
 * synchronous route takes (submit.ts reads it the same way) plus `webhook_url`, stores and
 * enqueues the images with `replyTo = async:<id>` and answers 202 at once; `GET /async/<id>`
 * answers the request's status document (shared/async-requests.ts), `DELETE /async/<id>`
 * cancels what has not started and forgets the request.
 */
export interface AsyncRouteDeps extends PipelineInput {
  config: Config;
  models: ModelDirectory;
  records: AsyncRequests;
  /** Every stage queue, where DELETE looks for the images' jobs. */
  stageQueues: ReadonlyArray<StageQueue<QueueName>>;
  deadlineQueue: AsyncQueue;
  webhookQueue: AsyncQueue;
  admission: Admission;
  metrics: GatewayMetrics;
  /** The webhooks' signing key; without one, `webhook_url` is refused. */
  webhookSecret: string | undefined;
  /** The API key check (a preHandler), or nothing when the API is open. */
  needsKey: Pick<RouteShorthandOptions, 'preHandler'>;
  /** When each request arrived (epoch ms). */
  arrivedAt: (req: FastifyRequest) => number;
  /** Sets a request's inference ids for its log line. */
  logIds: (req: FastifyRequest, ids: string[]) => void;
}

/** Where the status of an asynchronous request is polled. */
export function statusPath(requestId: string): string {
  return `/async/${requestId}`;
}

/** `webhook_url`, from the JSON body or, for multipart and raw bodies, the query string. */
const WebhookSchema = z.looseObject({ webhook_url: WebhookUrlSchema });

/** Registers the three routes. */
export function registerAsyncRoutes(app: FastifyInstance, deps: AsyncRouteDeps): void {
  const { config, records, admission, metrics } = deps;
  // Before the body is read, as for the synchronous route, but against the asynchronous backlog.
  const admit = (req: FastifyRequest, reply: FastifyReply, done: (err?: Error) => void) => {
    try {
      const length = Number(req.headers['content-length'] ?? 0);
      reply.raw.once('close', admission.admit(Number.isFinite(length) ? length : 0, 'async'));
      done();
    } catch (err) {
      done(err as Error);
    }
  };

  app.post(
    '/async/infer/object_detection',
    { schema: asyncInferRouteSchema, ...deps.needsKey, onRequest: admit },
    async (req, reply) => {
      const receivedAt = deps.arrivedAt(req);
      // Redis that does not answer ends the request here, as it would a synchronous one.
      const answerBy = receivedAt + config.requestTimeoutMs;
      const { request: parsed, fieldSources } = await parseHttpRequest(req, config.async.maxImages);
      const webhookUrl = parseWebhookUrl(
        fieldSources,
        deps.webhookSecret,
        config.pre.fetch.policy.allowPrivate,
      );
      admission.admitAsyncImages(parsed.images.length);
      const run = await resolveSubmission(
        config,
        deps.models,
        parsed,
        receivedAt,
        config.async.timeoutMs,
        answerBy,
      );
      const requestId = randomUUID();
      const jobs = imageJobs(parsed, run, asyncReplyTo(requestId));
      deps.logIds(req, [requestId, ...jobs.map((j) => j.id)]);
      // Aborted when the client is told of a failure: no further images go in after forget().
      const submitting = new AbortController();
      const late = () =>
        new PipelineError(ErrorCode.DEADLINE_EXCEEDED, 'the request could not be stored in time');
      try {
        await withDeadline(
          (async () => {
            // First its deadline, so that nothing of it can outlive the deadline unfinished.
            await deps.deadlineQueue.add(
              AsyncQueueName.deadline,
              { requestId },
              { jobId: requestId, delay: Math.max(0, run.deadline - Date.now()) },
            );
            // Its data lives past its deadline; the stages delete it once an image is done.
            const ttl = dataTtlSeconds(run.deadline, config.dataTtlSeconds);
            await storeAndEnqueue(
              deps,
              parsed,
              jobs,
              ttl,
              (multi) =>
                records.create(multi, requestId, {
                  createdAt: receivedAt,
                  deadline: run.deadline,
                  images: jobs.map((j) => j.id),
                  isList: parsed.isList,
                  ...(webhookUrl !== undefined && { webhookUrl }),
                }),
              submitting.signal,
            );
          })(),
          answerBy,
          late,
        );
      } catch (err) {
        // The client hears of a failure, so nothing of the request may run: forget it.
        submitting.abort(err);
        void forget(
          deps,
          requestId,
          jobs.map((j) => j.id),
        ).catch(() => {});
        throw err;
      }
      metrics.asyncAccepted.inc();
      metrics.imagesPerRequest.observe(parsed.images.length);
      const body: AsyncAccepted = {
        inference_id: requestId,
        status: 'queued',
        status_url: statusPath(requestId),
      };
      return reply.status(202).header('location', statusPath(requestId)).send(body);
    },
  );

  const idParam = (req: FastifyRequest) => (req.params as { inference_id: string }).inference_id;
  const bounded = <T>(work: Promise<T>) =>
    withDeadline(
      work,
      Date.now() + config.requestTimeoutMs,
      () => new PipelineError(ErrorCode.NOT_READY, 'Redis did not answer; retry later'),
    );

  app.get(
    '/async/:inference_id',
    { schema: asyncStatusRouteSchema, ...deps.needsKey },
    async (req) => {
      const id = idParam(req);
      // The results (up to ASYNC_MAX_IMAGES responses) are read and parsed only once the
      // document shows them: polling a running request costs one small HGETALL.
      let record = UUID.test(id) ? await bounded(records.read(id, false)) : undefined;
      if (record && (record.completedAt !== undefined || Date.now() > record.meta.deadline))
        record = await bounded(records.read(id));
      if (!record) throw unknown(id);
      return statusDocument(id, record);
    },
  );

  app.delete(
    '/async/:inference_id',
    { schema: asyncDeleteRouteSchema, ...deps.needsKey },
    async (req, reply) => {
      const id = idParam(req);
      const meta = UUID.test(id) ? await bounded(records.remove(id)) : undefined;
      if (!meta) throw unknown(id);
      await bounded(forget(deps, id, meta.images));
      return reply.status(204).send();
    },
  );
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function unknown(id: string): PipelineError {
  return new PipelineError(
    ErrorCode.RESULT_UNKNOWN,
    `no asynchronous request ${JSON.stringify(id.slice(0, 100))} is known: it was never accepted, was deleted, expired (results are kept ASYNC_RESULT_TTL_S after they finish), or Redis lost it (a restart without persistence); send it again`,
  );
}

/**
 * Removes whatever of a request is in Redis: its record, the jobs of its images that have not
 * started (a started one finishes its stage, and its result is dropped: the record is gone),
 * their data, and its deadline and webhook jobs.
 */
async function forget(deps: AsyncRouteDeps, requestId: string, images: string[]): Promise<void> {
  await deps.redis.del(
    deps.keys.asyncRecord(requestId),
    deps.keys.asyncResults(requestId),
    ...images.flatMap((id) => deps.keys.requestData(id)),
  );
  await Promise.all([
    ...images.flatMap((id) => deps.stageQueues.map((q) => q.remove(id))),
    deps.deadlineQueue.remove(requestId),
    deps.webhookQueue.remove(requestId),
  ]);
}

/**
 * The request's `webhook_url`, checked: given once (in the JSON body, the query string or a
 * multipart text part; the same value in two places is once), an http(s) URL, a WEBHOOK_SECRET
 * to sign with, and an IP literal the address guard lets through (a host name is checked on its
 * addresses when the webhook is delivered).
 *
 * @param sources where the request holds fields (parseHttpRequest)
 * @throws PipelineError INVALID_REQUEST
 */
export function parseWebhookUrl(
  sources: readonly FieldSource[],
  secret: string | undefined,
  allowPrivate: boolean,
): string | undefined {
  const given = sources.flatMap(({ from, fields }) => {
    // A repeated query parameter counts as its last value, as the options are read.
    const values = from === 'query' ? lastValues(fields) : fields;
    return values['webhook_url'] === undefined ? [] : [{ from, value: values['webhook_url'] }];
  });
  const distinct = new Set(given.map((g) => JSON.stringify(g.value)));
  if (distinct.size > 1) {
    throw new PipelineError(
      ErrorCode.INVALID_REQUEST,
      `webhook_url is given twice, with different values (in the ${given.map((g) => g.from).join(' and the ')}); give it once`,
    );
  }
  const parsed = WebhookSchema.safeParse({ webhook_url: given[0]?.value });
  if (!parsed.success) throw invalidRequest(parsed.error);
  const url = parsed.data.webhook_url;
  if (url === undefined) return undefined;
  if (secret === undefined) {
    throw new PipelineError(
      ErrorCode.INVALID_REQUEST,
      'webhook_url: this server has no WEBHOOK_SECRET to sign webhooks with, and sends no unsigned ones; poll the status URL instead',
    );
  }
  const host = new URL(url).hostname.replace(/^\[|\]$/g, '');
  if (!allowPrivate && isIP(host) !== 0 && !isPublicAddress(host)) {
    throw new PipelineError(
      ErrorCode.INVALID_REQUEST,
      `webhook_url: ${host} is a private, loopback or link-local address, or another that is not a public internet address, which webhooks may not reach`,
    );
  }
  return url;
}

/** A query string's repeated parameters as their last value (as the options are read). */
function lastValues(source: object): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(source).map(([k, v]) => [k, Array.isArray(v) ? (v as unknown[]).at(-1) : v]),
  );
}
