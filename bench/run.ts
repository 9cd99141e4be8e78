import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { measureAccuracy } from './accuracy.js';
import type { LimitResult } from './limit.js';
import { measureSystem, postOnce, runScript } from './measure.js';
import type { ModelAloneResult } from './model-alone.js';
import { round } from './proc-stats.js';
import { countRedisCommands } from './redis-commands.js';
import { formatReport } from './report.js';
import type { BenchResult, ReferenceResult, WorkloadResult } from './result.js';
import type { StageTimings } from './stages.js';
import { parseEnv, ROOT, startPipeline, startStandard } from './systems.js';
import { computeTargets } from './targets.js';
import {
  BUS_JPG,
  COCO128_IMAGES,
  DEFAULT_WORKLOADS,
  jsonBodies,
  loadImages,
  workload,
  WORKLOADS,
  type Workload,
  type WorkloadName,
} from './workloads.js';

/**
 * `npm run bench`: on one machine, in one run, the targets of issue 14 and the numbers behind
 * them (bench/README.md explains each):
 *  - yolov8n on COCO128 at 8 clients (and 1): the pipeline, the fixed in-process reference
 *    (reference.ts) and the model alone (model-alone.ts);
 *  - bus.jpg one request at a time through the pipeline (added latency);
 *  - the null model on small JPEGs: the pipeline and the in-process limit (limit.ts);
 *  - Redis commands per image (MONITOR) and coco128 mAP through the running pipeline;
 * then the tables and the target table on stdout, bench/results/latest.{json,txt}. Progress
 * goes to stderr. A/B comparisons of two checkouts or settings: bench/ab.ts.
 */
const HELP = `usage: npm run bench -- [options]
  --duration <s>        seconds measured per load step (default 10; --quick 3)
  --warmup <s>          least seconds of unmeasured load before each step (default 3; --quick 1)
  --concurrency <list>  client connections per step, for every workload but bus
                        (default: yolov8n 8,1; null 8,32; tiny 8,32; --quick: 8 and 16)
  --workloads <list>    yolov8n,bus,null,tiny (default yolov8n,bus,null)
  --systems <list>      reference,limit,standard,pipeline,model (default reference,limit,pipeline,model;
                        reference runs for yolov8n only, and limit by default for null only)
  --model-batches <l>   batch sizes of the model alone (default 1,2,...,8; --quick 1,2,4,8)
  --pre <n>             NUM_PRE_WORKERS of the pipeline (default: unset, the supervisor's default)
  --post <n>            NUM_POST_WORKERS of the pipeline (default: unset, the supervisor's default)
  --env <K=V,...>       more environment for the pipeline and the model alone (e.g. MAX_BATCH_DELAY_MS=0)
  --root <dir>          checkout whose pipeline runs (default: this one)
  --requests <n>        sequential bus.jpg requests of the Redis MONITOR phase (default 20)
  --no-redis            skip the Redis MONITOR phase
  --no-accuracy         skip the coco128 mAP through the pipeline
  --no-stages           skip the single-stage timings
  --out <dir>           where latest.json and latest.txt go (default bench/results)
  --profile <dir>       a V8 CPU profile of every process of the standard server and the pipeline
                        (bench/cpu-profile.ts; summarise with bench/profile-summary.ts)
  --quick               a short run to try the harness
  --help`;

