import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { ConfigError, EnvSchema, loadConfig } from '../../shared/config.js';
import { redisTarget } from '../../shared/redis.js';

/** The README's configuration table: variable → its default cell. */
function readmeVariables(): Map<string, string> {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const section = readme.split(/^## Configuration$/m)[1]?.split(/^## /m)[0] ?? '';
  const rows = new Map<string, string>();
  for (const line of section.split('\n')) {
    const cells = line.split('|').map((c) => c.trim());
    const name = /^`([A-Z0-9_]+)`$/.exec(cells[1] ?? '')?.[1];
    if (name) rows.set(name, cells[2] ?? '');
  }
  return rows;
}

describe('configuration', () => {
  test("the README's table lists exactly the schema's variables, with their defaults", () => {
    const rows = readmeVariables();
    assert.deepEqual([...rows.keys()].sort(), Object.keys(EnvSchema.shape).sort());
    const defaults = EnvSchema.parse({}) as Record<string, string | number | boolean | undefined>;
    let compared = 0;
    for (const [name, cell] of rows) {
      // Cells that are one literal value (`9001`, `false`, `0`: one per core) are compared;
      // prose defaults (core counts, paths) are not.
      const literal = /^`([^`]+)`(?::|$)/.exec(cell)?.[1];
      if (literal === undefined || defaults[name] === undefined) continue;
      assert.equal(String(defaults[name]), literal, `README default of ${name}`);
      compared++;
    }
    assert.ok(compared > 30, `only ${compared} defaults compared`);
  });

  test('every problem is listed at once, conflicts between variables included', () => {
    assert.throws(
      () =>
        loadConfig({
          MAX_ACTIVE_MODELS: '0',
          PORT: 'x',
          MODELS_FILE: 'm.yaml',
          MODEL_PATH: 'a.onnx',
          MODEL_PINNED: 'true',
          MODEL_SHA256: '0'.repeat(64),
        }),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        const lines = err.message.split('\n').slice(1);
        for (const start of [
          '  MAX_ACTIVE_MODELS: ',
          '  PORT: ',
          '  MODELS_FILE, MODEL_PATH: set only one of them',
          '  MODEL_PINNED: pins the one model',
          '  MODEL_SHA256: checks MODEL_URL',
        ])
          assert.ok(
            lines.some((l) => l.startsWith(start)),
            `${start.trim()} in:\n${err.message}`,
          );
        assert.equal(lines.length, 5, err.message);
        return true;
      },
    );
  });

  test('REDIS_URL is a redis://, rediss:// or unix:///path URL', () => {
    for (const url of [
      'redis://127.0.0.1:6379',
      'rediss://user:pw@redis.internal:6380/2',
      'unix:///run/redis/redis.sock',
    ])
      assert.equal(loadConfig({ REDIS_URL: url }).redis.url, url);
    for (const url of ['ftp://x', 'http://redis:6379', '127.0.0.1:6379', '/tmp/redis.sock'])
      assert.throws(
        () => loadConfig({ REDIS_URL: url }),
        /REDIS_URL: a redis:\/\/, rediss:\/\/ or unix:\/\/\/path URL/,
      );
    for (const url of ['unix://host/redis.sock', 'unix:redis.sock'])
      assert.throws(() => loadConfig({ REDIS_URL: url }), /REDIS_URL: a unix:\/\/ URL names/);
    assert.equal(
      loadConfig({ REDIS_URL: 'unix:///r.sock?db=2&password=pw' }).redis.url,
      'unix:///r.sock?db=2&password=pw',
    );
    for (const url of ['unix:///r.sock?db=abc', 'unix:///r.sock?family=6'])
      assert.throws(() => loadConfig({ REDIS_URL: url }), /REDIS_URL: a unix:\/\/ URL takes only/);
  });

  test('redisTarget gives ioredis the socket path of a unix:// URL, other URLs as they are', () => {
    assert.equal(redisTarget('unix:///run/redis.sock'), '/run/redis.sock');
    assert.equal(redisTarget('unix:///run/redis.sock?db=2'), '/run/redis.sock?db=2');
    assert.equal(redisTarget('redis://127.0.0.1:6379/1'), 'redis://127.0.0.1:6379/1');
    assert.equal(redisTarget('rediss://u:p@h:6380'), 'rediss://u:p@h:6380');
  });

  test('an empty value is unset; MODEL_PINNED defaults to false', () => {
    const config = loadConfig({ PORT: '', MODEL_PINNED: '' });
    assert.equal(config.gateway.port, 9001);
    assert.equal(config.infer.modelPinned, false);
    assert.doesNotThrow(() => loadConfig({ MODELS_FILE: 'm.yaml', MODEL_PINNED: '' }));
  });

  test('each role reads its own section: URL downloads and worker metrics need no gateway settings', () => {
    const config = loadConfig({ MAX_BODY_BYTES: '2048', HOST: '127.0.0.1', METRICS_PORT: '0' });
    assert.deepEqual(config.pre.fetch.policy, {
      allowPrivate: false,
      maxBytes: 2048,
      connectTimeoutMs: 5000,
      maxRedirects: 3,
      totalTimeoutMs: 10_000,
      minBytesPerSecond: 4096,
    });
    assert.deepEqual(config.worker, { metricsHost: '127.0.0.1', metricsPort: 0, jobLockMs: 5000 });
    assert.equal(config.post.maxImagePixels, config.pre.maxImagePixels);
    assert.equal(config.dataTtlSeconds, 90);
  });
});
