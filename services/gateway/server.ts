import { randomUUID } from 'node:crypto';
import multipart from '@fastify/multipart';
import Fastify, {
  LogController,
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify';
import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Registry } from 'prom-client';
import type { Config } from '../../shared/config.js';
import type { QueueName } from '../../shared/contracts.js';
import { withDeadline, withTimeout } from '../../shared/deadline.js';
import {
  ErrorCode,
  HTTP_STATUS,
  PipelineError,
  RETRY_AFTER_SECONDS,
  RETRY_LATER,
  type ErrorBody,
} from '../../shared/errors.js';
import { listAlive } from '../../shared/heartbeat.js';
import type { Keys } from '../../shared/keys.js';
import type { Logger } from '../../shared/logger.js';
import type { ModelDirectory } from '../../shared/model-directory.js';
import type { AsyncQueue, StageQueue } from '../../shared/queues.js';
import type { ParsedRequest } from './request.js';
import {
  imageJobs,
  parseHttpRequest,
  resolveSubmission,
  storeAndEnqueue,
  type Submission,
} from './submit.js';
import { AsyncRequests, responseBody } from '../../shared/async-requests.js';
import { registerAsyncRoutes } from './async-routes.js';
import { Admission } from './admission.js';
import { StoreMonitor } from './store-monitor.js';
import { ApiKeys } from './auth.js';
import { DASHBOARD_PATH, registerDashboard } from './dashboard.js';
import { registerDemoPage } from './demo-page.js';
import { registerLegacyRoute } from './legacy-route.js';
import type { GatewayMetrics } from './metrics.js';
import { registerModelRoutes } from './model-routes.js';
import { multipartOptions } from './multipart-image.js';
import { inferRouteSchema, registerOpenApi } from './openapi.js';
import type { ImageResult, ResultWaiter } from './result-waiter.js';
import { registerServerInfo } from './server-info.js';
import { serverTiming } from './server-timing.js';
import { registerUnimplementedRoutes } from './unimplemented-routes.js';
import { apiErrorBody, clientError, toHttpError } from './error-responses.js';

/**
 * The gateway's HTTP API (Roboflow-compatible): it validates requests, stores uploaded image
 * bytes in Redis, enqueues one `pre` job per image and answers when the results come back
 * through its ResultWaiter. It never decodes an image.
 */
export interface GatewayDeps {
  config: Config;
  gatewayId: string;
  keys: Keys;
  redis: Redis;
  preQueue: StageQueue<'pre'>;
  preAsyncQueue: StageQueue<'pre-async'>;
  /** Where images given by URL go first, to be downloaded. */
  fetchQueue: StageQueue<'fetch'>;
  /** The stage queues (`fetch`, `pre`, `pre-async`, `infer`, `infer-async`, `post`). */
  stageQueues: ReadonlyArray<StageQueue<QueueName>>;
  /** The queues of asynchronous requests' deadlines and webhooks. */
  deadlineQueue: AsyncQueue;
  webhookQueue: AsyncQueue;
  /** Every queue of the pipeline, for the dashboard. */
  queues: readonly Queue[];
  /** The webhooks' signing key (WEBHOOK_SECRET); without one, `webhook_url` is refused. */
  webhookSecret: string | undefined;
  waiter: ResultWaiter;
  models: ModelDirectory;
  log: Logger;
  registry: Registry;
  metrics: GatewayMetrics;
}

/**
 * The gateway's fastify app with every route, hook and plugin, not yet listening.
 *
 * @returns the app; `close()` drains it (in-flight requests are answered, new ones get 503)
 */
