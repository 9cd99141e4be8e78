import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ScaledObject } from '@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject';
import { Redis } from 'ioredis';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Namespace } from 'kubernetes-models/v1/Namespace';
import { Secret } from 'kubernetes-models/v1/Secret';
import { Service } from 'kubernetes-models/v1/Service';
import type { IContainer } from 'kubernetes-models/v1/Container';
import { Registry } from 'prom-client';
import { parseAllDocuments } from 'yaml';
import { StoreMonitor } from '../../services/gateway/store-monitor.js';
import { startRedisServer, stopProcess } from '../../services/supervisor/processes.js';
import { loadConfig } from '../../shared/config.js';
import { createLogger } from '../../shared/logger.js';
import { registerQueueGauge } from '../../shared/metrics.js';
import { WAITING_STATES, createQueue } from '../../shared/queues.js';

/**
 * The Kubernetes manifests of deploy/: every overlay rendered with `kubectl kustomize`, every
 * object validated against the Kubernetes and KEDA schemas (kubernetes-models), and the
 * properties the README promises checked on the rendered objects. The autoscalers' queries are
 * checked against what BullMQ writes in a live redis-server and what the gauge reports.
 * Needs kubectl (with its built-in kustomize); without it the rendering tests skip, except
 * under CI, whose machine has it.
 */
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const ROLES = ['gateway', 'pre', 'infer', 'post'] as const;
const OVERLAYS = ['cpu', 'gpu', 'try'] as const;
/** Made by the user for cpu and gpu (README), by components/redis for try. */
const SECRET = 'staged-detect-secrets';

const hasKubectl = spawnSync('kubectl', ['version', '--client'], { stdio: 'ignore' }).status === 0;
const skip =
  !hasKubectl && !process.env['CI'] ? 'kubectl (with built-in kustomize) not installed' : false;

type Model = { validate(): void };
/** The model class of each kind the manifests may hold; another kind fails the test. */
const MODELS: Record<string, (data: unknown) => Model> = {
  'v1/Namespace': (d) => new Namespace(d as never),
  'v1/ConfigMap': (d) => new ConfigMap(d as never),
  'v1/Secret': (d) => new Secret(d as never),
  'v1/Service': (d) => new Service(d as never),
  'apps/v1/Deployment': (d) => new Deployment(d as never),
  'policy/v1/PodDisruptionBudget': (d) => new PodDisruptionBudget(d as never),
  'keda.sh/v1alpha1/ScaledObject': (d) => new ScaledObject(d as never),
};

interface Rendered {
  all: Array<{ kind: string; name: string; model: Model }>;
  deployments: Deployment[];
  pdbs: PodDisruptionBudget[];
  scaled: ScaledObject[];
  configMaps: ConfigMap[];
  secrets: Secret[];
  services: Service[];
}

function render(overlay: string): Rendered {
  const out = spawnSync('kubectl', ['kustomize', join(ROOT, 'deploy/overlays', overlay)], {
    encoding: 'utf8',
  });
  assert.equal(out.status, 0, `kubectl kustomize ${overlay}: ${out.stderr}`);
  const rendered: Rendered = {
    all: [],
    deployments: [],
    pdbs: [],
    scaled: [],
    configMaps: [],
    secrets: [],
    services: [],
  };
  for (const doc of parseAllDocuments(out.stdout)) {
    const obj = doc.toJS() as { apiVersion: string; kind: string; metadata: { name: string } };
    const make = MODELS[`${obj.apiVersion}/${obj.kind}`];
    assert.ok(make, `${overlay}: no schema for ${obj.apiVersion} ${obj.kind}`);
    const model = make(obj);
    rendered.all.push({ kind: obj.kind, name: obj.metadata.name, model });
    if (model instanceof Deployment) rendered.deployments.push(model);
    if (model instanceof PodDisruptionBudget) rendered.pdbs.push(model);
    if (model instanceof ScaledObject) rendered.scaled.push(model);
    if (model instanceof ConfigMap) rendered.configMaps.push(model);
    if (model instanceof Secret) rendered.secrets.push(model);
    if (model instanceof Service) rendered.services.push(model);
  }
  return rendered;
}

