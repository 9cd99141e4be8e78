import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { Batcher } from '../services/infer/batcher.js';
import { detectionParams, loadInlineDetector } from './inline-detector.js';
import { summarise, type LatencySummary } from './latency.js';
import { round } from './proc-stats.js';
import { loadImages, workload, type WorkloadName } from './workloads.js';

/**
 * The in-process limit: the same work as the pipeline per image (sharp letterbox → onnxruntime
 * in dynamic batches → NMS and the response), in one process with no HTTP and no Redis, with
 * `inflight` images in progress at once. Also the model alone: session.run throughput per batch
 * size on already letterboxed input.
 *
 * Usage: tsx bench/limit.ts <workload> <seconds per level> <inflight,...> <maxBatch>
 * Progress on stderr; one JSON object on stdout.
 */
export interface LimitLevel {
  inflight: number;
  imagesPerSecond: number;
  latencyMs: LatencySummary;
  /** CPU seconds used per wall second (1 = one core busy). */
  cpuCores: number;
  rssMiB: number;
  meanBatchSize: number;
}

export interface ModelAlone {
  batchSize: number;
  imagesPerSecond: number;
  msPerBatch: number;
}

export interface LimitResult {
  levels: LimitLevel[];
  modelAlone: ModelAlone[];
  rssAtRestMiB: number;
}

const [name = 'yolov8n', secondsArg = '5', levelsArg = '1,4,16,64', batchArg = '8'] =
  process.argv.slice(2);
const seconds = Number(secondsArg);
const levels = levelsArg.split(',').map(Number);
const maxBatch = Number(batchArg);
const wl = workload(name as WorkloadName);

// As in the `pre` stage: one libvips thread per image, images in parallel on libuv's pool.
sharp.concurrency(1);

const images = await loadImages(wl.name);
const detector = await loadInlineDetector(wl.modelPath, maxBatch);
const params = detectionParams(wl.confidence);
const rssAtRestMiB = round(process.memoryUsage().rss / 2 ** 20, 1);

type Item = { pixels: Buffer };
let batches = 0;
let batchedImages = 0;
const batcher = new Batcher<Item, Float32Array>({
  maxBatchSize: detector.model.maxBatch,
  maxDelayMs: 5,
  deadlineOf: () => Infinity,
  expiredError: () => new Error('expired'),
  run: async (items) => {
    batches++;
    batchedImages += items.length;
    return detector.infer(
      items.map((i) => i.pixels),
      items.map(() => params),
    );
  },
});

async function one(bytes: Buffer): Promise<void> {
  const receivedAt = Date.now();
  const { pixels, letterbox } = await detector.pre(bytes);
  const candidates = await batcher.submit({ pixels });
  detector.post(candidates, params, letterbox, receivedAt);
}

/** Runs `inflight` loops over the images for `ms`; returns the latencies of finished images. */
async function drive(inflight: number, ms: number): Promise<number[]> {
  const until = performance.now() + ms;
  const latencies: number[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: inflight }, async () => {
      while (performance.now() < until) {
        const t = performance.now();
        await one(images[next++ % images.length]!);
        latencies.push(performance.now() - t);
      }
    }),
  );
  return latencies;
}

const result: LimitResult = { levels: [], modelAlone: [], rssAtRestMiB };
for (const inflight of levels) {
  process.stderr.write(`  limit ${wl.name}: ${inflight} in flight, ${seconds} s …\n`);
  await drive(inflight, Math.min(2000, seconds * 300)); // warm-up
  batches = 0;
  batchedImages = 0;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const latencies = await drive(inflight, seconds * 1000);
  const wall = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  result.levels.push({
    inflight,
    imagesPerSecond: round(latencies.length / wall, 1),
    latencyMs: roundAll(summarise(latencies)),
    cpuCores: round((cpu.user + cpu.system) / 1e6 / wall),
    rssMiB: round(process.memoryUsage().rss / 2 ** 20, 1),
    meanBatchSize: round(batchedImages / Math.max(1, batches)),
  });
}
batcher.close();

// The model alone: session.run on a float32 batch made once, per batch size.
const sessionOptions: ort.InferenceSession.SessionOptions = {
  executionProviders: ['cpu'],
  graphOptimizationLevel: 'all',
};
const session = wl.modelPath
  ? await ort.InferenceSession.create(wl.modelPath, sessionOptions)
  : await ort.InferenceSession.create(await tinyModelBytes(), sessionOptions);
const { input_width: w, input_height: h } = detector.model.description;
for (let b = 1; b <= maxBatch; b *= 2) {
  const data = new Float32Array(b * 3 * h * w).fill(0.45);
  const tensor = new ort.Tensor('float32', data, [b, 3, h, w]);
  await session.run({ [session.inputNames[0]!]: tensor });
  let runs = 0;
  const t0 = performance.now();
  const until = t0 + Math.max(1000, (seconds * 1000) / 3);
  while (performance.now() < until) {
    await session.run({ [session.inputNames[0]!]: tensor });
    runs++;
  }
  const ms = (performance.now() - t0) / runs;
  result.modelAlone.push({
    batchSize: b,
    imagesPerSecond: round((b * 1000) / ms, 1),
    msPerBatch: round(ms),
  });
  process.stderr.write(
    `  model alone ${wl.name}: batch ${b}: ${round((b * 1000) / ms, 1)} images/s\n`,
  );
}
await session.release();
await detector.close();
process.stdout.write(`${JSON.stringify(result)}\n`);
process.exit(0);

async function tinyModelBytes(): Promise<Uint8Array> {
  const { buildTinyDetector } = await import('../services/infer/tiny-model/tiny-model.js');
  return buildTinyDetector();
}

function roundAll(s: LatencySummary): LatencySummary {
  return { p50: round(s.p50), p90: round(s.p90), p99: round(s.p99), mean: round(s.mean) };
}
