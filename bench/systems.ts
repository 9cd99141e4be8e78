import { spawn, type ChildProcess } from 'node:child_process';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { freePort, freePorts, stopProcess } from '../services/supervisor/processes.js';
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
  /** URL of the pipeline's Redis (MONITOR opens its own connection). */
  redisUrl: string | undefined;
  stop(): Promise<void>;
}

/** This checkout, whose bench is running. */
export const ROOT = fileURLToPath(new URL('..', import.meta.url));

/**
 * Spawns a TypeScript entry point of the checkout at `cwd` (with that checkout's tsx, which
 * `--import` resolves from the working directory) and resolves once its stdout has a line
 * matching `ready`.
 */
async function spawnUntil(
  entry: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  ready: RegExp,
  timeoutMs: number,
  cwd = ROOT,
): Promise<{ child: ChildProcess; match: RegExpExecArray }> {
  const child = spawn(process.execPath, ['--import', 'tsx', entry, ...args], {
    cwd,
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
  // Keep draining its output so it never blocks on a full pipe, without keeping it: the
  // gateway logs a line per request, and matching the whole output so far at every chunk cost
  // the bench's own process more CPU the longer a run went.
  child.stdout.removeAllListeners('data');
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
    redisUrl: undefined,
    stop: () => stopProcess(child),
  };
}

export interface PipelineOptions {
  /** Checkout to run `services/supervisor/main.ts` from (it needs its own node_modules). */
  root: string;
  /** `NUM_PRE_WORKERS`; undefined leaves the supervisor's default. */
  preProcesses?: number | undefined;
  /** `NUM_POST_WORKERS`; undefined leaves the supervisor's default. */
  postProcesses?: number | undefined;
  /** Extra environment for every role (e.g. MAX_BATCH_SIZE, NODE_OPTIONS for profiles). */
  env: Record<string, string>;
}

/**
 * The pipeline as `npm start` runs it from `opts.root`: the supervisor with its defaults, which
 * starts its private redis-server and every role. Only the ports are chosen here (the gateway's
 * and the first of the workers' metrics ports), and what the caller passes. Its processes are
 * found among the supervisor's descendants by their command lines.
 */
export async function startPipeline(wl: Workload, opts: PipelineOptions): Promise<SystemUnderTest> {
  const port = await freePort();
  const env: NodeJS.ProcessEnv = { ...modelEnv(wl), HOST: '127.0.0.1', PORT: String(port) };
  if (opts.preProcesses !== undefined) env['NUM_PRE_WORKERS'] = String(opts.preProcesses);
  if (opts.postProcesses !== undefined) env['NUM_POST_WORKERS'] = String(opts.postProcesses);
  Object.assign(env, opts.env);
  // The supervisor gives the workers consecutive metrics ports from METRICS_PORT: keep room
  // for as many as it may start (its defaults are below one per core each).
  const most = (v: string | undefined) => (v ? Number(v) : cpus().length);
  const metricsBase = await freePorts(
    1 + most(env['NUM_PRE_WORKERS']) + most(env['NUM_POST_WORKERS']),
  );
  env['METRICS_PORT'] = String(metricsBase);
  const { child: supervisor } = await spawnUntil(
    'services/supervisor/main.ts',
    [],
    env,
    /is ready at/,
    180_000,
    opts.root,
  );
  const processes = new Map<string, number>([['supervisor', supervisor.pid!]]);
  const counts = new Map<string, number>();
  let redisUrl = env['REDIS_URL'];
  for (const pid of descendants(supervisor.pid!).sort((a, b) => a - b)) {
    const cmd = commandLine(pid);
    if (/redis-server/.test(cmd)) {
      processes.set('redis', pid);
      // redis-server rewrites its command line to "redis-server 127.0.0.1:<port>".
      const redisPort = /--port (\d+)/.exec(cmd)?.[1] ?? /:(\d+)/.exec(cmd)?.[1];
      if (redisPort && !redisUrl) redisUrl = `redis://127.0.0.1:${redisPort}`;
      continue;
    }
    const role = /services\/(gateway|pre|infer|post)\/main/.exec(cmd)?.[1];
    if (!role) continue;
    const n = (counts.get(role) ?? 0) + 1;
    counts.set(role, n);
    processes.set(role === 'infer' || role === 'gateway' ? role : `${role}#${n}`, pid);
  }
  if (!redisUrl) {
    await stopProcess(supervisor, 30_000);
    throw new Error("the pipeline's redis-server was not found among the supervisor's processes");
  }
  const workers = (counts.get('infer') ?? 0) + (counts.get('pre') ?? 0) + (counts.get('post') ?? 0);
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
  return {
    url: `http://127.0.0.1:${port}`,
    processes,
    metricsUrls: [
      `http://127.0.0.1:${port}/metrics`,
      ...Array.from({ length: workers }, (_, i) => `http://127.0.0.1:${metricsBase + i}/metrics`),
    ],
    redis,
    redisUrl,
    stop: async () => {
      redis.disconnect();
      await stopProcess(supervisor, 30_000);
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

/** `K=V,K=V` as an environment (values cannot contain commas); {} for undefined. */
export function parseEnv(text: string | undefined): Record<string, string> {
  const env: Record<string, string> = {};
  for (const pair of (text ?? '').split(',').filter(Boolean)) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new Error(`"${pair}" is not K=V`);
    env[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return env;
}
