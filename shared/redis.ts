import type { Writable } from 'node:stream';
import { Command, Redis, type RedisOptions } from 'ioredis';
import { withTimeout } from './deadline.js';
import type { Logger } from './logger.js';

/**
 * Redis connections. BullMQ workers need `maxRetriesPerRequest: null` (blocking commands must
 * wait through reconnects); request-path clients fail fast instead, so a caller hears about an
 * unreachable Redis in bounded time rather than hanging.
 */
export type ConnectionKind = 'worker' | 'client';

/**
 * What ioredis takes for a REDIS_URL: `unix:///path/to/redis.sock[?db=N&password=…]` becomes
 * the socket path with its query (`/path/to/redis.sock?db=N`, ioredis's form of a Unix socket);
 * `redis://` and `rediss://` URLs are passed as they are.
 *
 * A Unix socket reaches a Redis on the same machine without TCP: on 2 cores each small command's
 * round trip cost about a third less CPU in the client and in Redis (24 against 31–38 µs of
 * client CPU per `SET`, 15 against 20–25 µs in Redis), which is why `npm start` gives the roles
 * its private redis-server that way (bench/README.md has the A/B pair).
 */
export function redisTarget(url: string): string {
  return url.startsWith('unix://') ? url.slice('unix://'.length) : url;
}

/** The REDIS_URL of the Unix socket at absolute `path` (the form redisTarget reads). */
export function redisSocketUrl(path: string): string {
  return `unix://${path}`;
}

/**
 * A connection to `url` (a REDIS_URL, see redisTarget), named `name` in Redis's CLIENT LIST.
 *
 * @param kind `worker`: commands wait through reconnects (BullMQ's blocking connections and
 *   the stages' own); `client`: a command fails after one reconnect attempt (request paths)
 * @param log where connection errors go, one warning when the connection breaks and one line
 *   when it is back (not one per reconnect attempt); without it they are dropped silently
 */
export function createRedis(url: string, name: string, kind: ConnectionKind, log?: Logger): Redis {
  const options: RedisOptions = {
    connectionName: name,
    lazyConnect: false,
    // RESP2, as ioredis 5 spoke: ioredis 6 defaults to RESP3, under which Redis returns Lua
    // booleans and maps with other types, and BullMQ's scripts and this code read RESP2 replies.
    protocol: 2,
    ...(kind === 'worker'
      ? { maxRetriesPerRequest: null }
      : { maxRetriesPerRequest: 1, enableOfflineQueue: true, connectTimeout: 2000 }),
    retryStrategy: (times) => Math.min(times * 100, 2000),
  };
  const redis = new Redis(redisTarget(url), options);
  // Without a listener ioredis prints every error, unformatted, to stderr.
  let broken = false;
  redis.on('error', (err: Error) => {
    if (broken) return;
    broken = true;
    // The logger's error serializer drops what can carry the password (an AUTH's arguments).
    log?.warn({ connection: name, err }, 'Redis connection lost; reconnecting');
  });
  redis.on('ready', () => {
    if (!broken) return;
    broken = false;
    log?.info({ connection: name }, 'Redis connection back');
  });
  return redis;
}

/**
 * Values of at least this many bytes go to the socket as they are in setValue.
 *
 * @defaultValue 64 KiB
 */
export const LARGE_VALUE_BYTES = 64 * 1024;

/**
 * `SET key value EX ttlSeconds` on `redis`, sent in order with the connection's other commands
 * (storeAndEnqueue relies on it). ioredis copies a Buffer argument into a fresh buffer the size
 * of the whole command before writing it, and for a value of hundreds of kilobytes the new
 * memory's page faults cost more than the copy: in a loop of `SET`s of 0.92 MB (a 640×480
 * image's pixels) on this project's 2-core machine, 0.75–0.77 ms of the client's CPU per
 * command. From LARGE_VALUE_BYTES the value itself is written to the socket after the command's
 * header, in one corked write (0.18–0.23 ms); smaller values go through `redis.set`.
 *
 * Not for pipelines or MULTI, whose commands ioredis writes together later. The value is
 * written from the caller's Buffer, not a copy: leave it unchanged until the promise settles.
 * On a connection with ioredis's `keyPrefix` (none of this project's has one) it falls back to
 * `redis.set`, which adds the prefix.
 *
 * @param ttlSeconds whole seconds, ≥ 1
 * @returns Redis's reply, `OK`
 * @throws what `SET` throws: a ReplyError (`OOM …` from a Redis at its maxmemory), or the
 *   connection's errors
 */
export async function setValue(
  redis: Redis,
  key: string,
  value: Buffer,
  ttlSeconds: number,
): Promise<unknown> {
  if (value.length < LARGE_VALUE_BYTES || redis.options.keyPrefix) {
    return redis.set(key, value, 'EX', ttlSeconds);
  }
  return redis.sendCommand(new ValueSetCommand(key, value, ttlSeconds));
}

/**
 * `SET key value EX ttl` whose value ioredis does not copy: toWritable, which ioredis calls once
 * just before it writes the command (and again if it resends it after a reconnection), writes
 * the header and the value to the socket itself, corked, and hands ioredis the rest.
 */
