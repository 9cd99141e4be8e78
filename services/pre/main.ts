import { randomUUID } from 'node:crypto';
import sharp from 'sharp';
import { loadConfigOrExit } from '../../shared/config.js';
import { QueueName, contextOf } from '../../shared/contracts.js';
import { ErrorCode, PipelineError } from '../../shared/errors.js';
import { startHeartbeat } from '../../shared/heartbeat.js';
import { Keys } from '../../shared/keys.js';
import { closeInOrder, exitOnStartupError, handleShutdown, once } from '../../shared/lifecycle.js';
import { createLogger } from '../../shared/logger.js';
import { ModelDirectory } from '../../shared/model-directory.js';
import { createQueue, createStageWorker, enqueue } from '../../shared/queues.js';
import { closeRedis, createRedis, execMulti } from '../../shared/redis.js';
import { loadImageBytes } from './image-source.js';
import { letterboxImage } from './preprocess.js';

/**
 * The `pre` stage: takes jobs from the `pre` queue, loads the image (from Redis or its URL),
 * decodes, orients and letterboxes it with sharp to the model's input size, stores the uint8
 * pixels in Redis and enqueues the image on the `infer` queue.
 */
const config = loadConfigOrExit();
const log = createLogger('pre', config.logLevel);
const instanceId = randomUUID();
const keys = new Keys(config.redis.prefix);

// Each job is one image; libvips' own thread pool per image would only fight the job
// concurrency for the same cores.
sharp.concurrency(1);

try {
  const client = createRedis(config.redis.url, `pre:${instanceId}`, 'worker');
  const workerConnection = createRedis(config.redis.url, `pre-worker:${instanceId}`, 'worker');
  const models = new ModelDirectory(client, keys);
  const inferQueue = createQueue(QueueName.infer, client, keys.prefix);

  const worker = createStageWorker({
    queue: QueueName.pre,
    connection: workerConnection,
    client,
    keys,
    concurrency: config.pre.concurrency,
    logger: log,
    replyTtlSeconds: config.dataTtlSeconds,
    process: async (job, jobLog) => {
      const model = await models.get(job.modelId);
      if (!model)
        throw new PipelineError(ErrorCode.MODEL_NOT_FOUND, `model '${job.modelId}' is not served`);
      const bytes = await loadImageBytes(client, keys, job, config.gateway.maxBodyBytes);
      const started = performance.now();
      const { pixels, letterbox } = await letterboxImage(
        bytes,
        model.input_width,
        model.input_height,
        job.autoOrient,
      );
      await execMulti(
        client
          .multi()
          .set(keys.pixels(job.id), pixels, 'EX', config.dataTtlSeconds)
          .del(keys.image(job.id)),
      );
      await enqueue(inferQueue, { ...contextOf(job), letterbox });
      jobLog.debug(
        { ms: performance.now() - started, width: letterbox.srcWidth, height: letterbox.srcHeight },
        'preprocessed',
      );
    },
  });

  const heartbeat = await startHeartbeat(client, keys, 'pre', instanceId, '1', (err) =>
    log.warn({ err }, 'heartbeat failed'),
  );
  log.info({ concurrency: config.pre.concurrency }, 'pre worker ready');

  handleShutdown(
    log,
    once(() =>
      closeInOrder(log, [
        ['heartbeat', () => heartbeat.close()],
        ['worker', () => worker.close()],
        ['infer queue', () => inferQueue.close()],
        ['redis', () => Promise.all([closeRedis(workerConnection), closeRedis(client)])],
      ]),
    ),
  );
} catch (err) {
  exitOnStartupError(log, err);
}
