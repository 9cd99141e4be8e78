import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { Redis } from 'ioredis';
import { loadConfigOrExit, type Config } from '../../shared/config.js';
import { listAlive } from '../../shared/heartbeat.js';
import { Keys } from '../../shared/keys.js';
import { redisSocketUrl, redisTarget } from '../../shared/redis.js';
import { installLifecycle } from '../../shared/lifecycle.js';
import { createLogger } from '../../shared/logger.js';
import {
  spawnRedisServer,
  spawnRole,
  startRedisServer,
  waitForRedis,
  type Role,
} from './processes.js';
import { Supervised } from '../../shared/supervised.js';

/**
 * `npm start`: runs the whole stack on this machine, every role as its own process, connected
 * only through Redis.
 *
 * Startup is coordinated: Redis (a private redis-server when REDIS_URL is unset) → the
 * inference process with its model loaded → the `pre` and `post` workers → the gateway, each
 * step waiting for the heartbeats of the processes it started. A startup failure ends with one
 * line saying what is wrong. Once running, a process that dies is restarted with backoff
 * (supervised.ts), the private redis-server too (on the same port; the roles reconnect by
 * themselves). SIGINT/SIGTERM, or the end of the process that started this one (npm, a shell),
 * stops the gateway first (it finishes in-flight requests within DRAIN_TIMEOUT_MS), then the
 * workers, the model and Redis last, all within one DRAIN_TIMEOUT_MS plus SHUTDOWN_MARGIN_MS;
 * a second signal forces.
 */
const config = loadConfigOrExit();
const log = createLogger('supervisor', config.logLevel);
const keys = new Keys(config.redis.prefix);

/** Time the roles get beyond DRAIN_TIMEOUT_MS to close their connections and exit. */
const SHUTDOWN_MARGIN_MS = 5000;

const processes: Supervised[] = [];
let redisProcess: Supervised | undefined;
/**
 * The longest Unix socket path redis-server takes: sockaddr_un holds 108 bytes on Linux (104 on
 * macOS), the terminating zero included.
 */
const MAX_SOCKET_PATH_BYTES = 103;

/** The directory of the private redis-server's Unix socket, removed once it stopped. */
let socketDir: string | undefined;

/**
 * The private redis-server's socket, `redis.sock` in a new directory of this user's under the
 * temporary directory (socketDir); undefined, with a warning, when that path would be too long
 * for a Unix socket (the roles then use TCP).
 */
function privateSocketPath(): string | undefined {
  const name = 'redis.sock';
  // mkdtemp adds 6 characters to the prefix.
  const prefix = join(tmpdir(), 'staged-detect-');
  if (Buffer.byteLength(join(`${prefix}XXXXXX`, name)) > MAX_SOCKET_PATH_BYTES) {
    log.warn(
      { tmpdir: tmpdir() },
      'the temporary directory is too long a path for a Unix socket; the roles use TCP',
    );
    return undefined;
  }
  socketDir = mkdtempSync(prefix);
  return join(socketDir, name);
}

function removeSocketDir(): void {
  if (socketDir) rmSync(socketDir, { recursive: true, force: true });
}

// Installed before anything starts. The process that started this one (npm, a shell) is
// watched: once it is gone nobody can stop the stack but by hand, so it stops (a SIGTERM to
// `npm start` used to end npm's shell without passing the signal on).
const lifecycle = installLifecycle(log, {
  timeoutMs: config.drainTimeoutMs + SHUTDOWN_MARGIN_MS + 2000,
  parentPid: process.ppid,
  onForce: () => {
    for (const p of processes) p.kill();
    redisProcess?.kill();
    removeSocketDir();
  },
});
lifecycle.onStop(stopStack);

class StartupError extends Error {
  override readonly name = 'StartupError';
}

/** The stack was asked to stop while it was starting: no further step runs. */
class StoppedDuringStartup extends Error {
  override readonly name = 'StoppedDuringStartup';
}

let lastStartupLine: string | undefined;