export async function buildServer(deps: GatewayDeps) {
  const { config, keys, redis, models } = deps;
  // The inference ids of each request, for its log line.
  const inferenceIds = new WeakMap<FastifyRequest, string[]>();
  // Typed as fastify's base logger so the instance has fastify's default type (for plugins).
  const logger: FastifyBaseLogger = deps.log;
  const bodyTimeoutMs = config.gateway.requestBodyTimeoutMs;
  const app = Fastify({
    loggerInstance: logger,
    bodyLimit: config.gateway.maxBodyBytes,
    // A request's headers and body must arrive within REQUEST_BODY_TIMEOUT_MS (the headers
    // alone within 10 s at most): a client that trickles them cannot hold a slot for longer.
    // Node checks the open requests every second.
    requestTimeout: bodyTimeoutMs,
    http: {
      headersTimeout: Math.min(HEADERS_TIMEOUT_MS, bodyTimeoutMs),
      connectionsCheckingInterval: 1000,
    },
    clientErrorHandler: clientError,
    // Path parameters (model ids, asynchronous request ids) up to 2048 characters reach their
    // routes, which answer an unknown one with their 404 (find-my-way's default, 100, made a
    // longer unknown id a 400).
    routerOptions: { maxParamLength: 2048 },
    // URLs fastify cannot route (a bad %-escape): the API's 400.
    frameworkErrors: (err, _req, reply) => {
      const body: ErrorBody = {
        code: ErrorCode.INVALID_REQUEST,
        message: `bad request URL: ${err.message}`,
      };
      void (reply as FastifyReply).status(400).send(body);
    },
    // Requests that arrive while draining get this API's 503 (the onRequest hook below).
    return503OnClosing: false,
    // One line per request is logged by the onResponse hook below, with its inference ids.
    logController: new LogController({ disableRequestLogging: true }),
    genReqId: () => randomUUID(),
  });

  const { metrics } = deps;
  // When each request arrived: its deadline runs from here, whatever it waits for after.
  const arrivals = new WeakMap<FastifyRequest, number>();
  let draining = false;
  app.addHook('preClose', (done) => {
    draining = true;
    done();
  });
  app.addHook('onRequest', (req, reply, done) => {
    arrivals.set(req, Date.now());
    metrics.inFlight.inc();
    // A backstop for every route (plugins' too): none answers later than REQUEST_TIMEOUT_MS
    // and a second after it arrived, whatever Redis does. The inference routes keep their own,
    // exact deadline. Sent as a plain body, so no plugin's own error handler reshapes it.
    const backstop = setTimeout(() => {
      if (reply.sent || reply.raw.headersSent) return;
      metrics.errors.inc({ code: ErrorCode.DEADLINE_EXCEEDED });
      req.log.warn('no answer within the request timeout');
      void reply.status(504).send({
        code: ErrorCode.DEADLINE_EXCEEDED,
        message: 'no answer within the request timeout',
      });
    }, config.requestTimeoutMs + 1000);
    // 'close' comes for every response, answered or aborted, exactly once.
    reply.raw.once('close', () => {
      clearTimeout(backstop);
      metrics.inFlight.dec();
    });
    if (draining) {
      void reply.header('connection', 'close');
      done(new PipelineError(ErrorCode.NOT_READY, 'the gateway is shutting down; retry'));
      return;
    }
    done();
  });
  app.addHook('onResponse', (req, reply, done) => {
    const labels = {
      route: req.routeOptions.url ?? 'unmatched',
      method: req.method,
      status_code: String(reply.statusCode),
    };
    const seconds = reply.elapsedTime / 1000;
    metrics.requests.inc(labels);
    metrics.duration.observe(labels, seconds);
    req.log.info(
      { ...labels, ms: Math.round(reply.elapsedTime), inference_ids: inferenceIds.get(req) },
      'request done',
    );
    done();
  });

  app.setErrorHandler((err: FastifyError, req, reply) => {
    const body = toHttpError(err);
    metrics.errors.inc({ code: body.code });
    const status = HTTP_STATUS[body.code];
    if (status >= 500 && !RETRY_LATER.has(body.code)) req.log.error({ err }, 'request failed');
    else if (status >= 500)
      req.log.warn({ code: body.code, message: body.message }, 'request refused');
    void reply.status(status).send(body);
  });
  // Every error a client receives is {code, message} with its documented status, whatever
  // produced it (a plugin with an error handler of its own, fastify itself), and the codes that
  // mean "come back later" carry Retry-After: the one place both are decided.
  app.addHook('onSend', (_req, reply, payload, done) => {
    if (reply.statusCode < 400) return done(null, payload);
    const shaped = apiErrorBody(reply.statusCode, payload);
    if (shaped === undefined) return done(null, payload);
    if (RETRY_LATER.has(shaped.body.code))
      void reply.header('retry-after', String(RETRY_AFTER_SECONDS));
    if (!shaped.rewritten) return done(null, payload);
    void reply.header('content-type', 'application/json; charset=utf-8');
    done(null, JSON.stringify(shaped.body));
  });
  // The route schemas are generated from the zod schemas that define each shape and only
  // document the API (openapi.ts): requests are parsed by those zod schemas themselves
  // (request.ts, which names every bad field in the API's own error body) and responses are
  // built from the types derived from them and sent as plain JSON, so fastify's validator and
  // serializer must not reject or reshape anything here.
  app.setValidatorCompiler(() => () => true);
  app.setSerializerCompiler(() => (data) => JSON.stringify(data));
  await registerOpenApi(app);
  const apiKeys = ApiKeys.fromConfig(config.gateway.apiKeys, config.gateway.apiKeysFile);
  // Checked once the body is parsed (api_key may be in it); /healthz, /readyz and /docs stay open.
  const needsKey = { preHandler: apiKeys.guard() };
  await registerDashboard(
    app,
    deps.queues,
    config.gateway.queueDashboard,
    apiKeys.dashboardGuard(DASHBOARD_PATH),
  );
  await app.register(multipart, multipartOptions(config.gateway.maxBodyBytes));
  // Text bodies are no request this API takes: 415 rather than a confusing 400.
  app.removeContentTypeParser('text/plain');
  // Fastify tests a pattern against the whole header, parameters included (`; charset=binary`):
  // the pattern allows parameters after every accepted type alike.
  app.addContentTypeParser(RAW_IMAGE_TYPES, { parseAs: 'buffer' }, (_req, body, done) =>
    done(null, body),
  );

  app.setNotFoundHandler((req, reply) => {
    void reply
      .status(404)
      .send({ code: ErrorCode.NOT_FOUND, message: `no route for ${req.method} ${req.url}` });
  });

  const store = new StoreMonitor(redis, deps.preQueue, deps.stageQueues, deps.log);
  metrics.readAsyncBacklog = () => store.current.asyncBacklog;
  const admission = new Admission(
    {
      maxInflight: config.gateway.maxInflight,
      maxQueueDepth: config.gateway.maxQueueDepth,
      memoryHighWater: config.gateway.redisMemoryHighWater,
      maxAsyncBacklog: config.async.maxBacklog,
    },
    () => store.current,
  );
  // A Redis at its maxmemory refuses every write, BullMQ's own scripts included: the images
  // waiting in the pipeline cannot move. Once it has stayed full for FULL_SHED_MS, the requests
  // waiting here are answered STORE_FULL, and their data deleted (DEL is allowed) to make room.
  let fullSince: number | undefined;
  const shed = setInterval(() => {
    const { maxMemory, usedMemory, reachable } = store.current;
    if (!reachable || maxMemory === 0 || usedMemory < maxMemory) {
      fullSince = undefined;
      return;
    }
    fullSince ??= Date.now();
    if (Date.now() - fullSince < FULL_SHED_MS) return;
    const ids = deps.waiter.failAll(
      fullSince,
      () => new PipelineError(ErrorCode.STORE_FULL, 'Redis is out of memory; retry later'),
    );
    if (ids.length === 0) return;
    deps.log.warn({ requests: ids.length }, 'Redis is full: waiting images answered STORE_FULL');
    redis.del(...ids.flatMap((id) => keys.requestData(id))).catch(() => {});
  }, 250);
  shed.unref();
  app.addHook('onClose', (_app, done) => {
    clearInterval(shed);
    store.close();
    done();
  });
  // Before the body is read: an overloaded gateway refuses without touching the image.
  const admit = (req: FastifyRequest, reply: FastifyReply, done: (err?: Error) => void) => {
    try {
      const length = Number(req.headers['content-length'] ?? 0);
      reply.raw.once('close', admission.admit(Number.isFinite(length) ? length : 0));
      done();
    } catch (err) {
      done(err as Error);
    }
  };
  const inferRoute = { schema: inferRouteSchema, ...needsKey, onRequest: admit };

  /** Runs a parsed request's images through the pipeline; results in the request's order. */
  const detect = async (req: FastifyRequest, reply: FastifyReply, parsed: ParsedRequest) => {
    // The deadline runs from the request's arrival; a request may shorten it, not lengthen it.
    const receivedAt = arrivals.get(req) ?? Date.now();
    const run = await resolveSubmission(
      config,
      models,
      parsed,
      receivedAt,
      config.requestTimeoutMs,
      Infinity,
    );
    metrics.imagesPerRequest.observe(parsed.images.length);
    // A client that goes away stops the work still ahead for its images.
    const abandoned = new AbortController();
    reply.raw.once('close', () => {
      if (!reply.raw.writableFinished) abandoned.abort();
    });
    return runPipeline(deps, parsed, {
      ...run,
      onIds: (ids) => inferenceIds.set(req, ids),
      abandoned: abandoned.signal,
    });
  };
  /** The response of a one-image request, with its stage times in `Server-Timing`. */
  const detectOne = async (req: FastifyRequest, reply: FastifyReply, parsed: ParsedRequest) => {
    const only = (await detect(req, reply, parsed))[0]!;
    void reply.header('server-timing', serverTiming(only.receivedAt, only.marks, Date.now()));
    return only.response;
  };

  app.post('/infer/object_detection', inferRoute, async (req, reply) => {
    const { request: parsed } = await parseHttpRequest(req, config.gateway.maxImagesPerRequest);
    if (!parsed.isList) return detectOne(req, reply, parsed);
    return responseBody(
      true,
      (await detect(req, reply, parsed)).map((r) => r.response),
    );
  });
  await registerLegacyRoute(app, { admit, guard: apiKeys.guard(), detectOne });
  registerAsyncRoutes(app, {
    ...deps,
    records: new AsyncRequests(redis, keys, config.async.resultTtlSeconds),
    admission,
    needsKey,
    arrivedAt: (req) => arrivals.get(req) ?? Date.now(),
    logIds: (req, ids) => inferenceIds.set(req, ids),
  });
  await registerDemoPage(app, { apiKeyRequired: apiKeys.enabled });

  app.get('/metrics', config.gateway.metricsRequireKey ? needsKey : {}, async (_req, reply) => {
    void reply.header('content-type', deps.registry.contentType);
    return deps.registry.metrics();
  });

  registerModelRoutes(app, {
    models,
    redis,
    keys,
    needsKey,
    timeoutMs: config.requestTimeoutMs,
  });

  registerServerInfo(app, { redis, keys });
  registerUnimplementedRoutes(app);

  app.get('/healthz', () => ({ status: 'ok' }));

  // `/readiness` is Roboflow's name for the same check.
  app.get('/readiness', (_req, reply) => answerReadiness(reply));
  app.get('/readyz', (_req, reply) => answerReadiness(reply));
  const answerReadiness = async (reply: FastifyReply) => {
    const missing = await withTimeout(
      notReadyReasons(redis, keys),
      READY_TIMEOUT_MS,
      () => new Error('Redis did not answer'),
    ).catch(() => [`Redis did not answer within ${READY_TIMEOUT_MS} ms`]);
    if (missing.length > 0) {
      return reply
        .status(503)
        .send({ code: ErrorCode.NOT_READY, message: `not ready: ${missing.join('; ')}` });
    }
    return { status: 'ready' };
  };

  return app;
}

