import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { drawImage } from '../helpers/images.js';
import { suiteStack, type Stack } from '../helpers/stack.js';

/**
 * Clients that send slowly or go away: a body (or headers) not complete within
 * REQUEST_BODY_TIMEOUT_MS gets 408 REQUEST_TIMEOUT and frees its admission slot; aborted uploads
 * leave the in-flight gauge at zero; a draining gateway answers in the API's error shape.
 */
let stack: Stack;
suiteStack(
  { env: { REQUEST_BODY_TIMEOUT_MS: '2000', MAX_INFLIGHT: '3', DRAIN_TIMEOUT_MS: '10000' } },
  (s) => {
    stack = s;
  },
);

function port(): number {
  return Number(new URL(stack.url).port);
}

/** A raw connection that collects what the server sends until it closes. */
function rawConnection(): { socket: Socket; received: Promise<string>; closedAt: Promise<number> } {
  const socket = connect(port(), '127.0.0.1');
  socket.on('error', () => {});
  let text = '';
  socket.on('data', (c: Buffer) => (text += c.toString('latin1')));
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  return {
    socket,
    received: closed.then(() => text),
    closedAt: closed.then(() => Date.now()),
  };
}

/** Sends headers announcing `length` bytes, then one byte every `everyMs` until closed. */
function trickle(length: number, everyMs: number) {
  const conn = rawConnection();
  conn.socket.write(
    `POST /infer/object_detection HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n` +
      `Content-Length: ${length}\r\n\r\n`,
  );
  const timer = setInterval(() => {
    if (!conn.socket.destroyed) conn.socket.write('x');
  }, everyMs);
  void conn.closedAt.then(() => clearInterval(timer));
  return conn;
}

async function detect(): Promise<{ status: number; code?: string }> {
  const png = await drawImage(80, 60, [{ colour: 'red', x: 10, y: 10, w: 30, h: 20 }]);
  const res = await fetch(`${stack.url}/infer/object_detection`, {
    method: 'POST',
    headers: { 'content-type': 'image/png' },
    body: png,
  });
  const body = (await res.json()) as { code?: string };
  return { status: res.status, code: body.code };
}

/** The in-flight gauge, less the scrape that reads it. */
async function inFlightGauge(): Promise<number> {
  const text = await (await fetch(`${stack.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('sd_http_requests_in_flight{'));
  return Number(line?.split(' ')[1]) - 1;
}

function statusLine(raw: string): string {
  return raw.split('\r\n')[0] ?? '';
}

function jsonBody(raw: string): { code?: string; message?: string } {
  return JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4)) as { code?: string };
}

test('bodies that trickle get 408 REQUEST_TIMEOUT and free their slots', async () => {
  const started = Date.now();
  const slow = Array.from({ length: 3 }, () => trickle(10_000, 500));
  await sleep(300);
  // Every slot is held by a slow body: refused while they last...
  const refused = await detect();
  assert.equal(refused.status, 429);
  assert.equal(refused.code, 'OVERLOADED');
  for (const conn of slow) {
    const raw = await conn.received;
    assert.equal(statusLine(raw), 'HTTP/1.1 408 Request Timeout');
    assert.equal(jsonBody(raw).code, 'REQUEST_TIMEOUT');
    const after = (await conn.closedAt) - started;
    assert.ok(after >= 1900 && after < 4500, `answered after ${after} ms, limit 2000 ms`);
  }
  // ...and served once they are gone.
  assert.equal((await detect()).status, 200);
});

test('headers that never complete are cut off too', async () => {
  const conn = rawConnection();
  const started = Date.now();
  conn.socket.write('POST /infer/object_detection HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ');
  const timer = setInterval(() => conn.socket.write('a'), 300);
  const raw = await conn.received;
  clearInterval(timer);
  assert.equal(statusLine(raw), 'HTTP/1.1 408 Request Timeout');
  assert.equal(jsonBody(raw).code, 'REQUEST_TIMEOUT');
  assert.ok(Date.now() - started < 4500);
});

test('aborted uploads leave the in-flight gauge and the slots at zero', async () => {
  for (let i = 0; i < 5; i++) {
    const conn = trickle(50_000, 50);
    await sleep(150);
    conn.socket.destroy();
  }
  await sleep(300);
  assert.equal(await inFlightGauge(), 0);
  // Every slot is free again: as many concurrent requests as MAX_INFLIGHT all pass.
  const answers = await Promise.all(Array.from({ length: 3 }, () => detect()));
  assert.deepEqual(
    answers.map((a) => a.status),
    [200, 200, 200],
  );
  assert.equal(await inFlightGauge(), 0);
});

test('a draining gateway answers requests on open connections with 503 NOT_READY and Retry-After', async () => {
  const png = await drawImage(80, 60, [{ colour: 'blue', x: 10, y: 10, w: 30, h: 20 }]);
  // Hold the first request in the pipeline so the gateway has work to drain.
  const pre = stack.roles.filter((r) => r.role === 'pre');
  for (const r of pre) r.process.kill('SIGSTOP');
  const conn = rawConnection();
  try {
    // Two pipelined requests on one connection, the second sent while the gateway drains.
    conn.socket.write(
      `POST /infer/object_detection HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n` +
        `Content-Length: ${png.length}\r\n\r\n`,
    );
    conn.socket.write(png);
    await sleep(300);
    stack.roles.find((r) => r.role === 'gateway')!.process.kill('SIGTERM');
    await sleep(300);
    conn.socket.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    await sleep(300);
  } finally {
    for (const r of pre) r.process.kill('SIGCONT');
  }
  const raw = await conn.received;
  const responses = raw.split(/(?=HTTP\/1\.1 )/);
  assert.equal(responses.length, 2, raw);
  assert.equal(statusLine(responses[0]!), 'HTTP/1.1 200 OK');
  assert.equal(statusLine(responses[1]!), 'HTTP/1.1 503 Service Unavailable');
  assert.match(responses[1]!, /\r\nretry-after: 1\r\n/i);
  assert.equal(jsonBody(responses[1]!).code, 'NOT_READY');
});
