import { parentPort, workerData } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import { decodeYolov8, hwcToNchwFloat } from './output-decoder.js';
import type {
  ExecutionProvider,
  RunRequest,
  SessionInit,
  ThreadMessage,
} from './session-protocol.js';

/**
 * The thread that owns the onnxruntime session (see session-protocol.ts for why). It builds
 * the float32 input tensor from uint8 pixels, runs the model and decodes the output into
 * compact candidates, so only small buffers cross back to the main thread.
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

port.on('message', (req: RunRequest) => {
  void runBatch(req);
});

async function runBatch(req: RunRequest): Promise<void> {
  try {
    const t0 = performance.now();
    const data = new Float32Array(req.runBatch * 3 * req.height * req.width);
    hwcToNchwFloat(req.pixels, req.count, req.height, req.width, data);
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
    const [, channels, anchors] = out.dims as [number, number, number];
    const values = out.data as Float32Array;
    const candidates = req.filters.map((f, i) => decodeYolov8(values, channels, anchors, i, f));
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
