import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { measureSystem, perImage, postOnce, runScript } from './measure.js';
import type { ModelAloneResult } from './model-alone.js';
import { round } from './proc-stats.js';
import { countRedisCommands } from './redis-commands.js';
import { describeMachine } from './report.js';
import { parseEnv, ROOT, startPipeline } from './systems.js';
import { closestBatch } from './targets.js';
import {
  BUS_JPG,
  jsonBodies,
  loadImages,
  workload,
  WORKLOADS,
  type WorkloadName,
} from './workloads.js';

/**
 * A/B comparison of the pipeline: two checkouts (each with its node_modules, e.g. a
 * `git worktree` of the commit before a change, and the current tree), or one checkout with two
 * environments, run in alternation (A B A B …) on one workload and concurrency, so that the
 * machine's drift hits both sides alike. Each run starts the pipeline afresh (`npm start`'s
 * defaults plus the side's environment), measures one load step and, unless --no-redis, the
 * Redis commands per image (MONITOR phase), then stops it. The model alone is measured once
 * per side (with this checkout's session options and the side's environment) for the CPU
 * outside the model and the added latency. Prints every run and the medians of each side.
 */
const HELP = `usage: npm run bench:ab -- [options]
  --ab <dirA>,<dirB>    two checkouts to compare (default: this one for both)
  --ab-env-a <K=V,...>  environment of side A (default none)
  --ab-env-b <K=V,...>  environment of side B (default none)
  --pairs <n>           A B pairs (default 3)
  --workload <name>     yolov8n, bus, null or tiny (default yolov8n)
  --concurrency <n>     client connections (default 8; bus: 1)
  --duration <s>        seconds measured per run (default 10)
  --warmup <s>          least seconds of unmeasured load before it (default 3)
  --no-redis            skip the Redis commands per image
  --out <dir>           where ab-latest.json and ab-latest.txt go (default bench/results)
  --help`;

const { values: args } = parseArgs({
  options: {
    ab: { type: 'string' },
    'ab-env-a': { type: 'string' },
    'ab-env-b': { type: 'string' },
    pairs: { type: 'string', default: '3' },
    workload: { type: 'string', default: 'yolov8n' },
    concurrency: { type: 'string' },
    duration: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '3' },
    'no-redis': { type: 'boolean', default: false },
    out: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});
if (args.help) {
  process.stdout.write(`${HELP}\n`);
  process.exit(0);
}
const name = args.workload as WorkloadName;
if (!WORKLOADS.includes(name)) throw new Error(`unknown workload ${name}`);
const wl = workload(name);
const [rootA = ROOT, rootB = ROOT] = (args.ab ?? '')
  .split(',')
  .filter(Boolean)
  .map((d) => resolve(d));
const sides = [
  { label: 'A', root: rootA, env: parseEnv(args['ab-env-a']) },
  { label: 'B', root: rootB, env: parseEnv(args['ab-env-b']) },
] as const;
const connections = wl.fixedConcurrency ? 1 : Number(args.concurrency ?? 8);
const load = {
  durationSeconds: Number(args.duration),
  warmupSeconds: Number(args.warmup),
  minAnswers: wl.minAnswers,
};
const pairs = Number(args.pairs);
const outDir = args.out ?? fileURLToPath(new URL('results', import.meta.url));
const progress = (line: string) => process.stderr.write(`${line}\n`);

interface AbRun {
  side: 'A' | 'B';
  imagesPerSecond: number;
  p50Ms: number;
  cpuMsPerImage: number | null;
  /** CPU ms per image minus the side's model alone at the batch closest to the mean batch. */
  cpuOutsideModelMs: number | null;
  /** p50 minus the side's model alone p50 at batch 1 (one client only). */
  addedLatencyMs: number | null;
  meanBatchSize: number | null;
  redisSentPerImage: number | null;
  redisScriptsPerImage: number | null;
  redisInScriptsPerImage: number | null;
  /** CPU ms per answered image of each process of the pipeline (supervisor, Redis, each role). */
  cpuMsPerImageByProcess: Record<string, number>;
}

const METRICS = [
  'imagesPerSecond',
  'p50Ms',
  'cpuMsPerImage',
  'cpuOutsideModelMs',
  'addedLatencyMs',
  'meanBatchSize',
  'redisSentPerImage',
  'redisScriptsPerImage',
  'redisInScriptsPerImage',
] as const satisfies ReadonlyArray<keyof AbRun>;

function median(values: number[]): number | null {
  if (values.length === 0) return null;
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return round(s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2, 2);
}

