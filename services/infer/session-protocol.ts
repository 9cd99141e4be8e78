/**
 * Messages between the inference process's main thread and the thread that owns the
 * onnxruntime session. `session.run()` blocks the thread it runs on for the whole model run,
 * so it lives on its own thread: the main thread keeps renewing BullMQ locks, talking to Redis
 * and collecting the next batch meanwhile.
 */
import type { ModelLayout, Preprocessing } from '../../shared/model-layout.js';
import type { Placement } from './input-tensor.js';
import type { CandidateFilter } from './output-decoder.js';

export type ExecutionProvider = 'cpu' | 'cuda' | 'tensorrt';

export interface SessionInit {
  modelBytes: Uint8Array;
  executionProvider: ExecutionProvider;
  threads: SessionThreads;
}

/** onnxruntime's CPU thread pool for one session. */
export interface SessionThreads {
  /** Threads of one operator; 0 lets onnxruntime pick (one per core). */
  intraOp: number;
  /**
   * Whether idle pool threads spin waiting for work. Spinning shaves a little latency off the
   * next run but keeps cores busy that the other roles on the machine need.
   */
  allowSpinning: boolean;
}

export const DEFAULT_THREADS: Readonly<SessionThreads> = { intraOp: 0, allowSpinning: false };

export type Dim = number | string;

export interface SessionInfo {
  inputName: string;
  outputName: string;
  inputShape: Dim[];
  outputShape: Dim[];
  loadMs: number;
}

/**
 * Runs the model once on zeros of this size: gives the concrete output dims of models whose
 * shapes are symbolic, and takes the first run's cost out of the first request.
 */
export interface WarmupRequest {
  type: 'warmup';
  batch: number;
  height: number;
  width: number;
}

/** How to build inputs and decode outputs; sent once, after the warm-up, before any run. */
export interface ConfigureRequest {
  type: 'configure';
  layout: ModelLayout;
  preprocessing: Preprocessing;
  height: number;
  width: number;
}

export interface RunRequest {
  type: 'run';
  batchId: number;
  /**
   * The images, one after the other, each `placements[i].height × placements[i].width × 3` RGB
   * bytes (resized, without the letterbox padding).
   */
  pixels: Uint8Array;
  /** Where each image sits in the `height` × `width` model input. */
  placements: Placement[];
  /** Batch size to run: the images, or the model's fixed batch size (the rest zero-padded). */
  runBatch: number;
  height: number;
  width: number;
  filters: CandidateFilter[];
}

export type MainMessage = WarmupRequest | ConfigureRequest | RunRequest;

export interface RunTimings {
  prepareMs: number;
  runMs: number;
  decodeMs: number;
}

export type ThreadMessage =
  | { type: 'ready'; info: SessionInfo }
  | { type: 'init-failed'; message: string }
  | { type: 'warmed'; outputShape: number[]; ms: number }
  | { type: 'warmup-failed'; message: string }
  | { type: 'done'; batchId: number; candidates: Float32Array[]; timings: RunTimings }
  | { type: 'failed'; batchId: number; message: string };
