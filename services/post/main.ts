import { randomUUID } from 'node:crypto';
import { decodeCandidates } from '../../shared/candidates.js';
import { loadConfigOrExit } from '../../shared/config.js';
import { QueueName } from '../../shared/contracts.js';
import { ErrorCode, PipelineError } from '../../shared/errors.js';
import { startHeartbeat } from '../../shared/heartbeat.js';
import { Keys } from '../../shared/keys.js';
import { closeInOrder, exitOnStartupError, handleShutdown, once } from '../../shared/lifecycle.js';
import { createLogger } from '../../shared/logger.js';
import { ModelDirectory } from '../../shared/model-directory.js';
import { createStageWorker } from '../../shared/queues.js';
import { closeRedis, createRedis } from '../../shared/redis.js';
import { sendResult } from '../../shared/reply.js';
import { buildResponse } from './postprocess.js';

/**
 * The `post` stage: takes each image's candidates from Redis, runs NMS and maps the boxes back
 * to the original image (postprocess.ts), and pushes the finished response to the reply list
 * of the gateway instance that is waiting for it.
 */
const config = loadConfigOrExit();
const log = createLogger('post', config.logLevel);
const instanceId = randomUUID();
const keys = new Keys(config.redis.prefix);

try {
  const client = createRedis(config.redis.url, `post:${instanceId}`, 'worker');
  const workerConnection = createRedis(config.redis.url, `post-worker:${instanceId}`, 'worker');
  const models = new ModelDirectory(client, keys);

  const worker = createStageWorker({
    queue: QueueName.post,
    connection: workerConnection,
    client,
    keys,
    concurrency: config.post.concurrency,
    logger: log,
    replyTtlSeconds: config.dataTtlSeconds,
    process: async (job, jobLog) => {
      const model = await models.get(job.modelId);
      if (!model)
        throw new PipelineError(ErrorCode.MODEL_NOT_FOUND, `model '${job.modelId}' is not served`);
      const bytes = await client.getBuffer(keys.candidates(job.id));
      if (!bytes)
        throw new PipelineError(ErrorCode.DATA_EXPIRED, 'the model output is no longer in Redis');
      const response = buildResponse({
        inferenceId: job.id,
        candidates: decodeCandidates(bytes),
        params: job.params,
        letterbox: job.letterbox,
        classNames: model.class_names,
        elapsedSeconds: (Date.now() - job.receivedAt) / 1000,
      });
      await sendResult(
        client,
        keys,
        job.replyTo,
        { id: job.id, ok: true, response },
        config.dataTtlSeconds,
      );
      await client.del(keys.candidates(job.id));
      jobLog.debug(
        { detections: response.predictions.length, batchSize: job.batchSize },
        'result sent',
      );
    },
  });

  const heartbeat = await startHeartbeat(client, keys, 'post', instanceId, '1', (err) =>
    log.warn({ err }, 'heartbeat failed'),
  );
  log.info({ concurrency: config.post.concurrency }, 'post worker ready');

  handleShutdown(
    log,
    once(() =>
      closeInOrder(log, [
        ['heartbeat', () => heartbeat.close()],
        ['worker', () => worker.close()],
        ['redis', () => Promise.all([closeRedis(workerConnection), closeRedis(client)])],
      ]),
    ),
  );
} catch (err) {
  exitOnStartupError(log, err);
}
