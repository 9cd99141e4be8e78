import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';

/**
 * The container files: docker-compose.yml (alone and with docker-compose.gpu.yml) as the
 * compose client resolves them, and the Dockerfiles' few facts that other files depend on.
 * Needs a compose client (`docker compose` v2 or `docker-compose` v1); without one these tests
 * skip, except under CI, which installs one.
 */
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const APP_ROLES = ['gateway', 'pre', 'infer', 'post'] as const;

interface Service {
  build?: { context?: string; dockerfile?: string };
  image?: string;
  command?: string[] | string;
  container_name?: string;
  ports?: Array<{ published?: string | number; target?: string | number } | string>;
  healthcheck?: { test?: string[] | string; disable?: boolean };
  depends_on?: Record<string, { condition?: string }> | string[];
  restart?: string;
  environment?: Record<string, string | number | null>;
  volumes?: Array<{ source?: string; target?: string; read_only?: boolean } | string>;
  deploy?: {
    resources?: {
      reservations?: {
        devices?: Device[];
      };
    };
  };
}

interface Device {
  driver?: string;
  count?: number | string;
  capabilities?: string[];
}

interface ComposeClient {
  command: string;
  prefix: string[];
  json: boolean;
}

function works(command: string, args: string[]): boolean {
  const r = spawnSync(command, args, { stdio: 'ignore', timeout: 20_000 });
  return r.status === 0;
}

/** `docker compose` (v2, JSON output) if it works, else `docker-compose` (v1, YAML output). */
function findComposeClient(): ComposeClient | undefined {
  if (works('docker', ['compose', 'version']))
    return { command: 'docker', prefix: ['compose'], json: true };
  if (works('docker-compose', ['version']))
    return { command: 'docker-compose', prefix: [], json: false };
  return undefined;
}

const client = findComposeClient();
const skip =
  client === undefined && !process.env['CI']
    ? 'no compose client (docker compose or docker-compose) installed'
    : false;