async function main(): Promise<void> {
  let redisUrl = process.env['REDIS_URL'];
  let rolesRedisUrl: string | undefined;
  if (redisUrl) {
    await waitForRedis(redisUrl, 10_000).catch(() => {
      throw new StartupError(`Redis at ${redisUrl} does not answer: start it or fix REDIS_URL`);
    });
  } else {
    // The roles reach the private server over a Unix socket in a directory of this user's
    // (a third less CPU per command than loopback TCP, shared/redis.ts); its loopback port
    // stays open for redis-cli and tools.
    const socket = privateSocketPath();
    const redis = await startRedisServer('ignore', undefined, undefined, socket);
    const port = Number(new URL(redis.url).port);
    redisProcess = new Supervised({
      name: 'redis',
      spawn: () => spawnRedisServer(port, ['ignore', 'ignore', 'pipe'], undefined, socket),
      started: redis.process,
      log,
      onGiveUp: giveUp,
    });
    redisUrl = redis.url;
    if (socket) rolesRedisUrl = redisSocketUrl(socket);
    log.info({ redisUrl, socket }, 'private redis-server started');
  }
  await checkPortFree(config.gateway.host, config.gateway.port);

  const env = {
    ...process.env,
    REDIS_URL: rolesRedisUrl ?? redisUrl,
    SUPERVISOR_PID: String(process.pid),
  };
  const redis = new Redis(redisTarget(redisUrl), { maxRetriesPerRequest: 1 });
  redis.on('error', () => {}); // Startup waits through a Redis that comes and goes.
  try {
    await startRole('infer', 1, env, redis, 120_000);
    await Promise.all([
      startRole('pre', config.supervisor.preProcesses, env, redis, 30_000),
      startRole('post', config.supervisor.postProcesses, env, redis, 30_000),
    ]);
  } finally {
    redis.disconnect();
  }
  const gateway = startProcesses('gateway', 1, {
    ...env,
    NUM_WORKERS: String(config.supervisor.gatewayProcesses),
  });
  const url = `http://${config.gateway.host === '0.0.0.0' ? '127.0.0.1' : config.gateway.host}:${config.gateway.port}`;
  await waitFor(gateway, 'the gateway', 30_000, async () => {
    try {
      return (await fetch(`${url}/readyz`)).ok;
    } catch {
      return false;
    }
  });
  const models = await servedModels(url, config);
  if (lifecycle.stopping) throw new StoppedDuringStartup();
  const counts = `gateway×${config.supervisor.gatewayProcesses} pre×${config.supervisor.preProcesses} infer×1 post×${config.supervisor.postProcesses}`;
  process.stdout.write(`\nstaged-detect is ready at ${url}  models: ${models}  (${counts})\n\n`);
}

/** The served models for the banner, loaded ones marked; '?' when they cannot be listed. */
async function servedModels(url: string, config: Config): Promise<string> {
  const key = config.gateway.apiKeys?.split(',')[0]?.trim();
  try {
    const res = await fetch(`${url}/models`, {
      headers: key ? { authorization: `Bearer ${key}` } : {},
    });
    if (!res.ok) return '?';
    const { models } = (await res.json()) as {
      models: Array<{ model_id: string; loaded: boolean }>;
    };
    return models.map((m) => `${m.model_id}${m.loaded ? '' : ' (on first use)'}`).join(', ');
  } catch {
    return '?';
  }
}

/**
 * Each worker process on this machine gets its own /metrics port: the inference process
 * METRICS_PORT, then the pre processes, then the post processes (0 keeps every port free-picked).
 */
function metricsPort(role: Role, index: number): number {
  const base = config.worker.metricsPort;
  if (base === 0) return 0;
  const pre = config.supervisor.preProcesses;
  switch (role) {
    case 'infer':
      return base;
    case 'pre':
      return base + 1 + index;
    case 'post':
      return base + 1 + pre + index;
    case 'gateway':
      return 0;
  }
}

