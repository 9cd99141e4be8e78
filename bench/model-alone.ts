import { readFileSync } from 'node:fs';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import { EnvSchema, modelInstances } from '../shared/config.js';
import { describeSessions, sessionLayout } from '../services/infer/model.js';
import type { SessionThreads } from '../services/infer/session-protocol.js';
import { round } from './proc-stats.js';

/**
 * The model alone: `session.run` on a float32 batch made once (no decode, no conversion, no
 * output decoding), per batch size, with the sessions the inference process uses. The
 * pipeline's "CPU outside the model" and "added latency" are measured against these numbers.
 *
 * The options mirror services/infer/session-thread.ts: the CPU provider, graph optimisation
 * 'all', `ORT_INTRA_OP_THREADS` (0: onnxruntime's default) and `ORT_ALLOW_SPINNING` read from
 * this process's environment as the inference process reads them (the bench passes each
 * pipeline's environment on), and the sessions of `MODEL_INSTANCES` with their threads as
 * sessionLayout (services/infer/model.ts) makes them. Keep them in step with that file.
 *
 * Per batch size, two phases of the given seconds each: the first session alone (the solo
 * session when there is one; the wall times: what one request at a time meets), then the
 * side-by-side sessions (all but the solo one) running batches at once (images/s and CPU per
 * image: what a loaded pipeline's model costs). With one session the second phase is the first.
 *
 * Usage: tsx bench/model-alone.ts <model.onnx | '' for the tiny model> <batch,...> <seconds per batch>
 * Progress on stderr; one JSON line on stdout (ModelAloneResult).
 */
export interface ModelAlone {
  batchSize: number;
  /** Images per second, the side-by-side sessions running. */
  imagesPerSecond: number;
  /** Mean wall time of one run of this batch on the first session alone, ms. */
  msPerBatch: number;
  /** Median wall time of one run of this batch on the first session alone, ms. */
  wallMsP50: number;
  /** CPU time of the whole process (every onnxruntime thread) per image, the side-by-side sessions running, ms. */
  cpuMsPerImage: number;
  /** Runs of the first session alone. */
  runs: number;
}

export interface ModelAloneResult {
  /** The session options used, as text. */
  sessionOptions: string;
  batches: ModelAlone[];
}

interface InstanceSetup {
  modelBytes: Uint8Array;
  threads: SessionThreads;
}
/** Main thread → instance: run batches of `batch` for `seconds`; instance → main: the run times. */
type Command = { batch: number; seconds: number };

if (isMainThread) await main();
else await instance(workerData as InstanceSetup);