async function main(): Promise<void> {
  const startedAt = new Date().toISOString();
  const machine = {
    cores: cpus().length,
    cpu: cpus()[0]?.model ?? 'unknown',
    loadAverageAtStart: loadavg().map((v) => round(v)),
    node: process.version,
  };
  const bodies = jsonBodies(await loadImages(name), wl.confidence);
  const busBody = jsonBodies([readFileSync(BUS_JPG)], 0.25)[0]!;
  // Once per distinct environment: the sides' model alone differs only by their environment.
  const models = new Map<string, ModelAloneResult>();
  const byEnv = new Map<string, ModelAloneResult>();
  for (const side of sides) {
    const key = JSON.stringify(side.env);
    let model = byEnv.get(key);
    if (!model) {
      progress(`model alone for side ${side.label} (${key})`);
      model = await runScript<ModelAloneResult>(
        'model-alone.ts',
        [wl.modelPath ?? '', '1,2,3,4,5,6,7,8', '1.5'],
        { ...process.env, ...side.env },
      );
      byEnv.set(key, model);
    }
    models.set(side.label, model);
  }
  const runs: AbRun[] = [];
  for (let pair = 1; pair <= pairs; pair++) {
    for (const side of sides) {
      progress(`\npair ${pair}, side ${side.label}: ${side.root} ${JSON.stringify(side.env)}`);
      const sut = await startPipeline(wl, { root: side.root, env: side.env });
      try {
        const [step] = (
          await measureSystem(`${side.label} ${name}`, sut, bodies, [connections], load)
        ).steps;
        if (!step) throw new Error('no step measured');
        const batches = models.get(side.label)!.batches;
        const model = closestBatch(batches, step.pipeline?.meanBatchSize ?? 1);
        const one = batches.find((b) => b.batchSize === 1);
        const redis =
          !args['no-redis'] && sut.redisUrl
            ? await countRedisCommands(sut.redisUrl, () => postOnce(sut.url, busBody), 20, 5)
            : undefined;
        runs.push({
          side: side.label,
          imagesPerSecond: step.imagesPerSecond,
          p50Ms: step.latencyMs.p50,
          cpuMsPerImage: step.cpuMsPerImage,
          cpuOutsideModelMs:
            model && step.cpuMsPerImage !== null
              ? round(step.cpuMsPerImage - model.cpuMsPerImage, 1)
              : null,
          addedLatencyMs:
            one && connections === 1 ? round(step.latencyMs.p50 - one.wallMsP50, 1) : null,
          meanBatchSize: step.pipeline?.meanBatchSize ?? null,
          redisSentPerImage: redis?.sentPerImage ?? null,
          redisScriptsPerImage: redis?.scriptsPerImage ?? null,
          redisInScriptsPerImage: redis?.inScriptsPerImage ?? null,
          cpuMsPerImageByProcess: Object.fromEntries(
            Object.entries(step.cpuCoresByProcess).map(([proc, cores]) => [
              proc,
              perImage(cores, step.imagesPerSecond, 2) ?? 0,
            ]),
          ),
        });
      } finally {
        await sut.stop();
      }
    }
  }
  const medians = Object.fromEntries(
    sides.map((s) => [
      s.label,
      Object.fromEntries(
        METRICS.map((m) => [
          m,
          median(
            runs.filter((r) => r.side === s.label).flatMap((r) => (r[m] === null ? [] : [r[m]])),
          ),
        ]),
      ),
    ]),
  ) as Record<'A' | 'B', Record<(typeof METRICS)[number], number | null>>;

  const lines = [describeMachine(startedAt, machine)];
  lines.push(
    `A/B, ${name} at c=${connections}, ${pairs} pairs, ${load.durationSeconds} s windows`,
    ...sides.map(
      (s) =>
        `  ${s.label}: ${s.root} ${JSON.stringify(s.env)}; model alone: ${models.get(s.label)!.sessionOptions}`,
    ),
    '',
  );
  const w = [6, 10, 8, 11, 12, 9, 7, 9, 9, 11];
  const head = [
    'run',
    'images/s',
    'p50 ms',
    'CPU ms/img',
    'outside ms',
    'added ms',
    'batch',
    'redis/img',
    'scripts',
    'in scripts',
  ];
  const fmt = (cells: Array<string | number | null>) =>
    cells.map((c, i) => String(c ?? '-').padStart(w[i] ?? 8)).join(' ');
  lines.push(fmt(head));
  runs.forEach((r, i) =>
    lines.push(fmt([`${r.side}${Math.floor(i / 2) + 1}`, ...METRICS.map((m) => r[m])])),
  );
  for (const s of sides)
    lines.push(fmt([`med ${s.label}`, ...METRICS.map((m) => medians[s.label][m])]));
  const ratio = (m: (typeof METRICS)[number]) => {
    const a = medians.A[m];
    const b = medians.B[m];
    return a && b !== null ? round(b / a, 3) : null;
  };
  lines.push(fmt(['B/A', ...METRICS.map(ratio)]));
  // A process's CPU moves less from run to run than the whole pipeline's: a change to one role
  // shows here first.
  lines.push('', 'CPU ms per image by process');
  const processes = [...new Set(runs.flatMap((r) => Object.keys(r.cpuMsPerImageByProcess)))];
  const byProcess = (rs: AbRun[]) =>
    processes
      .map((p) => `${p} ${median(rs.flatMap((r) => r.cpuMsPerImageByProcess[p] ?? []))}`)
      .join(', ');
  runs.forEach((r, i) => lines.push(`  ${r.side}${Math.floor(i / 2) + 1}: ${byProcess([r])}`));
  for (const s of sides)
    lines.push(`  med ${s.label}: ${byProcess(runs.filter((r) => r.side === s.label))}`);
  const report = `${lines.join('\n')}\n`;
  mkdirSync(outDir, { recursive: true });
  writeFileSync(
    `${outDir}/ab-latest.json`,
    `${JSON.stringify({ startedAt, machine, workload: name, connections, load, sides, models: Object.fromEntries(models), runs, medians }, null, 2)}\n`,
  );
  writeFileSync(`${outDir}/ab-latest.txt`, report);
  process.stdout.write(report);
  progress(`\nwrote ${outDir}/ab-latest.json and ${outDir}/ab-latest.txt`);
}

await main();
process.exit(0);
