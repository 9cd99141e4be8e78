import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Redis } from 'ioredis';
import type { Registry } from 'prom-client';
import { loadConfigOrExit, type Config } from './config.js';
import { AsyncCompletion } from './async-completion.js';
import { QueueName } from './contracts.js';
import { tuneGarbageCollection } from './gc-tuning.js';
import { startHeartbeat, type Heartbeat } from './heartbeat.js';
import { Keys } from './keys.js';
import { closeInOrder, exitOnStartupError, installLifecycle, supervisorPid } from './lifecycle.js';
import { createLogger, type Logger } from './logger.js';
import { createRegistry, registerQueueGauge, serveMetrics, StageMetrics } from './metrics.js';
import { createQueue, createStageWorker, type StageWorkerOptions } from './queues.js';
import { cleanupWithRedis, closeRedis, createRedis } from './redis.js';

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
  /** The stage's metrics (its workers' jobs, the asynchronous requests it finishes). */
  metrics: StageMetrics;
  /**
   * Where finished images go (`completion.results.send`) and how asynchronous requests end:
   * one per process.
   */
  completion: AsyncCompletion;
}

export interface StageDefinition<Q extends QueueName> {
  concurrency: number;
  process: StageWorkerOptions<Q>['process'];
  /** Value of the heartbeat key at each beat (default '1'). */
  heartbeatPayload?: () => string;
  /** Further queues this process serves, each with its own worker and concurrency. */
  extraQueues?: ExtraQueue[];
  /** Cleanup steps run after the worker has finished its active jobs, before Redis closes. */
  close?: Array<[string, () => Promise<unknown>]>;
}

/** A further queue a stage process serves beside its own (`fetch` and `pre-async` for `pre`). */
export type ExtraQueue = {
  [K in QueueName]: {
    queue: K;
    concurrency: number;
    process: StageWorkerOptions<K>['process'];
    /** Called when the process starts to stop, before its workers wait for their jobs. */
    onClosing?: () => void;
  };
}[QueueName];

/**
 * Runs the worker role of `queue` in this process: config, logger, lifecycle (installed first),
 * Redis connections, the stage's workers (its own queue and `extraQueues`), heartbeat, metrics
 * and the ordered stop. `setup` says what the stage does; a failure in it is a one-line startup
 * error.
 */
export function runStage<Q extends QueueName>(
  queue: Q,
  setup: (ctx: StageContext) => StageDefinition<Q> | Promise<StageDefinition<Q>>,
): void {
  tuneGarbageCollection();
  const config = loadConfigOrExit();
  const log = createLogger(queue, config.logLevel);
  // First thing: a signal during a long model load is handled too. Under `npm start` the role
  // stops by itself if the supervisor dies without stopping it.
  const lifecycle = installLifecycle(log, {
    timeoutMs: config.drainTimeoutMs,
    parentPid: supervisorPid(),
  });
  // Starts with the host name, so a container's healthcheck can find its own heartbeat.
  const instanceId = `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`;
  const keys = new Keys(config.redis.prefix);
  void (async () => {
    const client = createRedis(config.redis.url, `${queue}:${instanceId}`, 'worker', log);
    const registry = createRegistry(queue);
    const metrics = new StageMetrics(registry);
    const completion = new AsyncCompletion({
      client,
      keys,
      log,
      resultTtlSeconds: config.async.resultTtlSeconds,
      webhookAttempts: config.async.webhookAttempts,
      replyTtlSeconds: config.dataTtlSeconds,
      finished: metrics.asyncFinished,
    });
    // A no-op until the heartbeat starts (setup runs before it).
    let beat: Heartbeat['beat'] = () => Promise.resolve();
    const beatNow = () => beat();
    const stage = await setup({
      config,
      log,
      keys,
      instanceId,
      client,
      registry,
      beatNow,
      metrics,
      completion,
    });
    const served = [
      { queue, concurrency: stage.concurrency, process: stage.process } as ExtraQueue,
      ...(stage.extraQueues ?? []),
    ];
    const ownQueues = served.map((s) => createQueue(s.queue, client, keys.prefix, log));
    registerQueueGauge(registry, ownQueues);
    const metricsServer = await serveMetrics(
      registry,
      config.worker.metricsHost,
      config.worker.metricsPort,
      log,
    );
    // Each worker blocks on its own connection.
    const connections = served.map((s) =>
      createRedis(config.redis.url, `${s.queue}-worker:${instanceId}`, 'worker', log),
    );
    const workers = served.map((s, i) =>
      createStageWorker({
        metrics,
        queue: s.queue,
        connection: connections[i]!,
        client,
        keys,
        concurrency: s.concurrency,
        logger: log,
        results: completion.results,
        // The first stages of an image see whether its asynchronous request still exists.
        ...((s.queue === QueueName.fetch ||
          s.queue === QueueName.pre ||
          s.queue === QueueName.preAsync) && {
          asyncRecords: completion.records,
        }),
        lockDurationMs: config.worker.jobLockMs,
        process: s.process as StageWorkerOptions<QueueName>['process'],
      }),
    );
    served.forEach((s, i) => {
      if (s.onClosing) workers[i]!.on('closing', s.onClosing);
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
    for (const s of served) log.info({ concurrency: s.concurrency }, `${s.queue} worker ready`);
    lifecycle.onStop(() =>
      closeInOrder(log, [
        ['heartbeat', () => cleanupWithRedis(client, () => heartbeat.close())],
        // Stops taking jobs and waits for the active ones, unless Redis is gone: then they
        // cannot finish anyway, and other workers take them up once Redis is back.
        ['worker', () => Promise.all(workers.map((w) => w.close(client.status !== 'ready')))],
        ...(stage.close ?? []),
        ['metrics', () => new Promise((resolve) => metricsServer.close(resolve))],
        [
          'queue',
          () =>
            cleanupWithRedis(client, () =>
              Promise.all([...ownQueues.map((q) => q.close()), completion.close()]),
            ),
        ],
        ['redis', () => Promise.all([...connections, client].map((c) => closeRedis(c)))],
      ]),
    );
  })().catch((err: unknown) => exitOnStartupError(log, err));
}
