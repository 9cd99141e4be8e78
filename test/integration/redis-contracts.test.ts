import { AsyncRequests } from '../../shared/async-requests.js';
import { ResultSink } from '../../shared/reply.js';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { ResultWaiter } from '../../services/gateway/result-waiter.js';
import { ResultMessageSchema, type ModelDescription } from '../../shared/contracts.js';
import { ErrorCode, PipelineError } from '../../shared/errors.js';
import { startHeartbeat } from '../../shared/heartbeat.js';
import { Keys } from '../../shared/keys.js';
import { createRegistry, StageMetrics } from '../../shared/metrics.js';
import { INFER_ROLE, ModelDirectory, modelsPayload } from '../../shared/model-directory.js';
import { createQueue, createStageWorker } from '../../shared/queues.js';
import { parseJson } from '../../shared/validation.js';
import { logEvents, startRedis, startStack, type RedisHandle } from '../helpers/stack.js';

/**
 * JSON read from Redis is parsed with its contract's schema: a message of another shape is a
 * logged error (and, for a result, the request answered with INTERNAL), never a wrong answer.
 * Real Redis, real BullMQ; each test has its own key prefix.
 */
let redis: RedisHandle;
before(async () => {
  redis = await startRedis();
});
after(async () => {
  await redis.stop();
});

/** A logger whose error lines are kept, parsed. */
function capturingLogger() {
  const lines: Array<Record<string, unknown>> = [];
  const log = pino(
    { level: 'error' },
    { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) },
  );
  return { log, lines };
}

const inAWhile = () => Date.now() + 5000;