class ValueSetCommand extends Command {
  constructor(
    private readonly key: string,
    private readonly value: Buffer,
    private readonly ttlSeconds: number,
  ) {
    super('set', [key, value, 'EX', String(ttlSeconds)], { replyEncoding: 'utf8' });
  }

  override toWritable(socket: object): string {
    const stream = socket as Writable;
    const ttl = String(this.ttlSeconds);
    stream.cork();
    // Scheduled first, so that the socket is uncorked whatever the writes do.
    process.nextTick(() => stream.uncork());
    stream.write(
      `*5\r\n$3\r\nSET\r\n$${Buffer.byteLength(this.key)}\r\n${this.key}\r\n$${this.value.length}\r\n`,
    );
    stream.write(this.value);
    return `\r\n$2\r\nEX\r\n$${ttl.length}\r\n${ttl}\r\n`;
  }
}

/**
 * Calls `send`, which issues commands on `redis`, so that they leave in one socket write, as a
 * pipeline's would: ioredis writes each command as it is called, and here the socket is corked
 * until the next tick. A pipeline does the same but costs more to build on a connection with
 * many scripts: ioredis copies each of them onto every new pipeline (BullMQ's, about 60 on the
 * connection its queues use). Replies and errors stay per command, each on its own promise.
 * While the connection is not ready, ioredis queues the commands and writes them in order later.
 * `send` should only issue the commands: a throw after the first one leaves their promises
 * with nobody to handle them.
 *
 * @returns what `send` returns (the commands' promises)
 */
export function sendTogether<T>(redis: Redis, send: () => T): T {
  const stream = redis.status === 'ready' ? redis.stream : undefined;
  if (!stream) return send();
  stream.cork();
  // Scheduled first, so that the socket is uncorked whatever `send` does.
  process.nextTick(() => stream.uncork());
  return send();
}

/**
 * Closes a connection politely (QUIT, at most CLEANUP_TIMEOUT_MS), falling back to a hard
 * disconnect, at once when Redis is not connected now; never throws.
 */
export async function closeRedis(redis: Redis): Promise<void> {
  if (redis.status === 'end') return;
  if (redis.status !== 'ready') {
    redis.disconnect();
    return;
  }
  try {
    await withTimeout(redis.quit(), CLEANUP_TIMEOUT_MS, () => new Error('QUIT timed out'));
  } catch {
    redis.disconnect();
  }
}

/** Longest wait of one cleanup step that needs Redis. */
export const CLEANUP_TIMEOUT_MS = 2000;

/**
 * Runs a cleanup step that needs Redis (closing a queue, deleting a heartbeat): skipped when
 * the connection is not ready (Redis is gone: the step would wait for it forever), otherwise
 * given at most CLEANUP_TIMEOUT_MS. Never throws; a stopping process must not hang on Redis.
 */
export async function cleanupWithRedis(redis: Redis, step: () => Promise<unknown>): Promise<void> {
  if (redis.status !== 'ready') return;
  await withTimeout(step(), CLEANUP_TIMEOUT_MS, () => new Error('Redis did not answer')).catch(
    () => {},
  );
}

/**
 * Runs a MULTI and throws the first per-command error, which ioredis only reports in results
 * (or, for a transaction Redis refused as a whole, in the EXECABORT error's `previousErrors`:
 * an `OOM` there is what tells a full Redis).
 */
export async function execMulti(multi: ReturnType<Redis['multi']>): Promise<unknown[]> {
  const results = await multi.exec().catch((err: unknown) => {
    const first = (err as { previousErrors?: unknown[] }).previousErrors?.[0];
    throw first instanceof Error ? first : err;
  });
  if (results === null) throw new Error('Redis transaction was aborted');
  return results.map(([err, value]) => {
    if (err) throw err;
    return value;
  });
}

/**
 * Runs a pipeline (no MULTI: its commands run in order, not as one transaction) and throws the
 * first per-command error, which ioredis only reports in results.
 */
export async function execPipeline(pipeline: ReturnType<Redis['pipeline']>): Promise<unknown[]> {
  const results = (await pipeline.exec()) ?? [];
  return results.map(([err, value]) => {
    if (err) throw err;
    return value;
  });
}

/**
 * Calls `onRestart(readyAt)` when the connection comes back to a Redis that restarted (its
 * `run_id` changed): whatever was not persisted is gone. `readyAt` is the epoch ms of the
 * reconnection. Reads errors of INFO into `onError`.
 */
export function watchRestarts(
  redis: Redis,
  onRestart: (readyAt: number) => void,
  onError: (err: unknown) => void,
): void {
  let runId: string | undefined;
  const check = () => {
    const readyAt = Date.now();
    redis.info('server').then((info) => {
      const current = /^run_id:(\w+)/m.exec(info)?.[1];
      if (current === undefined) return;
      if (runId !== undefined && runId !== current) onRestart(readyAt);
      runId = current;
    }, onError);
  };
  redis.on('ready', check);
  if (redis.status === 'ready') check();
}
