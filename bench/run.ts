import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { renderChart } from './chart.js';
import type { LimitResult } from './limit.js';
import { runLoad, type LoadStep } from './load.js';
import { CpuMeter, round } from './proc-stats.js';
import { histogramMean, scrape, total, type Sample } from './prom.js';
import type { StageTimings } from './stages.js';
import {
  redisNetBytes,
  startPipeline,
  startStandard,
  type RedisBytes,
  type SystemUnderTest,
} from './systems.js';
import { jsonBodies, loadImages, workload, WORKLOADS, type WorkloadName } from './workloads.js';

/**
 * `npm run bench`: on one machine, in one run, the same images and model through
 *  1. the in-process limit (limit.ts) and the model alone,
 *  2. the standard deployment (standard-server.ts: fastify, everything inline),
 *  3. the pipeline (`npm start`: supervisor, roles, a private Redis), over HTTP,
 * at each client concurrency; then the table on stdout, bench/results/latest.json and
 * bench/results/latest.svg. Progress goes to stderr. See bench/README.md.
 */
const HELP = `usage: npm run bench -- [options]
  --duration <s>        seconds measured per load step (default 10; --quick 3)
  --warmup <s>          seconds of unmeasured load before each step (default 3; --quick 1)
  --concurrency <list>  client connections per step (default 1,4,16,64; --quick 1,16)
  --workloads <list>    yolov8n,tiny (default both)
  --systems <list>      limit,standard,pipeline (default all three)
  --pre <n>             pre processes of the pipeline (default: half the cores, at least 1)
  --post <n>            post processes of the pipeline (default: a quarter of the cores, at least 1)
  --out <dir>           where results go (default bench/results)
  --profile <dir>       write a V8 CPU profile of every process of the standard server and the
                        pipeline into <dir> (V8 profiler, bench/cpu-profile.ts; summarise with bench/profile-summary.ts)
  --no-stages           skip the single-stage timings (pre of bus.jpg, post of one output)
  --quick               a short run to try the harness
  --help`;

