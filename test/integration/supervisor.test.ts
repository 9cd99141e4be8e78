import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';
import { Redis } from 'ioredis';
import type { DetectionResponse } from '../../shared/contracts.js';
import { freePort } from '../../services/supervisor/processes.js';
import { drawImage } from '../helpers/images.js';

/**
 * `npm start`'s supervisor as a user runs it: a private Redis, every role as a process, a
 * banner when ready, restarts of a killed process, one-line startup errors, and a clean stop
 * on SIGTERM that leaves nothing running.
 */
const SUPERVISOR = fileURLToPath(new URL('../../services/supervisor/main.ts', import.meta.url));

interface Run {
  child: ChildProcess;
  stdout: string[];
  stderr: string[];
}

function startSupervisor(env: Record<string, string>): Run {
  const cleanEnv: NodeJS.ProcessEnv = {
    ...process.env,
    LOG_LEVEL: 'info',
    HOST: '127.0.0.1',
    ...env,
  };
  delete cleanEnv['REDIS_URL'];
  const child = spawn(process.execPath, ['--import', 'tsx', SUPERVISOR], {
    env: cleanEnv,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const run: Run = { child, stdout: [], stderr: [] };
  child.stdout?.on('data', (c: Buffer) =>
    run.stdout.push(...c.toString().split('\n').filter(Boolean)),
  );
  child.stderr?.on('data', (c: Buffer) =>
    run.stderr.push(...c.toString().split('\n').filter(Boolean)),
  );
  return run;
}

async function until(
  what: string,
  timeoutMs: number,
  check: () => boolean | Promise<boolean>,
): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

function events(run: Run): Array<Record<string, unknown>> {
  return run.stdout.flatMap((l) => {
    try {
      return [JSON.parse(l) as Record<string, unknown>];
    } catch {
      return [];
    }
  });
}

async function exitCode(child: ChildProcess, timeoutMs: number): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const [code] = (await once(child, 'exit')) as [number | null];
  clearTimeout(timer);
  return code;
}

describe('npm start (the supervisor)', () => {
  test('starts the stack, restarts a killed worker, and stops everything on SIGTERM', async () => {
    const port = await freePort();
    const run = startSupervisor({
      PORT: String(port),
      NUM_PRE_WORKERS: '1',
      NUM_POST_WORKERS: '1',
    });
    try {
      await until('the ready banner', 90_000, () =>
        run.stdout.some((l) => l.includes('is ready at')),
      );
      const banner = run.stdout.find((l) => l.includes('is ready at'))!;
      assert.match(banner, new RegExp(`http://127\\.0\\.0\\.1:${port}`));
      assert.match(banner, /models: tiny-shapes /);
      const redisUrl = events(run).find((e) => e['msg'] === 'private redis-server started')?.[
        'redisUrl'
      ] as string;
      assert.match(redisUrl, /^redis:\/\/127\.0\.0\.1:\d+$/);
      const socket = events(run).find((e) => e['msg'] === 'private redis-server started')?.[
        'socket'
      ] as string;
      assert.match(socket, /\/redis\.sock$/);
      // Every role's connections come through the Unix socket; TCP only from this test.
      const admin = new Redis(redisUrl);
      const clients = ((await admin.client('LIST')) as string).trim().split('\n');
      admin.disconnect();
      const roleClients = clients.filter((c) => /name=(gateway|pre|infer|post)/.test(c));
      assert.ok(roleClients.length >= 8, clients.join('\n'));
      for (const c of roleClients) assert.match(c, new RegExp(`laddr=${socket}`), c);

      const image = await drawImage(200, 150, [{ colour: 'green', x: 20, y: 30, w: 60, h: 40 }]);
      const infer = async () => {
        const res = await fetch(`http://127.0.0.1:${port}/infer/object_detection`, {
          method: 'POST',
          headers: { 'content-type': 'image/png' },
          body: image,
        });
        const body = (await res.json()) as DetectionResponse;
        assert.equal(res.status, 200, JSON.stringify(body));
        return body;
      };
      assert.deepEqual(
        (await infer()).predictions.map((p) => p.class),
        ['green'],
      );

      // Requests keep flowing while the pre worker is killed: every one is answered.
      const prePid = events(run).find(
        (e) => e['role'] === 'pre' && e['msg'] === 'pre worker ready',
      )?.['pid'] as number;
      let answered = 0;
      const flow = Array.from({ length: 4 }, async () => {
        for (let i = 0; i < 6; i++) {
          assert.deepEqual(
            (await infer()).predictions.map((p) => p.class),
            ['green'],
          );
          answered++;
        }
      });
      await until('some answers', 30_000, () => answered >= 2);
      process.kill(prePid, 'SIGKILL');
      await Promise.all(flow);
      assert.equal(answered, 24);
      assert.ok(events(run).some((e) => e['msg'] === 'pre#1 restarted'));

      // SIGTERM during load: the accepted requests are answered, then everything stops.
      const childPids = events(run)
        .filter((e) => String(e['msg']).endsWith('ready') || e['msg'] === 'gateway listening')
        .map((e) => e['pid'] as number);
      const inFlight = Array.from({ length: 6 }, () => infer());
      await new Promise((r) => setTimeout(r, 30));
      run.child.kill('SIGTERM');
      for (const r of await Promise.all(inFlight)) {
        assert.deepEqual(
          r.predictions.map((p) => p.class),
          ['green'],
        );
      }
      // The stack stopped in order, then the supervisor re-raised the signal it got.
      assert.equal(await exitCode(run.child, 60_000), null);
      assert.equal(run.child.signalCode, 'SIGTERM');
      for (const pid of new Set(childPids)) {
        assert.throws(() => process.kill(pid, 0), /ESRCH/, `process ${pid} is still running`);
      }
      // Redis was stopped last: nothing answers on its port any more.
      const probe = new Redis(redisUrl, {
        lazyConnect: true,
        maxRetriesPerRequest: 0,
        retryStrategy: () => null,
      });
      probe.on('error', () => {});
      await assert.rejects(probe.connect());
      probe.disconnect();
      await assert.rejects(fetch(`http://127.0.0.1:${port}/healthz`));
      // The socket's private directory went with it.
      assert.equal(existsSync(dirname(socket)), false, `${dirname(socket)} is left`);
    } finally {
      run.child.kill('SIGKILL');
      // On failure, leave nothing running (the roles also stop by themselves once the
      // supervisor is gone).
      for (const e of events(run)) {
        try {
          process.kill(e['pid'] as number, 'SIGKILL');
        } catch {
          // Already gone.
        }
      }
    }
  });

  test('a missing model file is a one-line startup error and a non-zero exit', async () => {
    const run = startSupervisor({
      PORT: String(await freePort()),
      MODEL_PATH: '/nonexistent/model.onnx',
    });
    assert.equal(await exitCode(run.child, 60_000), 1);
    const failures = run.stderr.filter((l) => l.startsWith('startup failed'));
    assert.deepEqual(failures, [
      'startup failed: infer: MODEL_PATH /nonexistent/model.onnx: no such file',
    ]);
  });

  test('a port in use is a one-line startup error', async () => {
    const blocker = createServer();
    blocker.listen(0, '127.0.0.1');
    await once(blocker, 'listening');
    const port = (blocker.address() as { port: number }).port;
    try {
      const run = startSupervisor({ PORT: String(port) });
      assert.equal(await exitCode(run.child, 60_000), 1);
      assert.deepEqual(
        run.stderr.filter((l) => l.startsWith('startup failed')),
        [
          `startup failed: port ${port} on 127.0.0.1 is taken: stop what uses it or set PORT to a free port`,
        ],
      );
    } finally {
      blocker.close();
    }
  });
});