/** The configuration the compose client resolves, with every ${VAR:-default} at its default. */
function resolvedConfig(files: string[]): Record<string, Service> {
  assert.ok(client, 'no compose client: install docker-compose (CI does)');
  const env = { ...process.env };
  // Interpolated variables must take their defaults here, whatever this shell exports.
  for (const name of Object.keys(env)) {
    if (/^(REDIS_|PORT$|HOST$|PRE_|POST_|MAX_|EXECUTION_|MODEL_|CLASS_|REQUEST_|LOG_)/.test(name))
      delete env[name];
    if (name.startsWith('COMPOSE_')) delete env[name];
  }
  const args = [
    ...client.prefix,
    ...files.flatMap((f) => ['-f', f]),
    'config',
    ...(client.json ? ['--format', 'json'] : []),
  ];
  const r = spawnSync(client.command, args, { cwd: ROOT, env, encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, `${client.command} ${args.join(' ')} failed:\n${r.stderr}`);
  const config = parse(r.stdout) as { services?: Record<string, Service> };
  assert.ok(config.services, 'the resolved configuration has no services');
  return config.services;
}

/** Runs `get` once it first succeeds; a failure fails each test that needs the value. */
function memo<T>(get: () => T): () => T {
  let value: { v: T } | undefined;
  return () => (value ??= { v: get() }).v;
}

function published(service: Service): Array<{ published: number; target: number }> {
  return (service.ports ?? []).map((p) => {
    if (typeof p === 'string') {
      const [host, container] = p.split(':').slice(-2);
      return { published: Number(host), target: Number(container) };
    }
    return { published: Number(p.published), target: Number(p.target) };
  });
}

function conditions(service: Service): Record<string, string | undefined> {
  const deps = service.depends_on ?? {};
  if (Array.isArray(deps)) return Object.fromEntries(deps.map((d) => [d, undefined]));
  return Object.fromEntries(Object.entries(deps).map(([name, d]) => [name, d.condition]));
}

function gpuDevices(service: Service): Device[] {
  return service.deploy?.resources?.reservations?.devices ?? [];
}

describe('docker-compose.yml', { skip }, () => {
  const services = memo(() => resolvedConfig(['docker-compose.yml']));

  test('has redis and the four roles', () => {
    assert.deepEqual(Object.keys(services()).sort(), ['gateway', 'infer', 'post', 'pre', 'redis']);
  });

  test('pre and post can scale: no container_name, no ports', () => {
    for (const name of ['pre', 'post']) {
      assert.equal(services()[name]?.container_name, undefined, name);
      assert.deepEqual(services()[name]?.ports ?? [], [], name);
    }
  });

  test('only the gateway publishes a port, 9001', () => {
    for (const [name, service] of Object.entries(services())) {
      if (name === 'gateway')
        assert.deepEqual(published(service), [{ published: 9001, target: 9001 }]);
      else assert.deepEqual(published(service), [], name);
    }
    assert.equal(String(services()['gateway']?.environment?.['PORT']), '9001');
  });

  test('every service has a healthcheck; the roles use the healthcheck CLI for their role', () => {
    for (const [name, service] of Object.entries(services())) {
      const check = service.healthcheck?.test;
      assert.ok(check !== undefined && check.length > 0, `${name} has no healthcheck test`);
      assert.notEqual(service.healthcheck?.disable, true, name);
      if (name === 'redis') continue;
      assert.deepEqual(check, ['CMD', 'node', 'dist/services/supervisor/healthcheck.js', name]);
    }
  });

  test('start order follows health', () => {
    const healthy = (...names: string[]) =>
      Object.fromEntries(names.map((n) => [n, 'service_healthy']));
    assert.deepEqual(conditions(services()['redis'] ?? {}), {});
    assert.deepEqual(conditions(services()['infer'] ?? {}), healthy('redis'));
    assert.deepEqual(conditions(services()['pre'] ?? {}), healthy('redis', 'infer'));
    assert.deepEqual(conditions(services()['post'] ?? {}), healthy('redis', 'infer'));
    assert.deepEqual(
      conditions(services()['gateway'] ?? {}),
      healthy('redis', 'infer', 'pre', 'post'),
    );
  });

  test('every service restarts unless stopped', () => {
    for (const [name, service] of Object.entries(services()))
      assert.equal(service.restart, 'unless-stopped', name);
  });

  test('the roles run from docker/Dockerfile, each its own entry point, against the redis service', () => {
    for (const role of APP_ROLES) {
      const service = services()[role] ?? {};
      assert.equal(service.build?.dockerfile, 'docker/Dockerfile', role);
      assert.deepEqual(service.command, ['node', `dist/services/${role}/main.js`]);
      assert.ok(existsSync(join(ROOT, 'services', role, 'main.ts')), role);
      assert.equal(service.environment?.['REDIS_URL'], 'redis://redis:6379', role);
    }
    assert.ok(existsSync(join(ROOT, 'services/supervisor/healthcheck.ts')));
  });

  test('infer alone mounts ./models read-only; MODEL_PATH is empty by default', () => {
    for (const [name, service] of Object.entries(services())) {
      const volumes = service.volumes ?? [];
      if (name !== 'infer') {
        assert.deepEqual(volumes, [], name);
        continue;
      }
      assert.equal(volumes.length, 1);
      const volume = volumes[0];
      if (typeof volume === 'string') {
        assert.match(volume, /\/models:\/models:ro$/);
      } else {
        assert.equal(volume?.target, '/models');
        assert.equal(volume?.read_only, true);
        assert.match(volume?.source ?? '', /\/models$/);
      }
      assert.equal(service.environment?.['MODEL_PATH'], '');
      assert.equal(service.environment?.['EXECUTION_PROVIDER'], 'cpu');
    }
  });

  test('no service reserves a GPU', () => {
    for (const [name, service] of Object.entries(services()))
      assert.deepEqual(gpuDevices(service), [], name);
  });
});

describe('docker-compose.yml with docker-compose.gpu.yml', { skip }, () => {
  const services = memo(() => resolvedConfig(['docker-compose.yml', 'docker-compose.gpu.yml']));

  test('infer reserves an NVIDIA GPU and runs docker/Dockerfile.gpu with CUDA', () => {
    const infer = services()['infer'] ?? {};
    const devices = gpuDevices(infer);
    assert.equal(devices.length, 1);
    assert.equal(devices[0]?.driver, 'nvidia');
    assert.equal(Number(devices[0]?.count), 1);
    assert.deepEqual(devices[0]?.capabilities, ['gpu']);
    assert.equal(infer.build?.dockerfile, 'docker/Dockerfile.gpu');
    assert.equal(infer.environment?.['EXECUTION_PROVIDER'], 'cuda');
    assert.deepEqual(infer.healthcheck?.test, [
      'CMD',
      'node',
      'dist/services/supervisor/healthcheck.js',
      'infer',
    ]);
  });

  test('no other service reserves a GPU or changes image', () => {
    for (const [name, service] of Object.entries(services())) {
      if (name === 'infer') continue;
      assert.deepEqual(gpuDevices(service), [], name);
      if (name !== 'redis') assert.equal(service.build?.dockerfile, 'docker/Dockerfile', name);
    }
  });
});

describe('Dockerfiles', () => {
  const cpu = readFileSync(join(ROOT, 'docker/Dockerfile'), 'utf8');
  const gpu = readFileSync(join(ROOT, 'docker/Dockerfile.gpu'), 'utf8');

  test('both run as a non-root user and expose 9001', () => {
    for (const file of [cpu, gpu]) {
      assert.match(file, /^USER node$/m);
      assert.match(file, /^EXPOSE 9001$/m);
      assert.match(file, /NODE_ENV=production/);
    }
  });

  test("the GPU build asks onnxruntime-node's install script for a flavour it knows", () => {
    const flavour = /ONNXRUNTIME_NODE_INSTALL=(\S+)/.exec(gpu)?.[1];
    assert.equal(flavour, 'cuda12');
    const require = createRequire(import.meta.url);
    const metadata = require('onnxruntime-node/script/install-metadata.js') as {
      requirements: Record<string, string[]>;
      manifests: Record<string, Record<string, unknown>>;
    };
    assert.ok(metadata.requirements['linux/x64']?.includes(flavour));
    const files = Object.keys(metadata.manifests[`linux/x64:${flavour}`] ?? {});
    assert.ok(files.includes('./libonnxruntime_providers_cuda.so'));
    // The build checks that the file arrived, where the install script puts it.
    assert.match(
      gpu,
      /node_modules\/onnxruntime-node\/bin\/napi-v6\/linux\/x64\/libonnxruntime_providers_cuda\.so/,
    );
  });
});
