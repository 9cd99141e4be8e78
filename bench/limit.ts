import sharp from 'sharp';
import { BatchScheduler } from '../services/infer/batcher.js';
import type { Preprocessed } from '../services/pre/preprocess.js';
import { detectionParams, loadInlineDetector } from './inline-detector.js';
import { summarise, type LatencySummary } from './latency.js';
import { round } from './proc-stats.js';
import { loadImages, workload, type WorkloadName } from './workloads.js';

/**
 * The in-process limit: the same work as the pipeline per image (sharp letterbox → onnxruntime
 * in dynamic batches → NMS and the response), in one process with no HTTP and no Redis, with
 * `inflight` images in progress at once. It uses the project's own stage functions
 * (inline-detector.ts), so it moves with the pipeline's code: the ceiling of the same work
 * without the orchestration (with the null model, the orchestration ceiling's denominator).
 *
 * Usage: tsx bench/limit.ts <workload> <seconds per level> <inflight,...> <maxBatch> <warm-up s>
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

export interface LimitResult {
  levels: LimitLevel[];
  rssAtRestMiB: number;
}

const [
  name = 'yolov8n',
  secondsArg = '5',
  levelsArg = '1,4,16,64',
  batchArg = '8',
  warmupArg = '2',
] = process.argv.slice(2);
const seconds = Number(secondsArg);
const warmupSeconds = Number(warmupArg);
const levels = levelsArg.split(',').map(Number);
const maxBatch = Number(batchArg);
const wl = workload(name as WorkloadName);

// As in the `pre` stage: one libvips thread per image, images in parallel on libuv's pool.
sharp.concurrency(1);

const images = await loadImages(wl.name);
const detector = await loadInlineDetector(wl.modelPath, maxBatch);
const params = detectionParams(wl.confidence);
const rssAtRestMiB = round(process.memoryUsage().rss / 2 ** 20, 1);

type Item = Preprocessed;
let batches = 0;
let batchedImages = 0;
// One lane: dynamic batching for one model, as the inference process runs it.
const batcher = new BatchScheduler<Item, Float32Array>({
  laneOf: () => '',
  maxBatchOf: () => detector.model.description.batch_size,
  maxDelayMs: 5,
  deadlineOf: () => Infinity,
  expiredError: () => new Error('expired'),
  run: async (_lane, items) => {
    batches++;
    batchedImages += items.length;
    return detector.infer(
      items,
      items.map(() => params),
    );
  },
});

async function one(bytes: Buffer): Promise<void> {
  const receivedAt = Date.now();
  const image = await detector.pre(bytes);
  const candidates = await batcher.submit(image);
  detector.post(candidates, params, image.letterbox, receivedAt);
}

/**
 * Keeps `inflight` images in progress; after a warm-up (at least warmupMs and until `inflight`
 * images finished), measures a window of `ms`: the latencies of the images finished inside it
 * and the process's CPU time.
 */
async function drive(inflight: number, warmupMs: number, ms: number) {
  let stop = false;
  let finished = 0;
  let open = false;
  const latencies: number[] = [];
  let next = 0;
  const loops = Array.from({ length: inflight }, async () => {
    while (!stop) {
      const t = performance.now();
      await one(images[next++ % images.length]!);
      finished++;
      if (open) latencies.push(performance.now() - t);
    }
  });
  await sleep(warmupMs);
  while (finished < inflight) await sleep(50);
  batches = 0;
  batchedImages = 0;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  open = true;
  await sleep(ms);
  open = false;
  const wall = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const meanBatch = batchedImages / Math.max(1, batches);
  const rss = process.memoryUsage().rss;
  stop = true;
  await Promise.all(loops);
  return { latencies, wall, cpuSeconds: (cpu.user + cpu.system) / 1e6, meanBatch, rss };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

const result: LimitResult = { levels: [], rssAtRestMiB };
for (const inflight of levels) {
  process.stderr.write(`  limit ${wl.name}: ${inflight} in flight, ${seconds} s …\n`);
  const m = await drive(inflight, warmupSeconds * 1000, seconds * 1000);
  result.levels.push({
    inflight,
    imagesPerSecond: round(m.latencies.length / m.wall, 1),
    latencyMs: roundAll(summarise(m.latencies)),
    cpuCores: round(m.cpuSeconds / m.wall),
    rssMiB: round(m.rss / 2 ** 20, 1),
    meanBatchSize: round(m.meanBatch),
  });
}
batcher.close();

await detector.close();
process.stdout.write(`${JSON.stringify(result)}\n`);
process.exit(0);

function roundAll(s: LatencySummary): LatencySummary {
  return { p50: round(s.p50), p90: round(s.p90), p99: round(s.p99), mean: round(s.mean) };
}
