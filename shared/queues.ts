import {
  Queue,
  Worker,
  UnrecoverableError,
  type Job,
  type JobsOptions,
  type WorkerOptions,
} from 'bullmq';
import type { Redis } from 'ioredis';
import { asyncRequestOf, type AsyncRequests } from './async-requests.js';
import {
  JobPayloadSchemas,
  RequestContextSchema,
  type AsyncJob,
  type AsyncQueueName,
  type JobPayloads,
  type QueueName,
  type RequestContext,
} from './contracts.js';
import { ErrorCode, PipelineError, toErrorBody, type ErrorBody } from './errors.js';
import type { Keys } from './keys.js';
import type { Logger } from './logger.js';
import type { StageMetrics } from './metrics.js';
import type { ResultSink } from './reply.js';
import { setValue } from './redis.js';
import { formatIssues } from './validation.js';

/**
 * The BullMQ adapter: every queue and worker of the pipeline is made here, with the job options
 * the whole pipeline relies on (finished jobs removed, bounded retries).
 */
export const JOB_OPTIONS: JobsOptions = {
  attempts: 3,
  // 100 ms, then 200 ms: a transient fault (Redis full or restarting) gets a moment to pass.
  backoff: { type: 'exponential', delay: 100 },
  removeOnComplete: true,
  removeOnFail: true,
};

/**
 * The BullMQ job states of work not yet started: `waiting` (the list `<prefix>:<queue>:wait`),
 * `prioritized` and `delayed` (sorted sets `<prefix>:<queue>:prioritized`, `…:delayed`; a retry
 * waits out its backoff in `delayed`). The backlog that admission limits and autoscaling reads.
 */
export const WAITING_STATES = ['waiting', 'prioritized', 'delayed'] as const;

/**
 * How long a BullMQ worker waits before fetching again after a fetch or a job's completion
 * failed on Redis (BullMQ's `runRetryDelay`, 15 s by default). A Redis at its maxmemory refuses
 * the fetch script; with the default, a worker that met it took no job for 15 s after Redis had
 * room again, and images waiting for that worker reached their deadline. Short, so work resumes
 * as soon as Redis does; ioredis's own reconnection paces the retries while Redis is down.
 */
export const WORKER_RETRY_MS = 250;

export type StageQueue<Q extends QueueName> = Queue<JobPayloads[Q], void, string>;
/** A queue of asynchronous requests' deadlines or webhooks (createAsyncQueue). */
export type AsyncQueue = Queue<AsyncJob, void, string>;

/**
 * BullMQ priority of asynchronous requests' jobs in every stage queue. A worker takes the jobs
 * of the wait list (no priority: synchronous requests) before any prioritized job, so while
 * both wait a synchronous image always goes first; asynchronous jobs among themselves keep
 * their order (one priority, first in first out).
 */
export const ASYNC_PRIORITY = 1;

/**
 * Length of each queue's BullMQ events stream (`<prefix>:<queue>:events`, approximate: Redis
 * trims whole stream nodes). Every BullMQ script appends to it (added, active, completed …), but
 * nothing in this pipeline reads it (no QueueEvents; the dashboard reads the job lists): at
 * BullMQ's default of 10,000 the three streams held about 3 MB, most of an idle Redis.
 *
 * @defaultValue 100
 */
export const EVENTS_MAX_LEN = 100;

/**
 * The queue `name` on `connection`, with the pipeline's job options (JOB_OPTIONS).
 *
 * @param log where the queue's errors go; connection errors, which the connection's own
 *   listener reports (createRedis), only at debug level. A queue without an 'error' listener
 *   would end the process on the first one.
 */
export function createQueue<Q extends QueueName>(
  name: Q,
  connection: Redis,
  prefix: string,
  log?: Logger,
): StageQueue<Q> {
  return listenForErrors(
    new Queue<JobPayloads[Q], void, string>(name, queueOptions(connection, prefix)),
    connection,
    log,
  );
}

/** One of the asynchronous requests' queues (`webhook`, `async-deadline`), as createQueue. */
export function createAsyncQueue(
  name: AsyncQueueName,
  connection: Redis,
  prefix: string,
  log?: Logger,
): AsyncQueue {
  return listenForErrors(
    new Queue<AsyncJob, void, string>(name, queueOptions(connection, prefix)),
    connection,
    log,
  );
}

/** The options of every queue of the pipeline: its job options, short event streams. */
function queueOptions(connection: Redis, prefix: string) {
  return {
    connection,
    prefix,
    defaultJobOptions: JOB_OPTIONS,
    streams: { events: { maxLen: EVENTS_MAX_LEN } },
  };
}

function listenForErrors<T extends Queue>(queue: T, connection: Redis, log?: Logger): T {
  queue.on('error', (err: Error) => {
    if (connection.status === 'ready') log?.warn({ err, queue: queue.name }, 'queue error');
    else log?.debug({ err, queue: queue.name }, 'queue error while Redis is not connected');
  });
  return queue;
}

/**
 * The options of one image's job in any stage queue: its id is the inference id, so a retried
 * producer cannot duplicate it; an asynchronous request's image gets ASYNC_PRIORITY.
 */
