import { asyncRequestOf } from '../../shared/async-requests.js';
import { CANDIDATE_STRIDE, encodeCandidates } from '../../shared/candidates.js';
import {
  ModelCommandSchema,
  QueueName,
  contextOf,
  nowMs,
  type InferJob,
  type ModelDescription,
} from '../../shared/contracts.js';
import type { Logger } from '../../shared/logger.js';
import { dataTtlSeconds } from '../../shared/deadline.js';
import { ErrorCode, PipelineError } from '../../shared/errors.js';
import { modelsPayload } from '../../shared/model-directory.js';
import { createQueue, storeAndEnqueue } from '../../shared/queues.js';
import { cleanupWithRedis, closeRedis, createRedis } from '../../shared/redis.js';
import { runStage } from '../../shared/stage-process.js';
import { parseJson } from '../../shared/validation.js';
import type { Letterbox } from '../../shared/letterbox.js';
import { BatchScheduler, type BackgroundPacing } from './batcher.js';
import type { Placement } from './input-tensor.js';
import { InferenceMetrics } from './metrics.js';
import { ModelPool } from './model-pool.js';
import { loadModelSpecs } from './models-file.js';

/**
 * The `infer` stage: the one process that owns the models (model-pool.ts). It takes
 * letterboxed images from the `infer` queue, runs them in dynamic batches per model with one
 * batch per model instance at a time (batcher.ts, which also decides between models), stores each
 * image's compact candidates in Redis and enqueues it on the `post` queue. The gateway's model
 * routes reach it as commands on a pub/sub channel.
 */
interface BatchItem {
  job: InferJob;
  pixels: Buffer;
}

interface ItemResult {
  candidates: Float32Array;
  batchSize: number;
  inferStart: number;
  inferEnd: number;
}

