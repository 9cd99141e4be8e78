import type { Redis } from 'ioredis';
import { execMulti } from './redis.js';
import type { Keys } from './keys.js';

/**
 * Liveness through Redis, the only thing the roles share. Each live instance refreshes a key
 * with a short TTL; readers list the instances whose key still exists. TTLs are measured by
 * Redis, so clocks on different machines do not matter.
 */
export const HEARTBEAT_INTERVAL_MS = 1000;
export const HEARTBEAT_TTL_MS = 5000;

export interface Heartbeat {
  close(): Promise<void>;
}

/** Starts refreshing `alive:<role>:<instanceId>` (with `payload` as its value) until closed. */
export async function startHeartbeat(
  redis: Redis,
  keys: Keys,
  role: string,
  instanceId: string,
  payload = '1',
  onError: (err: unknown) => void = () => {},
  /** Also run at every beat: state this instance keeps published (it survives a Redis restart). */
  everyBeat: () => Promise<unknown> = () => Promise.resolve(),
): Promise<Heartbeat> {
  const key = keys.alive(role, instanceId);
  const beat = async () => {
    await execMulti(
      redis.multi().set(key, payload, 'PX', HEARTBEAT_TTL_MS).sadd(keys.aliveSet(role), instanceId),
    );
    await everyBeat();
  };
  await beat();
  const timer = setInterval(() => void beat().catch(onError), HEARTBEAT_INTERVAL_MS);
  let closing: Promise<void> | undefined;
  return {
    close() {
      closing ??= (async () => {
        clearInterval(timer);
        try {
          await redis.multi().del(key).srem(keys.aliveSet(role), instanceId).exec();
        } catch {
          // Redis may already be gone; the TTL removes the key anyway.
        }
      })();
      return closing;
    },
  };
}

/** Live instances of a role with their payloads; forgets instances whose key has expired. */
export async function listAlive(
  redis: Redis,
  keys: Keys,
  role: string,
): Promise<Map<string, string>> {
  const ids = await redis.smembers(keys.aliveSet(role));
  const alive = new Map<string, string>();
  if (ids.length === 0) return alive;
  const values = await redis.mget(ids.map((id) => keys.alive(role, id)));
  const dead: string[] = [];
  ids.forEach((id, i) => {
    const value = values[i];
    if (value == null) dead.push(id);
    else alive.set(id, value);
  });
  if (dead.length > 0) await redis.srem(keys.aliveSet(role), ...dead);
  return alive;
}
