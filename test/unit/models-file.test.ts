import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ConfigError, loadConfig } from '../../shared/config.js';
import { cachedModel } from '../../services/infer/model-source.js';
import { loadModelSpecs, parseModelsFile } from '../../services/infer/models-file.js';

describe('models file', () => {
  test('YAML: sources, relative paths, options and defaults', () => {
    const specs = parseModelsFile(
      `models:
  - id: people
    path: models/people.onnx
    class_names: names.txt
    layout: yolox
    preprocessing: { pad: top-left, channel_order: bgr, scale: 1 }
    max_batch_size: 4
    pinned: true
  - id: remote
    url: https://models.example.com/det.onnx
    sha256: ${'AB'.repeat(32)}
    preload: true
  - id: shapes
    builtin: tiny-shapes
`,
      '/srv/conf',
      8,
    );
    assert.deepEqual(specs, [
      {
        id: 'people',
        source: { kind: 'path', path: '/srv/conf/models/people.onnx' },
        classNamesPath: '/srv/conf/names.txt',
        layout: 'yolox',
        preprocessing: { pad: 'top-left', channelOrder: 'bgr', scale: 1 },
        maxBatchSize: 4,
        pinned: true,
        preload: true,
      },
      {
        id: 'remote',
        source: {
          kind: 'url',
          url: 'https://models.example.com/det.onnx',
          sha256: 'ab'.repeat(32),
        },
        maxBatchSize: 8,
        pinned: false,
        preload: true,
      },
      { id: 'shapes', source: { kind: 'tiny' }, maxBatchSize: 8, pinned: false, preload: false },
    ]);
  });

  test('JSON is read the same way', () => {
    const specs = parseModelsFile('{"models": [{"id": "a", "path": "/m/a.onnx"}]}', '/x', 2);
    assert.deepEqual(specs[0]?.source, { kind: 'path', path: '/m/a.onnx' });
  });

  const bad: Array<[string, string, RegExp]> = [
    ['not YAML', 'models: [', /not valid YAML or JSON/],
    ['no models', 'models: []', /models/],
    [
      'two sources',
      'models: [{id: a, path: a.onnx, builtin: tiny-shapes}]',
      /exactly one of path, url or builtin/,
    ],
    ['no source', 'models: [{id: a}]', /exactly one of path, url or builtin/],
    ['duplicate ids', 'models: [{id: a, path: a.onnx}, {id: a, path: b.onnx}]', /unique/],
    ['unknown field', 'models: [{id: a, path: a.onnx, colour: red}]', /colour/],
    ['unknown layout', 'models: [{id: a, path: a.onnx, layout: yolov9}]', /layout/],
    [
      'sha256 without url',
      `models: [{id: a, path: a.onnx, sha256: "${'0'.repeat(64)}"}]`,
      /needs url/,
    ],
    ['short sha256', 'models: [{id: a, url: "http://h/a.onnx", sha256: abc}]', /64 hexadecimal/],
    ['file URL', 'models: [{id: a, url: "file:///etc/passwd"}]', /url/],
    ['bad id', 'models: [{id: "a b", path: a.onnx}]', /id/],
  ];
  for (const [name, text, message] of bad) {
    test(`refused with a clear message: ${name}`, () => {
      assert.throws(() => parseModelsFile(text, '/x', 8), message);
    });
  }

  test('MODELS_FILE that does not exist is a clear error', async () => {
    const config = loadConfig({ MODELS_FILE: '/nonexistent/models.yaml' });
    await assert.rejects(
      loadModelSpecs(config.infer),
      /MODELS_FILE \/nonexistent\/models.yaml: ENOENT/,
    );
  });

  test('the one-model shortcut: MODEL_URL gives one pre-warmed model named after the file', async () => {
    const config = loadConfig({ MODEL_URL: 'https://h.example/det/yolo-people.onnx?token=x' });
    const specs = await loadModelSpecs(config.infer);
    // Not pinned, as in Roboflow's server: /model/remove unloads it, its next request loads it.
    assert.deepEqual(
      specs.map((s) => [s.id, s.source.kind, s.pinned, s.preload]),
      [['yolo-people', 'url', false, true]],
    );
  });

  test('MODEL_PINNED pins the one model; with a models file it is an error', async () => {
    for (const [env, pinned] of [
      [{ MODEL_PATH: '/m/a.onnx', MODEL_PINNED: 'true' }, true],
      [{ MODEL_PATH: '/m/a.onnx', MODEL_PINNED: 'false' }, false],
      [{ MODEL_PINNED: 'yes' }, true],
      [{}, false],
    ] as const) {
      const specs = await loadModelSpecs(loadConfig(env).infer);
      assert.deepEqual(
        specs.map((s) => [s.pinned, s.preload]),
        [[pinned, true]],
        JSON.stringify(env),
      );
    }
    assert.throws(
      () => loadConfig({ MODELS_FILE: 'm.yaml', MODEL_PINNED: 'true' }),
      /MODEL_PINNED: .*pinned: true/,
    );
  });

  test('only one of MODELS_FILE, MODEL_PATH and MODEL_URL; MODEL_SHA256 needs MODEL_URL', () => {
    assert.throws(() => loadConfig({ MODELS_FILE: 'm.yaml', MODEL_PATH: 'a.onnx' }), ConfigError);
    assert.throws(
      () => loadConfig({ MODEL_PATH: 'a.onnx', MODEL_SHA256: '0'.repeat(64) }),
      /MODEL_SHA256/,
    );
    assert.throws(() => loadConfig({ MAX_ACTIVE_MODELS: '0' }), /MAX_ACTIVE_MODELS/);
  });
});

