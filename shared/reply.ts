import type { Redis } from 'ioredis';
import { execMulti } from './redis.js';
import type { Keys } from './keys.js';
import type { ResultMessage } from './contracts.js';

/**
 * Results travel to the waiting gateway instance through its own Redis list rather than
 * pub/sub: a list keeps the message if the gateway's connection blips, so a result cannot be
 * lost between stages. The list's TTL is refreshed on every push, so the list of a gateway that
 * died disappears by itself.
 */
export async function sendResult(
  redis: Redis,
  keys: Keys,
  replyTo: string,
  message: ResultMessage,
  ttlSeconds: number,
): Promise<void> {
  const key = keys.replies(replyTo);
  await execMulti(redis.multi().lpush(key, JSON.stringify(message)).expire(key, ttlSeconds));
}
