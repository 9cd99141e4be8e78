import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Redis } from 'ioredis';
import type { Registry } from 'prom-client';
import { loadConfigOrExit, type Config } from './config.js';
import type { QueueName } from './contracts.js';
import { startHeartbeat, type Heartbeat } from './heartbeat.js';
import { Keys } from './keys.js';
import { closeInOrder, exitOnStartupError, handleShutdown, once } from './lifecycle.js';
import { createLogger, type Logger } from './logger.js';
import { createRegistry, registerQueueGauge, serveMetrics, StageMetrics } from './metrics.js';
import { createQueue, createStageWorker, type StageWorkerOptions } from './queues.js';
import { closeRedis, createRedis } from './redis.js';

/**
 * The process shell shared by the worker roles (`pre`, `infer`, `post`): configuration,
 * logger, Redis connections, the stage's BullMQ worker, its heartbeat and an orderly
 * shutdown. A role's main.ts only says what its stage does.
 */
export interface StageContext {
  config: Config;
  log: Logger;
  keys: Keys;
  instanceId: string;
  /** Connection for the stage's own commands (data keys, next queue, replies). */
  client: Redis;
  /** The process's metrics registry, served on METRICS_PORT. */
  registry: Registry;
  /** Publishes the heartbeat's payload now (after it changed); a no-op before the first beat. */
  beatNow: () => Promise<void>;
}

export interface StageDefinition<Q extends QueueName> {
  concurrency: number;
  process: StageWorkerOptions<Q>['process'];
  /** Value of the heartbeat key at each beat (default '1'). */
  heartbeatPayload?: () => string;
  /** Cleanup steps run after the worker has finished its active jobs, before Redis closes. */
  close?: Array<[string, () => Promise<unknown>]>;
}

export function runStage<Q extends QueueName>(
  queue: Q,
  setup: (ctx: StageContext) => StageDefinition<Q> | Promise<StageDefinition<Q>>,
): void {
  const config = loadConfigOrExit();
  const log = createLogger(queue, config.logLevel);
  // Starts with the host name, so a container's healthcheck can find its own heartbeat.
  const instanceId = `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`;
  const keys = new Keys(config.redis.prefix);
  void (async () => {
    const client = createRedis(config.redis.url, `${queue}:${instanceId}`, 'worker');
    const workerConnection = createRedis(
      config.redis.url,
      `${queue}-worker:${instanceId}`,
      'worker',
    );
    const registry = createRegistry(queue);
    // A no-op until the heartbeat starts (setup runs before it).
    let beat: Heartbeat['beat'] = () => Promise.resolve();
    const beatNow = () => beat();
    const stage = await setup({ config, log, keys, instanceId, client, registry, beatNow });
    const ownQueue = createQueue(queue, client, keys.prefix);
    registerQueueGauge(registry, [ownQueue]);
    const metricsServer = await serveMetrics(
      registry,
      config.gateway.host,
      config.metricsPort,
      log,
    );
    const worker = createStageWorker({
      metrics: new StageMetrics(registry),
      queue,
      connection: workerConnection,
      client,
      keys,
      concurrency: stage.concurrency,
      logger: log,
      replyTtlSeconds: config.dataTtlSeconds,
      lockDurationMs: config.jobLockMs,
      process: stage.process,
    });
    const heartbeat = await startHeartbeat(
      client,
      keys,
      queue,
      instanceId,
      stage.heartbeatPayload,
      (err) => log.warn({ err }, 'heartbeat failed'),
    );
    beat = () => heartbeat.beat();
    log.info({ concurrency: stage.concurrency }, `${queue} worker ready`);
    handleShutdown(
      log,
      once(() =>
        closeInOrder(log, [
          ['heartbeat', () => heartbeat.close()],
          // Stops taking jobs and waits for the active ones, unless Redis is gone: then they
          // cannot finish anyway, and other workers take them up once Redis is back.
          ['worker', () => worker.close(client.status !== 'ready')],
          ...(stage.close ?? []),
          ['metrics', () => new Promise((resolve) => metricsServer.close(resolve))],
          ['queue', () => ownQueue.close()],
          ['redis', () => Promise.all([closeRedis(workerConnection), closeRedis(client)])],
        ]),
      ),
      config.drainTimeoutMs,
    );
  })().catch((err: unknown) => exitOnStartupError(log, err));
}