describe('model downloads', () => {
  const body = Buffer.from('not really a model, but bytes with a known hash');
  const sha = createHash('sha256').update(body).digest('hex');
  let server: Server;
  let base: string;
  let requests = 0;
  let dir: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sd-cache-'));
    server = createServer((req, res) => {
      requests++;
      if (req.url === '/model.onnx') res.writeHead(200).end(body);
      else if (req.url === '/moved') res.writeHead(302, { location: '/model.onnx' }).end();
      else res.writeHead(404).end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(() => {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('downloads once, verifies the sha256, and reuses the cached file', async () => {
    const cacheDir = join(dir, 'a');
    const before = requests;
    const file = await cachedModel({ url: `${base}/model.onnx`, sha256: sha, cacheDir });
    assert.deepEqual(readFileSync(file), body);
    assert.equal(requests, before + 1);
    assert.equal(await cachedModel({ url: `${base}/model.onnx`, sha256: sha, cacheDir }), file);
    assert.equal(requests, before + 1, 'the second start downloaded again');
    assert.deepEqual(readdirSync(cacheDir), [`${sha}.onnx`]);
  });

  test('a corrupt cached file is downloaded again', async () => {
    const cacheDir = join(dir, 'b');
    const file = await cachedModel({ url: `${base}/model.onnx`, sha256: sha, cacheDir });
    writeFileSync(file, 'damaged');
    const before = requests;
    await cachedModel({ url: `${base}/model.onnx`, sha256: sha, cacheDir });
    assert.equal(requests, before + 1);
    assert.deepEqual(readFileSync(file), body);
  });

  test('redirects are followed; without a sha256 the file is cached by URL', async () => {
    const cacheDir = join(dir, 'c');
    const file = await cachedModel({ url: `${base}/moved`, cacheDir });
    assert.deepEqual(readFileSync(file), body);
  });

  test('a mismatched sha256 is an error naming both hashes, and nothing is cached', async () => {
    const cacheDir = join(dir, 'd');
    const wrong = '0'.repeat(64);
    await assert.rejects(
      cachedModel({ url: `${base}/model.onnx`, sha256: wrong, cacheDir }),
      new RegExp(`sha256 mismatch \\(expected ${wrong}, got ${sha}\\)`),
    );
    assert.deepEqual(readdirSync(cacheDir), []);
  });

  test('an HTTP error or an unreachable host is a clear error', async () => {
    const cacheDir = join(dir, 'e');
    await assert.rejects(
      cachedModel({ url: `${base}/missing.onnx`, cacheDir }),
      /failed: HTTP 404/,
    );
    await assert.rejects(
      cachedModel({ url: 'http://127.0.0.1:1/x.onnx', cacheDir }),
      /failed: fetch failed/,
    );
    assert.equal(existsSync(join(cacheDir, 'x.onnx')), false);
  });
});
