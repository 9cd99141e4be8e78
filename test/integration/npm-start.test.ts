import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { freePort, startRedisServer } from '../../services/supervisor/processes.js';
import { redisSocketUrl } from '../../shared/redis.js';
import { Supervised } from '../../shared/supervised.js';
import { createLogger } from '../../shared/logger.js';
import { startEndlessDownload } from '../helpers/image-server.js';
import { drawImage } from '../helpers/images.js';
import { isAlive } from '../helpers/stack.js';

/**
 * `npm start` as a user runs it, through npm and its shell: SIGTERM to npm stops the whole
 * stack in order; a killed npm (the process that started the supervisor) stops it too; the
 * private redis-server is restarted like any other child, and the stack serves again by itself.
 */
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

interface Run {
  child: ChildProcess;
  lines: string[];
}

function npmStart(env: Record<string, string>): Run {
  const cleanEnv: NodeJS.ProcessEnv = {
    ...process.env,
    LOG_LEVEL: 'info',
    HOST: '127.0.0.1',
    NUM_PRE_WORKERS: '1',
    NUM_POST_WORKERS: '1',
    METRICS_PORT: '0',
    DRAIN_TIMEOUT_MS: '5000',
    ...env,
  };
  if (!env['REDIS_URL']) delete cleanEnv['REDIS_URL'];
  const child = spawn('npm', ['start', '--silent'], {
    cwd: ROOT,
    env: cleanEnv,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const run: Run = { child, lines: [] };
  const collect = (c: Buffer) => run.lines.push(...c.toString().split('\n').filter(Boolean));
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  return run;
}

function events(run: Run): Array<Record<string, unknown>> {
  return run.lines.flatMap((l) => {
    try {
      return [JSON.parse(l) as Record<string, unknown>];
    } catch {
      return [];
    }
  });
}

async function until(what: string, timeoutMs: number, check: () => boolean | Promise<boolean>) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await check()) return;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** Every process of the stack: supervisor, roles and redis-server. */
async function stackPids(run: Run, redisUrl: string): Promise<number[]> {
  const pids = events(run).map((e) => e['pid'] as number);
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
  try {
    pids.push(Number(/^process_id:(\d+)/m.exec(await redis.info('server'))?.[1]));
  } finally {
    redis.disconnect();
  }
  return [...new Set(pids.filter((p) => Number.isInteger(p) && p > 0))];
}

async function started(
  run: Run,
  port: number,
  externalRedis?: string,
): Promise<{ redisUrl: string; pids: number[] }> {
  await until('the ready banner', 90_000, () => run.lines.some((l) => l.includes('is ready at')));
  const redisUrl =
    externalRedis ??
    (events(run).find((e) => e['msg'] === 'private redis-server started')?.['redisUrl'] as string);
  assert.match(redisUrl, /^redis:\/\/127\.0\.0\.1:\d+$/);
  assert.equal(await detect(port), 200);
  return { redisUrl, pids: await stackPids(run, redisUrl) };
}

async function detect(port: number): Promise<number> {
  const image = await drawImage(160, 120, [{ colour: 'green', x: 20, y: 30, w: 60, h: 40 }]);
  try {
    const res = await fetch(`http://127.0.0.1:${port}/infer/object_detection`, {
      method: 'POST',
      headers: { 'content-type': 'image/png' },
      body: image,
    });
    await res.arrayBuffer();
    return res.status;
  } catch {
    return 0;
  }
}

function killAll(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
}

describe('npm start, stopped and broken from outside', () => {
  test('the private Redis killed is restarted on its port; SIGTERM to npm then stops everything', async () => {
    const port = await freePort();
    const run = npmStart({ PORT: String(port) });
    let pids: number[] = [];
    try {
      const stack = await started(run, port);
      pids = stack.pids;
      const redisPid = pids.at(-1)!;
      process.kill(redisPid, 'SIGKILL');
      const killedAt = Date.now();
      await until('redis restarted', 10_000, () =>
        events(run).some((e) => e['msg'] === 'redis restarted'),
      );
      await until('serving again', 30_000, async () => (await detect(port)) === 200);
      const recoveryMs = Date.now() - killedAt;
      process.stdout.write(`# serving again ${recoveryMs} ms after redis-server was killed\n`);
      const now = await stackPids(run, stack.redisUrl);
      pids = [...new Set([...pids, ...now])];

      const stopAt = Date.now();
      run.child.kill('SIGTERM');
      await until('every process gone', 30_000, () => pids.every((p) => !isAlive(p)));
      process.stdout.write(`# npm start stopped ${Date.now() - stopAt} ms after SIGTERM to npm\n`);
      assert.ok(
        events(run).some((e) => e['role'] === 'supervisor' && e['msg'] === 'shutting down'),
      );
      await assert.rejects(fetch(`http://127.0.0.1:${port}/healthz`));
    } finally {
      run.child.kill('SIGKILL');
      killAll(pids);
    }
  });

  test('npm killed with SIGKILL: the supervisor stops its stack by itself', async () => {
    const port = await freePort();
    const run = npmStart({ PORT: String(port) });
    let pids: number[] = [];
    try {
      pids = (await started(run, port)).pids;
      run.child.kill('SIGKILL');
      await once(run.child, 'exit');
      await until('every process gone', 30_000, () => pids.every((p) => !isAlive(p)));
    } finally {
      killAll(pids);
    }
  });

  test('a stack whose external Redis is gone stops within one drain timeout', async (t) => {
    // The external Redis is given as a Unix socket (REDIS_URL unix:///…): the roles use it.
    const socketDir = mkdtempSync(join(tmpdir(), 'npm-start-test-'));
    const socket = join(socketDir, 'redis.sock');
    const redis = await startRedisServer('ignore', undefined, undefined, socket);
    const port = await freePort();
    const run = npmStart({ PORT: String(port), REDIS_URL: redisSocketUrl(socket) });
    let pids: number[] = [];
    try {
      pids = (await started(run, port, redis.url)).pids.filter((p) => p !== redis.process.pid);
      const admin = new Redis(redis.url);
      const clients = ((await admin.client('LIST')) as string).trim().split('\n');
      admin.disconnect();
      const roleClients = clients.filter((c) => /name=(gateway|pre|infer|post)/.test(c));
      assert.ok(roleClients.length >= 8, clients.join('\n'));
      for (const c of roleClients) assert.match(c, new RegExp(`laddr=${socket}`), c);
      redis.process.kill('SIGKILL');
      await once(redis.process, 'exit');
      await sleep(1000);
      const stopAt = Date.now();
      run.child.kill('SIGTERM');
      await until('every process gone', 30_000, () => pids.every((p) => !isAlive(p)));
      const ms = Date.now() - stopAt;
      t.diagnostic(`stopped ${ms} ms after SIGTERM with Redis gone (DRAIN_TIMEOUT_MS 5000)`);
      // Before: each phase waited for its processes' own drain timeout (about 3 × 5 s).
      assert.ok(ms < 5000, `took ${ms} ms`);
    } finally {
      run.child.kill('SIGKILL');
      killAll(pids);
      redis.process.kill('SIGKILL');
      rmSync(socketDir, { recursive: true, force: true });
    }
  });

  test('SIGTERM while the model still loads stops the start: no later role starts, no banner', async () => {
    // A model download that never finishes keeps the stack in its startup.
    const trickler = await startEndlessDownload();
    const run = npmStart({ PORT: String(await freePort()), MODEL_URL: trickler.url });
    try {
      await until('the private Redis', 30_000, () =>
        events(run).some((e) => e['msg'] === 'private redis-server started'),
      );
      // Stopped once the inference process is downloading its model, which never finishes.
      await until('the model download', 30_000, () => trickler.requests > 0);
      run.child.kill('SIGTERM');
      await once(run.child, 'exit');
      await sleep(1500);
      assert.ok(!run.lines.some((l) => l.includes('is ready at')), 'a ready banner was printed');
      const roles = new Set(events(run).map((e) => e['role']));
      for (const role of ['pre', 'post', 'gateway'])
        assert.ok(!roles.has(role), `${role} was started after the stop: ${[...roles].join()}`);
      const pids = events(run).map((e) => e['pid'] as number);
      for (const pid of new Set(pids))
        assert.equal(isAlive(pid), false, `process ${pid} still runs`);
    } finally {
      run.child.kill('SIGKILL');
      trickler.close();
    }
  });

  test('a child that keeps crashing is given up on after MAX_CRASHES restarts', async () => {
    let spawned = 0;
    const gaveUp = new Promise<[string, number]>((resolve) => {
      new Supervised({
        name: 'redis',
        spawn: () => {
          spawned++;
          return spawn(process.execPath, ['-e', 'process.exit(3)'], { stdio: 'ignore' });
        },
        backoffMs: 10,
        log: createLogger('test', 'silent'),
        onGiveUp: (name, crashes) => resolve([name, crashes]),
      });
    });
    const [name, crashes] = await gaveUp;
    assert.equal(name, 'redis');
    assert.equal(crashes, 6);
    assert.equal(spawned, 6);
  });
});
