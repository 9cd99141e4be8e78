import type { ChildProcess } from 'node:child_process';
import { loadConfigOrExit } from '../../shared/config.js';
import { createLogger } from '../../shared/logger.js';
import { spawnRole, startRedisServer, stopProcess, waitForRedis, type Role } from './processes.js';

/**
 * `npm start`: runs the whole stack on this machine, every role as its own process, all
 * connected only through Redis. Without REDIS_URL it starts a private redis-server first. It
 * prints the URL once the gateway reports ready, and stops everything it started (gateway
 * first, Redis last) on SIGINT/SIGTERM or when any role dies.
 */
const config = loadConfigOrExit();
const log = createLogger('supervisor', config.logLevel);

const children: Array<{ role: Role; process: ChildProcess }> = [];
let redisProcess: ChildProcess | undefined;
let stopping: Promise<void> | undefined;

async function main(): Promise<void> {
  let redisUrl = process.env['REDIS_URL'];
  if (redisUrl) {
    await waitForRedis(redisUrl, 10_000);
  } else {
    const redis = await startRedisServer();
    redisProcess = redis.process;
    redisUrl = redis.url;
    log.info({ redisUrl }, 'private redis-server started');
  }
  const env = { ...process.env, REDIS_URL: redisUrl };
  // The inference process first: the other roles read the model description it publishes.
  for (const role of ['infer', 'pre', 'post', 'gateway'] as const) {
    const child = spawnRole(role, env);
    children.push({ role, process: child });
    child.once('exit', (code, signal) => {
      if (stopping) return;
      log.error({ role, code, signal }, `${role} exited unexpectedly; stopping the stack`);
      void shutdown(1);
    });
  }
  const url = `http://${config.gateway.host === '0.0.0.0' ? '127.0.0.1' : config.gateway.host}:${config.gateway.port}`;
  await waitReady(`${url}/readyz`, 120_000);
  const registry = (await (await fetch(`${url}/model/registry`)).json()) as {
    models: Array<{ model_id: string }>;
  };
  const models = registry.models.map((m) => m.model_id).join(', ');
  process.stdout.write(`\nstaged-detect is ready at ${url}  (model: ${models})\n\n`);
}

async function waitReady(url: string, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (stopping) return;
    try {
      if ((await fetch(url)).ok) return;
    } catch {
      // Not listening yet.
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`the stack did not become ready within ${timeoutMs / 1000} s (see ${url})`);
}

function shutdown(code: number): Promise<void> {
  stopping ??= (async () => {
    // Intake first, the model last, Redis after everything that uses it.
    const order: Role[] = ['gateway', 'pre', 'post', 'infer'];
    for (const role of order) {
      await Promise.all(children.filter((c) => c.role === role).map((c) => stopProcess(c.process)));
    }
    if (redisProcess) await stopProcess(redisProcess);
    process.exit(code);
  })();
  return stopping;
}

let signals = 0;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (++signals > 1) process.exit(1);
    log.info({ signal }, 'stopping the stack');
    void shutdown(0);
  });
}

main().catch((err: unknown) => {
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`startup failed: ${message}\n`);
  void shutdown(1);
});
