import { parentPort, workerData } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import { letterboxToNchwFloat } from './input-tensor.js';
import { decoderFor, type Decoder } from './output-decoder.js';
import type {
  ConfigureRequest,
  ExecutionProvider,
  MainMessage,
  RunRequest,
  SessionInit,
  ThreadMessage,
  WarmupRequest,
} from './session-protocol.js';

/**
 * The thread that owns the onnxruntime session (see session-protocol.ts for why). It builds
 * the float32 input tensor from uint8 pixels (in the model's channel order and scale), runs the
 * model and decodes the output of its layout into compact candidates, so only small buffers
 * cross back to the main thread. Messages: one `warmup`, one `configure`, then `run`s.
 */
const port = parentPort;
if (!port) throw new Error('session-thread must run as a worker thread');
const post = (msg: ThreadMessage, transfer: ArrayBuffer[] = []) => port.postMessage(msg, transfer);

const PROVIDERS: Record<ExecutionProvider, string[]> = {
  cpu: ['cpu'],
  cuda: ['cuda'],
  tensorrt: ['tensorrt', 'cuda'],
};

const init = workerData as SessionInit;
let session: ort.InferenceSession;
try {
  const started = performance.now();
  session = await ort.InferenceSession.create(init.modelBytes, {
    executionProviders: PROVIDERS[init.executionProvider],
    graphOptimizationLevel: 'all',
    ...(init.threads.intraOp > 0 ? { intraOpNumThreads: init.threads.intraOp } : {}),
    extra: { session: { intra_op: { allow_spinning: init.threads.allowSpinning ? '1' : '0' } } },
  });
  const input = session.inputMetadata[0];
  const output = session.outputMetadata[0];
  if (!input?.isTensor || !output?.isTensor)
    throw new Error('the model must have a tensor input and a tensor output');
  post({
    type: 'ready',
    info: {
      inputName: input.name,
      outputName: output.name,
      inputShape: [...input.shape],
      outputShape: [...output.shape],
      loadMs: performance.now() - started,
    },
  });
} catch (err) {
  post({ type: 'init-failed', message: err instanceof Error ? err.message : String(err) });
  process.exit(0);
}

const inputName = session.inputNames[0]!;
const outputName = session.outputNames[0]!;

let configured: { decode: Decoder; prep: ConfigureRequest['preprocessing'] } | undefined;

port.on('message', (msg: MainMessage) => {
  switch (msg.type) {
    case 'warmup':
      void warmup(msg);
      break;
    case 'configure':
      configured = {
        decode: decoderFor(msg.layout, msg.height, msg.width),
        prep: msg.preprocessing,
      };
      break;
    case 'run':
      void runBatch(msg);
      break;
  }
});

async function warmup(req: WarmupRequest): Promise<void> {
  try {
    const started = performance.now();
    const data = new Float32Array(req.batch * 3 * req.height * req.width);
    const tensor = new ort.Tensor('float32', data, [req.batch, 3, req.height, req.width]);
    const results = await session.run({ [inputName]: tensor });
    const out = results[outputName];
    if (!out) throw new Error(`the model returned no '${outputName}'`);
    post({ type: 'warmed', outputShape: [...out.dims], ms: performance.now() - started });
  } catch (err) {
    post({ type: 'warmup-failed', message: err instanceof Error ? err.message : String(err) });
  }
}

// The input tensor's memory, kept from batch to batch: a batch of eight 640×640 images is
// 39 MB, which allocating (and zeroing) anew for every run costs time and garbage collections.
// Batches run one at a time on this thread (the scheduler has one run slot).
// The largest batch so far sets the capacity; smaller batches use its start.
let input = new Float32Array(0);
function inputBuffer(length: number): Float32Array {
  if (input.length < length) input = new Float32Array(length);
  return input.subarray(0, length);
}

async function runBatch(req: RunRequest): Promise<void> {
  try {
    if (!configured) throw new Error('the session thread got a batch before its configuration');
    const t0 = performance.now();
    const data = inputBuffer(req.runBatch * 3 * req.height * req.width);
    letterboxToNchwFloat(req.pixels, req.placements, req.height, req.width, data, configured.prep);
    // A fixed batch larger than the images: the rest of the batch is zeros.
    data.fill(0, req.placements.length * 3 * req.height * req.width);
    const tensor = new ort.Tensor('float32', data, [req.runBatch, 3, req.height, req.width]);
    const t1 = performance.now();
    const results = await session.run({ [inputName]: tensor });
    const t2 = performance.now();
    const out = results[outputName];
    if (!out || out.type !== 'float32' || out.dims.length !== 3) {
      throw new Error(
        `unexpected model output ${out ? `${out.type} [${out.dims.join(', ')}]` : 'missing'}`,
      );
    }
    const dims = out.dims as unknown as [number, number, number];
    const values = out.data as Float32Array;
    const { decode } = configured;
    const candidates = req.filters.map((f, i) => decode(values, dims, i, f));
    const t3 = performance.now();
    post(
      {
        type: 'done',
        batchId: req.batchId,
        candidates,
        timings: { prepareMs: t1 - t0, runMs: t2 - t1, decodeMs: t3 - t2 },
      },
      candidates.map((c) => c.buffer as ArrayBuffer),
    );
  } catch (err) {
    post({
      type: 'failed',
      batchId: req.batchId,
      message: err instanceof Error ? err.message : String(err),
    });
  }
}
