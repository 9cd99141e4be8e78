import { createServer, type Server } from 'node:http';
import type { Queue } from 'bullmq';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Logger } from './logger.js';
import { WAITING_STATES } from './queues.js';

/**
 * Prometheus metrics (prom-client). Every process has its own registry with Node's default
 * process metrics; the worker roles serve it on METRICS_PORT, the gateway on its API port.
 * Names follow Prometheus conventions: base units (seconds), `_total` for counters. The README
 * lists every metric.
 */
export const METRIC_PREFIX = 'sd_';

/** A Prometheus registry with Node's default metrics, every series labelled with `role`. */
export function createRegistry(role: string): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ role });
  collectDefaultMetrics({ register: registry, prefix: METRIC_PREFIX });
  return registry;
}

/** Latency buckets from 1 ms to 30 s. */
export const LATENCY_BUCKETS = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
];

/** What every stage (pre, infer, post) measures about its jobs. */
export class StageMetrics {
  readonly queueWait: Histogram<'stage'>;
  readonly processing: Histogram<'stage'>;
  readonly completed: Counter<'stage'>;
  readonly failed: Counter<'stage' | 'code'>;
  readonly retried: Counter<'stage'>;
  readonly stalled: Counter<'stage'>;
  /** Asynchronous requests this process finished (its last image, or its deadline). */
  readonly asyncFinished: Counter<'status'>;

  constructor(registry: Registry) {
    const registers = [registry];
    this.queueWait = new Histogram({
      name: `${METRIC_PREFIX}stage_queue_wait_seconds`,
      help: 'Time a job waited in its queue, from being added to being started.',
      labelNames: ['stage'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.processing = new Histogram({
      name: `${METRIC_PREFIX}stage_processing_seconds`,
      help: "Time a stage spent on one job (for infer: waiting for its batch and the batch's run).",
      labelNames: ['stage'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.completed = new Counter({
      name: `${METRIC_PREFIX}stage_jobs_completed_total`,
      help: 'Jobs a stage finished successfully.',
      labelNames: ['stage'],
      registers,
    });
    this.failed = new Counter({
      name: `${METRIC_PREFIX}stage_jobs_failed_total`,
      help: 'Job attempts that failed, by error code (DEADLINE_EXCEEDED counts jobs dropped unworked).',
      labelNames: ['stage', 'code'],
      registers,
    });
    this.retried = new Counter({
      name: `${METRIC_PREFIX}stage_jobs_retried_total`,
      help: 'Job attempts that were retries of an earlier failed or stalled attempt.',
      labelNames: ['stage'],
      registers,
    });
    this.stalled = new Counter({
      name: `${METRIC_PREFIX}stage_jobs_stalled_total`,
      help: 'Jobs whose worker lost them (died or blocked) and that this process put back in the queue.',
      labelNames: ['stage'],
      registers,
    });
    this.asyncFinished = new Counter({
      name: `${METRIC_PREFIX}async_requests_finished_total`,
      help: 'Asynchronous requests finished in this process (by their last image or their deadline), by status.',
      labelNames: ['status'],
      registers,
    });
  }
}

/**
 * Job counts of queues, read from Redis when scraped but at most once per `maxAgeMs` per
 * process, so many replicas scraped often do not hammer Redis.
 */
export function registerQueueGauge(
  registry: Registry,
  queues: readonly Queue[],
  maxAgeMs = 2000,
): void {
  const states = [...WAITING_STATES, 'active', 'failed'] as const;
  let cached: { at: number; counts: Array<Record<string, number>> } | undefined;
  new Gauge({
    name: `${METRIC_PREFIX}queue_jobs`,
    help: 'Jobs in each queue by state (waiting, prioritized, delayed, active, failed).',
    labelNames: ['queue', 'state'],
    registers: [registry],
    async collect() {
      if (!cached || Date.now() - cached.at > maxAgeMs) {
        const counts = await Promise.all(queues.map((q) => q.getJobCounts(...states)));
        cached = { at: Date.now(), counts };
      }
      this.reset();
      queues.forEach((q, i) => {
        for (const state of states)
          this.set({ queue: q.name, state }, cached!.counts[i]?.[state] ?? 0);
      });
    },
  });
}

/** Serves GET /metrics on its own port (for the worker roles). Returns the server. */
export async function serveMetrics(
  registry: Registry,
  host: string,
  port: number,
  log: Logger,
): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.method !== 'GET' || req.url?.split('?')[0] !== '/metrics') {
      res
        .writeHead(404, { 'content-type': 'application/json' })
        .end('{"code":"NOT_FOUND","message":"try /metrics"}');
      return;
    }
    registry.metrics().then(
      (body) => res.writeHead(200, { 'content-type': registry.contentType }).end(body),
      (err: unknown) => {
        log.warn({ err }, 'metrics collection failed');
        res.writeHead(500).end();
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address();
  log.info(
    {
      metrics: `http://${host}:${typeof address === 'object' && address ? address.port : port}/metrics`,
    },
    'metrics served',
  );
  return server;
}