function startProcesses(role: Role, count: number, env: NodeJS.ProcessEnv): Supervised[] {
  if (lifecycle.stopping) throw new StoppedDuringStartup();
  const started = Array.from(
    { length: count },
    (_, i) =>
      new Supervised({
        name: `${role}#${i + 1}`,
        spawn: () =>
          spawnRole(role, { ...env, METRICS_PORT: String(metricsPort(role, i)) }, [
            'ignore',
            'inherit',
            'pipe',
          ]),
        log,
        onGiveUp: giveUp,
        onStderrLine: (line) => {
          // The supervisor reports a startup failure itself, in one line.
          if (!line.startsWith('startup failed:')) return false;
          lastStartupLine = `${role}: ${line.slice(16).trim()}`;
          return true;
        },
      }),
  );
  processes.push(...started);
  return started;
}

/** Starts `count` processes of a worker role and waits for each one's heartbeat. */
async function startRole(
  role: Role,
  count: number,
  env: NodeJS.ProcessEnv,
  redis: Redis,
  timeoutMs: number,
) {
  const started = startProcesses(role, count, env);
  await waitFor(started, `the ${role} process`, timeoutMs, async () => {
    const alive = [...(await listAlive(redis, keys, role)).keys()];
    return started.every((p) => alive.some((id) => id.includes(`-${p.pid}-`)));
  });
}

/** Polls `ready` until true; fails at once if one of the processes exits meanwhile. */
async function waitFor(
  started: Supervised[],
  what: string,
  timeoutMs: number,
  ready: () => Promise<boolean>,
) {
  let exited = false;
  for (const p of started) void p.exited().then(() => (exited = true));
  const until = Date.now() + timeoutMs;
  while (!exited && !lifecycle.stopping) {
    if (await ready()) return;
    if (Date.now() > until)
      throw new StartupError(`${what} did not become ready within ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 100));
  }
  if (lifecycle.stopping) throw new StoppedDuringStartup();
  throw new StartupError(lastStartupLine ?? `${what} exited during startup (see its log above)`);
}

async function checkPortFree(host: string, port: number): Promise<void> {
  const server = createServer();
  try {
    server.listen(port, host);
    await once(server, 'listening');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new StartupError(
      code === 'EADDRINUSE'
        ? `port ${port} on ${host} is taken: stop what uses it or set PORT to a free port`
        : `cannot listen on ${host}:${port} (${code ?? String(err)}): check HOST and PORT`,
    );
  } finally {
    server.close();
  }
}

/** A child that keeps crashing stops the whole stack, with one line saying which. */
function giveUp(name: string, crashes: number): void {
  process.stderr.write(
    `${name} keeps crashing (${crashes} times in a minute; see its log above): stopping the stack\n`,
  );
  lifecycle.stop(`${name} keeps crashing`, 1);
}

/**
 * Stops the stack in order: intake first (the gateway drains its in-flight requests), the
 * workers, the model, and Redis after everything that uses it. The phases share one deadline,
 * DRAIN_TIMEOUT_MS + SHUTDOWN_MARGIN_MS from now: a process still running when its phase's
 * share is spent is killed, so a stack whose Redis is gone stops in one drain timeout, not one
 * per phase.
 */
async function stopStack(): Promise<void> {
  const until = Date.now() + config.drainTimeoutMs + SHUTDOWN_MARGIN_MS;
  for (const roles of [['gateway'], ['pre', 'post'], ['infer']]) {
    const left = Math.max(0, until - Date.now());
    await Promise.all(
      processes.filter((p) => roles.includes(p.name.split('#')[0]!)).map((p) => p.stop(left)),
    );
  }
  await redisProcess?.stop(Math.max(1000, until - Date.now()));
  removeSocketDir();
}

main().catch((err: unknown) => {
  // A stop asked for during startup: the lifecycle is already stopping what was started.
  if (err instanceof StoppedDuringStartup) return;
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`startup failed: ${message}\n`);
  lifecycle.stop('startup failed', 1);
});
