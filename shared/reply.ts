import type { Redis } from 'ioredis';
import { asyncRequestOf, type AsyncRequests } from './async-requests.js';
import { sendTogether } from './redis.js';
import type { Keys } from './keys.js';
import type { ResultMessage } from './contracts.js';

/**
 * Where a finished image's result goes: the one function every stage calls, for results and
 * for the errors that end an image.
 *
 * - A synchronous image's result travels to the waiting gateway instance through its own Redis
 *   list rather than pub/sub: a list keeps the message if the gateway's connection blips, so a
 *   result cannot be lost between stages. The list's TTL is refreshed on every push, so the list
 *   of a gateway that died disappears by itself.
 * - An asynchronous image's (`replyTo` = `async:<request id>`) is stored in its request's record
 *   (shared/async-requests.ts); the image that finishes its request hands it to `onFinished`
 *   (the webhook, the metrics), exactly once per request.
 */
export class ResultSink {
  /**
   * @param replyTtlSeconds TTL of the reply lists
   * @param onFinished called once when an image finished its asynchronous request; `failed`
   *   when one of its images failed
   */
  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
    private readonly replyTtlSeconds: number,
    private readonly records: AsyncRequests,
    private readonly onFinished: (requestId: string, failed: boolean) => Promise<void>,
  ) {}

  /**
   * Delivers one image's result message to whoever `replyTo` names, and deletes
   * `finishedKeys` (the image's data, which nothing downstream needs any more) first: a Redis
   * at its maxmemory refuses the result (a write) but not DEL, and the image's megabytes make
   * room for the result's few hundred bytes.
   *
   * A synchronous result takes one round trip: `DEL`, `LPUSH`, `EXPIRE` in one socket write
   * (sendTogether), which Redis runs back to back, so the push and its TTL go together as they
   * did in a MULTI, at two commands fewer.
   *
   * @throws the first command's error (an `OOM` reply when Redis is full)
   */
  async send(
    replyTo: string,
    message: ResultMessage,
    finishedKeys: readonly string[] = [],
  ): Promise<void> {
    const requestId = asyncRequestOf(replyTo);
    if (requestId === undefined) {
      const key = this.keys.replies(replyTo);
      const { redis } = this;
      // Made first: nothing is sent if it throws.
      const json = JSON.stringify(message);
      // Replies come in order, so the first command to fail rejects first.
      await Promise.all(
        sendTogether(redis, () => [
          finishedKeys.length > 0 ? redis.del(...finishedKeys) : Promise.resolve(0),
          redis.lpush(key, json),
          redis.expire(key, this.replyTtlSeconds),
        ]),
      );
      return;
    }
    if (finishedKeys.length > 0) await this.redis.del(...finishedKeys);
    const outcome = await this.records.record(requestId, message);
    if (outcome.kind === 'finished') await this.onFinished(requestId, outcome.failed);
  }
}