const { values: args } = parseArgs({
  options: {
    duration: { type: 'string' },
    warmup: { type: 'string' },
    concurrency: { type: 'string' },
    workloads: { type: 'string' },
    systems: { type: 'string' },
    pre: { type: 'string' },
    post: { type: 'string' },
    out: { type: 'string' },
    profile: { type: 'string' },
    'no-stages': { type: 'boolean', default: false },
    quick: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});
if (args.help) {
  process.stdout.write(`${HELP}\n`);
  process.exit(0);
}
const list = (v: string | undefined, def: string) => (v ?? def).split(',').filter(Boolean);
const cores = cpus().length;
const options = {
  durationSeconds: Number(args.duration ?? (args.quick ? 3 : 10)),
  warmupSeconds: Number(args.warmup ?? (args.quick ? 1 : 3)),
  concurrency: list(args.concurrency, args.quick ? '1,16' : '1,4,16,64').map(Number),
  workloads: list(args.workloads, WORKLOADS.join(',')) as WorkloadName[],
  systems: list(args.systems, 'limit,standard,pipeline'),
  preProcesses: Number(args.pre ?? Math.max(1, Math.floor(cores / 2))),
  postProcesses: Number(args.post ?? Math.max(1, Math.floor(cores / 4))),
  stages: !args['no-stages'],
  profileDir: args.profile,
};
const profileEnv: Record<string, string> = options.profileDir
  ? {
      NODE_OPTIONS: `--import ${import.meta.resolve('tsx')} --import ${fileURLToPath(new URL('cpu-profile.ts', import.meta.url))}`,
      CPU_PROFILE_DIR: options.profileDir,
    }
  : {};
const outDir = args.out ?? fileURLToPath(new URL('results', import.meta.url));
const progress = (line: string) => process.stderr.write(`${line}\n`);

export interface SystemStep extends LoadStep {
  /** Images per second (one image per request). */
  imagesPerSecond: number;
  /** CPU seconds per wall second, all processes of the system together. */
  cpuCores: number;
  cpuCoresByProcess: Record<string, number>;
  /** Largest resident size of each process during the step, MiB. */
  rssMiBUnderLoad: Record<string, number>;
  /** The load generator's own CPU (it shares the machine). */
  loadGeneratorCpuCores: number;
  pipeline?: PipelineDetail;
}

export interface PipelineDetail {
  /** Mean ms an image waited in each queue (added → started). */
  queueWaitMs: Record<string, number | null>;
  /** Mean ms each stage spent on one image (infer: waiting for its batch and the run). */
  stageMs: Record<string, number | null>;
  meanBatchSize: number | null;
  /** Per model execution, ms. */
  inferRunMs: number | null;
  inferPrepareMs: number | null;
  inferDecodeMs: number | null;
  /** Redis bytes received and sent per answered image. */
  redisBytesInPerImage: number;
  redisBytesOutPerImage: number;
}

export interface SystemResult {
  rssMiBAtRest: Record<string, number>;
  steps: SystemStep[];
}

export interface WorkloadResult {
  describe: string;
  limit?: LimitResult;
  standard?: SystemResult;
  pipeline?: SystemResult;
  ratios: {
    pipelineOverLimit: number | null;
    pipelineOverStandard: number | null;
    p50AtConcurrency1PipelineOverStandard: number | null;
  };
}

export interface BenchResult {
  startedAt: string;
  finishedAt: string;
  machine: { cores: number; cpu: string; loadAverageAtStart: number[]; node: string };
  options: typeof options;
  stages?: StageTimings;
  workloads: Partial<Record<WorkloadName, WorkloadResult>>;
}

/** Runs a bench script in its own process and parses the JSON it prints. */
function runScript<T>(script: string, argv: string[]): Promise<T> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [
        '--import',
        import.meta.resolve('tsx'),
        fileURLToPath(new URL(script, import.meta.url)),
        ...argv,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.once('exit', (code) => {
      if (code !== 0) return reject(new Error(`${script} exited with code ${code}`));
      try {
        resolve(JSON.parse(out.trim().split('\n').pop()!) as T);
      } catch (err) {
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    });
  });
}

async function measureSystem(
  name: string,
  sut: SystemUnderTest,
  bodies: Buffer[],
): Promise<SystemResult> {
  const meter = new CpuMeter(sut.processes);
  const rssMiBAtRest = meter.rssMiB();
  const self = new CpuMeter(new Map([['load generator', process.pid]]));
  const steps: SystemStep[] = [];
  for (const connections of options.concurrency) {
    const rssMax: Record<string, number> = {};
    let sampler: NodeJS.Timeout | undefined;
    let before: Promise<Sample[]> = Promise.resolve([]);
    let after: Promise<Sample[]> = Promise.resolve([]);
    let redisBefore: Promise<RedisBytes> | undefined;
    let redisAfter: Promise<RedisBytes> | undefined;
    const used: { cpu?: ReturnType<CpuMeter['end']>; own?: ReturnType<CpuMeter['end']> } = {};
    const load = await runLoad(
      sut.url,
      bodies,
      connections,
      {
        warmupSeconds: options.warmupSeconds,
        seconds: options.durationSeconds,
        onOpen: () => {
          before = scrape(sut.metricsUrls);
          if (sut.redis) redisBefore = redisNetBytes(sut.redis);
          meter.begin();
          self.begin();
          sampler = setInterval(() => {
            for (const [p, v] of Object.entries(meter.rssMiB()))
              rssMax[p] = Math.max(rssMax[p] ?? 0, v);
          }, 500);
        },
        onClose: () => {
          used.cpu = meter.end();
          used.own = self.end();
          clearInterval(sampler);
          after = scrape(sut.metricsUrls);
          if (sut.redis) redisAfter = redisNetBytes(sut.redis);
        },
      },
      `${name} c=${connections}`,
    );
    const { cpu, own } = used;
    if (!cpu || !own) throw new Error('the measured window never closed');
    const step: SystemStep = {
      ...load,
      imagesPerSecond: load.requestsPerSecond,
      cpuCores: round(cpu.totalCpuSeconds / cpu.wallSeconds),
      cpuCoresByProcess: Object.fromEntries(
        Object.entries(cpu.cpuSeconds).map(([p, s]) => [p, round(s / cpu.wallSeconds)]),
      ),
      rssMiBUnderLoad: rssMax,
      loadGeneratorCpuCores: round(own.totalCpuSeconds / own.wallSeconds),
    };
    if (redisBefore && redisAfter) {
      step.pipeline = pipelineDetail(
        await before,
        await after,
        await redisBefore,
        await redisAfter,
        load.ok,
      );
    }
    steps.push(step);
    progress(
      `  ${name} c=${connections}: ${step.imagesPerSecond} images/s, p50 ${step.latencyMs.p50} ms, ` +
        `p99 ${step.latencyMs.p99} ms, ${step.cpuCores} cores` +
        (load.non2xx + load.errors > 0 ? `, ${load.non2xx} non-2xx, ${load.errors} errors` : ''),
    );
  }
  return { rssMiBAtRest, steps };
}

