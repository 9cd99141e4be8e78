import type { Redis } from 'ioredis';
import type { Counter } from 'prom-client';
import { AsyncRequests } from './async-requests.js';
import { AsyncQueueName } from './contracts.js';
import { ErrorCode } from './errors.js';
import type { Keys } from './keys.js';
import type { Logger } from './logger.js';
import { createAsyncQueue, type AsyncQueue } from './queues.js';
import { ResultSink } from './reply.js';

/**
 * What happens when an asynchronous request ends, by its last image (in whichever stage
 * process) or by its deadline (the `async-deadline` worker): it is counted, and a request with
 * a `webhook_url` gets its delivery job on the `webhook` queue. The stage processes and the
 * `pre` process's asynchronous workers share it.
 */
export interface AsyncCompletionOptions {
  /** Connection for commands (not blocking). */
  client: Redis;
  keys: Keys;
  log: Logger;
  /** ASYNC_RESULT_TTL_S. */
  resultTtlSeconds: number;
  /** ASYNC_WEBHOOK_ATTEMPTS: delivery attempts, with exponential backoff from WEBHOOK_BACKOFF_MS. */
  webhookAttempts: number;
  /** TTL of the gateways' reply lists (for synchronous images), seconds. */
  replyTtlSeconds: number;
  /** `sd_async_requests_finished_total`, by `status` (completed, failed). */
  finished: Counter<'status'>;
}

/** First retry delay of a webhook delivery, ms; it doubles with each further attempt. */
export const WEBHOOK_BACKOFF_MS = 1000;

/** The end of asynchronous requests (see the module comment), and the sink of every result. */
export class AsyncCompletion {
  readonly records: AsyncRequests;
  /** Where every stage sends a finished image's result or error. */
  readonly results: ResultSink;
  private readonly webhookQueue: AsyncQueue;
  private readonly deadlineQueue: AsyncQueue;

  constructor(private readonly opts: AsyncCompletionOptions) {
    this.records = new AsyncRequests(opts.client, opts.keys, opts.resultTtlSeconds);
    this.webhookQueue = createAsyncQueue(
      AsyncQueueName.webhook,
      opts.client,
      opts.keys.prefix,
      opts.log,
    );
    this.deadlineQueue = createAsyncQueue(
      AsyncQueueName.deadline,
      opts.client,
      opts.keys.prefix,
      opts.log,
    );
    this.results = new ResultSink(
      opts.client,
      opts.keys,
      opts.replyTtlSeconds,
      this.records,
      (requestId, failed) => this.finished(requestId, failed),
    );
  }

  /**
   * Finishes a request whose deadline passed: its images without a result fail with
   * DEADLINE_EXCEEDED (their jobs, wherever they are, are dropped by the stages at their
   * deadline), and its data is deleted. A request finished before is left as it is, but its
   * webhook is enqueued if the process that finished it died before doing so.
   */
  async expire(requestId: string): Promise<void> {
    const record = await this.records.read(requestId, false);
    if (!record) return;
    if (record.completedAt !== undefined) {
      if (record.meta.webhookUrl !== undefined && record.webhook === undefined)
        await this.enqueueWebhook(requestId);
      return;
    }
    const outcome = await this.records.expire(requestId, record.meta, {
      code: ErrorCode.DEADLINE_EXCEEDED,
      message: 'no result arrived before the request deadline',
    });
    // Whatever the stages still hold of its images is not needed any more.
    await this.opts.client.del(
      ...record.meta.images.flatMap((id) => this.opts.keys.requestData(id)),
    );
    if (outcome.kind === 'finished') await this.finished(requestId, outcome.failed);
  }

  /** Closes the queues. Idempotent (BullMQ's close is). */
  async close(): Promise<void> {
    await Promise.all([this.webhookQueue.close(), this.deadlineQueue.close()]);
  }

  /**
   * Counts a request that just finished, enqueues its webhook, and removes its deadline job,
   * which has nothing left to do (until then it stays: should this process die before the
   * webhook is enqueued, the deadline job enqueues it).
   */
  private async finished(requestId: string, failed: boolean): Promise<void> {
    this.opts.finished.inc({ status: failed ? 'failed' : 'completed' });
    this.opts.log.debug({ request_id: requestId, failed }, 'asynchronous request finished');
    const record = await this.records.read(requestId, false);
    if (record?.meta.webhookUrl !== undefined) await this.enqueueWebhook(requestId);
    // 0 (nothing removed) when it is the deadline job itself that finished the request.
    await this.deadlineQueue.remove(requestId);
  }

  private async enqueueWebhook(requestId: string): Promise<void> {
    // The job id is the request's: a second enqueue while one waits adds nothing.
    await this.webhookQueue.add(
      AsyncQueueName.webhook,
      { requestId },
      {
        jobId: requestId,
        attempts: this.opts.webhookAttempts,
        backoff: { type: 'exponential', delay: WEBHOOK_BACKOFF_MS },
      },
    );
    await this.records.setWebhook(requestId, 'queued');
  }
}