runStage(QueueName.infer, async ({ config, log, keys, client, registry, instanceId, beatNow }) => {
  // The scheduler is made below; the gauge reads it at each scrape.
  let waiting = () => 0;
  const metrics = new InferenceMetrics(registry, () => waiting());
  // The descriptions travel with the heartbeat (model-directory.ts): a change is beaten at once.
  const publish = async (desc: ModelDescription) => {
    metrics.described(desc);
    await beatNow();
  };
  const pool = await ModelPool.start(await loadModelSpecs(config.infer), {
    maxActive: config.infer.maxActiveModels,
    executionProvider: config.infer.executionProvider,
    cacheDir: config.infer.modelCacheDir,
    threads: config.infer.threads,
    instances: config.infer.instances,
    log,
    onChange: publish,
    onLoad: (model) => metrics.loaded(model.description.model_id, model.loadMs / 1000),
  });
  for (const desc of pool.descriptions()) metrics.described(desc);
  const postQueue = createQueue(QueueName.post, client, keys.prefix, log);

  const scheduler = new BatchScheduler<BatchItem, ItemResult>({
    maxDelayMs: config.infer.maxBatchDelayMs,
    slots: config.infer.instances,
    laneOf: (item) => item.job.modelId,
    maxBatchOf: (modelId) => pool.maxBatchOf(modelId),
    deadlineOf: (item) => item.job.deadline,
    // Synchronous images (someone waits) go into the next batch ahead of asynchronous ones.
    priorityOf: (item) => (asyncRequestOf(item.job.replyTo) === undefined ? 0 : 1),
    // While synchronous images arrive, asynchronous batches take at most a quarter of the
    // model's time (ASYNC_PACING; batcher.ts, Pacing).
    backgroundPacing: ASYNC_PACING,
    expiredError: () =>
      new PipelineError(
        ErrorCode.DEADLINE_EXCEEDED,
        'request deadline passed before the model ran',
      ),
    run: (modelId, items) =>
      pool.use(modelId, async (model) => {
        const classNames = model.description.class_names;
        try {
          const inferStart = nowMs();
          const out = await model.run(
            // Each item's pixels were read for this batch alone: handed over, not copied.
            items.map((i) => ({
              pixels: i.pixels,
              placement: placementOf(i.job.letterbox),
              handOver: true,
            })),
            items.map((i) => ({
              confidence: i.job.params.confidence,
              allowedClassIds: classIdsOf(i.job.params.classFilter, classNames),
              maxCandidates: i.job.params.maxCandidates,
            })),
          );
          const inferEnd = nowMs();
          metrics.batch(modelId, items.length, out.timings);
          log.debug({ model: modelId, size: items.length, ...out.timings }, 'batch done');
          return out.candidates.map((candidates) => ({
            candidates,
            batchSize: items.length,
            inferStart,
            inferEnd,
          }));
        } catch (err) {
          throw new PipelineError(
            ErrorCode.MODEL_EXECUTION_FAILED,
            `the model failed on this batch: ${err instanceof Error ? err.message : String(err)}`,
          );
        }
      }),
  });

  // Model routes of the gateway: load, unload, clear. Each ends in a republished description,
  // which is what the gateway waits for.
  const control = createRedis(config.redis.url, `infer-control:${instanceId}`, 'worker', log);
  await control.subscribe(keys.modelControl());
  control.on('message', (_channel: string, raw: string) => {
    // A message of another shape is nobody's command: logged, and nothing changes.
    const parsed = parseJson(ModelCommandSchema, raw);
    if (!parsed.ok) {
      log.error({ problems: parsed.problems, raw: raw.slice(0, 500) }, 'malformed model command');
      return;
    }
    const cmd = parsed.value;
    void (async () => {
      if (cmd.op === 'clear') await pool.clear();
      else if (!pool.has(cmd.modelId)) return;
      else if (cmd.op === 'add') await pool.add(cmd.modelId);
      else await pool.remove(cmd.modelId);
      log.info({ command: cmd }, 'model command done');
    })().catch((err: unknown) => log.warn({ err, raw }, 'model command failed'));
  });

  waiting = () => scheduler.waiting;

  /** One image of either queue: its batch, then its candidates in Redis and its `post` job. */
  const inferOne = async (job: InferJob, jobLog: Logger): Promise<void> => {
    if (!pool.has(job.modelId)) {
      throw new PipelineError(
        ErrorCode.MODEL_NOT_FOUND,
        `model '${job.modelId}' is not served by this process`,
      );
    }
    const pixels = await client.getBuffer(keys.pixels(job.id));
    if (!pixels)
      throw new PipelineError(
        ErrorCode.DATA_EXPIRED,
        'the preprocessed image is no longer in Redis',
      );
    const result = await scheduler.submit({ job, pixels });
    // The pixels stay until `post` finishes the image, so a retry after a crash finds them.
    await storeAndEnqueue(
      client,
      keys.candidates(job.id),
      encodeCandidates(result.candidates),
      dataTtlSeconds(job.deadline, config.dataTtlSeconds),
      postQueue,
      {
        ...contextOf(job),
        marks: { ...job.marks, inferStart: result.inferStart, inferEnd: result.inferEnd },
        letterbox: job.letterbox,
        batchSize: result.batchSize,
      },
    );
    jobLog.debug(
      { batchSize: result.batchSize, candidates: result.candidates.length / CANDIDATE_STRIDE },
      'inferred',
    );
  };

  const batchLimit = pool.descriptions().reduce((sum, d) => sum + d.batch_size, 0);
  // A batch per instance, and the next batches filling while they run.
  const jobSlots = Math.min(1024, batchLimit * (config.infer.instances + 1));
  return {
    concurrency: jobSlots,
    heartbeatPayload: () => modelsPayload(pool.descriptions()),
    process: inferOne,
    // Asynchronous requests' images, on a queue of their own (its job slots never hold back a
    // synchronous image), into the same batcher, behind synchronous ones (priorityOf).
    extraQueues: [
      {
        queue: QueueName.inferAsync,
        concurrency: jobSlots,
        process: inferOne,
      },
    ],
    close: [
      ['model control', () => closeRedis(control)],
      ['batcher', () => Promise.resolve(scheduler.close())],
      ['models', () => pool.close()],
      ['post queue', () => cleanupWithRedis(client, () => postQueue.close())],
    ],
  };
});

/**
 * The pause after an asynchronous batch while synchronous images arrive: three times as long as
 * the batch ran, so asynchronous batches take at most a quarter of the model's time, and about
 * a quarter of what their images then cost in Redis and `post`, while someone waits; and those
 * batches hold one image, so a synchronous image waits for at most one single-image run (with
 * yolov8n beside 400-image lists, `npm run bench:async -- --model yolov8n`, the p99 added at one
 * client went from 268 ms with full batches to 68 ms). A
 * synchronous image in the last second counts as arriving (a client at concurrency 1 sends one
 * every few tens of ms). On 2 shared cores, beside 400-image asynchronous lists
 * (`npm run bench:async`), the p99 added to synchronous requests at concurrency 1 was about
 * 200 ms without pauses, 50-70 ms with pauses as long as the batch, about 22 ms with three
 * times and five times as long; the lists' throughput fell by a third with three times.
 */
const ASYNC_PACING = {
  factor: 3,
  activeMs: 1000,
  maxBatch: 1,
} as const satisfies BackgroundPacing;

/** Where `pre`'s resized pixels sit in the model input. */
function placementOf(lb: Letterbox): Placement {
  return { width: lb.resizedWidth, height: lb.resizedHeight, left: lb.padLeft, top: lb.padTop };
}

/** Class ids allowed by a class_filter; names the model does not know are ignored. */
function classIdsOf(filter: string[] | null, names: readonly string[]): number[] | null {
  if (!filter) return null;
  const wanted = new Set(filter);
  return names.flatMap((n, i) => (wanted.has(n) ? [i] : []));
}
