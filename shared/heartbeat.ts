import type { Redis } from 'ioredis';
import { execPipeline } from './redis.js';
import type { Keys } from './keys.js';

/**
 * Liveness through Redis, the only thing the roles share. Each live instance refreshes a key
 * with a short TTL; readers list the instances whose key still exists. TTLs are measured by
 * Redis, so clocks on different machines do not matter.
 */
export const HEARTBEAT_INTERVAL_MS = 1000;
export const HEARTBEAT_TTL_MS = 5000;

export interface Heartbeat {
  /** Publishes the payload now, outside the regular beat (after it changed). */
  beat(): Promise<void>;
  /** Stops beating and removes the key. Idempotent. */
  close(): Promise<void>;
}

/**
 * Starts refreshing `alive:<role>:<instanceId>` every HEARTBEAT_INTERVAL_MS with a TTL of
 * HEARTBEAT_TTL_MS until closed. The value is `payload()` at each beat, so state published this
 * way (the inference process's model descriptions) lives exactly as long as the instance, and
 * is published again by itself after Redis restarted empty.
 *
 * @param payload the key's value at each beat; default `'1'`
 * @param onError called with a beat's error (the next beat tries again)
 */
export async function startHeartbeat(
  redis: Redis,
  keys: Keys,
  role: string,
  instanceId: string,
  payload: () => string = () => '1',
  onError: (err: unknown) => void = () => {},
): Promise<Heartbeat> {
  const key = keys.alive(role, instanceId);
  let closed = false;
  const beat = async () => {
    if (closed) return;
    // Pipelined, not a MULTI: two commands a beat instead of four. Neither needs the other:
    // a key without its set entry, or an entry without its key, is set right by the next beat
    // (listAlive forgets entries whose key is gone).
    await execPipeline(
      redis
        .pipeline()
        .set(key, payload(), 'PX', HEARTBEAT_TTL_MS)
        .sadd(keys.aliveSet(role), instanceId),
    );
  };
  await beat();
  const timer = setInterval(() => void beat().catch(onError), HEARTBEAT_INTERVAL_MS);
  let closing: Promise<void> | undefined;
  return {
    beat,
    close() {
      closing ??= (async () => {
        closed = true;
        clearInterval(timer);
        try {
          await redis.pipeline().del(key).srem(keys.aliveSet(role), instanceId).exec();
        } catch {
          // Redis may already be gone; the TTL removes the key anyway.
        }
      })();
      return closing;
    },
  };
}

/**
 * Live instances of a role with their payloads (instance id → value); forgets instances whose
 * key has expired.
 */
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