function must<T>(value: T | undefined | null, what: string): T {
  assert.ok(value !== undefined && value !== null, `missing: ${what}`);
  return value;
}

function deployment(r: Rendered, name: string): Deployment {
  return must(
    r.deployments.find((d) => d.metadata?.name === name),
    `Deployment ${name}`,
  );
}

function container(d: Deployment): IContainer {
  const containers = must(d.spec?.template.spec?.containers, `${d.metadata?.name} containers`);
  assert.equal(containers.length, 1, `${d.metadata?.name}: one container`);
  return must(containers[0], 'container');
}

/** Whether `selector` (matchLabels only, as the manifests use) selects pods with `labels`. */
function selects(selector: Record<string, string>, labels: Record<string, string>): boolean {
  return (
    Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels[k] === v)
  );
}

/** The variables of the rendered ConfigMap staged-detect-config, as a role would see them. */
function configEnv(r: Rendered): Record<string, string> {
  const cm = must(
    r.configMaps.find((c) => c.metadata?.name?.startsWith('staged-detect-config')),
    'ConfigMap staged-detect-config',
  );
  return must(cm.data, 'its data');
}

/** The Prometheus query of a ScaledObject's `prometheus` trigger. */
function promQuery(so: ScaledObject): string {
  const trigger = so.spec.triggers.find((t) => t.type === 'prometheus');
  return must(must(trigger, `${so.metadata?.name}: prometheus trigger`).metadata['query'], 'query');
}

/** The queues and states a queue-depth query selects (`queue=~"a|b"`, `state=~"x|y"`). */
function selectedLabels(query: string, label: string): string[] {
  const match = new RegExp(`${label}=~?"([^"]+)"`).exec(query);
  return must(match?.[1], `${label} in ${query}`).split('|').sort();
}

