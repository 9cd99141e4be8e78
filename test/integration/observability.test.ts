import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Ajv } from 'ajv';
import addFormatsModule from 'ajv-formats';
import type { DetectionResponse } from '../../shared/contracts.js';
import type { Role } from '../../services/supervisor/processes.js';
import { drawImage } from '../helpers/images.js';
import { sample, scrape as scrapeRole } from '../helpers/metrics.js';
import { isRunning, logEvents, postJson, suiteStack, type Stack } from '../helpers/stack.js';

/**
 * Seeing inside the pipeline: each role's /metrics counts exactly what was sent, the queue
 * gauges follow a stopped stage, /readyz follows the inference process, /docs documents the
 * real response, and one inference id can be followed through the logs of all four roles.
 */
let stack: Stack;

suiteStack({ env: { MAX_BATCH_DELAY_MS: '20' } }, (s) => {
  stack = s;
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function eventually(
  what: string,
  check: () => Promise<boolean> | boolean,
  timeoutMs = 15_000,
): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await check()) return;
    await sleep(100);
  }
  assert.fail(`timed out waiting for ${what}`);
}

const scrape = (role: Role) => scrapeRole(stack, role);

const shape = { colour: 'red' as const, x: 10, y: 20, w: 60, h: 40 };
const request = async () => ({
  image: { type: 'base64', value: (await drawImage(200, 150, [shape])).toString('base64') },
});

