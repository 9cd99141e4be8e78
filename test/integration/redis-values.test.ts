import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { startRedisServer, stopProcess } from '../../services/supervisor/processes.js';
import {
  closeRedis,
  createRedis,
  LARGE_VALUE_BYTES,
  redisSocketUrl,
  sendTogether,
  setValue,
} from '../../shared/redis.js';

/**
 * setValue writes a large value to the socket itself (no copy by ioredis): the value arrives
 * whole, in order with the connection's other commands, with its TTL, over TCP and a Unix
 * socket, sent before the connection is up, under a connection's keyPrefix, and Redis's
 * refusals reach the caller. sendTogether's commands leave in one write and answer one by one.
 */
let server: ChildProcess | undefined;
let tcpUrl = '';
let socketUrl = '';
let socketDir = '';
const clients: Redis[] = [];

before(async () => {
  socketDir = mkdtempSync(join(tmpdir(), 'sd-values-'));
  const started = await startRedisServer('ignore', undefined, undefined, join(socketDir, 's'));
  server = started.process;
  tcpUrl = started.url;
  socketUrl = redisSocketUrl(join(socketDir, 's'));
});

after(async () => {
  await Promise.all(clients.map((c) => closeRedis(c)));
  if (server) await stopProcess(server);
  rmSync(socketDir, { recursive: true, force: true });
});

function connect(url: string, name: string): Redis {
  const redis = createRedis(url, name, 'client');
  clients.push(redis);
  return redis;
}

/** A value of `bytes` bytes that no shifted or truncated copy matches. */
function pattern(bytes: number, seed: number): Buffer {
  const value = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i++) value[i] = (i * 31 + seed + (i >> 8)) & 0xff;
  return value;
}

for (const [transport, url] of [
  ['TCP', () => tcpUrl],
  ['a Unix socket', () => socketUrl],
] as const) {
  test(`setValue stores large and small values whole, with their TTL, over ${transport}`, async () => {
    const redis = connect(url(), `values-${transport}`);
    const sizes = [
      0,
      1,
      LARGE_VALUE_BYTES - 1,
      LARGE_VALUE_BYTES,
      640 * 480 * 3,
      4 * 1024 * 1024 + 7,
    ];
    for (const [i, size] of sizes.entries()) {
      const value = pattern(size, i);
      assert.equal(await setValue(redis, `v:${i}`, value, 30), 'OK');
      const stored = await redis.getBuffer(`v:${i}`);
      assert.ok(stored?.equals(value), `value of ${size} bytes came back whole`);
      const ttl = await redis.ttl(`v:${i}`);
      assert.ok(ttl > 25 && ttl <= 30, `TTL ${ttl} s`);
    }
  });
}

test('setValue keeps its place among the connection’s commands, sent without waiting', async () => {
  const redis = connect(tcpUrl, 'values-order');
  const values = [0, 1, 2, 3].map((i) => pattern(LARGE_VALUE_BYTES * (i + 1) + i, 10 + i));
  // Every command leaves in one tick: a large SET, a small command, and a GET of each key
  // right behind its SET, all before any reply.
  const replies = await Promise.all(
    values.flatMap((v, i) => [
      setValue(redis, `o:${i}`, v, 30),
      redis.rpush('o:list', String(i)),
      redis.getBuffer(`o:${i}`),
    ]),
  );
  values.forEach((v, i) => {
    assert.equal(replies[i * 3], 'OK');
    assert.equal(replies[i * 3 + 1], i + 1, 'the list grew by one after each SET');
    assert.ok((replies[i * 3 + 2] as Buffer).equals(v), `GET right behind SET ${i} saw it whole`);
  });
  assert.deepEqual(await redis.lrange('o:list', 0, -1), ['0', '1', '2', '3']);
});

