import { readFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { ModelDescription } from '../../shared/contracts.js';
import {
  DEFAULT_PREPROCESSING,
  type ModelLayout,
  type Preprocessing,
} from '../../shared/model-layout.js';
import {
  parseClassNames,
  parseRecommendedConfidence,
  readOnnxMetadata,
} from './onnx/model-metadata.js';
import { detectLayout, LayoutError, type DetectedLayout } from './layout-detection.js';
import type { Placement } from './input-tensor.js';
import type { CandidateFilter } from './output-decoder.js';
import {
  DEFAULT_THREADS,
  type ConfigureRequest,
  type ExecutionProvider,
  type MainMessage,
  type RunTimings,
  type SessionInfo,
  type SessionInit,
  type SessionThreads,
  type ThreadMessage,
  type WarmupRequest,
} from './session-protocol.js';
import { buildTinyDetector } from './tiny-model/tiny-model.js';

/**
 * The onnxruntime adapter: loads one ONNX detector on its own thread (session-thread.ts),
 * works out its input size, batch dimension, output layout (layout-detection.ts, from one warm-up
 * run on zeros) and class names, and runs batches of letterboxed uint8 images on it.
 */
export interface ModelOptions {
  modelId: string;
  /** ONNX file; undefined serves the generated tiny detector. */
  modelPath: string | undefined;
  classNamesPath: string | undefined;
  executionProvider: ExecutionProvider;
  /** Upper bound for models with a dynamic batch dimension. */
  maxBatchSize: number;
  /** Output layout; undefined detects it from the output shape and metadata. */
  layout?: ModelLayout | undefined;
  /** Overrides of the layout's usual preprocessing (shared/model-layout.ts). */
  preprocessing?: Partial<Preprocessing> | undefined;
  /** onnxruntime's thread pool of a session alone; default: a thread per core, no spinning. */
  threads?: SessionThreads | undefined;
  /** Sessions that run batches side by side (sessionLayout); default 1. */
  instances?: number | undefined;
}

/**
 * The onnxruntime sessions of one model and their thread pools, for `instances` sessions that
 * run batches side by side (MODEL_INSTANCES).
 *
 * - One instance: one session with `base` (every core by default).
 * - Several on the CPU: each side-by-side session gets max(1, threads ÷ instances) threads
 *   (threads = `base.intraOp`, or the cores at 0), and one more session, the solo session, gets
 *   `base`: it takes a batch only when no other batch is running (OnnxModel.run), so a request
 *   alone has every core while a loaded model runs single-threaded sessions that never wait for
 *   each other. It is left out when it would have no more threads than the others. On 2 cores,
 *   yolov8n at 640 through the pipeline at 8 clients: sessions of 1 and 1 thread ran 28.9
 *   images/s against 27.0 for sessions of 2 and 1, at 6.6 % less CPU per image (medians of three
 *   A/B pairs, bench/results/ab/); a request alone still runs on 2 threads (about 27 ms instead
 *   of 50 on one).
 * - Several on CUDA or TensorRT: the first gets `base`, the others max(1, threads ÷ instances)
 *   (the threads matter little there); no solo session.
 *
 * @returns `threads` per session in order, the solo session first when `solo`
 */
export function sessionLayout(
  base: SessionThreads,
  instances: number,
  provider: ExecutionProvider,
  cores = availableParallelism(),
): { threads: SessionThreads[]; solo: boolean } {
  const count = Math.max(1, instances);
  if (count === 1) return { threads: [base], solo: false };
  const all = base.intraOp > 0 ? base.intraOp : cores;
  const shared: SessionThreads = { ...base, intraOp: Math.max(1, Math.floor(all / count)) };
  if (provider === 'cpu' && all > shared.intraOp) {
    return { threads: [base, ...Array.from({ length: count }, () => shared)], solo: true };
  }
  return {
    threads: [base, ...Array.from({ length: count - 1 }, () => shared)],
    solo: false,
  };
}

/**
 * A session layout in words, for logs and the bench: each session's onnxruntime intra-op
 * threads (`default` for onnxruntime's one per core), e.g. `solo default, side by side 1 + 1`,
 * or `default` for one session.
 */
export function describeSessions(layout: { threads: SessionThreads[]; solo: boolean }): string {
  const counts = layout.threads.map((t) => (t.intraOp === 0 ? 'default' : String(t.intraOp)));
  return layout.solo
    ? `solo ${counts[0]}, side by side ${counts.slice(1).join(' + ')}`
    : counts.join(' + ');
}

/** One image of a batch: its resized pixels and where they sit in the model input. */
export interface PlacedImage {
  /** `placement.height` × `placement.width` × 3 bytes, RGB, row-major. */
  pixels: Uint8Array;
  placement: Placement;
  /**
   * The caller gives the pixels up: an image alone whose Uint8Array owns its whole ArrayBuffer
   * is then transferred to the session thread as it is, not copied, and detached here.
   * Default false: the pixels are copied.
   */
  handOver?: boolean;
}

export interface BatchOutput {
  /** Packed candidates per image, in batch order (see shared/candidates.ts). */
  candidates: Float32Array[];
  timings: RunTimings;
}

/** A model that cannot be loaded (file, session, layout); a startup error naming the model. */
export class ModelLoadError extends Error {
  override readonly name = 'ModelLoadError';
}

/**
 * One loaded ONNX model: one or more instances, each an onnxruntime session on its own worker
 * thread (session.run blocks its thread), its description, and `run()` for one batch of
 * letterboxed images on an idle instance.
 */
export class OnnxModel {
  private nextBatchId = 1;
  private readonly pending = new Map<
    number,
    { resolve: (o: BatchOutput) => void; reject: (e: Error) => void; instance: number }
  >();
  /** Batches sent to each instance and not answered yet. */
  private readonly inFlight: number[];
  private closing: Promise<void> | undefined;

  /** The sessions and their threads, for the logs (describeSessions). */
  readonly sessions: string;

  private constructor(
    private readonly threads: Worker[],
    /** Whether `threads[0]` is the solo session (sessionLayout). */
    private readonly solo: boolean,
    sessionThreads: SessionThreads[],
    readonly description: ModelDescription,
    /** The model's own batch size when its batch dimension is fixed; null when dynamic. */
    readonly fixedBatch: number | null,
    /** Session creation and the warm-up run. */
    readonly loadMs: number,
    /** What decided the output layout: configured, model metadata or output shape. */
    readonly layoutSource: DetectedLayout['source'],
  ) {
    this.inFlight = threads.map(() => 0);
    this.sessions = describeSessions({ threads: sessionThreads, solo });
    for (const thread of threads) {
      thread.on('message', (msg: ThreadMessage) => this.onMessage(msg));
      thread.on('error', (err: Error) => this.failAll(err));
      thread.on('exit', (code) =>
        this.failAll(new Error(`the inference thread exited with code ${code}`)),
      );
    }
  }

  static async load(opts: ModelOptions): Promise<OnnxModel> {
    const bytes = opts.modelPath ? await readModelFile(opts.modelPath) : buildTinyDetector();
    const metadata = safeMetadata(bytes);
    const layout = sessionLayout(
      opts.threads ?? DEFAULT_THREADS,
      opts.instances ?? 1,
      opts.executionProvider,
    );
    // Made before the first thread takes `bytes`; each thread gets its own copy (the first
    // takes the file's buffer).
    const inits = layout.threads.map((threads, index): SessionInit => ({
      modelBytes: index === 0 ? bytes : bytes.slice(),
      executionProvider: opts.executionProvider,
      threads,
    }));
    const thread = startThread(inits[0]!, [bytes.buffer as ArrayBuffer]);
    const info = await waitReady(thread, opts);

    const [batchDim, channels, height, width] = info.inputShape;
    if (info.inputShape.length !== 4 || channels !== 3) {
      await thread.terminate();
      throw new ModelLoadError(
        `model input '${info.inputName}' has shape [${info.inputShape.join(', ')}]; expected [batch, 3, height, width]`,
      );
    }
    const size = parseImgsz(metadata['imgsz']);
    const inputHeight = typeof height === 'number' ? height : (size?.[0] ?? 640);
    const inputWidth = typeof width === 'number' ? width : (size?.[1] ?? 640);
    const fixedBatch = typeof batchDim === 'number' && batchDim > 0 ? batchDim : null;
    let detected: DetectedLayout;
    let warmupMs: number;
    const threads = [thread];
    const warmupRequest: WarmupRequest = {
      type: 'warmup',
      batch: fixedBatch ?? 1,
      height: inputHeight,
      width: inputWidth,
    };
    try {
      // Symbolic output dims become concrete here, and the first request skips the first run's
      // cost.
      const warmed = await warmup(thread, opts, warmupRequest);
      warmupMs = warmed.ms;
      detected = detectLayout({
        outputShape: warmed.outputShape,
        inputHeight,
        inputWidth,
        metadata,
        configured: opts.layout,
      });
      // The further instances, one after the other (each load takes every core).
      for (const init of inits.slice(1)) {
        const more = startThread(init, [init.modelBytes.buffer as ArrayBuffer]);
        threads.push(more);
        await waitReady(more, opts);
        await warmup(more, opts, warmupRequest);
      }
    } catch (err) {
      await Promise.all(threads.map((t) => t.terminate()));
      if (err instanceof LayoutError) throw new ModelLoadError(`${describe(opts)}: ${err.message}`);
      throw err;
    }
    const preprocessing: Preprocessing = {
      ...DEFAULT_PREPROCESSING[detected.layout],
      ...definedOnly(opts.preprocessing ?? {}),
    };
    const configure: ConfigureRequest = {
      type: 'configure',
      layout: detected.layout,
      preprocessing,
      height: inputHeight,
      width: inputWidth,
    };
    for (const t of threads) t.postMessage(configure satisfies MainMessage);
    const classNames = await resolveClassNames(opts, metadata, detected.numClasses);
    const description: ModelDescription = {
      model_id: opts.modelId,
      task_type: 'object-detection',
      batch_size: fixedBatch ?? opts.maxBatchSize,
      input_width: inputWidth,
      input_height: inputHeight,
      class_names: classNames,
      execution_provider: opts.executionProvider,
      // The pool (model-pool.ts) sets these two; a model just opened is loaded and unpinned.
      loaded: true,
      pinned: false,
      layout: detected.layout,
      preprocessing,
      recommended_confidence: parseRecommendedConfidence(metadata),
    };
    return new OnnxModel(
      threads,
      layout.solo,
      layout.threads,
      description,
      fixedBatch,
      info.loadMs + warmupMs,
      detected.source,
    );
  }

  /**
   * Runs `images` as one batch: each its resized RGB pixels (`placement.height` ×
   * `placement.width` × 3 bytes, as `pre` stores them) and where they sit in the model input;
   * the session thread adds the letterbox padding. It runs on the session pickSession names.
   * An image alone that is handed over (`handOver`) goes to the session thread without a copy
   * where its buffer allows, and is then detached (transferablePixels).
   *
   * @throws RangeError when an image's byte length does not match its placement
   */
  run(images: readonly PlacedImage[], filters: CandidateFilter[]): Promise<BatchOutput> {
    const { input_width: width, input_height: height } = this.description;
    images.forEach(({ pixels: img, placement: p }, i) => {
      const bytes = p.width * p.height * 3;
      if (img.byteLength !== bytes)
        throw new RangeError(`image ${i} has ${img.byteLength} bytes, expected ${bytes}`);
    });
    const pixels = transferablePixels(images);
    const batchId = this.nextBatchId++;
    const instance = pickSession(this.inFlight, this.solo);
    return new Promise<BatchOutput>((resolve, reject) => {
      if (this.closing) return reject(new Error('the model is closed'));
      this.pending.set(batchId, { resolve, reject, instance });
      this.inFlight[instance]!++;
      this.threads[instance]!.postMessage(
        {
          type: 'run' as const,
          batchId,
          pixels,
          placements: images.map((img) => img.placement),
          runBatch: this.fixedBatch ?? images.length,
          height,
          width,
          filters,
        } satisfies MainMessage,
        [pixels.buffer],
      );
    });
  }

  close(): Promise<void> {
    this.closing ??= Promise.all(this.threads.map((t) => t.terminate())).then(() => undefined);
    return this.closing;
  }

  private onMessage(msg: ThreadMessage): void {
    if (msg.type !== 'done' && msg.type !== 'failed') return;
    const waiter = this.pending.get(msg.batchId);
    if (!waiter) return;
    this.pending.delete(msg.batchId);
    this.inFlight[waiter.instance]!--;
    if (msg.type === 'done') waiter.resolve({ candidates: msg.candidates, timings: msg.timings });
    else waiter.reject(new Error(msg.message));
  }

  private failAll(err: Error): void {
    for (const waiter of this.pending.values()) waiter.reject(err);
    this.pending.clear();
    this.inFlight.fill(0);
  }
}

/**
 * The batch's pixels as one Uint8Array that owns its whole ArrayBuffer, so that it can be
 * transferred to the session thread without cloning. An image alone that is handed over and
 * whose buffer is already its own (what ioredis returns for a value that arrived in several
 * socket reads, as every image of hundreds of kilobytes does) is used as it is, saving a copy
 * and a fresh allocation of its size; otherwise the images are copied one after the other into
 * a new buffer.
 */
function transferablePixels(images: readonly PlacedImage[]): Uint8Array<ArrayBuffer> {
  const only = images.length === 1 && images[0]!.handOver ? images[0]!.pixels : undefined;
  if (
    only?.buffer instanceof ArrayBuffer &&
    only.byteOffset === 0 &&
    only.buffer.byteLength === only.byteLength
  ) {
    return new Uint8Array(only.buffer);
  }
  const pixels = new Uint8Array(images.reduce((n, img) => n + img.pixels.byteLength, 0));
  let offset = 0;
  for (const { pixels: img } of images) {
    pixels.set(img, offset);
    offset += img.byteLength;
  }
  return pixels;
}

/**
 * The session a batch runs on, given the batches each session has in flight: with a solo
 * session (index 0, sessionLayout), the solo session when nothing runs, else an idle one of the
 * others, else the least busy of them; without, the first idle session (the first has the most
 * threads), else the least busy. Ties go to the lowest index.
 */
export function pickSession(inFlight: readonly number[], solo: boolean): number {
  if (solo) {
    if (inFlight.every((n) => n === 0)) return 0;
    const others = inFlight.slice(1);
    return 1 + others.indexOf(Math.min(...others));
  }
  return inFlight.indexOf(Math.min(...inFlight));
}

function startThread(init: SessionInit, transferList: ArrayBuffer[]): Worker {
  // Same extension as this module: .ts under tsx, .js once compiled.
  const ext = extname(fileURLToPath(import.meta.url));
  const entry = new URL(`./session-thread${ext}`, import.meta.url);
  if (ext !== '.ts') return new Worker(entry, { workerData: init, transferList });
  // tsx's loader does not reach worker threads: register it inside the thread first.
  const api = JSON.stringify(import.meta.resolve('tsx/esm/api'));
  const code = `import(${api}).then((tsx) => { tsx.register(); return import(${JSON.stringify(entry.href)}); })`;
  return new Worker(code, { eval: true, workerData: init, transferList });
}

async function readModelFile(path: string): Promise<Uint8Array> {
  try {
    const buf = await readFile(path);
    return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : String(err);
    throw new ModelLoadError(`MODEL_PATH ${path}: ${reason}`);
  }
}

function describe(opts: ModelOptions): string {
  return opts.modelPath ?? 'the tiny detector';
}

function waitReady(thread: Worker, opts: ModelOptions): Promise<SessionInfo> {
  return awaitThread<SessionInfo>(thread, opts, (msg) => {
    if (msg.type === 'ready') return { value: msg.info };
    if (msg.type === 'init-failed')
      return { error: describeLoadFailure(describe(opts), opts.executionProvider, msg.message) };
    return undefined;
  });
}

function warmup(
  thread: Worker,
  opts: ModelOptions,
  req: WarmupRequest,
): Promise<{ outputShape: number[]; ms: number }> {
  thread.postMessage(req satisfies MainMessage);
  return awaitThread<{ outputShape: number[]; ms: number }>(thread, opts, (msg) => {
    if (msg.type === 'warmed') return { value: msg };
    if (msg.type === 'warmup-failed') {
      return {
        error:
          `${describe(opts)} failed its warm-up run on a zero ${req.width}×${req.height} ` +
          `image (batch ${req.batch}): ${msg.message.split('\n')[0]}`,
      };
    }
    return undefined;
  });
}

/**
 * Waits for the thread's answer during loading: `pick` turns a message into a value or a
 * ModelLoadError reason (and ignores others); an error or exit of the thread fails the load.
 */
function awaitThread<T>(
  thread: Worker,
  opts: ModelOptions,
  pick: (msg: ThreadMessage) => { value: T } | { error: string } | undefined,
): Promise<T> {
  const what = describe(opts);
  return new Promise<T>((resolve, reject) => {
    const fail = (why: string) => {
      cleanup();
      void thread.terminate();
      reject(new ModelLoadError(why));
    };
    const onMessage = (msg: ThreadMessage) => {
      const picked = pick(msg);
      if (!picked) return;
      if ('error' in picked) return fail(picked.error);
      cleanup();
      resolve(picked.value);
    };
    const onError = (err: Error) => fail(`loading ${what} failed: ${err.message}`);
    const onExit = (code: number) =>
      fail(`the inference thread exited with code ${code} while loading ${what}`);
    const cleanup = () => {
      thread.off('message', onMessage);
      thread.off('error', onError);
      thread.off('exit', onExit);
    };
    thread.on('message', onMessage);
    thread.on('error', onError);
    thread.on('exit', onExit);
  });
}

function describeLoadFailure(what: string, provider: ExecutionProvider, message: string): string {
  if (provider !== 'cpu' && /ExecutionProvider|shared library|providers_/i.test(message)) {
    return (
      `EXECUTION_PROVIDER=${provider} is not available on this machine (${message.split('\n')[0]}). ` +
      `Install onnxruntime-node's ${provider === 'cuda' ? 'CUDA' : 'TensorRT'} binaries and drivers, or set EXECUTION_PROVIDER=cpu.`
    );
  }
  return `${what} is not a loadable ONNX model: ${message.split('\n')[0]}`;
}

function safeMetadata(bytes: Uint8Array): Record<string, string> {
  try {
    return readOnnxMetadata(bytes);
  } catch {
    return {};
  }
}

function parseImgsz(value: string | undefined): [number, number] | undefined {
  const nums = value?.match(/\d+/g)?.map(Number);
  if (!nums || nums.length === 0) return undefined;
  return [nums[0]!, nums[1] ?? nums[0]!];
}

/** The entries of a partial object that are set, so they do not override defaults with undefined. */
function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

async function resolveClassNames(
  opts: ModelOptions,
  metadata: Record<string, string>,
  numClasses: number | undefined,
): Promise<string[]> {
  let names: string[] | undefined;
  const embedded = metadata['names'];
  if (embedded) names = parseClassNames(embedded);
  if (!names && opts.classNamesPath) {
    try {
      names = (await readFile(opts.classNamesPath, 'utf8'))
        .split(/\r?\n/)
        .map((l) => l.trim())
        .filter(Boolean);
    } catch (err) {
      throw new ModelLoadError(
        `CLASS_NAMES ${opts.classNamesPath}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
      );
    }
  }
  names ??= [];
  const count = numClasses ?? names.length;
  return Array.from({ length: count }, (_, i) => names[i] ?? `class_${i}`);
}
