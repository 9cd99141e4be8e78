import { Redis, type RedisOptions } from 'ioredis';

/**
 * Redis connections. BullMQ workers need `maxRetriesPerRequest: null` (blocking commands must
 * wait through reconnects); request-path clients fail fast instead, so a caller hears about an
 * unreachable Redis in bounded time rather than hanging.
 */
export type ConnectionKind = 'worker' | 'client';

export function createRedis(url: string, name: string, kind: ConnectionKind): Redis {
  const options: RedisOptions = {
    connectionName: name,
    lazyConnect: false,
    ...(kind === 'worker'
      ? { maxRetriesPerRequest: null }
      : { maxRetriesPerRequest: 1, enableOfflineQueue: true, connectTimeout: 2000 }),
    retryStrategy: (times) => Math.min(times * 100, 2000),
  };
  return new Redis(url, options);
}

/** Closes a connection politely, falling back to a hard disconnect; never throws. */
export async function closeRedis(redis: Redis): Promise<void> {
  if (redis.status === 'end') return;
  try {
    await redis.quit();
  } catch {
    redis.disconnect();
  }
}

/** Runs a MULTI and throws the first per-command error, which ioredis only reports in results. */
export async function execMulti(multi: ReturnType<Redis['multi']>): Promise<unknown[]> {
  const results = await multi.exec();
  if (results === null) throw new Error('Redis transaction was aborted');
  return results.map(([err, value]) => {
    if (err) throw err;
    return value;
  });
}