test('setValue sent before the connection is up waits for it, then stores the value', async () => {
  const redis = createRedis(tcpUrl, 'values-offline', 'worker');
  clients.push(redis);
  assert.notEqual(redis.status, 'ready');
  const value = pattern(2 * LARGE_VALUE_BYTES, 99);
  assert.equal(await setValue(redis, 'offline', value, 30), 'OK');
  assert.ok((await redis.getBuffer('offline'))?.equals(value));
});

test('setValue on a connection with a keyPrefix stores under the prefixed key', async () => {
  const prefixed = new Redis(tcpUrl, { keyPrefix: 'pfx:' });
  clients.push(prefixed);
  const value = pattern(2 * LARGE_VALUE_BYTES, 7);
  assert.equal(await setValue(prefixed, 'large', value, 30), 'OK');
  const plain = connect(tcpUrl, 'values-prefix-check');
  assert.ok((await plain.getBuffer('pfx:large'))?.equals(value));
  assert.equal(await plain.exists('large'), 0);
});

test('a Redis at its maxmemory refuses a large setValue with OOM, and the connection goes on', async () => {
  const admin = connect(tcpUrl, 'values-admin');
  const redis = connect(tcpUrl, 'values-oom');
  await admin.flushall();
  await admin.config('SET', 'maxmemory', String(3 * 1024 * 1024));
  try {
    await assert.rejects(setValue(redis, 'big', pattern(8 * 1024 * 1024, 5), 30), /^.*OOM/);
    // The refused command's bytes were read whole: the next commands are answered normally
    // (commands that need no memory: the refused one's input may still count as used).
    assert.equal(await redis.ping(), 'PONG');
    assert.equal(await redis.exists('big'), 0);
  } finally {
    await admin.config('SET', 'maxmemory', '0');
  }
});

test('sendTogether writes its commands to the socket at once, each answered on its own promise', async () => {
  const redis = connect(socketUrl, 'together');
  await redis.ping();
  await redis.set('t:string', 'x');
  // Count what reaches the socket's handle: a corked stream hands every chunk to one _writev.
  const stream = redis.stream as unknown as {
    _write: (...args: unknown[]) => void;
    _writev: (...args: unknown[]) => void;
  };
  const calls: Array<{ kind: string; chunks: number }> = [];
  const write = stream._write.bind(stream);
  const writev = stream._writev.bind(stream);
  stream._write = (...args) => {
    calls.push({ kind: 'write', chunks: 1 });
    write(...args);
  };
  stream._writev = (...args) => {
    calls.push({ kind: 'writev', chunks: (args[0] as unknown[]).length });
    writev(...args);
  };
  let results: PromiseSettledResult<unknown>[];
  try {
    results = await Promise.allSettled(
      sendTogether(redis, () => [
        redis.lpush('t:list', 'a'),
        redis.lpush('t:string', 'b'),
        redis.expire('t:list', 30),
      ]),
    );
  } finally {
    delete (stream as { _write?: unknown })._write;
    delete (stream as { _writev?: unknown })._writev;
  }
  assert.deepEqual(calls, [{ kind: 'writev', chunks: 3 }], 'one write of the three commands');
  assert.deepEqual(results[0], { status: 'fulfilled', value: 1 });
  const second = results[1];
  assert.ok(second?.status === 'rejected', 'LPUSH to a string is refused');
  assert.match(String(second.reason), /WRONGTYPE/);
  assert.deepEqual(
    results[2],
    { status: 'fulfilled', value: 1 },
    'the command after the error ran',
  );
  assert.ok((await redis.ttl('t:list')) > 0);
  assert.equal(await redis.ping(), 'PONG');
});

test('sendTogether on a connection that is not up yet leaves its commands to the offline queue', async () => {
  const redis = createRedis(tcpUrl, 'together-offline', 'worker');
  clients.push(redis);
  assert.notEqual(redis.status, 'ready');
  const replies = await Promise.all(
    sendTogether(redis, () => [
      redis.rpush('t:offline', 'a', 'b'),
      redis.lrange('t:offline', 0, -1),
    ]),
  );
  assert.deepEqual(replies, [2, ['a', 'b']]);
});