export function imageJobOptions(data: RequestContext): JobsOptions {
  return asyncRequestOf(data.replyTo) === undefined
    ? { jobId: data.id }
    : { jobId: data.id, priority: ASYNC_PRIORITY };
}

/**
 * The queue an image goes on next: `sync` for a synchronous request's image, `background`
 * for an asynchronous request's (`pre` / `pre-async`, `infer` / `infer-async`).
 *
 * @param replyTo the image's `replyTo` (an asynchronous request's is `async:<id>`)
 */
export function queueFor<T>(replyTo: string, sync: T, background: T): T {
  return asyncRequestOf(replyTo) === undefined ? sync : background;
}

/** Adds the job for one image, with imageJobOptions. */
export async function enqueue<Q extends QueueName>(
  queue: StageQueue<Q>,
  data: JobPayloads[Q],
): Promise<void> {
  // BullMQ's name type cannot be resolved for a generic Q; the job name is the queue's name.
  await queue.add(queue.name as never, data as never, imageJobOptions(data));
}

/**
 * Stores one image's data (`SET key value EX ttlSeconds`) and adds its job to `queue` in one
 * round trip instead of two. Both go out on `redis`, the connection the queue was made with
 * (createQueue), and Redis runs one connection's commands in order, so the job is never seen
 * before its data; a Redis at its maxmemory refuses both (the SET, and the job's script at its
 * first write).
 *
 * @param redis the connection `queue` was made with
 * @throws the first error of either command
 */
export async function storeAndEnqueue<Q extends QueueName>(
  redis: Redis,
  key: string,
  value: Buffer,
  ttlSeconds: number,
  queue: StageQueue<Q>,
  data: JobPayloads[Q],
): Promise<void> {
  await Promise.all([setValue(redis, key, value, ttlSeconds), enqueue(queue, data)]);
}

export interface StageWorkerOptions<Q extends QueueName> {
  queue: Q;
  /** Dedicated blocking connection for the worker. */
  connection: Redis;
  /** Connection for the stage's own commands (data keys). */
  client: Redis;
  keys: Keys;
  concurrency: number;
  logger: Logger;
  /** Where the errors that end an image go (its gateway, or its asynchronous request). */
  results: ResultSink;
  /**
   * Asynchronous requests' records: given to the first stages of an image (`fetch`, `pre`),
   * which note that the request is running and drop the image of a request that is gone
   * (deleted, expired). Absent: not checked.
   */
  asyncRecords?: AsyncRequests;
  /** How long a job's lock lasts without renewal (JOB_LOCK_MS). */
  lockDurationMs: number;
  metrics: StageMetrics;
  /** The stage's work on one job, its payload already parsed with the queue's schema. */
  process: (data: JobPayloads[Q], log: Logger) => Promise<void>;
}

/**
 * The BullMQ worker options of every stage worker (createStageWorker), also for the bench's
 * stand-ins (bench/floor.ts).
 *
 * @param connection the worker's dedicated blocking connection
 * @param prefix the pipeline's key prefix
 * @param concurrency jobs the worker runs at once
 * @param lockDurationMs how long a job's lock lasts without renewal, ms (JOB_LOCK_MS); the
 *   stalled-job check runs every half of it, at least every 500 ms
 */
export function stageWorkerOptions(
  connection: Redis,
  prefix: string,
  concurrency: number,
  lockDurationMs: number,
): WorkerOptions {
  return {
    connection,
    prefix,
    concurrency,
    // A dead worker's jobs are found by the stalled-job check of any live worker of the queue
    // and put back once their lock expires; a job lost twice fails (and its request hears so).
    lockDuration: lockDurationMs,
    stalledInterval: Math.max(500, Math.floor(lockDurationMs / 2)),
    maxStalledCount: 2,
    // An idle worker's blocking wait (BZPOPMIN on the queue's marker, followed by a fetch
    // attempt when it times out) lasts BullMQ's longest, 10 s, rather than 5: a new job
    // wakes the worker at once whatever this is, so only the idle polling halves.
    drainDelay: 10,
    runRetryDelay: WORKER_RETRY_MS,
  };
}

/**
 * A BullMQ worker for one stage. Around the stage's own processing it adds what every stage
 * needs: jobs past their deadline are dropped without doing their work; an input error fails
 * the job at once (no retry) and a transient one is retried; when a job fails for the last
 * time the waiting gateway is told, so no request is left without an answer.
 */
