import assert from 'node:assert/strict';
import { createHmac, randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import { BatchScheduler } from '../../services/infer/batcher.js';
import { parseWebhookUrl } from '../../services/gateway/async-routes.js';
import type { FieldSource } from '../../services/gateway/submit.js';
import { Admission } from '../../services/gateway/admission.js';
import type { StoreState } from '../../services/gateway/store-monitor.js';
import { postWebhook, webhookSignature } from '../../services/pre/webhook.js';
import { isAddressRefusal } from '../../services/pre/image-source.js';
import { AsyncPacer } from '../../services/pre/async-pacing.js';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  asyncReplyTo,
  asyncRequestOf,
  statusDocument,
  type AsyncRecord,
} from '../../shared/async-requests.js';
import { ConfigError, loadConfig, webhookSecret } from '../../shared/config.js';
import {
  AsyncStatusSchema,
  type DetectionResponse,
  type ResultMessage,
} from '../../shared/contracts.js';
import { PipelineError } from '../../shared/errors.js';
import { imageJobOptions } from '../../shared/queues.js';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The pure parts of asynchronous requests: status documents, webhook checks, priorities. */

function response(width: number): DetectionResponse {
  return {
    inference_id: randomUUID(),
    time: 0.1,
    image: { width, height: 10 },
    predictions: [],
  };
}

function record(images: string[], extra: Partial<AsyncRecord> = {}): AsyncRecord {
  return {
    meta: { createdAt: 1_000, deadline: 10_000, images, isList: images.length > 1 },
    done: 0,
    startedAt: undefined,
    completedAt: undefined,
    webhook: undefined,
    results: new Map(),
    ...extra,
  };
}

const ok = (id: string, width: number): ResultMessage => ({
  id,
  ok: true,
  response: response(width),
  marks: {},
});

describe('status documents', () => {
  test('queued, running, completed: the result is the synchronous body', () => {
    const ids = ['a', 'b'];
    const queued = statusDocument('r', record(ids), 5_000);
    assert.equal(queued.status, 'queued');
    assert.deepEqual([queued.images_total, queued.images_done], [2, 0]);
    assert.equal(queued.created_at, new Date(1_000).toISOString());
    assert.equal(statusDocument('r', record(ids, { startedAt: 2_000 }), 5_000).status, 'running');

    const results = new Map([
      ['b', ok('b', 20)],
      ['a', ok('a', 10)],
    ]);
    const done = statusDocument('r', record(ids, { done: 2, completedAt: 3_000, results }));
    assert.equal(done.status, 'completed');
    assert.equal(done.completed_at, new Date(3_000).toISOString());
    // In the request's order, as the synchronous route answers a list.
    assert.deepEqual(
      (done.result as DetectionResponse[]).map((r) => r.image.width),
      [10, 20],
    );
    AsyncStatusSchema.parse(done);

    const one = statusDocument(
      'r',
      record(['a'], { done: 1, completedAt: 3_000, results: new Map([['a', ok('a', 10)]]) }),
    );
    assert.ok(!Array.isArray(one.result), 'one image: one response, not a list');
  });

  test('failed: the first failed image in order; past the deadline never running', () => {
    const results = new Map<string, ResultMessage>([
      ['a', ok('a', 10)],
      ['b', { id: 'b', ok: false, error: { code: 'IMAGE_DECODE_FAILED', message: 'bad' } }],
      ['c', { id: 'c', ok: false, error: { code: 'INTERNAL', message: 'x' } }],
    ]);
    const failed = statusDocument(
      'r',
      record(['a', 'b', 'c'], { done: 3, completedAt: 3_000, results }),
    );
    assert.equal(failed.status, 'failed');
    assert.equal(failed.error?.code, 'IMAGE_DECODE_FAILED');
    assert.equal(failed.result, undefined);

    const overdue = statusDocument('r', record(['a', 'b'], { startedAt: 2_000, done: 1 }), 10_001);
    assert.equal(overdue.status, 'failed');
    assert.equal(overdue.error?.code, 'DEADLINE_EXCEEDED');
    assert.equal(overdue.completed_at, new Date(10_000).toISOString());
    AsyncStatusSchema.parse(overdue);
  });
});

