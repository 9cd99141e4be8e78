/**
 * Messages between the inference process's main thread and the thread that owns the
 * onnxruntime session. `session.run()` blocks the thread it runs on for the whole model run,
 * so it lives on its own thread: the main thread keeps renewing BullMQ locks, talking to Redis
 * and collecting the next batch meanwhile.
 */
import type { CandidateFilter } from './output-decoder.js';

export type ExecutionProvider = 'cpu' | 'cuda' | 'tensorrt';

export interface SessionInit {
  modelBytes: Uint8Array;
  executionProvider: ExecutionProvider;
}

export type Dim = number | string;

export interface SessionInfo {
  inputName: string;
  outputName: string;
  inputShape: Dim[];
  outputShape: Dim[];
  loadMs: number;
}

export interface RunRequest {
  type: 'run';
  batchId: number;
  /** Images as one buffer of `count × height × width × 3` RGB bytes. */
  pixels: Uint8Array;
  count: number;
  /** Batch size to run: `count`, or the model's fixed batch size (the rest zero-padded). */
  runBatch: number;
  height: number;
  width: number;
  filters: CandidateFilter[];
}

export interface RunTimings {
  prepareMs: number;
  runMs: number;
  decodeMs: number;
}

export type ThreadMessage =
  | { type: 'ready'; info: SessionInfo }
  | { type: 'init-failed'; message: string }
  | { type: 'done'; batchId: number; candidates: Float32Array[]; timings: RunTimings }
  | { type: 'failed'; batchId: number; message: string };