describe('Kubernetes manifests (deploy/)', { skip }, () => {
  test('the schemas refuse a bad object (the validation below is not a no-op)', () => {
    const bad = { metadata: { name: 'x' }, spec: { scaleTargetRef: {}, triggers: [] } };
    assert.throws(() => must(MODELS['keda.sh/v1alpha1/ScaledObject'], 'model')(bad).validate());
  });

  for (const overlay of OVERLAYS) {
    describe(`overlays/${overlay}`, () => {
      let r: Rendered;
      before(() => (r = render(overlay)));

      test('every object is valid against the Kubernetes and KEDA schemas', () => {
        assert.ok(r.all.length > 10);
        for (const { kind, name, model } of r.all) {
          assert.doesNotThrow(() => model.validate(), `${kind} ${name}`);
        }
      });

      test('a Deployment per role, running the role with the probes that mean it is healthy', () => {
        for (const role of ROLES) {
          const d = deployment(r, role);
          const c = container(d);
          assert.deepEqual(c.command, ['node', `dist/services/${role}/main.js`]);
          assert.ok(existsSync(join(ROOT, `services/${role}/main.ts`)));
          const readiness = must(c.readinessProbe, `${role} readinessProbe`);
          const liveness = must(c.livenessProbe, `${role} livenessProbe`);
          if (role === 'gateway') {
            assert.equal(readiness.httpGet?.path, '/readyz');
            assert.equal(liveness.httpGet?.path, '/healthz');
            const port = c.ports?.find((p) => p.name === readiness.httpGet?.port);
            assert.equal(port?.containerPort, Number(configEnv(r)['PORT']));
          } else {
            const check = ['node', 'dist/services/supervisor/healthcheck.js', role];
            assert.deepEqual(readiness.exec?.command, check);
            assert.deepEqual(liveness.exec?.command, check);
            // The exit-on-timeout of the check (3 s) must come before the probe's.
            assert.ok((readiness.timeoutSeconds ?? 1) > 3 && (liveness.timeoutSeconds ?? 1) > 3);
            const port = c.ports?.find((p) => p.name === 'metrics')?.containerPort;
            assert.equal(port, Number(configEnv(r)['METRICS_PORT']));
            assert.equal(
              d.spec?.template.metadata?.annotations?.['prometheus.io/port'],
              String(port),
            );
          }
          assert.equal(d.spec?.template.metadata?.annotations?.['prometheus.io/scrape'], 'true');
        }
      });

      test('every Deployment: resources, non-root, read-only root, writable dirs as emptyDir', () => {
        for (const d of r.deployments) {
          const name = d.metadata?.name ?? '?';
          const c = container(d);
          const pod = must(d.spec?.template.spec, `${name} pod spec`);
          for (const kind of ['requests', 'limits'] as const) {
            const res = must(c.resources?.[kind], `${name} resources.${kind}`);
            assert.ok(res['cpu'] !== undefined && res['memory'] !== undefined, `${name} ${kind}`);
          }
          assert.equal(pod.securityContext?.runAsNonRoot, true, name);
          assert.equal(c.securityContext?.readOnlyRootFilesystem, true, name);
          assert.equal(c.securityContext?.allowPrivilegeEscalation, false, name);
          for (const mount of c.volumeMounts ?? []) {
            const volume = pod.volumes?.find((v) => v.name === mount.name);
            assert.ok(volume?.emptyDir, `${name}: ${mount.mountPath} is an emptyDir`);
          }
          if ((ROLES as readonly string[]).includes(name)) {
            // The image's `node` user; /tmp holds fontconfig's cache (XDG_CACHE_HOME=/tmp/.cache).
            assert.equal(pod.securityContext?.runAsUser, 1000, name);
            assert.ok(
              c.volumeMounts?.some((m) => m.mountPath === '/tmp'),
              `${name}: /tmp`,
            );
          }
        }
        const infer = container(deployment(r, 'infer'));
        const cacheDir = infer.env?.find((e) => e.name === 'MODEL_CACHE_DIR')?.value;
        assert.ok(infer.volumeMounts?.some((m) => m.mountPath === cacheDir));
      });

      test('termination waits for the drain (DRAIN_TIMEOUT_MS, the preStop pause, a margin)', () => {
        const drainS = Number(configEnv(r)['DRAIN_TIMEOUT_MS']) / 1000;
        assert.ok(drainS > 0);
        for (const role of ROLES) {
          const d = deployment(r, role);
          const pause = Number(container(d).lifecycle?.preStop?.exec?.command?.[1] ?? 0);
          const grace = must(d.spec?.template.spec?.terminationGracePeriodSeconds, 'grace');
          assert.ok(grace >= drainS + pause + 5, `${role}: ${grace} s for ${drainS} + ${pause}`);
          assert.ok(grace <= drainS + pause + 20, `${role}: ${grace} s is more than needed`);
        }
      });

      test('configuration by ConfigMap, secrets by Secret; references resolve', () => {
        const config = loadConfig(configEnv(r));
        assert.equal(config.redis.prefix, 'sd');
        for (const d of r.deployments.filter((d) => ROLES.includes(d.metadata?.name as never))) {
          const refs = container(d).envFrom ?? [];
          const cm = must(refs.find((e) => e.configMapRef)?.configMapRef?.name, 'configMapRef');
          assert.ok(r.configMaps.some((c) => c.metadata?.name === cm));
          assert.equal(refs.find((e) => e.secretRef)?.secretRef?.name, SECRET);
        }
        const secret = r.secrets.find((s) => s.metadata?.name === SECRET);
        if (overlay === 'try') {
          const url = Buffer.from(must(secret?.data?.['REDIS_URL'], 'REDIS_URL'), 'base64');
          const redisUrl = new URL(url.toString());
          assert.ok(redisUrl.password, 'the in-cluster Redis has a password');
          assert.ok(r.services.some((s) => s.metadata?.name === redisUrl.hostname));
          const args = container(deployment(r, 'redis')).args ?? [];
          assert.equal(args[args.indexOf('--maxmemory-policy') + 1], 'noeviction');
        } else {
          assert.equal(secret, undefined, 'no secret in the repository for real use');
        }
      });

      test('a PodDisruptionBudget per Deployment, selecting its pods', () => {
        for (const d of r.deployments) {
          const labels = must(d.spec?.template.metadata?.labels, 'pod labels');
          const budgets = r.pdbs.filter((p) =>
            selects(p.spec?.selector?.matchLabels ?? {}, labels),
          );
          assert.equal(budgets.length, 1, `${d.metadata?.name}: one PodDisruptionBudget`);
        }
        for (const p of r.pdbs) {
          const selector = p.spec?.selector?.matchLabels ?? {};
          assert.ok(
            r.deployments.some((d) => selects(selector, d.spec?.template.metadata?.labels ?? {})),
            `PodDisruptionBudget ${p.metadata?.name} selects pods`,
          );
        }
      });

      test('the gateway Service selects the gateway pods on its port', () => {
        const svc = must(
          r.services.find((s) => s.metadata?.name === 'gateway'),
          'Service gateway',
        );
        const gw = deployment(r, 'gateway');
        assert.ok(selects(svc.spec?.selector ?? {}, gw.spec?.template.metadata?.labels ?? {}));
        assert.ok(container(gw).ports?.some((p) => p.name === svc.spec?.ports?.[0]?.targetPort));
      });

      test('KEDA scales pre, post and the gateway by name, never infer', () => {
        const targets = r.scaled.map((s) => s.spec.scaleTargetRef.name).sort();
        assert.deepEqual(targets, ['gateway', 'post', 'pre']);
        for (const so of r.scaled) {
          const d = deployment(r, so.spec.scaleTargetRef.name);
          assert.equal(so.spec.scaleTargetRef.kind ?? 'Deployment', 'Deployment');
          assert.equal(d.spec?.replicas, undefined, `${d.metadata?.name}: replicas left to KEDA`);
          const min = must(so.spec.minReplicaCount, 'minReplicaCount');
          assert.ok(min >= 1 && min < must(so.spec.maxReplicaCount, 'maxReplicaCount'));
          assert.ok(so.spec.advanced?.horizontalPodAutoscalerConfig?.behavior?.scaleDown);
        }
        // Work waiting, not CPU: the workers' only trigger is their queues' backlog.
        for (const role of ['pre', 'post']) {
          const so = must(
            r.scaled.find((s) => s.spec.scaleTargetRef.name === role),
            role,
          );
          assert.deepEqual(
            so.spec.triggers.map((t) => t.type),
            ['prometheus'],
          );
          assert.deepEqual(selectedLabels(promQuery(so), 'state'), [...WAITING_STATES].sort());
          assert.match(promQuery(so), /^sum\(max by \(queue, state\) \(sd_queue_jobs\{/);
        }
        const queues = (role: string) =>
          selectedLabels(
            promQuery(
              must(
                r.scaled.find((s) => s.spec.scaleTargetRef.name === role),
                role,
              ),
            ),
            'queue',
          );
        // `pre` processes serve the fetch queue too (services/pre/main.ts).
        assert.deepEqual(queues('pre'), ['fetch', 'pre']);
        assert.deepEqual(queues('post'), ['post']);
        const gateway = must(
          r.scaled.find((s) => s.spec.scaleTargetRef.name === 'gateway'),
          'gateway',
        );
        assert.match(promQuery(gateway), /sd_http_requests_in_flight\{/);
      });

      test(`infer: ${overlay === 'gpu' ? 'one GPU per replica on GPU nodes' : 'on CPU'}`, () => {
        const d = deployment(r, 'infer');
        const c = container(d);
        const provider = c.env?.find((e) => e.name === 'EXECUTION_PROVIDER')?.value;
        if (overlay === 'gpu') {
          assert.equal(c.image?.split(':')[0], 'staged-detect-gpu');
          assert.equal(provider, 'cuda');
          assert.equal(String(c.resources?.limits?.['nvidia.com/gpu']), '1');
          assert.ok(Object.keys(d.spec?.template.spec?.nodeSelector ?? {}).length > 0);
          assert.ok(d.spec?.template.spec?.tolerations?.some((t) => t.key === 'nvidia.com/gpu'));
          // CUDA's kernel cache must land in a writable dir.
          const cache = c.env?.find((e) => e.name === 'CUDA_CACHE_PATH')?.value ?? '';
          assert.ok(cache.startsWith('/tmp/'));
        } else {
          assert.equal(c.image?.split(':')[0], 'staged-detect');
          assert.equal(provider, 'cpu');
          assert.equal(c.resources?.limits?.['nvidia.com/gpu'], undefined);
        }
        for (const role of ['gateway', 'pre', 'post']) {
          assert.equal(container(deployment(r, role)).image?.split(':')[0], 'staged-detect');
        }
      });

      test('the Grafana dashboard ConfigMap holds docker/grafana/dashboards/staged-detect.json', () => {
        const cm = must(
          r.configMaps.find((c) => c.metadata?.name === 'staged-detect-grafana-dashboard'),
          'dashboard ConfigMap',
        );
        const file = readFileSync(join(ROOT, 'docker/grafana/dashboards/staged-detect.json'));
        assert.equal(cm.data?.['staged-detect.json'], file.toString());
      });
    });
  }
});

describe('queue-depth autoscaling: what BullMQ writes and the gauge reports', () => {
  let server: Awaited<ReturnType<typeof startRedisServer>>;
  let client: Redis;
  const prefix = `k8s-${process.pid}`;

  before(async () => {
    server = await startRedisServer();
    client = new Redis(server.url, { maxRetriesPerRequest: 1 });
  });
  after(async () => {
    client.disconnect();
    await stopProcess(server.process);
  });

  test('waiting work sits in a list and two sorted sets; the gauge and admission count all of it', async () => {
    const queue = createQueue('pre', client, prefix);
    const add = (id: string, opts: { priority?: number; delay?: number }) =>
      queue.add('pre', {} as never, { jobId: id, ...opts });
    await add('plain', {});
    await add('urgent', { priority: 1 });
    await add('later', { delay: 60_000 });
    // The keys and types the README and the ScaledObjects' comments name (BullMQ 6).
    assert.equal(await client.type(`${prefix}:pre:wait`), 'list');
    assert.equal(await client.type(`${prefix}:pre:prioritized`), 'zset');
    assert.equal(await client.type(`${prefix}:pre:delayed`), 'zset');
    assert.equal(await client.llen(`${prefix}:pre:wait`), 1);
    assert.equal(await client.zcard(`${prefix}:pre:prioritized`), 1);
    assert.equal(await client.zcard(`${prefix}:pre:delayed`), 1);

    const registry = new Registry();
    registerQueueGauge(registry, [queue]);
    const text = await registry.metrics();
    for (const state of WAITING_STATES) {
      assert.match(text, new RegExp(`^sd_queue_jobs\\{queue="pre",state="${state}"\\} 1$`, 'm'));
    }

    const monitor = new StoreMonitor(client, queue, [queue], createLogger('test', 'silent'));
    try {
      await new Promise((resolve) => setTimeout(resolve, 600));
      // Synchronous admission counts what waits ahead of a synchronous image (no priority);
      // asynchronous admission the prioritized jobs (only asynchronous images have one).
      assert.equal(monitor.current.backlog, 2, 'synchronous backlog: waiting and delayed');
      assert.equal(monitor.current.asyncBacklog, 1, 'asynchronous backlog: prioritized');
    } finally {
      monitor.close();
      await queue.obliterate({ force: true });
      await queue.close();
    }
  });
});
