import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
export { stopProcess } from '../../shared/supervised.js';
import { createServer } from 'node:net';
import { delimiter, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { redisTarget } from '../../shared/redis.js';

/**
 * Starting and stopping the stack's processes: the roles, run with the same Node (and, in
 * development, the same TypeScript loader) as the caller, and a private redis-server. Used by
 * the supervisor and by the integration tests, so both run the stack the same way.
 */
export const ROLES = ['gateway', 'pre', 'infer', 'post'] as const;
export type Role = (typeof ROLES)[number];

const EXT = extname(fileURLToPath(import.meta.url));

/** Command line that runs one role's entry point. */
export function roleCommand(role: Role): { command: string; args: string[] } {
  const entry = fileURLToPath(new URL(`../${role}/main${EXT}`, import.meta.url));
  // Under tsx the entry points are .ts files: load tsx into the child too.
  const loader = EXT === '.ts' ? ['--import', import.meta.resolve('tsx')] : [];
  return { command: process.execPath, args: [...loader, entry] };
}

/**
 * Starts one role's process in its own process group (a terminal's Ctrl-C reaches only the
 * supervisor, which stops the roles in order instead of all at once). The roles that decode
 * images with sharp get jemalloc preloaded when the machine has it (see allocatorEnv).
 */
export function spawnRole(
  role: Role,
  env: NodeJS.ProcessEnv,
  stdio: StdioOptions = 'inherit',
): ChildProcess {
  const { command, args } = roleCommand(role);
  const roleEnv = role === 'pre' || role === 'post' ? { ...env, ...allocatorEnv(env) } : env;
  return spawn(command, args, { env: roleEnv, stdio, detached: true });
}

/** Where Debian's libjemalloc2 (and most distributions') puts the library. */
const JEMALLOC_PATHS = [
  `/usr/lib/${process.arch === 'arm64' ? 'aarch64' : 'x86_64'}-linux-gnu/libjemalloc.so.2`,
  '/usr/lib64/libjemalloc.so.2',
  '/usr/lib/libjemalloc.so.2',
  '/usr/local/lib/libjemalloc.so.2',
];

/**
 * The allocator settings of a process that decodes large images. glibc's malloc keeps the
 * memory libvips used for a large image long after it is freed (a `post` that drew 50
 * 16-megapixel images stayed above 1 GiB); jemalloc returns it within seconds. Preloaded when
 * installed and LD_PRELOAD is not set already; otherwise glibc is told to keep fewer arenas
 * (MALLOC_ARENA_MAX=2), which halves what it keeps.
 */
export function allocatorEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  if (env['LD_PRELOAD'] !== undefined) return {};
  const jemalloc = JEMALLOC_PATHS.find((p) => existsSync(p));
  if (jemalloc) return { LD_PRELOAD: jemalloc };
  return { MALLOC_ARENA_MAX: env['MALLOC_ARENA_MAX'] ?? '2' };
}

/**
 * The first of `count` consecutive loopback TCP ports that were all free a moment ago, chosen
 * at random below the system's ephemeral port range (Linux's
 * `/proc/sys/net/ipv4/ip_local_port_range`, 32768–60999 by default: within the 10,000 ports
 * under it; 20000–29999 where it cannot be read or starts too low). A port from `listen(0)`
 * comes from the ephemeral range, where any client socket's `connect()` on this machine can
 * take it between this check and the caller's own `listen` (EADDRINUSE).
 *
 * @param count how many consecutive ports (default 1)
 * @returns the first port
 * @throws Error when 50 random tries found no such run of ports
 */
export async function freePorts(count = 1): Promise<number> {
  const [low, high] = portWindow();
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = low + Math.floor(Math.random() * (high - low - count + 1));
    const ports = Array.from({ length: count }, (_, i) => base + i);
    if ((await Promise.all(ports.map(canListen))).every(Boolean)) return base;
  }
  throw new Error(`no ${count} consecutive free ports between ${low} and ${high - 1}`);
}

/** A loopback TCP port that was free a moment ago, outside the ephemeral range (freePorts). */
export function freePort(): Promise<number> {
  return freePorts(1);
}