describe('parsing at the Redis boundary', () => {
  test('a malformed result answers its request with INTERNAL; garbage is logged and skipped', async () => {
    const keys = new Keys(`t${randomUUID().slice(0, 8)}`);
    const { log, lines } = capturingLogger();
    const list = keys.replies('gw');
    const waiter = new ResultWaiter(new Redis(redis.url), list, log);
    waiter.start();
    try {
      const bad = randomUUID();
      const good = randomUUID();
      const badWait = waiter.wait(bad, inAWhile());
      // Settled as soon as the message arrives, maybe before assert.rejects below looks at it.
      badWait.catch(() => {});
      const goodWait = waiter.wait(good, inAWhile());
      // Watched before the pushes: one pop may take both messages and end the wait at once.
      const badRejected = assert.rejects(badWait, (err: unknown) => {
        assert.ok(err instanceof PipelineError);
        assert.equal(err.code, ErrorCode.INTERNAL);
        assert.match(err.message, /malformed: .*predictions/);
        return true;
      });
      await redis.client.lpush(list, 'not json at all');
      // The shape of a success, with a response missing most of its fields.
      await redis.client.lpush(
        list,
        JSON.stringify({ id: bad, ok: true, response: { inference_id: bad }, marks: {} }),
      );
      await badRejected;
      const response = {
        inference_id: good,
        time: 0.01,
        image: { width: 10, height: 10 },
        predictions: [],
      };
      await redis.client.lpush(list, JSON.stringify({ id: good, ok: true, response, marks: {} }));
      assert.deepEqual((await goodWait).response, response);
      const logged = lines.filter((l) => l['msg'] === 'malformed result message');
      assert.equal(logged.length, 2);
      assert.match(String((logged[0]!['problems'] as string[])[0]), /^not JSON/);
      assert.equal(logged[1]!['inference_id'], bad);
    } finally {
      await waiter.close();
    }
  });

  test('a malformed heartbeat value publishes no model, and is logged once', async () => {
    const keys = new Keys(`t${randomUUID().slice(0, 8)}`);
    const { log, lines } = capturingLogger();
    const valid: ModelDescription = {
      model_id: 'good',
      task_type: 'object-detection',
      batch_size: 1,
      input_width: 32,
      input_height: 32,
      class_names: ['a'],
      execution_provider: 'cpu',
      loaded: true,
      pinned: false,
      layout: 'yolov8',
      preprocessing: { pad: 'centre', channelOrder: 'rgb', scale: 1 / 255 },
    };
    const beats = [
      await startHeartbeat(redis.client, keys, INFER_ROLE, 'ok', () => modelsPayload([valid])),
      await startHeartbeat(redis.client, keys, INFER_ROLE, 'bad', () =>
        JSON.stringify([{ model_id: 'bad', batch_size: '8' }]),
      ),
    ];
    try {
      const directory = new ModelDirectory(redis.client, keys, log);
      assert.deepEqual([...(await directory.fresh()).keys()], ['good']);
      assert.deepEqual([...(await directory.fresh()).keys()], ['good']);
      const logged = lines.filter((l) => String(l['msg']).startsWith('malformed model'));
      assert.equal(logged.length, 1, JSON.stringify(lines));
      assert.equal(logged[0]!['instance'], 'bad');
      assert.ok((logged[0]!['problems'] as string[]).some((p) => p.startsWith('0.batch_size: ')));
    } finally {
      await Promise.all(beats.map((b) => b.close()));
    }
  });

  test('a job payload of another shape fails at once and its request hears INTERNAL', async () => {
    const keys = new Keys(`t${randomUUID().slice(0, 8)}`);
    const { log, lines } = capturingLogger();
    const connection = new Redis(redis.url, { maxRetriesPerRequest: null });
    const queue = createQueue('pre', redis.client, keys.prefix);
    let processed = 0;
    const worker = createStageWorker({
      queue: 'pre',
      connection,
      client: redis.client,
      keys,
      concurrency: 1,
      logger: log,
      results: new ResultSink(
        redis.client,
        keys,
        60,
        new AsyncRequests(redis.client, keys, 60),
        () => Promise.resolve(),
      ),
      lockDurationMs: 5000,
      metrics: new StageMetrics(createRegistry('pre')),
      process: () => {
        processed++;
        return Promise.resolve();
      },
    });
    try {
      const id = randomUUID();
      // A payload without params, deadline, source...: whatever wrote it, it is not a PreJob.
      await queue.add('pre', { id, replyTo: 'gw', modelId: 'm' } as never, { jobId: id });
      // On a connection of its own: the worker answers on the shared client.
      const reader = new Redis(redis.url);
      const popped = await reader.brpop(keys.replies('gw'), 10).finally(() => reader.disconnect());
      assert.ok(popped, 'an answer reached the reply list');
      const msg = parseJson(ResultMessageSchema, popped[1]);
      assert.ok(msg.ok && !msg.value.ok, popped[1]);
      assert.equal(msg.value.id, id);
      assert.equal(msg.value.error.code, ErrorCode.INTERNAL);
      assert.match(msg.value.error.message, /malformed pre job payload: .*params/);
      assert.equal(processed, 0);
      assert.ok(lines.some((l) => l['msg'] === 'malformed job payload'));
    } finally {
      await worker.close();
      await queue.close();
      connection.disconnect();
    }
  });

  test('the inference process logs a malformed model command and carries on', async () => {
    const stack = await startStack({ redisUrl: redis.url, roles: ['infer'], waitReady: false });
    try {
      const keys = new Keys(stack.prefix);
      const until = async (what: () => boolean, label: string) => {
        for (let i = 0; i < 300 && !what(); i++) await sleep(50);
        assert.ok(what(), `${label}:\n${stack.logs().slice(-20).join('\n')}`);
      };
      // Subscribed once it publishes its models: commands can reach it from then on.
      await until(() => logEvents(stack, 'infer', 'infer worker ready').length > 0, 'ready');
      const channel = keys.modelControl();
      await redis.client.publish(channel, JSON.stringify({ op: 'add' }));
      await redis.client.publish(channel, 'not json');
      await redis.client.publish(channel, JSON.stringify({ op: 'clear' }));
      await until(() => logEvents(stack, 'infer', 'model command done').length > 0, 'clear done');
      const malformed = logEvents(stack, 'infer', 'malformed model command');
      assert.equal(malformed.length, 2);
      assert.ok((malformed[0]!['problems'] as string[]).some((p) => p.startsWith('modelId: ')));
      assert.equal(logEvents(stack, 'infer', 'model command failed').length, 0);
    } finally {
      await stack.stop();
    }
  });
});
