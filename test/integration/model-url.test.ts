import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { buildTinyDetector } from '../../services/infer/tiny-model/tiny-model.js';
import type { DetectionResponse } from '../../shared/contracts.js';
import { drawImage } from '../helpers/images.js';
import { postJson, suiteRedis, type Stack } from '../helpers/stack.js';

/**
 * MODEL_URL: the inference process downloads the model once into MODEL_CACHE_DIR, checks it
 * against MODEL_SHA256 and reuses it on the next start. The model is served over loopback by
 * the test.
 */
const model = Buffer.from(buildTinyDetector());
const sha = createHash('sha256').update(model).digest('hex');
let server: Server;
let base: string;
let downloads = 0;
const cacheDir = mkdtempSync(join(tmpdir(), 'sd-model-cache-'));
const suite = suiteRedis();

before(async () => {
  server = createServer((req, res) => {
    if (req.url !== '/models/shapes.onnx') return void res.writeHead(404).end();
    downloads++;
    res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(model);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(() => {
  server?.close();
  rmSync(cacheDir, { recursive: true, force: true });
});

function start(env: Record<string, string>, roles?: Array<'infer'>): Promise<Stack> {
  return suite.stack({ env: { MODEL_CACHE_DIR: cacheDir, ...env }, ...(roles ? { roles } : {}) });
}

async function exitOf(stack: Stack): Promise<{ code: number | null; log: string }> {
  const infer = stack.roles[0]!;
  const code =
    infer.process.exitCode ??
    (await new Promise<number | null>((r) => infer.process.once('exit', r)));
  return { code, log: stack.logs('infer').join('\n') };
}

test('a model from a URL is downloaded once, verified, served and reused on the next start', async () => {
  const url = `${base}/models/shapes.onnx`;
  const first = await start({ MODEL_URL: url, MODEL_SHA256: sha });
  const image = await drawImage(200, 150, [{ colour: 'blue', x: 20, y: 30, w: 60, h: 50 }]);
  const res = await postJson(first, '/infer/object_detection', {
    model_id: 'shapes',
    image: { type: 'base64', value: image.toString('base64') },
  });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.deepEqual(
    (res.body as DetectionResponse).predictions.map((p) => p.class),
    ['blue'],
  );
  assert.equal(downloads, 1);
  assert.deepEqual(readdirSync(cacheDir), [`${sha}.onnx`]);
  await first.stop();

  const second = await start({ MODEL_URL: url, MODEL_SHA256: sha });
  assert.equal(downloads, 1, 'the second start downloaded the model again');
  assert.match(second.logs('infer').join('\n'), /model ready/);
});

test('a download that does not match MODEL_SHA256 is a clear startup error', async () => {
  const wrong = 'f'.repeat(64);
  const stack = await start(
    {
      MODEL_URL: `${base}/models/shapes.onnx`,
      MODEL_SHA256: wrong,
      MODEL_CACHE_DIR: join(cacheDir, 'other'),
    },
    ['infer'],
  );
  const { code, log } = await exitOf(stack);
  assert.equal(code, 1);
  assert.match(log, new RegExp(`sha256 mismatch \\(expected ${wrong}, got ${sha}\\)`));
});

test('a URL that fails is a clear startup error', async () => {
  const stack = await start({ MODEL_URL: `${base}/models/missing.onnx` }, ['infer']);
  const { code, log } = await exitOf(stack);
  assert.equal(code, 1);
  assert.match(
    log,
    /model download http:\/\/127\.0\.0\.1:\d+\/models\/missing\.onnx failed: HTTP 404/,
  );
});