/** Raw image bodies: `image/*` and `application/octet-stream`, with or without parameters. */
const RAW_IMAGE_TYPES = /^(?:image\/[^\s;]+|application\/octet-stream)\s*(?:;.*)?$/i;

interface PipelineRun extends Submission {
  onIds: (ids: string[]) => void;
  /** Aborted when the client goes away. */
  abandoned: AbortSignal;
}

/**
 * Stores the images, enqueues one `pre` job each and waits for every result, in order. Ends by
 * `run.deadline` in every case: a Redis command still pending then is left behind.
 *
 * @throws PipelineError DEADLINE_EXCEEDED at the deadline, CLIENT_CLOSED when the client left,
 *   or the first image's error
 */
async function runPipeline(
  deps: GatewayDeps,
  parsed: ParsedRequest,
  run: PipelineRun,
): Promise<Array<ImageResult & { receivedAt: number }>> {
  const { config, keys, redis, waiter } = deps;
  const { modelId, receivedAt, deadline, onIds, abandoned } = run;
  const jobs = imageJobs(parsed, run, deps.gatewayId);
  onIds(jobs.map((j) => j.id));
  const waits = jobs.map((job) =>
    waiter.wait(job.id, deadline).then((result) => {
      deps.metrics.imageLatency.observe({ model_id: modelId }, (Date.now() - receivedAt) / 1000);
      return { ...result, receivedAt };
    }),
  );
  // An image can fail (and its wait reject) while the jobs are still being enqueued, before
  // anything awaits the waits: mark them handled now; Promise.all below still sees the error.
  for (const w of waits) w.catch(() => {});
  // Aborted once the request failed: its later images are not stored or enqueued.
  const submitting = new AbortController();
  const enqueued = storeAndEnqueue(
    deps,
    parsed,
    jobs,
    config.dataTtlSeconds,
    undefined,
    submitting.signal,
  );
  const gone = new Promise<never>((_, reject) => {
    const onAbort = () =>
      reject(new PipelineError(ErrorCode.CLIENT_CLOSED, 'the client closed the connection'));
    if (abandoned.aborted) onAbort();
    else abandoned.addEventListener('abort', onAbort, { once: true });
  });
  try {
    const all = enqueued.then(() => inOrder(waits));
    return await withDeadline(
      Promise.race([all, gone]),
      deadline,
      () =>
        new PipelineError(
          ErrorCode.DEADLINE_EXCEEDED,
          'no result arrived before the request deadline',
        ),
    );
  } catch (err) {
    submitting.abort(err);
    for (const job of jobs) waiter.cancel(job.id);
    // Not awaited: a Redis that does not answer must not hold the answer. Queued on the same
    // connection after the writes above, so it runs after them when Redis answers again.
    redis.del(...jobs.flatMap((job) => keys.requestData(job.id))).catch(() => {});
    throw err;
  }
}