function pipelineDetail(
  before: Sample[],
  after: Sample[],
  redisBefore: RedisBytes,
  redisAfter: RedisBytes,
  images: number,
): PipelineDetail {
  const ms = (v: number | null) => (v === null ? null : round(v * 1000));
  const perStage = (metric: string) =>
    Object.fromEntries(
      ['pre', 'infer', 'post'].map((stage) => [
        stage,
        ms(histogramMean(before, after, metric, { stage })),
      ]),
    );
  const executions =
    total(after, 'sd_inference_executions_total') - total(before, 'sd_inference_executions_total');
  const inferred =
    total(after, 'sd_inference_images_total') - total(before, 'sd_inference_images_total');
  return {
    queueWaitMs: perStage('sd_stage_queue_wait_seconds'),
    stageMs: perStage('sd_stage_processing_seconds'),
    meanBatchSize: executions > 0 ? round(inferred / executions) : null,
    inferRunMs: ms(histogramMean(before, after, 'sd_inference_run_seconds')),
    inferPrepareMs: ms(histogramMean(before, after, 'sd_inference_prepare_seconds')),
    inferDecodeMs: ms(histogramMean(before, after, 'sd_inference_decode_seconds')),
    redisBytesInPerImage: Math.round((redisAfter.input - redisBefore.input) / Math.max(1, images)),
    redisBytesOutPerImage: Math.round(
      (redisAfter.output - redisBefore.output) / Math.max(1, images),
    ),
  };
}

function best(values: number[]): number | null {
  return values.length > 0 ? Math.max(...values) : null;
}

function ratios(r: WorkloadResult): WorkloadResult['ratios'] {
  const pipe = best(r.pipeline?.steps.map((s) => s.imagesPerSecond) ?? []);
  const limit = best(r.limit?.levels.map((l) => l.imagesPerSecond) ?? []);
  const std = best(r.standard?.steps.map((s) => s.imagesPerSecond) ?? []);
  const p50 = (s: SystemResult | undefined) =>
    s?.steps.find((x) => x.connections === 1)?.latencyMs.p50;
  const pp = p50(r.pipeline);
  const sp = p50(r.standard);
  return {
    pipelineOverLimit: pipe !== null && limit ? round(pipe / limit) : null,
    pipelineOverStandard: pipe !== null && std ? round(pipe / std) : null,
    p50AtConcurrency1PipelineOverStandard: pp !== undefined && sp ? round(pp / sp) : null,
  };
}

