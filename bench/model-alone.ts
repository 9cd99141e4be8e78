import { readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-node';
import { EnvSchema } from '../shared/config.js';
import { round } from './proc-stats.js';

/**
 * The model alone: `session.run` on a float32 batch made once (no decode, no conversion, no
 * output decoding), per batch size, with the session options the inference process uses. The
 * pipeline's "CPU outside the model" and "added latency" are measured against these numbers.
 *
 * The options mirror services/infer/session-thread.ts: the CPU provider, graph optimisation
 * 'all', `ORT_INTRA_OP_THREADS` (0: onnxruntime's default) and `ORT_ALLOW_SPINNING` read from
 * this process's environment as the inference process reads them (the bench passes each
 * pipeline's environment on). Keep them in step with that file.
 *
 * Usage: tsx bench/model-alone.ts <model.onnx | '' for the tiny model> <batch,...> <seconds per batch>
 * Progress on stderr; one JSON line on stdout (ModelAloneResult).
 */
export interface ModelAlone {
  batchSize: number;
  imagesPerSecond: number;
  /** Mean wall time of one run of this batch, ms. */
  msPerBatch: number;
  /** Median wall time of one run of this batch, ms. */
  wallMsP50: number;
  /** CPU time of the whole process (every onnxruntime thread) per image, ms. */
  cpuMsPerImage: number;
  runs: number;
}

export interface ModelAloneResult {
  /** The session options used, as text. */
  sessionOptions: string;
  batches: ModelAlone[];
}

const [modelArg = '', batchesArg = '1,2,4,8', secondsArg = '2'] = process.argv.slice(2);
const batchSizes = batchesArg.split(',').map(Number);
const secondsPerBatch = Number(secondsArg);

const env = EnvSchema.pick({ ORT_INTRA_OP_THREADS: true, ORT_ALLOW_SPINNING: true }).parse(
  process.env,
);
const options: ort.InferenceSession.SessionOptions = {
  executionProviders: ['cpu'],
  graphOptimizationLevel: 'all',
  ...(env.ORT_INTRA_OP_THREADS > 0 ? { intraOpNumThreads: env.ORT_INTRA_OP_THREADS } : {}),
  extra: { session: { intra_op: { allow_spinning: env.ORT_ALLOW_SPINNING ? '1' : '0' } } },
};
const modelBytes = modelArg ? new Uint8Array(readFileSync(modelArg)) : await tinyModelBytes();
const session = await ort.InferenceSession.create(modelBytes, options);
const inputName = session.inputNames[0]!;
const meta = session.inputMetadata[0];
const shape = meta?.isTensor ? meta.shape : [];
const [, channels, height, width] = shape.map((d) => (typeof d === 'number' ? d : 1));

const result: ModelAloneResult = {
  sessionOptions: `cpu, graph optimisation all, intra-op threads ${env.ORT_INTRA_OP_THREADS || 'default'}, spinning ${env.ORT_ALLOW_SPINNING ? 'on' : 'off'}`,
  batches: [],
};
for (const b of batchSizes) {
  const data = new Float32Array(b * (channels ?? 3) * (height ?? 640) * (width ?? 640)).fill(0.45);
  const tensor = new ort.Tensor('float32', data, [b, channels ?? 3, height ?? 640, width ?? 640]);
  const feeds = { [inputName]: tensor };
  await session.run(feeds);
  const times: number[] = [];
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const until = t0 + secondsPerBatch * 1000;
  while (performance.now() < until || times.length < 3) {
    const t = performance.now();
    await session.run(feeds);
    times.push(performance.now() - t);
  }
  const wall = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  times.sort((x, y) => x - y);
  const entry: ModelAlone = {
    batchSize: b,
    imagesPerSecond: round((b * times.length * 1000) / wall, 1),
    msPerBatch: round(wall / times.length),
    wallMsP50: round(times[Math.floor(times.length / 2)]!),
    cpuMsPerImage: round((cpu.user + cpu.system) / 1000 / (times.length * b)),
    runs: times.length,
  };
  result.batches.push(entry);
  process.stderr.write(
    `  model alone, batch ${b}: ${entry.imagesPerSecond} images/s, p50 ${entry.wallMsP50} ms per run, ${entry.cpuMsPerImage} CPU ms/image\n`,
  );
}
await session.release();
process.stdout.write(`${JSON.stringify(result)}\n`);
process.exit(0);

async function tinyModelBytes(): Promise<Uint8Array> {
  const { buildTinyDetector } = await import('../services/infer/tiny-model/tiny-model.js');
  return buildTinyDetector();
}