/**
 * Every result, in order; when images fail, the error of the first failed one in the request's
 * order (not the first to fail in time), as an asynchronous request's status reports it. An
 * image's failure is known as soon as the images before it have their results.
 */
async function inOrder<T>(waits: readonly Promise<T>[]): Promise<T[]> {
  const results: T[] = [];
  for (const w of waits) results.push(await w);
  return results;
}

async function notReadyReasons(redis: Redis, keys: Keys): Promise<string[]> {
  try {
    await redis.ping();
  } catch {
    return ['Redis is not reachable'];
  }
  const [infer, pre, post] = await Promise.all(
    ['infer', 'pre', 'post'].map((role) => listAlive(redis, keys, role)),
  );
  const reasons: string[] = [];
  if (!infer || infer.size === 0) reasons.push('no inference process with a loaded model');
  if (!pre || pre.size === 0) reasons.push('no pre worker');
  if (!post || post.size === 0) reasons.push('no post worker');
  return reasons;
}

/** Longest wait for a request's headers, whatever REQUEST_BODY_TIMEOUT_MS says. */
const HEADERS_TIMEOUT_MS = 10_000;
/** How long Redis must stay at its maxmemory before waiting images are answered STORE_FULL. */
const FULL_SHED_MS = 1000;
/** How long /readyz waits for Redis before it answers 503. */
const READY_TIMEOUT_MS = 1000;
