import sharp from 'sharp';
import { QueueName, contextOf, nowMs, type PreJob } from '../../shared/contracts.js';
import type { Logger } from '../../shared/logger.js';
import { ModelDirectory } from '../../shared/model-directory.js';
import { createQueue, enqueue, queueFor, storeAndEnqueue } from '../../shared/queues.js';
import { webhookSecret } from '../../shared/config.js';
import { dataTtlSeconds } from '../../shared/deadline.js';
import { cleanupWithRedis, createRedis } from '../../shared/redis.js';
import { runStage } from '../../shared/stage-process.js';
import { fetchImage, loadStoredImage } from './image-source.js';
import { letterboxImage } from './preprocess.js';
import { startAsyncWorkers } from './async-workers.js';
import {
  ASYNC_DECODED_AHEAD,
  ASYNC_PACING_POLL_MS,
  AsyncPacer,
  waitingJobs,
} from './async-pacing.js';

/**
 * The `pre` stage: takes jobs from the `pre` queue, reads the image's bytes from Redis,
 * decodes, orients and letterboxes it with sharp to the model's input size, stores the uint8
 * pixels in Redis and enqueues the image on the `infer` queue. Asynchronous requests' images
 * come on `pre-async` and go on `infer-async`: one at a time per process, at the model's pace
 * (async-pacing.ts).
 *
 * The same process serves the `fetch` queue with a worker of its own: images given by URL are
 * downloaded there (URL_FETCH_CONCURRENCY at once, each within URL_FETCH_TIMEOUT_MS), stored
 * like uploads and put on the `pre` queue. Downloads wait on the network, decoding on the CPU:
 * kept apart, a slow remote host delays only its own requests, never an upload's decoding.
 * It also runs the workers of asynchronous requests (async-workers.ts): their deadlines and
 * webhook deliveries, which use the same address guard as image URLs.
 */

// Each job is one image; libvips' own thread pool per image would only fight the job
// concurrency for the same cores.
sharp.concurrency(1);

runStage(QueueName.pre, ({ config, log, keys, client, instanceId, registry, completion }) => {
  const models = new ModelDirectory(client, keys, log);
  const { policy } = config.pre.fetch;
  const closeAsyncWorkers = startAsyncWorkers({
    connect: (name) => createRedis(config.redis.url, `${name}:${instanceId}`, 'worker', log),
    keys,
    log,
    registry,
    completion,
    secret: webhookSecret(config.async),
    policy: {
      allowPrivate: policy.allowPrivate,
      connectTimeoutMs: policy.connectTimeoutMs,
      totalTimeoutMs: config.async.webhookTimeoutMs,
    },
    concurrency: config.async.webhookConcurrency,
  });
  const inferQueue = createQueue(QueueName.infer, client, keys.prefix, log);
  const inferAsyncQueue = createQueue(QueueName.inferAsync, client, keys.prefix, log);
  const preQueue = createQueue(QueueName.pre, client, keys.prefix, log);
  const preAsyncQueue = createQueue(QueueName.preAsync, client, keys.prefix, log);
  const pacer = new AsyncPacer({
    backlog: () => waitingJobs(client, inferAsyncQueue),
    ahead: ASYNC_DECODED_AHEAD,
    pollMs: ASYNC_PACING_POLL_MS,
  });
  /** Decodes and letterboxes one image and hands it to the inference process. */
  const decode = async (job: PreJob, log: Logger): Promise<void> => {
    const preStart = nowMs();
    // The gateway saw the model served: a missing description is a restart in progress.
    const model = await models.require(job.modelId, job.deadline);
    const bytes = await loadStoredImage(client, keys, job);
    const started = performance.now();
    const { pixels, letterbox } = await letterboxImage(
      bytes,
      model.input_width,
      model.input_height,
      job.autoOrient,
      { maxPixels: config.pre.maxImagePixels, allowSvg: config.pre.allowSvg },
      model.preprocessing.pad,
    );
    // The upload stays until `post` finishes the image: a retry of this job after a crash
    // between here and the enqueue must still find it.
    const marks = { ...job.marks, preStart, preEnd: nowMs() };
    const next = { ...contextOf(job), marks, letterbox };
    await storeAndEnqueue(
      client,
      keys.pixels(job.id),
      pixels,
      dataTtlSeconds(job.deadline, config.dataTtlSeconds),
      queueFor(job.replyTo, inferQueue, inferAsyncQueue),
      next,
    );
    log.debug(
      { ms: performance.now() - started, width: letterbox.srcWidth, height: letterbox.srcHeight },
      'preprocessed',
    );
  };
  return {
    concurrency: config.pre.concurrency,
    process: decode,
    extraQueues: [
      {
        queue: QueueName.preAsync,
        concurrency: 1,
        process: async (job, log) => {
          await pacer.waitForRoom(job.deadline);
          await decode(job, log);
        },
        onClosing: () => pacer.close(),
      },
      {
        queue: QueueName.fetch,
        concurrency: config.pre.fetch.concurrency,
        process: async (job, log) => {
          const next = queueFor(job.replyTo, preQueue, preAsyncQueue);
          if (job.source.kind !== 'url') {
            await enqueue(next, job);
            return;
          }
          const started = performance.now();
          const bytes = await fetchImage(job.source.url, job.deadline, config.pre.fetch.policy);
          // Stored as an upload is: `pre` decodes it, `post` draws on it, cleanup is the same.
          await storeAndEnqueue(
            client,
            keys.image(job.id),
            bytes,
            dataTtlSeconds(job.deadline, config.dataTtlSeconds),
            next,
            { ...job, source: { kind: 'stored' } },
          );
          log.debug({ ms: performance.now() - started, bytes: bytes.length }, 'fetched');
        },
      },
    ],
    close: [
      ['asynchronous workers', closeAsyncWorkers],
      [
        'queues',
        () =>
          cleanupWithRedis(client, () =>
            Promise.all(
              [inferQueue, inferAsyncQueue, preQueue, preAsyncQueue].map((q) => q.close()),
            ),
          ),
      ],
    ],
  };
});