export function createStageWorker<Q extends QueueName>(
  opts: StageWorkerOptions<Q>,
): Worker<unknown> {
  const { keys, client, logger } = opts;
  /** Tells the waiting gateway that this image failed, and drops the image's data. */
  const answerWithError = async (
    data: Pick<RequestContext, 'id' | 'replyTo'>,
    error: ErrorBody,
    log: Logger,
  ) => {
    try {
      // Nothing downstream will consume this image's data now (deleted before the answer).
      await opts.results.send(
        data.replyTo,
        { id: data.id, ok: false, error },
        keys.requestData(data.id),
      );
    } catch (err) {
      log.error({ err }, 'could not send the error result');
    }
  };
  // The worker sees job data as it comes out of Redis (`unknown`); parsePayload makes it typed.
  const worker = new Worker<unknown>(
    opts.queue,
    async (job) => {
      const data = await parsePayload(opts.queue, job.data, (error) => {
        const log = logger.child({ inference_id: job.id, stage: opts.queue });
        log.error({ code: error.code, problems: error.message }, 'malformed job payload');
        opts.metrics.failed.inc({ stage: opts.queue, code: error.code });
        // Whoever waits for this image hears of it, if the payload still says who that is.
        const target = replyTarget(job);
        return target ? answerWithError(target, error, log) : Promise.resolve();
      });
      if (!data) throw new UnrecoverableError('malformed job payload (see the log)');
      const log = logger.child({ inference_id: data.id, stage: opts.queue });
      const stage = { stage: opts.queue };
      const started = Date.now();
      opts.metrics.queueWait.observe(
        stage,
        Math.max(0, (job.processedOn ?? started) - job.timestamp) / 1000,
      );
      if (job.attemptsStarted > 1) opts.metrics.retried.inc(stage);
      const requestId = asyncRequestOf(data.replyTo);
      try {
        if (requestId !== undefined && opts.asyncRecords) {
          if (!(await opts.asyncRecords.markStarted(requestId))) {
            // Deleted (DELETE /async/<id>) or expired: nobody wants this image any more.
            log.debug({ request_id: requestId }, 'asynchronous request gone; image dropped');
            await client.del(...keys.requestData(data.id));
            return;
          }
        }
        if (Date.now() > data.deadline) {
          throw new PipelineError(
            ErrorCode.DEADLINE_EXCEEDED,
            `request deadline passed before the ${opts.queue} stage`,
          );
        }
        await opts.process(data, log);
        opts.metrics.processing.observe(stage, (Date.now() - started) / 1000);
        opts.metrics.completed.inc(stage);
      } catch (err) {
        const error = toErrorBody(err);
        // A full Redis refuses BullMQ's own scripts too (a retry could not even be scheduled):
        // the image is answered now, and its data freed, rather than left to its deadline.
        const unrecoverable =
          (err instanceof PipelineError && err.unrecoverable) ||
          error.code === ErrorCode.STORE_FULL;
        const final = unrecoverable || job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
        opts.metrics.failed.inc({ ...stage, code: error.code });
        log.warn({ err, code: error.code, attempt: job.attemptsMade + 1, final }, 'job failed');
        if (final) await answerWithError(data, error, log);
        if (unrecoverable) throw new UnrecoverableError(`${error.code}: ${error.message}`);
        throw err;
      }
    },
    stageWorkerOptions(opts.connection, keys.prefix, opts.concurrency, opts.lockDurationMs),
  );
  // While Redis is unreachable every poll fails: the connection's own listener reports the
  // outage once (createRedis), so these go to debug then.
  worker.on('error', (err) => {
    if (opts.connection.status === 'ready') logger.error({ err }, 'worker error');
    else logger.debug({ err }, 'worker error while Redis is not connected');
  });
  worker.on('failed', (job, err) => {
    // Jobs failed by the stalled-job check never reached the processor's error path.
    if (!job || !/stalled more than/i.test(err.message)) return;
    const error = {
      code: ErrorCode.INTERNAL,
      message: `the ${opts.queue} stage lost this image twice (its workers died)`,
    };
    opts.metrics.failed.inc({ stage: opts.queue, code: error.code });
    const log = logger.child({ inference_id: job.id, stage: opts.queue });
    log.error(error.message);
    const target = replyTarget(job);
    if (target) void answerWithError(target, error, log);
  });
  worker.on('stalled', (jobId) => {
    opts.metrics.stalled.inc({ stage: opts.queue });
    logger.warn({ inference_id: jobId, stage: opts.queue }, 'stalled job put back in the queue');
  });
  return worker;
}

/**
 * A job's data as its queue's schema (JobPayloadSchemas) reads it: BullMQ hands over whatever
 * JSON the job holds in Redis, which is trusted only once parsed. On a payload of another shape
 * `onMalformed` gets an INTERNAL error naming every problem, and the result is undefined.
 */
async function parsePayload<Q extends QueueName>(
  queue: Q,
  data: unknown,
  onMalformed: (error: ErrorBody) => Promise<void>,
): Promise<JobPayloads[Q] | undefined> {
  const parsed = JobPayloadSchemas[queue].safeParse(data);
  if (parsed.success) return parsed.data as JobPayloads[Q];
  await onMalformed({
    code: ErrorCode.INTERNAL,
    message: `malformed ${queue} job payload: ${formatIssues(parsed.error, 'data').join('; ')}`,
  });
  return undefined;
}

/** Where a job's image is answered (its id and gateway), read from data that may be malformed. */
function replyTarget(job: Job<unknown>): Pick<RequestContext, 'id' | 'replyTo'> | undefined {
  const target = RequestContextSchema.pick({ id: true, replyTo: true }).safeParse(job.data);
  return target.success ? target.data : undefined;
}
