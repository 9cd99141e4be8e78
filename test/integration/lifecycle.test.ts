import assert from 'node:assert/strict';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, test } from 'node:test';
import { startEndlessDownload, type EndlessDownload } from '../helpers/image-server.js';
import { drawImage } from '../helpers/images.js';
import { isAlive, suiteRedis } from '../helpers/stack.js';

/**
 * One lifecycle for every process (shared/lifecycle.ts): a signal during a long startup is
 * handled at once, a stop ends by re-raising the signal, and the gateway's cluster primary
 * restarts its processes with the supervisor's backoff.
 */
const suite = suiteRedis();
let trickler: EndlessDownload | undefined;
after(() => {
  trickler?.close();
});

test('SIGTERM while the inference process is still loading its model ends it at once, by that signal', async () => {
  // A model download that never finishes keeps the inference process in its startup.
  trickler = await startEndlessDownload();
  const url = trickler.url;
  const stack = await suite.stack({
    roles: ['infer'],
    waitReady: false,
    env: { MODEL_URL: url, LOG_LEVEL: 'info' },
  });
  const infer = stack.roles[0]!;
  try {
    // Signalled once the download has started: the process is in its startup, past its start.
    for (let i = 0; trickler.requests === 0 && i < 300; i++) await sleep(100);
    assert.equal(trickler.requests, 1, infer.output.join('\n'));
    assert.equal(infer.process.exitCode, null, infer.output.join('\n'));
    // 'close' comes once the process's output has been read to its end; 'exit' can come first.
    const closed = once(infer.process, 'close');
    const sentAt = Date.now();
    infer.process.kill('SIGTERM');
    await once(infer.process, 'exit');
    assert.ok(Date.now() - sentAt < 2000, `took ${Date.now() - sentAt} ms`);
    assert.equal(infer.process.signalCode, 'SIGTERM');
    await closed;
    assert.ok(
      infer.output.some((l) => l.includes('stopping during startup')),
      infer.output.join('\n'),
    );
  } finally {
    await stack.stop();
  }
});

test('the gateway cluster primary restarts a killed gateway process and stops them all on SIGTERM', async () => {
  const stack = await suite.stack({ env: { NUM_WORKERS: '2', LOG_LEVEL: 'info' } });
  try {
    const primary = stack.roles.find((r) => r.role === 'gateway')!;
    const pids = () =>
      stack
        .logs('gateway')
        .map((l) => /"pid":(\d+).*"msg":"gateway listening"/.exec(l)?.[1])
        .filter((p): p is string => p !== undefined)
        .map(Number);
    for (let i = 0; pids().length < 2 && i < 100; i++) await sleep(100);
    const [first] = pids();
    process.kill(first!, 'SIGKILL');
    for (let i = 0; pids().length < 3 && i < 100; i++) await sleep(100);
    assert.equal(pids().length, 3, stack.logs('gateway').slice(-10).join('\n'));
    // Whichever gateway process listened first was killed: #1 or #2.
    assert.ok(stack.logs('gateway').some((l) => /gateway#\d restarted/.test(l)));
    assert.equal((await fetch(`${stack.url}/healthz`)).status, 200);
    primary.process.kill('SIGTERM');
    await once(primary.process, 'exit');
    assert.equal(primary.process.signalCode, 'SIGTERM');
    for (const pid of pids())
      assert.equal(isAlive(pid), false, `gateway process ${pid} still runs`);
  } finally {
    await stack.stop();
  }
});

test('a request still waiting when the drain time runs out is answered 503, not cut off', async () => {
  const stack = await suite.stack({ env: { DRAIN_TIMEOUT_MS: '2000' } });
  const pre = stack.roles.filter((r) => r.role === 'pre');
  for (const r of pre) r.process.kill('SIGSTOP');
  try {
    const png = await drawImage(80, 60, [{ colour: 'red', x: 10, y: 10, w: 30, h: 20 }]);
    const pending = fetch(`${stack.url}/infer/object_detection`, {
      method: 'POST',
      headers: { 'content-type': 'image/png' },
      body: png,
    }).then(async (res) => ({ status: res.status, body: (await res.json()) as { code?: string } }));
    await sleep(300);
    const gateway = stack.roles.find((r) => r.role === 'gateway')!;
    const stoppedAt = Date.now();
    gateway.process.kill('SIGTERM');
    const answer = await pending;
    assert.equal(answer.status, 503);
    assert.equal(answer.body.code, 'NOT_READY');
    const ms = Date.now() - stoppedAt;
    assert.ok(ms >= 900 && ms < 2000, `answered ${ms} ms after SIGTERM (drain 2000 ms)`);
    await once(gateway.process, 'exit');
  } finally {
    for (const r of pre) r.process.kill('SIGCONT');
  }
});
