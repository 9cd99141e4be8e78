import type { Redis } from 'ioredis';
import { execPipeline } from './redis.js';
import type { Keys } from './keys.js';
import type { ResultMessage } from './contracts.js';

/**
 * Results travel to the waiting gateway instance through its own Redis list rather than
 * pub/sub: a list keeps the message if the gateway's connection blips, so a result cannot be
 * lost between stages. The list's TTL is refreshed on every push, so the list of a gateway that
 * died disappears by itself.
 *
 * One round trip answers an image and frees its data: `DEL` of `finishedKeys`, `LPUSH`,
 * `EXPIRE`, pipelined (written in one socket write, which Redis executes back to back, so the
 * push and its TTL go together as they did in a MULTI, at two commands fewer). The data goes
 * first: a Redis at its maxmemory refuses the push (LPUSH) but not DEL, and the image's
 * megabytes make room for the result's few hundred bytes.
 *
 * @param finishedKeys keys nothing downstream needs any more (the image's data), deleted first
 * @throws the first command's error (an `OOM` reply when Redis is full)
 */
export async function sendResult(
  redis: Redis,
  keys: Keys,
  replyTo: string,
  message: ResultMessage,
  ttlSeconds: number,
  finishedKeys: readonly string[] = [],
): Promise<void> {
  const key = keys.replies(replyTo);
  const pipeline = redis.pipeline();
  if (finishedKeys.length > 0) pipeline.del(...finishedKeys);
  await execPipeline(pipeline.lpush(key, JSON.stringify(message)).expire(key, ttlSeconds));
}
