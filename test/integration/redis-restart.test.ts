import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { after, test } from 'node:test';
import type { DetectionResponse } from '../../shared/contracts.js';
import { startRedisServer, stopProcess } from '../../services/supervisor/processes.js';
import { drawImage } from '../helpers/images.js';
import { postJson, startStack, type Stack } from '../helpers/stack.js';

/**
 * Redis goes away and comes back empty (persistence is off): while it is down the gateway
 * answers 503 at once instead of hanging; afterwards every role reconnects by itself, the
 * inference process publishes its model again, and the stack serves without a restart.
 */
let redis: ChildProcess | undefined;
let stack: Stack | undefined;

after(async () => {
  await stack?.stop();
  if (redis) await stopProcess(redis);
});

test('the stack survives a Redis restart', async () => {
  const first = await startRedisServer();
  redis = first.process;
  const port = Number(new URL(first.url).port);
  stack = await startStack({ redisUrl: first.url });
  const png = await drawImage(160, 120, [{ colour: 'blue', x: 20, y: 20, w: 50, h: 40 }]);
  const body = { image: { type: 'base64', value: png.toString('base64') } };
  const detect = () => postJson(stack!, '/infer/object_detection', body);
  assert.equal((await detect()).status, 200);

  redis.kill('SIGKILL');
  await new Promise((r) => redis!.once('exit', r));
  const started = Date.now();
  const down = await detect();
  assert.equal(down.status, 503, JSON.stringify(down.body));
  assert.equal((down.body as { code: string }).code, 'NOT_READY');
  assert.ok(Date.now() - started < 5000, `answered in ${Date.now() - started} ms`);
  assert.equal((await fetch(`${stack.url}/readyz`)).status, 503);

  redis = (await startRedisServer('ignore', port)).process;
  const until = Date.now() + 30_000;
  while ((await fetch(`${stack.url}/readyz`)).status !== 200) {
    assert.ok(Date.now() < until, 'the stack did not become ready again');
    await new Promise((r) => setTimeout(r, 200));
  }
  const again = await detect();
  assert.equal(again.status, 200, JSON.stringify(again.body));
  assert.deepEqual(
    (again.body as DetectionResponse).predictions.map((p) => p.class),
    ['blue'],
  );
});

test('Redis with a password: the stack serves, and the password never reaches the logs', async () => {
  const password = 'pw-5c0f1e7d9a';
  const secured = await startRedisServer('ignore', undefined, password);
  const withPassword = await startStack({ redisUrl: secured.url });
  try {
    const png = await drawImage(160, 120, [{ colour: 'green', x: 20, y: 20, w: 50, h: 40 }]);
    const res = await postJson(withPassword, '/infer/object_detection', {
      image: { type: 'base64', value: png.toString('base64') },
    });
    assert.equal(res.status, 200);
    assert.deepEqual(
      (res.body as DetectionResponse).predictions.map((p) => p.class),
      ['green'],
    );
    // A wrong password is a clear startup failure that does not print the URL's secret.
    const wrongUrl = secured.url.replace(password, 'wrong-secret-77');
    const wrong = await startStack({ redisUrl: wrongUrl, roles: ['pre'], waitReady: false });
    await new Promise((r) => setTimeout(r, 1500));
    await wrong.stop();
    const logs = [...withPassword.logs(), ...wrong.logs()].join('\n');
    assert.ok(
      !logs.includes(password) && !logs.includes('wrong-secret-77'),
      'a Redis password was logged',
    );
  } finally {
    await withPassword.stop();
    await stopProcess(secured.process);
  }
});
