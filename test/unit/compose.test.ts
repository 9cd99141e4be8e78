import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { loadConfig } from '../../shared/config.js';

/**
 * The container files: docker-compose.yml (alone and with docker-compose.gpu.yml) as the
 * compose client resolves them, the Dockerfiles' few facts that other files depend on, and the
 * monitoring profile's Prometheus and Grafana files.
 * Needs a compose client (`docker compose` v2 or `docker-compose` v1); without one the compose
 * tests skip, except under CI, which installs one.
 */
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const APP_ROLES = ['gateway', 'pre', 'infer', 'post'] as const;
const MONITORING = ['grafana', 'prometheus'] as const;

interface Service {
  build?: { context?: string; dockerfile?: string };
  image?: string;
  command?: string[] | string;
  container_name?: string;
  ports?: Array<{ published?: string | number; target?: string | number } | string>;
  healthcheck?: { test?: string[] | string; disable?: boolean };
  depends_on?: Record<string, { condition?: string }> | string[];
  restart?: string;
  read_only?: boolean;
  environment?: Record<string, string | number | boolean | null>;
  volumes?: Array<{ source?: string; target?: string; read_only?: boolean } | string>;
  profiles?: string[];
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

/**
 * The configuration the compose client resolves, with every ${VAR:-default} at its default and
 * the monitoring profile enabled: v2 leaves out the services of profiles not enabled, v1 lists
 * every service; both keep each service's `profiles`.
 */
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
    ...['--profile', 'monitoring'],
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

/** The services a plain `docker compose up` starts: those in no profile. */
function defaultStack(services: Record<string, Service>): Record<string, Service> {
  return Object.fromEntries(
    Object.entries(services).filter(([, s]) => s.profiles === undefined || s.profiles.length === 0),
  );
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

interface ScrapeConfig {
  job_name?: string;
  metrics_path?: string;
  static_configs?: Array<{ targets?: string[] }>;
  dns_sd_configs?: Array<{ names?: string[]; type?: string; port?: number }>;
}

interface Panel {
  id?: number;
  type?: string;
  title?: string;
  datasource?: { type?: string; uid?: string };
  targets?: Array<{ expr?: string; refId?: string; datasource?: { uid?: string } }>;
  panels?: Panel[];
}

function readYaml<T>(path: string): T {
  return parse(readFileSync(join(ROOT, path), 'utf8')) as T;
}

function gpuDevices(service: Service): Device[] {
  return service.deploy?.resources?.reservations?.devices ?? [];
}

/** Bind mounts, from v1's `source:target[:mode]` strings or v2's objects. */
function mounts(service: Service): Array<{ source: string; target: string; readOnly: boolean }> {
  return (service.volumes ?? []).map((v) => {
    if (typeof v !== 'string')
      return { source: v.source ?? '', target: v.target ?? '', readOnly: v.read_only === true };
    const [source = '', target = '', mode = ''] = v.split(':');
    return { source, target, readOnly: mode.split(',').includes('ro') };
  });
}

describe('docker-compose.yml', { skip }, () => {
  const services = memo(() => defaultStack(resolvedConfig(['docker-compose.yml'])));

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

  test('the roles run with a read-only root filesystem', () => {
    for (const role of APP_ROLES) assert.equal(services()[role]?.read_only, true, role);
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

  test('infer alone mounts ./models read-only and the model cache; MODEL_PATH is empty by default', () => {
    for (const [name, service] of Object.entries(services())) {
      const volumes = service.volumes ?? [];
      if (name !== 'infer') {
        assert.deepEqual(volumes, [], name);
        continue;
      }
      assert.equal(volumes.length, 2);
      const [models, cache] = volumes;
      if (typeof models === 'string') {
        assert.match(models, /\/models:\/models:ro$/);
      } else {
        assert.equal(models?.target, '/models');
        assert.equal(models?.read_only, true);
        assert.match(models?.source ?? '', /\/models$/);
      }
      // Downloaded models (MODEL_URL) survive a restart in a named volume.
      if (typeof cache === 'string') assert.match(cache, /model-cache:\/cache(:rw)?$/);
      else assert.equal(cache?.target, '/cache');
      assert.equal(service.environment?.['MODEL_CACHE_DIR'], '/cache');
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
  const services = memo(() =>
    defaultStack(resolvedConfig(['docker-compose.yml', 'docker-compose.gpu.yml'])),
  );

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

describe('docker-compose.yml: the monitoring profile', { skip }, () => {
  const all = memo(() => resolvedConfig(['docker-compose.yml']));
  const service = (name: string): Service => {
    const s = all()[name];
    assert.ok(s, `no service ${name}`);
    return s;
  };

  test('prometheus and grafana are in the monitoring profile, and no other service is in one', () => {
    for (const [name, s] of Object.entries(all())) {
      if ((MONITORING as readonly string[]).includes(name))
        assert.deepEqual(s.profiles, ['monitoring'], name);
      else assert.deepEqual(s.profiles ?? [], [], name);
    }
    for (const name of MONITORING) assert.ok(all()[name], `no service ${name}`);
  });

  test('prometheus mounts docker/prometheus/prometheus.yml read-only and publishes 9090', () => {
    const prometheus = service('prometheus');
    assert.match(prometheus.image ?? '', /^prom\/prometheus(:|$)/);
    const config = mounts(prometheus).find((m) => m.target === '/etc/prometheus/prometheus.yml');
    assert.ok(config, 'the configuration is not mounted');
    assert.equal(config.readOnly, true);
    assert.match(config.source, /\/docker\/prometheus\/prometheus\.yml$/);
    assert.deepEqual(published(prometheus), [{ published: 9090, target: 9090 }]);
  });

  test('grafana: anonymous viewers, provisioning and dashboards mounted read-only, 3000, after prometheus', () => {
    const grafana = service('grafana');
    assert.match(grafana.image ?? '', /^grafana\/grafana(:|$)/);
    assert.equal(String(grafana.environment?.['GF_AUTH_ANONYMOUS_ENABLED']), 'true');
    assert.equal(grafana.environment?.['GF_AUTH_ANONYMOUS_ORG_ROLE'], 'Viewer');
    const byTarget = new Map(mounts(grafana).map((m) => [m.target, m]));
    const provisioning = byTarget.get('/etc/grafana/provisioning');
    assert.ok(provisioning, 'the provisioning folder is not mounted');
    assert.match(provisioning.source, /\/docker\/grafana\/provisioning$/);
    assert.equal(provisioning.readOnly, true);
    const dashboards = byTarget.get('/var/lib/grafana/dashboards');
    assert.ok(dashboards, 'the dashboards folder is not mounted');
    assert.match(dashboards.source, /\/docker\/grafana\/dashboards$/);
    assert.equal(dashboards.readOnly, true);
    assert.deepEqual(published(grafana), [{ published: 3000, target: 3000 }]);
    assert.ok('prometheus' in conditions(grafana));
  });

  test('Prometheus scrapes services of the stack, on the ports they serve metrics on', () => {
    const config = readYaml<{ scrape_configs?: ScrapeConfig[] }>(
      'docker/prometheus/prometheus.yml',
    );
    for (const target of (config.scrape_configs ?? []).flatMap(scrapeTargets)) {
      const [name = ''] = target.split(':');
      assert.ok(all()[name], `Prometheus scrapes ${target}, but there is no service ${name}`);
    }
    // The workers keep METRICS_PORT's default, the port Prometheus scrapes.
    for (const role of ['pre', 'infer', 'post'])
      assert.equal(service(role).environment?.['METRICS_PORT'], undefined, role);
  });

  test('the GPU override leaves them alone', () => {
    const gpu = resolvedConfig(['docker-compose.yml', 'docker-compose.gpu.yml']);
    for (const name of MONITORING) {
      assert.deepEqual(gpuDevices(gpu[name] ?? {}), [], name);
      assert.equal(gpu[name]?.image, service(name).image, name);
      assert.deepEqual(gpu[name]?.profiles, ['monitoring'], name);
    }
  });
});

/** `host:port` of every target of a scrape job: static targets and DNS names with their port. */
function scrapeTargets(job: ScrapeConfig): string[] {
  return [
    ...(job.static_configs ?? []).flatMap((c) => c.targets ?? []),
    ...(job.dns_sd_configs ?? []).flatMap((c) => {
      assert.ok(c.type === 'A' || c.type === 'AAAA', `${job.job_name}: DNS SD needs type A here`);
      assert.ok(c.port !== undefined, `${job.job_name}: an A record lookup needs a port`);
      return (c.names ?? []).map((n) => `${n}:${c.port}`);
    }),
  ];
}

describe('docker/prometheus/prometheus.yml', () => {
  const config = readYaml<{
    global?: { scrape_interval?: string };
    scrape_configs?: ScrapeConfig[];
  }>('docker/prometheus/prometheus.yml');

  test('scrapes every 5 s', () => {
    assert.equal(config.global?.scrape_interval, '5s');
  });

  test('scrapes the gateway on 9001 and every replica of pre, infer and post on METRICS_PORT', () => {
    const metricsPort = loadConfig({}).worker.metricsPort;
    assert.equal(metricsPort, 9464);
    assert.equal(loadConfig({}).gateway.port, 9001);
    const jobs = new Map((config.scrape_configs ?? []).map((j) => [j.job_name, j]));
    const expected = {
      gateway: 'gateway:9001',
      pre: `pre:${metricsPort}`,
      infer: `infer:${metricsPort}`,
      post: `post:${metricsPort}`,
    };
    for (const [role, target] of Object.entries(expected)) {
      const job = jobs.get(role);
      assert.ok(job, `no scrape job ${role}`);
      assert.ok(scrapeTargets(job).includes(target), `${role} does not scrape ${target}`);
      assert.equal(job.metrics_path ?? '/metrics', '/metrics', role);
      // DNS service discovery: Docker's DNS answers one A record per replica of a service.
      assert.ok((job.dns_sd_configs ?? []).length > 0, `${role} does not find replicas by DNS`);
    }
  });
});

describe('Grafana', () => {
  const dashboard = JSON.parse(
    readFileSync(join(ROOT, 'docker/grafana/dashboards/staged-detect.json'), 'utf8'),
  ) as { uid?: string; title?: string; schemaVersion?: number; panels?: Panel[] };
  const panels = (dashboard.panels ?? []).flatMap((p) => [p, ...(p.panels ?? [])]);
  const graphs = panels.filter((p) => p.type !== 'row');
  const expressions = graphs.flatMap((p) => (p.targets ?? []).map((t) => t.expr ?? ''));

  /** Metric names in the README's Metrics section, each with its type where the table has one. */
  function documentedMetrics(): Map<string, string | undefined> {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const section = /^## Metrics\n([\s\S]*?)^## /m.exec(readme)?.[1];
    assert.ok(section, 'README.md has no Metrics section');
    const metrics = new Map<string, string | undefined>();
    for (const [, name = ''] of section.matchAll(/`(sd_[a-z_]+)`/g)) metrics.set(name, undefined);
    for (const [, name = '', type] of section.matchAll(/^\|\s*`(sd_[a-z_]+)`\s*\|\s*(\w+)\s*\|/gm))
      metrics.set(name, type);
    return metrics;
  }

  /** Every metric an expression reads, as documented: a histogram's series by its name. */
  function metricsUsed(): Set<string> {
    const documented = documentedMetrics();
    const used = new Set<string>();
    for (const expr of expressions) {
      for (const [series = ''] of expr.matchAll(/\bsd_[a-z_]+/g)) {
        if (documented.has(series)) {
          used.add(series);
          continue;
        }
        const histogram = series.replace(/_(bucket|count|sum)$/, '');
        assert.ok(
          histogram !== series && documented.get(histogram) === 'histogram',
          `the dashboard reads ${series}, which the README's Metrics section does not list`,
        );
        used.add(histogram);
      }
    }
    return used;
  }

  test("the datasource is the stack's Prometheus, by the uid the dashboard uses", () => {
    const file = readYaml<{
      datasources?: Array<{ uid?: string; type?: string; url?: string; isDefault?: boolean }>;
    }>('docker/grafana/provisioning/datasources/prometheus.yml');
    assert.deepEqual(
      file.datasources?.map((d) => [d.uid, d.type, d.url, d.isDefault]),
      [['prometheus', 'prometheus', 'http://prometheus:9090', true]],
    );
  });

  test('dashboards are loaded from the folder the compose file mounts', () => {
    const file = readYaml<{ providers?: Array<{ type?: string; options?: { path?: string } }> }>(
      'docker/grafana/provisioning/dashboards/dashboards.yml',
    );
    assert.deepEqual(
      file.providers?.map((p) => [p.type, p.options?.path]),
      [['file', '/var/lib/grafana/dashboards']],
    );
  });

  test('the dashboard: uid, title, one Prometheus datasource, unique panel ids', () => {
    assert.equal(dashboard.uid, 'staged-detect');
    assert.equal(dashboard.title, 'staged-detect pipeline');
    assert.ok((dashboard.schemaVersion ?? 0) >= 36, 'schemaVersion');
    assert.ok(graphs.length > 0);
    const ids = panels.map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length, 'panel ids repeat');
    for (const panel of graphs) {
      assert.equal(panel.type, 'timeseries', panel.title);
      assert.equal(panel.datasource?.uid, 'prometheus', panel.title);
      assert.ok((panel.targets ?? []).length > 0, `${panel.title} has no query`);
      for (const target of panel.targets ?? []) {
        assert.ok(target.expr, `${panel.title} ${target.refId}: no expression`);
        assert.equal(target.datasource?.uid ?? 'prometheus', 'prometheus', panel.title);
      }
    }
  });

  test("every metric the dashboard reads is in the README's Metrics section", () => {
    assert.ok(metricsUsed().size > 0);
  });

  test('the panels cover throughput, latency percentiles, queue depth, batch size and errors', () => {
    const used = metricsUsed();
    for (const metric of [
      'sd_image_latency_seconds',
      'sd_http_requests_total',
      'sd_http_request_duration_seconds',
      'sd_queue_jobs',
      'sd_stage_queue_wait_seconds',
      'sd_stage_processing_seconds',
      'sd_inference_batch_size',
      'sd_inference_images_total',
      'sd_inference_executions_total',
      'sd_inference_run_seconds',
      'sd_errors_total',
      'sd_stage_jobs_failed_total',
    ])
      assert.ok(used.has(metric), `no panel reads ${metric}`);
    const all = expressions.join('\n');
    assert.match(all, /rate\(sd_image_latency_seconds_count\[/, 'images per second');
    for (const q of ['0.5', '0.9', '0.99'])
      assert.ok(
        expressions.some((e) =>
          e.startsWith(
            `histogram_quantile(${q}, sum by (le) (rate(sd_image_latency_seconds_bucket[`,
          ),
        ),
        `no p${Number(q) * 100} of the end-to-end latency`,
      );
    assert.match(all, /max by \(queue, state\) \(sd_queue_jobs\{state="waiting"\}\)/);
  });
});
