import type { AccuracyResult } from './accuracy.js';
import type { LimitResult } from './limit.js';
import type { SystemResult } from './measure.js';
import type { ModelAloneResult } from './model-alone.js';
import type { RedisCommandCount } from './redis-commands.js';
import type { StageTimings } from './stages.js';
import type { WorkloadName } from './workloads.js';

/** Types of what `npm run bench` writes to bench/results/latest.json (BenchResult). */

/** What reference.ts prints. */
export interface ReferenceResult {
  imagesPerSecond: number;
  cpuMsPerImage: number;
  cpuCores: number;
  latencyMsP50: number;
  images: number;
  seconds: number;
}

export interface WorkloadResult {
  describe: string;
  /** The fixed in-process reference (reference.ts), yolov8n only. */
  reference?: ReferenceResult;
  /** The in-process limit (limit.ts). */
  limit?: LimitResult;
  standard?: SystemResult;
  pipeline?: SystemResult;
}

export interface Machine {
  cores: number;
  cpu: string;
  loadAverageAtStart: number[];
  node: string;
}

export type TargetStatus = 'met' | 'missed' | 'not measured' | 'info';

/** One line of the target table. */
export interface TargetRow {
  workload: string;
  what: string;
  target: string;
  measured: string;
  /** The number compared with the target (null when not measured). */
  value: number | null;
  status: TargetStatus;
}

export interface BenchResult {
  startedAt: string;
  finishedAt: string;
  machine: Machine;
  options: Record<string, unknown>;
  stages?: StageTimings;
  /** Model alone (model-alone.ts), by model: yolov8n (yolov8n and bus workloads), null, tiny. */
  modelAlone: Partial<Record<string, ModelAloneResult>>;
  workloads: Partial<Record<WorkloadName, WorkloadResult>>;
  /** Redis commands per image (MONITOR phase), by model of the pipeline. */
  redisCommands: Partial<Record<string, RedisCommandCount>>;
  accuracy?: AccuracyResult;
  targets: TargetRow[];
}