describe('observability', () => {
  test('every role counts exactly the requests, images and errors it saw', async () => {
    const one = await request();
    for (let i = 0; i < 3; i++)
      assert.equal((await postJson(stack, '/infer/object_detection', one)).status, 200);
    const list = await postJson(stack, '/infer/object_detection', {
      image: [one.image, one.image],
    });
    assert.equal(list.status, 200);
    const bad = await postJson(stack, '/infer/object_detection', {
      image: { type: 'base64', value: 'bm90IGFuIGltYWdl' },
    });
    assert.equal(bad.status, 400);
    await sleep(200);

    const gw = await scrape('gateway');
    const route = { route: '/infer/object_detection', method: 'POST' };
    assert.equal(sample(gw, 'sd_http_requests_total', { ...route, status_code: '200' }), 4);
    assert.equal(sample(gw, 'sd_http_requests_total', { ...route, status_code: '400' }), 1);
    assert.equal(
      sample(gw, 'sd_http_request_duration_seconds_count', { ...route, status_code: '200' }),
      4,
    );
    assert.equal(sample(gw, 'sd_errors_total', { code: 'IMAGE_DECODE_FAILED' }), 1);
    assert.equal(sample(gw, 'sd_request_images_count'), 5);
    assert.equal(sample(gw, 'sd_request_images_sum'), 6);
    assert.equal(sample(gw, 'sd_image_latency_seconds_count', { model_id: 'tiny-shapes' }), 5);
    assert.equal(
      sample(gw, 'sd_http_requests_in_flight'),
      1,
      'only the scrape itself is in flight',
    );
    assert.ok(sample(gw, 'sd_process_resident_memory_bytes') > 0, 'default process metrics');

    const pre = await scrape('pre');
    assert.equal(sample(pre, 'sd_stage_jobs_completed_total', { stage: 'pre' }), 5);
    assert.equal(
      sample(pre, 'sd_stage_jobs_failed_total', { stage: 'pre', code: 'IMAGE_DECODE_FAILED' }),
      1,
    );
    assert.equal(sample(pre, 'sd_stage_queue_wait_seconds_count', { stage: 'pre' }), 6);
    assert.equal(sample(pre, 'sd_stage_processing_seconds_count', { stage: 'pre' }), 5);

    const infer = await scrape('infer');
    assert.equal(sample(infer, 'sd_stage_jobs_completed_total', { stage: 'infer' }), 5);
    assert.equal(sample(infer, 'sd_inference_images_total', { model_id: 'tiny-shapes' }), 5);
    const executions = sample(infer, 'sd_inference_executions_total');
    assert.ok(executions >= 4 && executions <= 5, `executions: ${executions}`);
    assert.equal(sample(infer, 'sd_inference_batch_size_sum'), 5);
    assert.equal(sample(infer, 'sd_inference_run_seconds_count'), executions);
    assert.equal(
      sample(infer, 'sd_model_info', { model_id: 'tiny-shapes', execution_provider: 'cpu' }),
      1,
    );

    const post = await scrape('post');
    assert.equal(sample(post, 'sd_stage_jobs_completed_total', { stage: 'post' }), 5);
    assert.equal(sample(post, 'sd_stage_jobs_failed_total'), 0);
  });

  test('one inference id can be followed through the logs of all four roles', async () => {
    const res = await postJson(stack, '/infer/object_detection', await request());
    const id = (res.body as DetectionResponse).inference_id;
    const hasId = (role: Role, msg: string) =>
      logEvents(stack, role, msg).some(
        (e) =>
          e['inference_id'] === id || (e['inference_ids'] as string[] | undefined)?.includes(id),
      );
    await eventually(
      'the log lines',
      () =>
        hasId('gateway', 'request done') &&
        hasId('pre', 'preprocessed') &&
        hasId('infer', 'inferred') &&
        hasId('post', 'result sent'),
    );
  });

  test('queue gauges rise while a stage is stopped and return to zero once it drains; /readyz follows infer', async () => {
    const waiting = async (queue: string) =>
      sample(await scrape('gateway'), 'sd_queue_jobs', { queue, state: 'waiting' });
    for (const r of stack.roles.filter((x) => x.role === 'post')) {
      r.process.kill('SIGTERM');
      await new Promise((res) => (!isRunning(r) ? res(null) : r.process.once('exit', res)));
    }
    const body = await request();
    const pending = Array.from({ length: 3 }, () =>
      postJson(stack, '/infer/object_detection', body),
    );
    await eventually('3 jobs waiting in post', async () => (await waiting('post')) === 3);
    stack.add('post');
    for (const r of await Promise.all(pending)) assert.equal(r.status, 200);
    await eventually('the post queue to drain', async () => (await waiting('post')) === 0);

    const infer = stack.roles.find((r) => r.role === 'infer')!;
    infer.process.kill('SIGTERM');
    await eventually(
      '/readyz 503',
      async () => (await fetch(`${stack.url}/readyz`)).status === 503,
    );
    const readyz = (await (await fetch(`${stack.url}/readyz`)).json()) as { message: string };
    assert.match(readyz.message, /inference process/);
    stack.add('infer');
    await eventually(
      '/readyz 200',
      async () => (await fetch(`${stack.url}/readyz`)).status === 200,
      30_000,
    );
  });

  test('/docs serves an OpenAPI 3 document whose response schema matches a real response', async () => {
    const doc = (await (await fetch(`${stack.url}/docs/json`)).json()) as {
      openapi: string;
      paths: Record<
        string,
        Record<
          string,
          {
            requestBody?: unknown;
            responses: Record<string, { content: Record<string, { schema: object }> }>;
          }
        >
      >;
    };
    assert.match(doc.openapi, /^3\./);
    const op = doc.paths['/infer/object_detection']?.['post'];
    assert.ok(op?.requestBody, 'request body documented');
    const ok = op.responses['200']?.content['application/json']?.schema;
    assert.ok(ok, '200 response documented');
    const ajv = new Ajv({ strict: false });
    (addFormatsModule as unknown as (a: Ajv) => void)(ajv);
    const validate = ajv.compile(ok);
    const single = await postJson(stack, '/infer/object_detection', await request());
    assert.ok(validate(single.body), JSON.stringify(validate.errors));
    assert.equal((single.body as DetectionResponse).predictions.length, 1);
    const one = await request();
    const list = await postJson(stack, '/infer/object_detection', {
      image: [one.image, one.image],
    });
    assert.ok(validate(list.body), JSON.stringify(validate.errors));
    assert.ok(
      !validate({ ...(single.body as object), predictions: [{ x: 'nope' }] }),
      'the schema can reject',
    );

    const err = op.responses['400']?.content['application/json']?.schema;
    const bad = await postJson(stack, '/infer/object_detection', { image: [] });
    assert.ok(err && ajv.validate(err, bad.body), JSON.stringify(ajv.errors));
    assert.equal((await fetch(`${stack.url}/docs`)).status, 200);
    assert.equal((await fetch(`${stack.url}/admin/queues`)).status, 200);
  });

  test('/docs documents the asynchronous routes with the shapes they answer; metrics count them', async () => {
    const doc = (await (await fetch(`${stack.url}/docs/json`)).json()) as {
      paths: Record<
        string,
        Record<string, { requestBody?: unknown; responses: Record<string, unknown> }>
      >;
    };
    const schemaOf = (path: string, method: string, status: string) => {
      const r = doc.paths[path]?.[method]?.responses[status] as
        { content?: Record<string, { schema: object }> } | undefined;
      return r?.content?.['application/json']?.schema;
    };
    const ajv = new Ajv({ strict: false });
    (addFormatsModule as unknown as (a: Ajv) => void)(ajv);
    assert.ok(doc.paths['/async/infer/object_detection']?.['post']?.requestBody);
    // Every body form both detection routes take, and the 202's Location header.
    for (const path of ['/infer/object_detection', '/async/infer/object_detection']) {
      const body = doc.paths[path]?.['post']?.requestBody as { content: Record<string, unknown> };
      assert.deepEqual(Object.keys(body.content).sort(), [
        'application/json',
        'application/octet-stream',
        'image/*',
        'multipart/form-data',
      ]);
    }
    const asyncOp = doc.paths['/async/infer/object_detection']['post'];
    const asyncBody = asyncOp.requestBody as {
      content: Record<string, { schema: { properties: Record<string, { description?: string }> } }>;
    };
    assert.ok(asyncBody.content['multipart/form-data']!.schema.properties['webhook_url']);
    assert.match(
      asyncBody.content['application/json']!.schema.properties['timeout_ms']!.description ?? '',
      /ASYNC_TIMEOUT_MS/,
    );
    assert.ok(
      (asyncOp.responses['202'] as { headers?: Record<string, unknown> }).headers?.['Location'],
    );
    const accepted = await postJson(stack, '/async/infer/object_detection', await request());
    assert.equal(accepted.status, 202);
    const acceptedSchema = schemaOf('/async/infer/object_detection', 'post', '202');
    assert.ok(
      acceptedSchema && ajv.validate(acceptedSchema, accepted.body),
      JSON.stringify(ajv.errors),
    );
    const id = (accepted.body as { inference_id: string }).inference_id;
    let status: { status: string } = { status: 'queued' };
    await eventually('the asynchronous request finished', async () => {
      status = (await (await fetch(`${stack.url}/async/${id}`)).json()) as { status: string };
      return status.status === 'completed';
    });
    const statusSchema = schemaOf('/async/{inference_id}', 'get', '200');
    assert.ok(statusSchema && ajv.validate(statusSchema, status), JSON.stringify(ajv.errors));
    assert.ok(!ajv.validate(statusSchema, { ...status, status: 'done' }), 'the schema can reject');
    assert.ok(doc.paths['/async/{inference_id}']?.['delete']?.responses['204']);
    assert.equal(sample(await scrape('gateway'), 'sd_async_requests_accepted_total'), 1);
    // Counted by whichever process finished it (the last image's `post`, here).
    assert.equal(
      sample(await scrape('post'), 'sd_async_requests_finished_total', { status: 'completed' }),
      1,
    );
  });
});