/** [first, end) of the ports freePorts chooses from. */
function portWindow(): [number, number] {
  try {
    const [low] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8')
      .trim()
      .split(/\s+/)
      .map(Number);
    if (low !== undefined && low > 11_024) return [low - 10_000, low];
  } catch {
    // Not Linux: the fallback below.
  }
  return [20_000, 30_000];
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/** A private redis-server that could not be started (missing binary, exit, no answer). */
export class RedisServerError extends Error {
  override readonly name = 'RedisServerError';
}

/**
 * Spawns a redis-server on loopback `port` with persistence off and the `noeviction` policy,
 * without waiting for it; see startRedisServer. On Linux with util-linux's `setpriv` it gets
 * SIGTERM when this process dies, however it dies.
 *
 * @param password a password the server requires
 * @param unixSocket a Unix socket path it listens on too (mode 700: this user only)
 */
export function spawnRedisServer(
  port: number,
  stdio: StdioOptions = 'ignore',
  password?: string,
  unixSocket?: string,
): ChildProcess {
  const args = [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--appendonly',
    'no',
    '--maxmemory-policy',
    'noeviction',
    ...(password ? ['--requirepass', password] : []),
    ...(unixSocket ? ['--unixsocket', unixSocket, '--unixsocketperm', '700'] : []),
  ];
  // A private server must not outlive the process that started it, even one killed with
  // SIGKILL (which runs no cleanup): util-linux's setpriv, where there is one, asks the kernel
  // for a SIGTERM to redis-server when this process dies (PR_SET_PDEATHSIG, kept across exec).
  // Only with redis-server on the PATH, so that a missing one is still reported as such.
  return SETPRIV && onPath('redis-server')
    ? spawn(SETPRIV, ['--pdeathsig', 'TERM', 'redis-server', ...args], { stdio })
    : spawn('redis-server', args, { stdio });
}

/** util-linux's setpriv (Linux), if installed. */
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));

/** Whether an executable named `name` is in one of the PATH's directories. */
function onPath(name: string): boolean {
  return (process.env['PATH'] ?? '')
    .split(delimiter)
    .some((dir) => dir !== '' && existsSync(join(dir, name)));
}

/** The URL of a private redis-server on loopback `port`. */
export function redisServerUrl(port: number, password?: string): string {
  return `redis://${password ? `:${encodeURIComponent(password)}@` : ''}127.0.0.1:${port}`;
}

/**
 * Starts a private redis-server (see spawnRedisServer) and waits until it answers PING.
 *
 * @param port where it listens; default a free one (a given port restarts a server where it was)
 * @param password a password the server requires (it then appears in the returned URL)
 * @param unixSocket a Unix socket path it listens on too (spawnRedisServer)
 * @returns `url`, its loopback TCP URL (redis://127.0.0.1:port)
 * @throws RedisServerError when redis-server is missing, exits, or does not answer within 10 s
 */
export async function startRedisServer(
  stdio: StdioOptions = 'ignore',
  port?: number,
  password?: string,
  unixSocket?: string,
): Promise<{ url: string; process: ChildProcess }> {
  port ??= await freePort();
  const child = spawnRedisServer(port, stdio, password, unixSocket);
  const spawnError = new Promise<never>((_, reject) => {
    child.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        new RedisServerError(
          err.code === 'ENOENT'
            ? 'redis-server is not on the PATH: install it (e.g. apt-get install redis-server) or set REDIS_URL'
            : `redis-server could not start: ${err.message}`,
        ),
      ),
    );
    child.once('exit', (code) =>
      reject(new RedisServerError(`redis-server exited with code ${code} at startup`)),
    );
  });
  const url = redisServerUrl(port, password);
  await Promise.race([waitForRedis(url, 10_000), spawnError]);
  child.removeAllListeners('exit');
  return { url, process: child };
}

/** Resolves once Redis at `url` answers PING; rejects after timeoutMs. */
export async function waitForRedis(url: string, timeoutMs: number): Promise<void> {
  const redis = new Redis(redisTarget(url), {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  redis.on('error', () => {}); // Refusals are expected until the server is up.
  const until = Date.now() + timeoutMs;
  try {
    for (;;) {
      try {
        if (redis.status !== 'ready') await redis.connect();
        await redis.ping();
        return;
      } catch (err) {
        if (Date.now() > until)
          throw new RedisServerError(`Redis at ${url} did not answer: ${String(err)}`);
        redis.disconnect();
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  } finally {
    redis.disconnect();
  }
}
