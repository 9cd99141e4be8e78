import { hostname } from 'node:os';
import { Redis } from 'ioredis';
import { loadConfig, type Config } from '../../shared/config.js';
import { listAlive } from '../../shared/heartbeat.js';
import { Keys } from '../../shared/keys.js';
import { redisTarget } from '../../shared/redis.js';
import { ROLES, type Role } from './processes.js';

/**
 * Container health check: `node dist/services/supervisor/healthcheck.js <role>`.
 *
 * - `gateway`: healthy when `GET http://127.0.0.1:$PORT/readyz` answers 200.
 * - `pre`, `infer`, `post`: healthy when Redis (REDIS_URL, REDIS_PREFIX) holds a live heartbeat
 *   of this role from this container, i.e. an instance id that starts with `<hostname>-` (a
 *   container's hostname is its own).
 *
 * Exits 0 when healthy, else 1 with one line on stderr; gives up after 3 s.
 */
const TIMEOUT_MS = 3000;

function fail(message: string): never {
  process.stderr.write(`unhealthy: ${oneLine(message)}\n`);
  process.exit(1);
}

function oneLine(text: string): string {
  return text
    .replace(/:\s*\n\s*/g, ': ')
    .replace(/\s*\n\s*/g, '; ')
    .trim();
}

/** An error's message with its cause (fetch and ioredis hide the useful part there). */
function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause instanceof Error ? `: ${err.cause.message}` : '';
  return `${err.message}${cause}`;
}

/** Scheme, host and port of a Redis URL, without credentials. */
function redisWhere(url: string): string {
  const u = new URL(url);
  return u.protocol === 'unix:' ? `unix://${u.pathname}` : `${u.protocol}//${u.host}`;
}

async function checkGateway(config: Config): Promise<string> {
  const url = `http://127.0.0.1:${config.gateway.port}/readyz`;
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(TIMEOUT_MS) });
  } catch (err) {
    throw new Error(`gateway: GET ${url} failed: ${describe(err)}`, { cause: err });
  }
  const body = (await res.text().catch(() => '')).slice(0, 300);
  if (res.status !== 200) throw new Error(`gateway: GET ${url} answered ${res.status} ${body}`);
  return `gateway: ready (${url})`;
}

async function checkWorker(role: Exclude<Role, 'gateway'>, config: Config): Promise<string> {
  const where = redisWhere(config.redis.url);
  const redis = new Redis(redisTarget(config.redis.url), {
    lazyConnect: true,
    connectTimeout: TIMEOUT_MS,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null,
  });
  let lastError: unknown;
  redis.on('error', (err) => (lastError = err));
  try {
    try {
      await redis.connect();
    } catch (err) {
      throw new Error(`${role}: Redis at ${where} unreachable: ${describe(lastError ?? err)}`, {
        cause: err,
      });
    }
    const alive = await listAlive(redis, new Keys(config.redis.prefix), role);
    const host = hostname();
    const mine = [...alive.keys()].filter((id) => id.startsWith(`${host}-`));
    if (mine.length === 0) {
      throw new Error(
        `${role}: no live heartbeat from this host (${host}) in Redis at ${where}` +
          ` (prefix ${config.redis.prefix}; ${alive.size} live ${role} instance(s) elsewhere)`,
      );
    }
    return `${role}: alive (${mine.join(', ')})`;
  } finally {
    redis.disconnect();
  }
}

async function main(): Promise<void> {
  const arg = process.argv[2];
  const role = ROLES.find((r) => r === arg);
  if (role === undefined) fail(`usage: healthcheck.js <${ROLES.join('|')}> (got ${arg ?? 'none'})`);
  setTimeout(() => fail(`${role}: no answer within ${TIMEOUT_MS / 1000} s`), TIMEOUT_MS).unref();
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    fail(`${role}: ${describe(err)}`);
  }
  try {
    const ok = role === 'gateway' ? await checkGateway(config) : await checkWorker(role, config);
    process.stdout.write(`${ok}\n`);
    process.exit(0);
  } catch (err) {
    fail(err instanceof Error ? err.message : String(err));
  }
}

await main();
