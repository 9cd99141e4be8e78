import type { ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { after, before } from 'node:test';
import { Redis } from 'ioredis';
import {
  freePort,
  spawnRole,
  startRedisServer,
  stopProcess,
  type Role,
} from '../../services/supervisor/processes.js';

/**
 * Runs the real stack for integration tests: a real redis-server, and every role as its own
 * process started exactly as the supervisor starts them. Each stack gets its own key prefix,
 * so tests sharing one Redis cannot see each other's keys.
 */
export interface RedisHandle {
  url: string;
  /** A client of the test's own (it reconnects by itself after a restart). */
  client: Redis;
  /** Kills the server (SIGKILL) and starts a new, empty one on the same port. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export async function startRedis(): Promise<RedisHandle> {
  let server = await startRedisServer();
  const port = Number(new URL(server.url).port);
  const client = new Redis(server.url);
  client.on('error', () => {}); // Expected while the server restarts.
  return {
    url: server.url,
    client,
    async restart() {
      const exited = new Promise((resolve) => server.process.once('exit', resolve));
      server.process.kill('SIGKILL');
      await exited;
      server = await startRedisServer('ignore', port);
    },
    async stop() {
      client.disconnect();
      await stopProcess(server.process);
    },
  };
}

export interface StackOptions {
  redisUrl: string;
  env?: Record<string, string>;
  /** Roles to start, in order; default all four. */
  roles?: readonly Role[];
  /** Wait for the gateway's /readyz (default true when the gateway is started). */
  waitReady?: boolean;
}

export interface RunningRole {
  role: Role;
  process: ChildProcess;
  output: string[];
}

/** Whether a process with this pid exists (signal 0 checks without sending anything). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Whether a role's process is still running (it ends with an exit code or by a signal). */
export function isRunning(r: RunningRole): boolean {
  return r.process.exitCode === null && r.process.signalCode === null;
}

export interface Stack {
  url: string;
  prefix: string;
  env: NodeJS.ProcessEnv;
  roles: RunningRole[];
  /** Every output line of the roles (or of one role). */
  logs(role?: Role): string[];
  /** Starts one more role process on the same Redis and prefix. */
  add(role: Role, env?: Record<string, string>): RunningRole;
  stop(): Promise<void>;
}

export async function startStack(opts: StackOptions): Promise<Stack> {
  const port = await freePort();
  const prefix = `t${randomUUID().slice(0, 8)}`;
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    REDIS_URL: opts.redisUrl,
    REDIS_PREFIX: prefix,
    HOST: '127.0.0.1',
    PORT: String(port),
    LOG_LEVEL: 'debug',
    // Several workers share this machine: each takes a free metrics port (logged at startup).
    METRICS_PORT: '0',
    ...opts.env,
  };
  const roles: RunningRole[] = [];
  const add = (role: Role, extra: Record<string, string> = {}): RunningRole => {
    const child = spawnRole(role, { ...env, ...extra }, ['ignore', 'pipe', 'pipe']);
    const running: RunningRole = { role, process: child, output: [] };
    const collect = (chunk: Buffer) =>
      running.output.push(...chunk.toString('utf8').split('\n').filter(Boolean));
    child.stdout?.on('data', collect);
    child.stderr?.on('data', collect);
    roles.push(running);
    return running;
  };
  const stack: Stack = {
    url: `http://127.0.0.1:${port}`,
    prefix,
    env,
    roles,
    logs: (role) => roles.filter((r) => !role || r.role === role).flatMap((r) => r.output),
    add,
    async stop() {
      for (const role of ['gateway', 'pre', 'post', 'infer'] as const) {
        await Promise.all(
          roles.filter((r) => r.role === role).map((r) => stopProcess(r.process, 5000)),
        );
      }
    },
  };
  const wanted = opts.roles ?? (['infer', 'pre', 'post', 'gateway'] as const);
  for (const role of wanted) add(role);
  if ((opts.waitReady ?? wanted.includes('gateway')) === true) {
    try {
      await waitUntilReady(stack, 60_000);
    } catch (err) {
      await stack.stop();
      throw err;
    }
  }
  return stack;
}

async function waitUntilReady(stack: Stack, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    const dead = stack.roles.find((r) => !isRunning(r));
    if (dead) throw new Error(`${dead.role} exited during startup:\n${dead.output.join('\n')}`);
    try {
      if ((await fetch(`${stack.url}/readyz`)).ok) return;
    } catch {
      // Not listening yet.
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`stack not ready after ${timeoutMs} ms:\n${stack.logs().slice(-40).join('\n')}`);
}

/** Parsed JSON log lines of a role that match a message. */
export function logEvents(stack: Stack, role: Role, msg: string): Array<Record<string, unknown>> {
  return stack
    .logs(role)
    .flatMap((line) => {
      try {
        return [JSON.parse(line) as Record<string, unknown>];
      } catch {
        return [];
      }
    })
    .filter((e) => e['msg'] === msg);
}

/** Posts JSON to the stack and returns the status and parsed body. */
export async function postJson(
  stack: Stack,
  path: string,
  body: unknown,
): Promise<{ status: number; body: unknown; headers: Headers }> {
  const res = await fetch(`${stack.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json(), headers: res.headers };
}

/** Every key under a stack's prefix. */
export async function keysOf(redis: Redis, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== '0');
  return keys.sort();
}

/**
 * Gives a test file one Redis and one stack: started before its tests (handed over through
 * `ready`), stopped after them. `opts` may be a function, called in the `before` hook (after
 * the file's earlier hooks made what it names); when it returns undefined nothing is started
 * (the tests then skip, through requireShared, on a machine without ../shared).
 */
export function suiteStack(
  opts: StackSetup | (() => StackSetup | undefined),
  ready: (stack: Stack, redis: RedisHandle) => void,
): void {
  const suite = suiteRedis();
  before(async () => {
    const setup = typeof opts === 'function' ? opts() : opts;
    if (!setup) return;
    ready(await suite.stack(setup), suite.redis);
  });
}

/** A stack's options within a suite: the suite's Redis is given. */
export type StackSetup = Omit<StackOptions, 'redisUrl'>;

/** One Redis for a test file and the stacks its tests start on it. */
export interface SuiteRedis {
  /** The file's Redis, once the `before` hook ran. */
  readonly redis: RedisHandle;
  /** Starts a stack on the file's Redis; it is stopped after the file's tests. */
  stack(setup: StackSetup): Promise<Stack>;
}

/**
 * Gives a test file one Redis, started before its tests, and stops every stack its tests
 * started with `stack()`, then the Redis, after them.
 */
export function suiteRedis(): SuiteRedis {
  let redis: RedisHandle | undefined;
  let starting: Promise<RedisHandle> | undefined;
  // Started by whichever of the file's hooks needs it first (node runs a file's hooks without
  // waiting for one another's order).
  const ensure = () =>
    (starting ??= startRedis().then((r) => {
      redis = r;
      return r;
    }));
  const stacks: Stack[] = [];
  before(async () => {
    await ensure();
  });
  after(async () => {
    await Promise.all(stacks.map((s) => s.stop()));
    if (starting) await (await starting).stop();
  });
  return {
    get redis() {
      if (!redis) throw new Error('the suite Redis starts in the before hook');
      return redis;
    },
    async stack(setup) {
      const r = await ensure();
      const stack = await startStack({ ...setup, redisUrl: r.url });
      stacks.push(stack);
      return stack;
    },
  };
}