const { values: args } = parseArgs({
  options: {
    duration: { type: 'string' },
    warmup: { type: 'string' },
    concurrency: { type: 'string' },
    workloads: { type: 'string' },
    systems: { type: 'string' },
    'model-batches': { type: 'string' },
    pre: { type: 'string' },
    post: { type: 'string' },
    env: { type: 'string' },
    root: { type: 'string' },
    requests: { type: 'string' },
    'no-redis': { type: 'boolean', default: false },
    'no-accuracy': { type: 'boolean', default: false },
    'no-stages': { type: 'boolean', default: false },
    out: { type: 'string' },
    profile: { type: 'string' },
    quick: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});
if (args.help) {
  process.stdout.write(`${HELP}\n`);
  process.exit(0);
}
const list = (v: string | undefined) => (v ?? '').split(',').filter(Boolean);
const quick = args.quick;
const systems = list(args.systems ?? 'reference,limit,pipeline,model');
const options = {
  durationSeconds: Number(args.duration ?? (quick ? 3 : 10)),
  warmupSeconds: Number(args.warmup ?? (quick ? 1 : 3)),
  concurrency: args.concurrency ? list(args.concurrency).map(Number) : undefined,
  workloads: list(args.workloads ?? DEFAULT_WORKLOADS.join(',')) as WorkloadName[],
  systems,
  modelBatches: list(args['model-batches'] ?? (quick ? '1,2,4,8' : '1,2,3,4,5,6,7,8')).map(Number),
  preProcesses: args.pre === undefined ? undefined : Number(args.pre),
  postProcesses: args.post === undefined ? undefined : Number(args.post),
  env: parseEnv(args.env),
  root: args.root ?? ROOT,
  redisRequests: Number(args.requests ?? 20),
  redis: !args['no-redis'],
  accuracy: !args['no-accuracy'],
  stages: !args['no-stages'],
  profileDir: args.profile,
};
for (const w of options.workloads)
  if (!WORKLOADS.includes(w)) throw new Error(`unknown workload ${w} (${WORKLOADS.join(', ')})`);
const profileEnv: Record<string, string> = options.profileDir
  ? {
      NODE_OPTIONS: `--import ${import.meta.resolve('tsx')} --import ${fileURLToPath(new URL('cpu-profile.ts', import.meta.url))}`,
      CPU_PROFILE_DIR: options.profileDir,
    }
  : {};
const outDir = args.out ?? fileURLToPath(new URL('results', import.meta.url));
const progress = (line: string) => process.stderr.write(`${line}\n`);

function concurrencyOf(wl: Workload): number[] {
  if (wl.fixedConcurrency || !options.concurrency)
    return quick ? wl.concurrency.quick : wl.concurrency.normal;
  return options.concurrency;
}

/** Whether `system` runs for `wl`: reference for yolov8n only; limit for null unless asked. */
function runs(system: string, wl: Workload): boolean {
  if (!systems.includes(system)) return false;
  if (system === 'reference') return wl.name === 'yolov8n';
  if (system === 'limit') return args.systems !== undefined || wl.name === 'null';
  return true;
}

/** Workloads grouped by model, so one pipeline (and one model alone) serves each model. */
function byModel(names: readonly WorkloadName[]): Map<string, Workload[]> {
  const groups = new Map<string, Workload[]>();
  for (const name of names) {
    const wl = workload(name);
    const key = name === 'bus' ? 'yolov8n' : name;
    groups.set(key, [...(groups.get(key) ?? []), wl]);
  }
  return groups;
}

async function main(): Promise<void> {
  const startedAt = new Date().toISOString();
  const result: BenchResult = {
    startedAt,
    finishedAt: startedAt,
    machine: {
      cores: cpus().length,
      cpu: cpus()[0]?.model ?? 'unknown',
      loadAverageAtStart: loadavg().map((v) => round(v)),
      node: process.version,
    },
    options,
    modelAlone: {},
    workloads: {},
    redisCommands: {},
    targets: [],
  };
  progress(
    `bench: ${result.machine.cores} cores (${result.machine.cpu}), load average ${result.machine.loadAverageAtStart.join(' ')}`,
  );
  if (options.stages) {
    progress('single stages: pre of bus.jpg, post of one yolov8n output …');
    result.stages = await runScript<StageTimings>('stages.ts', [quick ? '30' : '100']);
  }
  const busBody = jsonBodies([readFileSync(BUS_JPG)], 0.25)[0]!;
  for (const [model, group] of byModel(options.workloads)) {
    const first = group[0]!;
    if (systems.includes('model')) {
      progress(`\nmodel alone: ${model}`);
      result.modelAlone[model] = await runScript<ModelAloneResult>(
        'model-alone.ts',
        [
          first.modelPath ?? '',
          options.modelBatches.join(','),
          String(quick ? 1 : Math.max(2, options.durationSeconds / 4)),
        ],
        { ...process.env, ...options.env },
      );
    }
    const bodies = new Map<WorkloadName, Buffer[]>();
    for (const wl of group) {
      progress(`\n${wl.name}: ${wl.describe}`);
      bodies.set(wl.name, jsonBodies(await loadImages(wl.name), wl.confidence));
      const r: WorkloadResult = { describe: wl.describe };
      result.workloads[wl.name] = r;
      if (runs('reference', wl)) {
        progress(' fixed in-process reference');
        r.reference = await runScript<ReferenceResult>('reference.ts', [
          wl.modelPath!,
          COCO128_IMAGES,
          String(options.durationSeconds),
          String(options.warmupSeconds),
        ]);
        progress(
          `  reference: ${r.reference.imagesPerSecond} images/s, ${r.reference.cpuMsPerImage} CPU ms/image`,
        );
      }
      if (runs('limit', wl)) {
        progress(' in-process limit');
        r.limit = await runScript<LimitResult>('limit.ts', [
          wl.name,
          String(options.durationSeconds),
          concurrencyOf(wl).join(','),
          '8',
          String(options.warmupSeconds),
        ]);
      }
      if (runs('standard', wl)) {
        progress(' standard deployment (one fastify process, inline)');
        const sut = await startStandard(wl, profileEnv);
        try {
          r.standard = await measureSystem(
            'standard',
            sut,
            bodies.get(wl.name)!,
            concurrencyOf(wl),
            { ...options, minAnswers: wl.minAnswers },
          );
        } finally {
          await sut.stop();
        }
      }
    }
    if (!systems.includes('pipeline')) continue;
    progress(`\npipeline (npm start from ${options.root}), ${model} model`);
    const sut = await startPipeline(first, {
      root: options.root,
      preProcesses: options.preProcesses,
      postProcesses: options.postProcesses,
      env: { ...options.env, ...profileEnv },
    });
    try {
      progress(`  processes: ${[...sut.processes.keys()].join(', ')}`);
      for (const wl of group) {
        result.workloads[wl.name]!.pipeline = await measureSystem(
          `pipeline ${wl.name}`,
          sut,
          bodies.get(wl.name)!,
          concurrencyOf(wl),
          { ...options, minAnswers: wl.minAnswers },
        );
      }
      if (options.redis && sut.redisUrl) {
        progress(`  Redis commands: MONITOR over ${options.redisRequests} sequential bus.jpg …`);
        const c = await countRedisCommands(
          sut.redisUrl,
          () => postOnce(sut.url, busBody),
          options.redisRequests,
          quick ? 3 : 10,
        );
        result.redisCommands[model] = c;
        progress(
          `  ${c.sentPerImage} commands sent per image, ${c.scriptsPerImage} scripts, ${c.inScriptsPerImage} inside scripts`,
        );
      }
      if (options.accuracy && model === 'yolov8n') {
        progress('  accuracy: the 128 COCO128 images, one at a time …');
        result.accuracy = await measureAccuracy(sut.url);
        progress(`  mAP50 ${result.accuracy.map50}, mAP50-95 ${result.accuracy.map50to95}`);
      }
    } finally {
      await sut.stop();
    }
  }
  result.finishedAt = new Date().toISOString();
  result.targets = computeTargets(result);
  const report = formatReport(result);
  mkdirSync(outDir, { recursive: true });
  writeFileSync(`${outDir}/latest.json`, `${JSON.stringify(result, null, 2)}\n`);
  writeFileSync(`${outDir}/latest.txt`, report);
  rmSync(`${outDir}/latest.svg`, { force: true });
  process.stdout.write(report);
  progress(`\nwrote ${outDir}/latest.json and ${outDir}/latest.txt`);
}

await main();
process.exit(0);