async function main(): Promise<void> {
  const startedAt = new Date().toISOString();
  const result: BenchResult = {
    startedAt,
    finishedAt: startedAt,
    machine: {
      cores,
      cpu: cpus()[0]?.model ?? 'unknown',
      loadAverageAtStart: loadavg().map((v) => round(v)),
      node: process.version,
    },
    options,
    workloads: {},
  };
  if (options.stages) {
    progress('single stages: pre of bus.jpg, post of one yolov8n output …');
    result.stages = await runScript<StageTimings>('stages.ts', ['100']);
  }
  for (const name of options.workloads) {
    const wl = workload(name);
    progress(`\n${name}: ${wl.describe}`);
    const bodies = jsonBodies(await loadImages(name), wl.confidence);
    const r: WorkloadResult = {
      describe: wl.describe,
      ratios: {
        pipelineOverLimit: null,
        pipelineOverStandard: null,
        p50AtConcurrency1PipelineOverStandard: null,
      },
    };
    if (options.systems.includes('limit')) {
      progress(' in-process limit and model alone');
      r.limit = await runScript<LimitResult>('limit.ts', [
        name,
        String(options.durationSeconds),
        options.concurrency.join(','),
        '8',
        String(options.warmupSeconds),
      ]);
    }
    if (options.systems.includes('standard')) {
      progress(' standard deployment (one fastify process, inline)');
      const sut = await startStandard(wl, profileEnv);
      try {
        r.standard = await measureSystem('standard', sut, bodies);
      } finally {
        await sut.stop();
      }
    }
    if (options.systems.includes('pipeline')) {
      progress(` pipeline (npm start: pre×${options.preProcesses} post×${options.postProcesses})`);
      const sut = await startPipeline(wl, {
        preProcesses: options.preProcesses,
        postProcesses: options.postProcesses,
        env: profileEnv,
      });
      try {
        r.pipeline = await measureSystem('pipeline', sut, bodies);
      } finally {
        await sut.stop();
      }
    }
    r.ratios = ratios(r);
    result.workloads[name] = r;
  }
  result.finishedAt = new Date().toISOString();
  mkdirSync(outDir, { recursive: true });
  writeFileSync(`${outDir}/latest.json`, `${JSON.stringify(result, null, 2)}\n`);
  writeFileSync(`${outDir}/latest.svg`, renderChart(result));
  process.stdout.write(formatTables(result));
  progress(`\nwrote ${outDir}/latest.json and ${outDir}/latest.svg`);
}