async function main(): Promise<void> {
  const [modelArg = '', batchesArg = '1,2,4,8', secondsArg = '2'] = process.argv.slice(2);
  const batchSizes = batchesArg.split(',').map(Number);
  const secondsPerBatch = Number(secondsArg);
  const env = EnvSchema.pick({
    ORT_INTRA_OP_THREADS: true,
    ORT_ALLOW_SPINNING: true,
    MODEL_INSTANCES: true,
  }).parse(process.env);
  const base = { intraOp: env.ORT_INTRA_OP_THREADS, allowSpinning: env.ORT_ALLOW_SPINNING };
  const count = modelInstances(env.MODEL_INSTANCES, 'cpu');
  const layout = sessionLayout(base, count, 'cpu');
  const modelBytes = modelArg ? new Uint8Array(readFileSync(modelArg)) : await tinyModelBytes();
  const sessions = await Promise.all(
    layout.threads.map((threads) => startInstance({ modelBytes, threads })),
  );
  const sideBySide = layout.solo ? sessions.slice(1) : sessions;
  const threadsText = describeSessions(layout);
  const result: ModelAloneResult = {
    sessionOptions: `cpu, graph optimisation all, ${count} instance${count > 1 ? 's' : ''} (intra-op threads ${threadsText}), spinning ${env.ORT_ALLOW_SPINNING ? 'on' : 'off'}`,
    batches: [],
  };
  for (const b of batchSizes) {
    const phase = async (running: typeof sessions) => {
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      const times = await Promise.all(
        running.map((run) => run({ batch: b, seconds: secondsPerBatch })),
      );
      const wall = performance.now() - t0;
      const cpu = process.cpuUsage(cpu0);
      const runs = times.reduce((n, t) => n + t.length, 0);
      return {
        times: times[0]!.sort((x, y) => x - y),
        imagesPerSecond: round((b * runs * 1000) / wall, 1),
        cpuMsPerImage: round((cpu.user + cpu.system) / 1000 / (runs * b)),
      };
    };
    const alone = await phase(sessions.slice(0, 1));
    const all = sessions.length > 1 ? await phase(sideBySide) : alone;
    const entry: ModelAlone = {
      batchSize: b,
      imagesPerSecond: all.imagesPerSecond,
      msPerBatch: round(alone.times.reduce((s, t) => s + t, 0) / alone.times.length),
      wallMsP50: round(alone.times[Math.floor(alone.times.length / 2)]!),
      cpuMsPerImage: all.cpuMsPerImage,
      runs: alone.times.length,
    };
    result.batches.push(entry);
    process.stderr.write(
      `  model alone, batch ${b}: ${entry.imagesPerSecond} images/s, p50 ${entry.wallMsP50} ms per run, ${entry.cpuMsPerImage} CPU ms/image\n`,
    );
  }
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(0);
}

/** Starts one instance on its own thread; resolves with a function that runs one phase on it. */
async function startInstance(setup: InstanceSetup): Promise<(cmd: Command) => Promise<number[]>> {
  // tsx's loader does not reach worker threads: the thread registers it, then loads this file.
  const api = JSON.stringify(import.meta.resolve('tsx/esm/api'));
  const code = `import(${api}).then((tsx) => { tsx.register(); return import(${JSON.stringify(import.meta.url)}); })`;
  const worker = new Worker(code, { eval: true, workerData: setup });
  await new Promise<void>((resolve, reject) => {
    worker.once('message', () => resolve());
    worker.once('error', reject);
  });
  return (cmd) =>
    new Promise<number[]>((resolve, reject) => {
      worker.once('message', (times: number[]) => resolve(times));
      worker.once('error', reject);
      worker.postMessage(cmd);
    });
}

/** One instance: its session, then a phase per command. */
async function instance(setup: InstanceSetup): Promise<void> {
  const port = parentPort!;
  const session = await ort.InferenceSession.create(setup.modelBytes, {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    ...(setup.threads.intraOp > 0 ? { intraOpNumThreads: setup.threads.intraOp } : {}),
    extra: {
      session: { intra_op: { allow_spinning: setup.threads.allowSpinning ? '1' : '0' } },
    },
  });
  const inputName = session.inputNames[0]!;
  const meta = session.inputMetadata[0];
  const shape = meta?.isTensor ? meta.shape : [];
  const [, channels = 3, height = 640, width = 640] = shape.map((d) =>
    typeof d === 'number' ? d : 1,
  );
  port.postMessage('ready');
  port.on('message', (cmd: Command) => {
    void (async () => {
      const data = new Float32Array(cmd.batch * channels * height * width).fill(0.45);
      const feeds = {
        [inputName]: new ort.Tensor('float32', data, [cmd.batch, channels, height, width]),
      };
      await session.run(feeds);
      const times: number[] = [];
      const until = performance.now() + cmd.seconds * 1000;
      while (performance.now() < until || times.length < 3) {
        const t = performance.now();
        await session.run(feeds);
        times.push(performance.now() - t);
      }
      port.postMessage(times);
    })();
  });
}

async function tinyModelBytes(): Promise<Uint8Array> {
  const { buildTinyDetector } = await import('../services/infer/tiny-model/tiny-model.js');
  return buildTinyDetector();
}
