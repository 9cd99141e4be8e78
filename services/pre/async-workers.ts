import { UnrecoverableError, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { Counter, type Registry } from 'prom-client';
import type { AsyncCompletion } from '../../shared/async-completion.js';
import { statusDocument } from '../../shared/async-requests.js';
import { AsyncJobSchema, AsyncQueueName } from '../../shared/contracts.js';
import type { Keys } from '../../shared/keys.js';
import type { Logger } from '../../shared/logger.js';
import { METRIC_PREFIX } from '../../shared/metrics.js';
import { WORKER_RETRY_MS } from '../../shared/queues.js';
import { formatIssues } from '../../shared/validation.js';
import { isAddressRefusal } from './image-source.js';
import { postWebhook, webhookSignature, type WebhookPolicy } from './webhook.js';

/**
 * The workers of asynchronous requests that the `pre` processes run beside their stage (they
 * already make outbound HTTP requests under the address guard, for image URLs):
 *
 * - `async-deadline`: one delayed job per request, due at its deadline, which finishes a
 *   request whose images did not all finish (AsyncCompletion.expire). Its jobs wait in Redis,
 *   so a request ends at its deadline whatever happened to the processes in between.
 * - `webhook`: delivers a finished request's status document to its `webhook_url` (webhook.ts),
 *   retried with exponential backoff (ASYNC_WEBHOOK_ATTEMPTS) on a network error or a status
 *   other than 2xx; an address the guard refuses is not retried. A delivery reads the record
 *   when it runs, so a request deleted meanwhile is not delivered.
 */
export interface AsyncWorkersOptions {
  /** Opens a connection (a worker needs a blocking one of its own). */
  connect: (name: string) => Redis;
  keys: Keys;
  log: Logger;
  registry: Registry;
  completion: AsyncCompletion;
  /** The webhooks' signing key; undefined: webhooks are refused at submit, none can be due. */
  secret: string | undefined;
  policy: WebhookPolicy;
  /** Webhook deliveries this process makes at once (WEBHOOK_CONCURRENCY). */
  concurrency: number;
}

/** Deadline jobs one process runs at once. */
const DEADLINE_CONCURRENCY = 4;

/** Outcomes counted by `sd_webhook_deliveries_total`. */
export type WebhookOutcome = 'delivered' | 'retried' | 'failed' | 'refused' | 'dropped';

/**
 * Starts both workers.
 *
 * @returns their close, idempotent: waits for the running jobs, then closes the connections
 */
export function startAsyncWorkers(opts: AsyncWorkersOptions): () => Promise<void> {
  const { keys, log, completion } = opts;
  const deliveries = new Counter({
    name: `${METRIC_PREFIX}webhook_deliveries_total`,
    help: 'Webhook delivery attempts by outcome: delivered (2xx), retried (will be tried again), failed (the last attempt failed), refused (address not allowed), dropped (the request was gone).',
    labelNames: ['outcome'],
    registers: [opts.registry],
  });
  const count = (outcome: WebhookOutcome) => deliveries.inc({ outcome });
  const connections: Redis[] = [];
  const worker = (
    name: AsyncQueueName,
    concurrency: number,
    run: (id: string, job: Job) => Promise<void>,
  ) => {
    const connection = opts.connect(`${name}-worker`);
    connections.push(connection);
    const w = new Worker<unknown>(
      name,
      async (job) => {
        const data = AsyncJobSchema.safeParse(job.data);
        if (!data.success) {
          log.error(
            { queue: name, problems: formatIssues(data.error, 'data') },
            'malformed job payload',
          );
          throw new UnrecoverableError('malformed job payload (see the log)');
        }
        await run(data.data.requestId, job);
      },
      { connection, prefix: keys.prefix, concurrency, runRetryDelay: WORKER_RETRY_MS },
    );
    w.on('error', (err) => {
      if (connection.status === 'ready') log.error({ err, queue: name }, 'worker error');
      else log.debug({ err, queue: name }, 'worker error while Redis is not connected');
    });
    return w;
  };

  const deadlines = worker(AsyncQueueName.deadline, DEADLINE_CONCURRENCY, async (requestId) => {
    await completion.expire(requestId);
  });

  const webhooks = worker(AsyncQueueName.webhook, opts.concurrency, async (requestId, job) => {
    const jobLog = log.child({ request_id: requestId });
    const record = await completion.records.read(requestId);
    if (!record || record.meta.webhookUrl === undefined || record.webhook === 'delivered') {
      count('dropped');
      return;
    }
    if (opts.secret === undefined) {
      // Refused at submit; a gateway configured differently from this process accepted it.
      jobLog.error('a webhook is due but this process has no WEBHOOK_SECRET to sign it');
      count('failed');
      await completion.records.setWebhook(requestId, 'failed');
      throw new UnrecoverableError('no WEBHOOK_SECRET');
    }
    const body = JSON.stringify(statusDocument(requestId, record));
    const final = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
    let status: number;
    try {
      status = await postWebhook(
        record.meta.webhookUrl,
        body,
        { inferenceId: requestId, signature: webhookSignature(body, opts.secret) },
        opts.policy,
      );
    } catch (err) {
      if (isAddressRefusal(err)) {
        jobLog.warn({ err }, 'webhook address refused');
        count('refused');
        await completion.records.setWebhook(requestId, 'refused');
        throw new UnrecoverableError((err as Error).message);
      }
      await failedAttempt(final, (err as Error).message);
      throw err;
    }
    if (status >= 200 && status < 300) {
      count('delivered');
      await completion.records.setWebhook(requestId, 'delivered');
      jobLog.debug({ status }, 'webhook delivered');
      return;
    }
    await failedAttempt(final, `HTTP ${status}`);
    throw new Error(`the webhook answered HTTP ${status}`);

    async function failedAttempt(last: boolean, why: string) {
      jobLog.warn({ attempt: job.attemptsMade + 1, final: last, why }, 'webhook delivery failed');
      count(last ? 'failed' : 'retried');
      if (last) await completion.records.setWebhook(requestId, 'failed');
    }
  });

  let closing: Promise<void> | undefined;
  return () =>
    (closing ??= (async () => {
      // As the stage workers: the running jobs are waited for, unless Redis is gone (they could
      // not finish; other workers take them up once it is back).
      const force = connections.some((c) => c.status !== 'ready');
      await Promise.all([deadlines.close(force), webhooks.close(force)]).catch((err: unknown) =>
        log.warn({ err }, 'closing the asynchronous workers failed'),
      );
      for (const c of connections) c.disconnect();
    })());
}
