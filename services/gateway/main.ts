import cluster from 'node:cluster';
import type { Redis } from 'ioredis';
import { randomUUID } from 'node:crypto';
import { loadConfigOrExit, webhookSecret, type Config } from '../../shared/config.js';
import { AsyncQueueName, QueueName } from '../../shared/contracts.js';
import { ErrorCode, PipelineError } from '../../shared/errors.js';
import { tuneGarbageCollection } from '../../shared/gc-tuning.js';
import { Keys } from '../../shared/keys.js';
import {
  closeInOrder,
  exitOnStartupError,
  installLifecycle,
  supervisorPid,
  type Lifecycle,
} from '../../shared/lifecycle.js';
import { createLogger, type Logger } from '../../shared/logger.js';
import { createRegistry, registerQueueGauge } from '../../shared/metrics.js';
import { ModelDirectory } from '../../shared/model-directory.js';
import { createAsyncQueue, createQueue } from '../../shared/queues.js';
import { cleanupWithRedis, closeRedis, createRedis, watchRestarts } from '../../shared/redis.js';
import { Supervised } from '../../shared/supervised.js';
import { GatewayMetrics } from './metrics.js';
import { ResultWaiter } from './result-waiter.js';
import { buildServer } from './server.js';

/**
 * The gateway role: the HTTP API in front of the pipeline. With NUM_WORKERS > 1 this process
 * becomes a cluster primary that runs that many gateway processes sharing the port (each with
 * its own reply list), and restarts any that dies, with the supervisor's backoff and crash cap.
 */
tuneGarbageCollection();
const config = loadConfigOrExit();
const log = createLogger('gateway', config.logLevel);
// Under `npm start` (or the cluster primary) the parent is watched: a gateway left alone stops.
const lifecycle = installLifecycle(log, {
  timeoutMs: config.drainTimeoutMs,
  parentPid: supervisorPid(),
});

if (cluster.isPrimary && config.supervisor.gatewayProcesses > 1) {
  runPrimary(config.supervisor.gatewayProcesses, log, lifecycle);
} else {
  serve(config, log, lifecycle).catch((err: unknown) => exitOnStartupError(log, err));
}

async function serve(config: Config, log: Logger, lifecycle: Lifecycle): Promise<void> {
  const secret = webhookSecret(config.async);
  const gatewayId = randomUUID();
  const keys = new Keys(config.redis.prefix);
  const redis = createRedis(config.redis.url, `gateway:${gatewayId}`, 'client', log);
  const replies = createRedis(config.redis.url, `gateway-replies:${gatewayId}`, 'worker', log);
  const preQueue = createQueue(QueueName.pre, redis, keys.prefix, log);
  const waiter = new ResultWaiter(replies, keys.replies(gatewayId), log);
  waiter.start();
  // Redis that restarted empty lost the jobs of the requests waiting here: answer them now.
  watchRestarts(
    redis,
    (readyAt) => {
      void waiter
        .failLost(readyAt, (ids) => holdsWork(redis, keys, ids))
        .then((n) =>
          log.warn({ lost: n }, 'Redis restarted; requests whose work it lost were answered'),
        )
        .catch((err: unknown) =>
          log.warn({ err }, 'could not check for lost work after a Redis restart'),
        );
    },
    (err) => log.debug({ err }, 'reading the Redis run id failed'),
  );
  // The gateway also reports the depth of every queue; the worker roles report only their own.
  const inferQueue = createQueue(QueueName.infer, redis, keys.prefix, log);
  const inferAsyncQueue = createQueue(QueueName.inferAsync, redis, keys.prefix, log);
  const postQueue = createQueue(QueueName.post, redis, keys.prefix, log);
  const fetchQueue = createQueue(QueueName.fetch, redis, keys.prefix, log);
  const preAsyncQueue = createQueue(QueueName.preAsync, redis, keys.prefix, log);
  const stageQueues = [fetchQueue, preQueue, preAsyncQueue, inferQueue, inferAsyncQueue, postQueue];
  const deadlineQueue = createAsyncQueue(AsyncQueueName.deadline, redis, keys.prefix, log);
  const webhookQueue = createAsyncQueue(AsyncQueueName.webhook, redis, keys.prefix, log);
  const queues = [...stageQueues, deadlineQueue, webhookQueue];
  const registry = createRegistry('gateway');
  registerQueueGauge(registry, queues);
  const app = await buildServer({
    config,
    gatewayId,
    keys,
    redis,
    preQueue,
    preAsyncQueue,
    fetchQueue,
    stageQueues,
    deadlineQueue,
    webhookQueue,
    queues,
    webhookSecret: secret,
    waiter,
    models: new ModelDirectory(redis, keys, log),
    log,
    registry,
    metrics: new GatewayMetrics(registry),
  });
  const address = await app.listen({ host: config.gateway.host, port: config.gateway.port });
  log.info({ address, gatewayId }, 'gateway listening');

  lifecycle.onStop(() =>
    closeInOrder(log, [
      // close() stops accepting connections and waits for in-flight requests to answer. Those
      // still waiting a second before the drain timeout are answered 503 NOT_READY, so none is
      // cut off without an answer when the process is forced to end.
      [
        'http',
        async () => {
          const cutoff = setTimeout(
            () =>
              waiter.failAll(
                Infinity,
                () =>
                  new PipelineError(
                    ErrorCode.NOT_READY,
                    'the gateway stopped before this request finished; send it again',
                  ),
              ),
            Math.max(0, config.drainTimeoutMs - DRAIN_CUTOFF_MARGIN_MS),
          );
          try {
            await app.close();
          } finally {
            clearTimeout(cutoff);
          }
        },
      ],
      ['waiter', () => waiter.close()],
      ['queues', () => cleanupWithRedis(redis, () => Promise.all(queues.map((q) => q.close())))],
      ['redis', () => closeRedis(redis)],
    ]),
  );
}

/** How long before the drain timeout the requests still waiting are answered 503. */
const DRAIN_CUTOFF_MARGIN_MS = 1000;

/** For each inference id, whether Redis still holds a job or data of its image. */
async function holdsWork(redis: Redis, keys: Keys, ids: string[]): Promise<boolean[]> {
  const pipeline = redis.pipeline();
  for (const id of ids) {
    const jobKeys = Object.values(QueueName).map((q) => keys.job(q, id));
    pipeline.exists(...jobKeys, ...keys.requestData(id));
  }
  const results = (await pipeline.exec()) ?? [];
  return results.map(([err, n]) => err !== null || Number(n) > 0);
}

/**
 * The cluster primary: `count` gateway processes sharing the port, each supervised (restarted
 * with backoff; one that keeps crashing stops the gateway with an error). A stop stops them all
 * and waits for their drain.
 */
function runPrimary(count: number, log: Logger, lifecycle: Lifecycle): void {
  // The workers' parent is this primary: they stop if it dies (lifecycle.ts).
  const env = { ...process.env, SUPERVISOR_PID: String(process.pid) };
  const workers = Array.from(
    { length: count },
    (_, i) =>
      new Supervised({
        name: `gateway#${i + 1}`,
        spawn: () => cluster.fork(env).process,
        log,
        onGiveUp: (name, crashes) =>
          lifecycle.stop(`${name} keeps crashing (${crashes} times in a minute)`, 1),
      }),
  );
  lifecycle.onStop(async () => {
    await Promise.all(workers.map((w) => w.stop(config.drainTimeoutMs)));
  });
}