describe('webhook_url at submit', () => {
  const refused = (fn: () => unknown, pattern: RegExp) =>
    assert.throws(fn, (err: unknown) => {
      assert.ok(err instanceof PipelineError);
      assert.equal(err.code, 'INVALID_REQUEST');
      assert.match(err.message, pattern);
      return true;
    });

  const body = (fields: Record<string, unknown>): FieldSource[] => [{ from: 'body', fields }];

  test('needs WEBHOOK_SECRET: no unsigned webhooks', () => {
    refused(
      () => parseWebhookUrl(body({ webhook_url: 'https://hooks.example/x' }), undefined, false),
      /no WEBHOOK_SECRET/,
    );
    assert.equal(parseWebhookUrl(body({}), undefined, false), undefined);
    // In the query string of a JSON request, or a multipart text part, it counts as well.
    for (const from of ['query', 'form'] as const) {
      refused(
        () =>
          parseWebhookUrl(
            [{ from, fields: { webhook_url: 'https://hooks.example/x' } }],
            undefined,
            false,
          ),
        /no WEBHOOK_SECRET/,
      );
    }
  });

  test('http(s) only; IP literals pass the address guard; names are checked at delivery', () => {
    refused(
      () => parseWebhookUrl(body({ webhook_url: 'ftp://x.example/' }), 's', false),
      /webhook_url/,
    );
    refused(
      () => parseWebhookUrl(body({ webhook_url: 'http://h.example:0/' }), 's', false),
      /port 0/,
    );
    // Not URLs at all: the same 400, whichever form the value takes.
    for (const notUrl of ['not a url', 'http://', '', 'https://[::1', '//h.example/x'])
      for (const secret of ['s', undefined])
        refused(() => parseWebhookUrl(body({ webhook_url: notUrl }), secret, false), /webhook_url/);
    refused(
      () =>
        parseWebhookUrl(body({ webhook_url: `https://h.example/${'a'.repeat(2048)}` }), 's', false),
      /at most 2048 characters/,
    );
    for (const inward of ['http://127.0.0.1:8080/', 'http://[::1]/', 'http://169.254.169.254/'])
      refused(
        () => parseWebhookUrl(body({ webhook_url: inward }), 's', false),
        /which webhooks may not/,
      );
    assert.equal(
      parseWebhookUrl(body({ webhook_url: 'http://127.0.0.1/' }), 's', true),
      'http://127.0.0.1/',
    );
    // A repeated query parameter: its last value. An array in a JSON body is no URL.
    assert.equal(
      parseWebhookUrl(
        [
          {
            from: 'query',
            fields: { webhook_url: ['https://a.example/', 'https://hooks.example/'] },
          },
        ],
        's',
        false,
      ),
      'https://hooks.example/',
    );
    refused(
      () => parseWebhookUrl(body({ webhook_url: ['https://hooks.example/'] }), 's', false),
      /webhook_url/,
    );
  });

  test('webhook_url given in two places: once if the same, else refused', () => {
    const twice = (a: string, b: string): FieldSource[] => [
      { from: 'body', fields: { webhook_url: a } },
      { from: 'query', fields: { webhook_url: b } },
    ];
    assert.equal(
      parseWebhookUrl(twice('https://h.example/', 'https://h.example/'), 's', false),
      'https://h.example/',
    );
    refused(
      () => parseWebhookUrl(twice('https://h.example/a', 'https://h.example/b'), 's', false),
      /given twice/,
    );
  });

  test('the signature is the hex HMAC-SHA256 of the body', () => {
    const body = JSON.stringify({ inference_id: 'x', status: 'completed' });
    assert.equal(
      webhookSignature(body, 'k'),
      `sha256=${createHmac('sha256', 'k').update(body).digest('hex')}`,
    );
  });

  test('a delivery to a private address is refused before any connection', async () => {
    const seen: Array<{ headers: Record<string, unknown>; body: string }> = [];
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        seen.push({ headers: req.headers, body });
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    const policy = { allowPrivate: false, connectTimeoutMs: 1000, totalTimeoutMs: 2000 };
    const headers = { inferenceId: 'r1', signature: 'sha256=00' };
    try {
      for (const url of [`http://127.0.0.1:${port}/`, `http://localhost:${port}/`]) {
        await assert.rejects(postWebhook(url, '{}', headers, policy), (err: unknown) => {
          assert.ok(isAddressRefusal(err), String(err));
          return true;
        });
      }
      assert.equal(seen.length, 0, 'nothing reached the receiver');
      const status = await postWebhook(`http://127.0.0.1:${port}/`, '{"a":1}', headers, {
        ...policy,
        allowPrivate: true,
      });
      assert.equal(status, 204);
      assert.equal(seen.length, 1);
      assert.equal(seen[0]!.body, '{"a":1}');
      assert.equal(seen[0]!.headers['x-inference-id'], 'r1');
      assert.equal(seen[0]!.headers['x-signature-256'], 'sha256=00');
      assert.equal(seen[0]!.headers['content-type'], 'application/json');
    } finally {
      server.close();
    }
  });

  test('a receiver may take longer than the connect timeout to answer, within the total', async () => {
    // Reads the body, works on it for a while, then answers.
    const server = createServer((req, res) => {
      req.resume();
      req.on('end', () => setTimeout(() => res.writeHead(200).end(), 600));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as AddressInfo;
    const headers = { inferenceId: 'r2', signature: 'sha256=00' };
    const policy = { allowPrivate: true, connectTimeoutMs: 200, totalTimeoutMs: 3000 };
    try {
      assert.equal(await postWebhook(`http://127.0.0.1:${port}/`, '{}', headers, policy), 200);
      // Past the total timeout it is a failure.
      await assert.rejects(
        postWebhook(`http://127.0.0.1:${port}/`, '{}', headers, { ...policy, totalTimeoutMs: 300 }),
        /no answer within 300 ms/,
      );
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });

  test('ASYNC_MAX_IMAGES may not exceed ASYNC_MAX_BACKLOG', () => {
    assert.throws(
      () => loadConfig({ ASYNC_MAX_BACKLOG: '30' }),
      (err: unknown) => err instanceof ConfigError && /ASYNC_MAX_IMAGES/.test(err.message),
    );
    assert.equal(
      loadConfig({ ASYNC_MAX_BACKLOG: '30', ASYNC_MAX_IMAGES: '30' }).async.maxImages,
      30,
    );
  });

  test('WEBHOOK_SECRET or WEBHOOK_SECRET_FILE, not both', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sd-secret-'));
    const file = join(dir, 'secret');
    writeFileSync(file, 'from-a-file\n');
    assert.equal(webhookSecret(loadConfig({ WEBHOOK_SECRET_FILE: file }).async), 'from-a-file');
    assert.equal(webhookSecret(loadConfig({ WEBHOOK_SECRET: 'inline' }).async), 'inline');
    assert.equal(webhookSecret(loadConfig({}).async), undefined);
    assert.throws(
      () => loadConfig({ WEBHOOK_SECRET: 'a', WEBHOOK_SECRET_FILE: file }),
      ConfigError,
    );
    assert.throws(
      () => webhookSecret(loadConfig({ WEBHOOK_SECRET_FILE: join(dir, 'none') }).async),
      ConfigError,
    );
  });
});

/** An item of the batcher tests: synchronous (urgent) or asynchronous. */
interface Urgency {
  id: string;
  urgent: boolean;
}

/** A batcher of one lane whose items are synchronous (class 0) or asynchronous (class 1). */
function urgencyBatcher(
  opts: Pick<
    ConstructorParameters<typeof BatchScheduler<Urgency, string>>[0],
    'maxBatchOf' | 'run' | 'backgroundPacing' | 'slots'
  >,
): BatchScheduler<Urgency, string> {
  return new BatchScheduler<Urgency, string>({
    laneOf: () => 'm',
    maxDelayMs: 0,
    deadlineOf: () => Infinity,
    expiredError: () => new Error('expired'),
    priorityOf: (item) => (item.urgent ? 0 : 1),
    ...opts,
  });
}

describe('priority of synchronous images', () => {
  test('asynchronous jobs get a BullMQ priority, synchronous ones none', () => {
    assert.equal(asyncRequestOf(asyncReplyTo('r1')), 'r1');
    assert.equal(asyncRequestOf('0b7c-gateway'), undefined);
    const base = {
      id: 'i',
      modelId: 'm',
      params: {} as never,
      receivedAt: 0,
      deadline: 1,
      marks: {},
    };
    assert.deepEqual(imageJobOptions({ ...base, replyTo: 'gw' }), { jobId: 'i' });
    assert.deepEqual(imageJobOptions({ ...base, replyTo: asyncReplyTo('r') }), {
      jobId: 'i',
      priority: 1,
    });
  });

  test('in the batcher, a synchronous image joins the next batch ahead of waiting async ones', async () => {
    const runs: string[][] = [];
    const release: Array<() => void> = [];
    const batcher = urgencyBatcher({
      maxBatchOf: () => 2,
      run: (_lane, items) => {
        runs.push(items.map((i) => i.id));
        return new Promise((resolve) => release.push(() => resolve(items.map((i) => i.id))));
      },
    });
    const all = ['a1', 'a2', 'a3', 'a4', 'a5'].map((id) => batcher.submit({ id, urgent: false }));
    await new Promise((r) => setTimeout(r, 5));
    all.push(batcher.submit({ id: 's1', urgent: true }));
    while (release.length > 0 || runs.length < 4) {
      await new Promise((r) => setTimeout(r, 5));
      release.shift()?.();
    }
    await Promise.all(all);
    // a1 found the model idle and ran alone; the synchronous image goes into the next batch,
    // alone, ahead of the async images that waited before it.
    assert.deepEqual(runs[0], ['a1']);
    assert.deepEqual(runs[1], ['s1'], 'the synchronous image goes into the next batch, alone');
    assert.deepEqual(runs[2], ['a2', 'a3']);
    batcher.close();
  });

  test('in the batcher, async batches pause while synchronous images arrive, and only then', async () => {
    const runs: Array<{ ids: string[]; at: number }> = [];
    const batcher = urgencyBatcher({
      maxBatchOf: () => 1,
      backgroundPacing: { factor: 5, activeMs: 300, maxBatch: 1 },
      // Each batch takes 20 ms.
      run: (_lane, items) => {
        runs.push({ ids: items.map((i) => i.id), at: Date.now() });
        return new Promise((resolve) => setTimeout(() => resolve(items.map((i) => i.id)), 20));
      },
    });
    const at = (id: string) => runs.find((r) => r.ids.includes(id))!.at;
    // A synchronous image, then async ones: after each 20 ms async batch, 100 ms pass before the
    // next one starts; a synchronous image that arrives meanwhile runs at once. (Margins are
    // wide: timers fire late on a busy machine.)
    await batcher.submit({ id: 's1', urgent: true });
    const paced = [batcher.submit({ id: 'a1', urgent: false })];
    paced.push(batcher.submit({ id: 'a2', urgent: false }));
    await paced[0];
    await new Promise((r) => setTimeout(r, 10));
    const s2At = Date.now();
    await batcher.submit({ id: 's2', urgent: true });
    await Promise.all(paced);
    assert.ok(at('s2') - s2At < 50, 'a synchronous image does not wait for the pause');
    assert.ok(at('a2') - at('a1') >= 20 + 100 - 2, `async batches ${at('a2') - at('a1')} ms apart`);
    // Without synchronous images for activeMs, async batches run back to back.
    await new Promise((r) => setTimeout(r, 350));
    await Promise.all(['a3', 'a4'].map((id) => batcher.submit({ id, urgent: false })));
    assert.ok(at('a4') - at('a3') < 20 + 60, `async batches ${at('a4') - at('a3')} ms apart`);
    batcher.close();
  });
});

test('in the batcher, async batches hold one image while synchronous images arrive', async () => {
  const runs: string[][] = [];
  const release: Array<() => void> = [];
  const batcher = urgencyBatcher({
    maxBatchOf: () => 8,
    backgroundPacing: { factor: 0, activeMs: 10_000, maxBatch: 1 },
    run: (_lane, items) => {
      runs.push(items.map((i) => i.id));
      return new Promise((resolve) => release.push(() => resolve(items.map((i) => i.id))));
    },
  });
  const settle = async (n: number) => {
    while (runs.length < n) await new Promise((r) => setTimeout(r, 2));
    release.shift()!();
  };
  // Without synchronous images, async batches are full.
  const first = ['a1', 'a2', 'a3', 'a4'].map((id) => batcher.submit({ id, urgent: false }));
  await settle(1); // a1 ran alone (the model was idle)
  await settle(2);
  await Promise.all(first);
  assert.deepEqual(runs[1], ['a2', 'a3', 'a4']);
  // A synchronous image: async batches that follow it hold one image each.
  const s1 = batcher.submit({ id: 's1', urgent: true });
  const next = ['a5', 'a6', 'a7'].map((id) => batcher.submit({ id, urgent: false }));
  for (let n = 3; n <= 6; n++) await settle(n);
  await Promise.all([s1, ...next]);
  assert.deepEqual(runs.slice(2), [['s1'], ['a5'], ['a6'], ['a7']]);
  batcher.close();
});

test('in the batcher, with two slots one async batch runs at a time while synchronous images arrive', async () => {
  const running: string[][] = [];
  let most = 0;
  const release: Array<() => void> = [];
  const batcher = urgencyBatcher({
    maxBatchOf: () => 8,
    slots: 2,
    backgroundPacing: { factor: 0, activeMs: 10_000, maxBatch: 1 },
    run: (_lane, items) => {
      const ids = items.map((i) => i.id);
      running.push(ids);
      most = Math.max(most, running.length);
      return new Promise((resolve) =>
        release.push(() => {
          running.splice(running.indexOf(ids), 1);
          resolve(ids);
        }),
      );
    },
  });
  const s1 = batcher.submit({ id: 's1', urgent: true });
  release.shift()!();
  await s1;
  // With two slots free, async batches of one image run one after the other.
  const all = ['a1', 'a2', 'a3'].map((id) => batcher.submit({ id, urgent: false }));
  for (let i = 0; i < 20; i++) {
    await new Promise((r) => setTimeout(r, 5));
    release.shift()?.();
  }
  assert.deepEqual(await Promise.all(all), ['a1', 'a2', 'a3']);
  assert.equal(most, 1, 'two async batches ran at once');
  batcher.close();
});

describe('pacing of asynchronous decoding', () => {
  test('waits while the model is behind, and goes on once it caught up', async () => {
    const backlog = [9, 8, 8, 7];
    let reads = 0;
    const pacer = new AsyncPacer({
      backlog: () => Promise.resolve(backlog[Math.min(reads++, backlog.length - 1)]!),
      ahead: 8,
      pollMs: 10,
    });
    const started = Date.now();
    await pacer.waitForRoom(Date.now() + 10_000);
    assert.equal(reads, 4, 'read until fewer than 8 waited');
    assert.ok(Date.now() - started >= 25, `${Date.now() - started} ms`);
  });

  test('the deadline, close() and a failed read end the wait', async () => {
    const behind = new AsyncPacer({ backlog: () => Promise.resolve(100), ahead: 8, pollMs: 20 });
    let started = Date.now();
    await behind.waitForRoom(Date.now() + 60);
    assert.ok(Date.now() - started < 500, 'ended at the deadline');
    started = Date.now();
    const waiting = behind.waitForRoom(Date.now() + 60_000);
    setTimeout(() => behind.close(), 30);
    await waiting;
    assert.ok(Date.now() - started < 500, 'ended by close()');
    behind.close();
    await behind.waitForRoom(Date.now() + 60_000);
    const failing = new AsyncPacer({
      backlog: () => Promise.reject(new Error('Redis is gone')),
      ahead: 8,
      pollMs: 20,
    });
    await failing.waitForRoom(Date.now() + 60_000);
  });
});

describe('admission of asynchronous requests', () => {
  const state = (asyncBacklog: number, backlog = 0): StoreState => ({
    reachable: true,
    usedMemory: 0,
    maxMemory: 0,
    backlog,
    asyncBacklog,
    readAt: 1,
  });

  test('the async backlog limits async requests, not synchronous ones', () => {
    let current = state(8, 0);
    const admission = new Admission(
      { maxInflight: 10, maxQueueDepth: 5, memoryHighWater: 0.9, maxAsyncBacklog: 10 },
      () => current,
    );
    admission.admit(0, 'async')();
    admission.admitAsyncImages(2);
    assert.throws(
      () => admission.admitAsyncImages(1),
      /10 asynchronous images are already waiting/,
    );
    assert.throws(() => admission.admit(0, 'async'), /OVERLOADED|already waiting/);
    admission.admit(0, 'sync')();
    current = state(0, 5);
    assert.throws(() => admission.admit(0, 'sync'), /5 images are already waiting/);
    admission.admit(0, 'async')();
  });
});