function formatTables(r: BenchResult): string {
  const lines: string[] = [];
  const row = (cells: Array<string | number | null | undefined>, widths: number[]) =>
    cells.map((c, i) => String(c ?? '-').padStart(widths[i] ?? 8)).join(' ');
  lines.push(
    `\nstaged-detect benchmark, ${r.startedAt}, ${r.machine.cores} cores (${r.machine.cpu}), ` +
      `load average at start ${r.machine.loadAverageAtStart.join(' ')}`,
  );
  if (r.stages) {
    const s = r.stages;
    lines.push('\nsingle stages (CPU ms of one core per image)');
    lines.push(
      `  pre: decode + letterbox of ${s.pre.image} to 640×640: ${s.pre.msCpu} ms (wall ${s.pre.msWall} ms; the JPEG decode alone ${s.pre.decodeOnlyMsCpu} ms)`,
    );
    lines.push(`  infer thread: uint8 → float32 of one 640×640 image: ${s.floatConversionMs} ms`);
    for (const p of s.post)
      lines.push(
        `  post at confidence ${p.confidence}: ${p.totalMs} ms (decodeYolov8 ${p.decodeMs} + NMS and response ${p.nmsAndResponseMs}; ${p.candidates} candidates, ${p.detections} boxes)`,
      );
  }
  const w = [10, 5, 9, 9, 9, 9, 7, 11, 9];
  // CPU per image is steadier than throughput on a machine shared with other work.
  const perImage = (cores: number, ips: number) =>
    ips > 0 ? round((cores * 1000) / ips, 1) : null;
  for (const [name, wr] of Object.entries(r.workloads)) {
    lines.push(`\n${name}: ${wr.describe}`);
    lines.push(
      row(
        [
          'system',
          'conc',
          'images/s',
          'p50 ms',
          'p90 ms',
          'p99 ms',
          'cores',
          'CPU ms/img',
          'RSS MiB',
        ],
        w,
      ),
    );
    for (const l of wr.limit?.levels ?? [])
      lines.push(
        row(
          [
            'limit',
            l.inflight,
            l.imagesPerSecond,
            l.latencyMs.p50,
            l.latencyMs.p90,
            l.latencyMs.p99,
            l.cpuCores,
            perImage(l.cpuCores, l.imagesPerSecond),
            l.rssMiB,
          ],
          w,
        ),
      );
    for (const [sys, sr] of [
      ['standard', wr.standard],
      ['pipeline', wr.pipeline],
    ] as const) {
      for (const s of sr?.steps ?? []) {
        const rss = Object.values(s.rssMiBUnderLoad).reduce((a, b) => a + b, 0);
        lines.push(
          row(
            [
              sys,
              s.connections,
              s.imagesPerSecond,
              s.latencyMs.p50,
              s.latencyMs.p90,
              s.latencyMs.p99,
              s.cpuCores,
              perImage(s.cpuCores, s.imagesPerSecond),
              round(rss, 0),
            ],
            w,
          ),
        );
      }
    }
    if (wr.limit) {
      lines.push(
        `  model alone (session.run, images/s and CPU ms/image): ${wr.limit.modelAlone.map((m) => `${m.sessionOptions} batch ${m.batchSize}: ${m.imagesPerSecond}/s ${m.cpuMsPerImage} ms`).join('; ')}`,
      );
    }
    const pw = [6, 8, 8, 8, 8, 8, 8, 6, 9, 9];
    if (wr.pipeline) {
      lines.push(
        '  pipeline per image: mean queue wait (q) and stage time (s) in ms, mean batch, Redis KB in/out',
      );
      lines.push(
        row(
          [
            'conc',
            'q pre',
            's pre',
            'q infer',
            's infer',
            'q post',
            's post',
            'batch',
            'KB in',
            'KB out',
          ],
          pw,
        ),
      );
      for (const s of wr.pipeline.steps) {
        const p = s.pipeline;
        if (!p) continue;
        lines.push(
          row(
            [
              s.connections,
              p.queueWaitMs['pre'],
              p.stageMs['pre'],
              p.queueWaitMs['infer'],
              p.stageMs['infer'],
              p.queueWaitMs['post'],
              p.stageMs['post'],
              p.meanBatchSize,
              round(p.redisBytesInPerImage / 1024, 0),
              round(p.redisBytesOutPerImage / 1024, 0),
            ],
            pw,
          ),
        );
      }
      const rest = Object.entries(wr.pipeline.rssMiBAtRest)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ');
      lines.push(`  pipeline RSS at rest (MiB): ${rest}`);
      const last = wr.pipeline.steps.at(-1);
      if (last) {
        const load = Object.entries(last.rssMiBUnderLoad)
          .map(([k, v]) => `${k} ${v}`)
          .join(', ');
        lines.push(`  pipeline RSS under load, c=${last.connections} (MiB): ${load}`);
        const cpu = Object.entries(last.cpuCoresByProcess)
          .map(([k, v]) => `${k} ${v} (${perImage(v, last.imagesPerSecond) ?? '-'} ms/img)`)
          .join(', ');
        lines.push(`  pipeline CPU by process, c=${last.connections} (cores): ${cpu}`);
      }
    }
    const q = wr.ratios;
    lines.push(
      `  pipeline / limit (best throughput): ${q.pipelineOverLimit ?? '-'}; pipeline / standard: ${q.pipelineOverStandard ?? '-'}; ` +
        `p50 at concurrency 1, pipeline / standard: ${q.p50AtConcurrency1PipelineOverStandard ?? '-'}`,
    );
  }
  return `${lines.join('\n')}\n`;
}

await main();
process.exit(0);
