import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { freePort, startRedisServer, stopProcess } from '../services/supervisor/processes.js';
import { commandLine, descendants } from './proc-stats.js';
import type { Workload } from './workloads.js';

/**
 * Starting and stopping the systems under test as real processes: the standard deployment
 * server, and the pipeline as `npm start` runs it (supervisor, its roles, a private Redis).
 */
export interface SystemUnderTest {
  url: string;
  /** Every process of the system, by name (its CPU and memory are charged to it). */
  processes: Map<string, number>;
  /** /metrics endpoints of the pipeline's roles (empty for the standard server). */
  metricsUrls: string[];
  /** Redis of the pipeline, for INFO stats. */
  redis: Redis | undefined;
  stop(): Promise<void>;
}

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TSX = ['--import', import.meta.resolve('tsx')];

/** Spawns a TypeScript entry point and resolves once its stdout has a line matching `ready`. */
async function spawnUntil(
  entry: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  ready: RegExp,
  timeoutMs: number,
): Promise<{ child: ChildProcess; match: RegExpExecArray }> {
  const child = spawn(process.execPath, [...TSX, entry, ...args], {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  let stdout = '';
  const match = await new Promise<RegExpExecArray>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${entry} was not ready within ${timeoutMs / 1000} s:\n${stderr}`));
    }, timeoutMs);
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      const m = ready.exec(stdout);
      if (m) {
        clearTimeout(timer);
        resolve(m);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${entry} exited with code ${code} during startup:\n${stderr}`));
    });
  });
  child.removeAllListeners('exit');
  // Keep draining its output so it never blocks on a full pipe.
  child.stdout.resume();
  return { child, match };
}

function modelEnv(wl: Workload): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env['MODEL_PATH'];
  delete env['REDIS_URL'];
  if (wl.modelPath) env['MODEL_PATH'] = wl.modelPath;
  return env;
}

export async function startStandard(
  wl: Workload,
  env: Record<string, string> = {},
): Promise<SystemUnderTest> {
  const port = await freePort();
  const { child } = await spawnUntil(
    'bench/standard-server.ts',
    [String(port), wl.modelPath ?? ''],
    { ...modelEnv(wl), ...env },
    /listening (\d+)/,
    120_000,
  );
  return {
    url: `http://127.0.0.1:${port}`,
    processes: new Map([['standard', child.pid!]]),
    metricsUrls: [],
    redis: undefined,
    stop: () => stopProcess(child),
  };
}

export interface PipelineOptions {
  preProcesses: number;
  postProcesses: number;
  /** Extra environment for every role (e.g. MAX_BATCH_SIZE, NODE_OPTIONS for profiles). */
  env: Record<string, string>;
}

export async function startPipeline(wl: Workload, opts: PipelineOptions): Promise<SystemUnderTest> {
  const redisServer = await startRedisServer();
  const port = await freePort();
  // The supervisor gives the roles consecutive metrics ports from this one.
  const metricsBase = await freePortRange(2 + opts.preProcesses + opts.postProcesses);
  const env: NodeJS.ProcessEnv = {
    ...modelEnv(wl),
    REDIS_URL: redisServer.url,
    HOST: '127.0.0.1',
    PORT: String(port),
    METRICS_PORT: String(metricsBase),
    NUM_PRE_WORKERS: String(opts.preProcesses),
    NUM_POST_WORKERS: String(opts.postProcesses),
    LOG_LEVEL: 'warn',
    ...opts.env,
  };
  let supervisor: ChildProcess;
  try {
    ({ child: supervisor } = await spawnUntil(
      'services/supervisor/main.ts',
      [],
      env,
      /is ready at/,
      180_000,
    ));
  } catch (err) {
    await stopProcess(redisServer.process);
    throw err;
  }
  const processes = new Map<string, number>([
    ['supervisor', supervisor.pid!],
    ['redis', redisServer.process.pid!],
  ]);
  const counts = new Map<string, number>();
  for (const pid of descendants(supervisor.pid!).sort((a, b) => a - b)) {
    const role = /services\/(gateway|pre|infer|post)\/main/.exec(commandLine(pid))?.[1];
    if (!role) continue;
    const n = (counts.get(role) ?? 0) + 1;
    counts.set(role, n);
    processes.set(role === 'infer' || role === 'gateway' ? role : `${role}#${n}`, pid);
  }
  const workers = 1 + opts.preProcesses + opts.postProcesses;
  const redis = new Redis(redisServer.url, { maxRetriesPerRequest: 1 });
  return {
    url: `http://127.0.0.1:${port}`,
    processes,
    metricsUrls: [
      `http://127.0.0.1:${port}/metrics`,
      ...Array.from({ length: workers }, (_, i) => `http://127.0.0.1:${metricsBase + i}/metrics`),
    ],
    redis,
    stop: async () => {
      redis.disconnect();
      await stopProcess(supervisor, 30_000);
      await stopProcess(redisServer.process);
    },
  };
}

/** Bytes Redis has received and sent since it started. */
export interface RedisBytes {
  input: number;
  output: number;
}

export async function redisNetBytes(redis: Redis): Promise<RedisBytes> {
  const info = await redis.info('stats');
  const field = (name: string) => Number(new RegExp(`^${name}:(\\d+)`, 'm').exec(info)?.[1] ?? 0);
  return { input: field('total_net_input_bytes'), output: field('total_net_output_bytes') };
}

/**
 * The first of `count` consecutive free ports, below the ephemeral range (32768 and up on
 * Linux), where client sockets of the load itself could take one between the check and the
 * listen.
 */
async function freePortRange(count: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * 10_000);
    const ports = Array.from({ length: count }, (_, i) => base + i);
    if ((await Promise.all(ports.map(canListen))).every(Boolean)) return base;
  }
  throw new Error(`no ${count} consecutive free ports between 20000 and 30000`);
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}
