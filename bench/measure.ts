import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { runLoad, type LoadStep } from './load.js';
import { CpuMeter, round } from './proc-stats.js';
import { histogramMean, scrape, total, type Sample } from './prom.js';
import { redisNetBytes, type RedisBytes, type SystemUnderTest } from './systems.js';

/**
 * Measuring a running HTTP system under load (load.ts) together with the CPU and memory of its
 * processes (/proc) and, for the pipeline, its roles' metrics and Redis traffic; and running
 * the bench's in-process scripts in processes of their own.
 */

/** One load step of an HTTP system, with its CPU, memory and (pipeline) detail. */
export interface SystemStep extends LoadStep {
  /** Images per second (one image per request). */
  imagesPerSecond: number;
  /** CPU seconds per wall second, all processes of the system together. */
  cpuCores: number;
  /** CPU ms per answered image, all processes of the system together. */
  cpuMsPerImage: number | null;
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

export interface LoadOptions {
  warmupSeconds: number;
  durationSeconds: number;
  /** Least 2xx answers in each window (the window is extended until they arrived). */
  minAnswers?: number;
}

/**
 * CPU ms per image from CPU cores busy and images per second; null without images.
 *
 * @param digits decimals kept (default 1)
 */
export function perImage(cores: number, imagesPerSecond: number, digits = 1): number | null {
  return imagesPerSecond > 0 ? round((cores * 1000) / imagesPerSecond, digits) : null;
}

const progress = (line: string) => process.stderr.write(`${line}\n`);

/** One load step per concurrency against `sut`, with its processes' CPU and memory. */
export async function measureSystem(
  name: string,
  sut: SystemUnderTest,
  bodies: Buffer[],
  concurrency: readonly number[],
  opts: LoadOptions,
): Promise<SystemResult> {
  const meter = new CpuMeter(sut.processes);
  const rssMiBAtRest = meter.rssMiB();
  const self = new CpuMeter(new Map([['load generator', process.pid]]));
  const steps: SystemStep[] = [];
  for (const connections of concurrency) {
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
        warmupSeconds: opts.warmupSeconds,
        seconds: opts.durationSeconds,
        ...(opts.minAnswers === undefined ? {} : { minAnswers: opts.minAnswers }),
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
    const cpuCores = round(cpu.totalCpuSeconds / cpu.wallSeconds);
    const step: SystemStep = {
      ...load,
      imagesPerSecond: load.requestsPerSecond,
      cpuCores,
      cpuMsPerImage: perImage(cpuCores, load.requestsPerSecond),
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
        `${step.cpuCores} cores, ${step.cpuMsPerImage ?? '-'} CPU ms/image` +
        (step.pipeline ? `, mean batch ${step.pipeline.meanBatchSize ?? '-'}` : '') +
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

/**
 * Runs a bench script in its own process (stderr passed through) and parses the JSON of its
 * last stdout line.
 */
export function runScript<T>(
  script: string,
  argv: string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<T> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [
        '--import',
        import.meta.resolve('tsx'),
        fileURLToPath(new URL(script, import.meta.url)),
        ...argv,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'], env },
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

/** Sends one request body to the detection route and waits for a 2xx answer. */
export async function postOnce(url: string, body: Buffer): Promise<void> {
  const res = await fetch(`${url}/infer/object_detection`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: new Uint8Array(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`HTTP ${res.status}: ${text.slice(0, 200)}`);
}
