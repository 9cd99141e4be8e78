import { MAP50_95_BASELINE, MAP_TOLERANCE } from './accuracy.js';
import type { LimitLevel } from './limit.js';
import type { SystemStep } from './measure.js';
import { perImage } from './measure.js';
import type { ModelAlone } from './model-alone.js';
import { round } from './proc-stats.js';
import type { BenchResult, TargetRow, TargetStatus } from './result.js';

/**
 * The targets of issue 14, each computed from numbers of the same run (see bench/README.md,
 * "Targets"): what was measured, and met or missed.
 */
export const TARGETS = {
  /** CPU ms per image outside the model, yolov8n at 8 clients. */
  cpuOutsideModelMs: 15,
  /** Added latency of one request at a time (bus.jpg), ms. */
  addedLatencyMs: 14,
  /** Pipeline images/s over the fixed reference's, yolov8n at 8 clients. */
  overReference: 1.07,
  /** Pipeline requests/s over the in-process limit's, null model, small JPEGs. */
  overLimit: 0.9,
  /** The concurrency the per-image CPU and throughput targets are read at. */
  clients: 8,
} as const;

/** The entry whose batch size is closest to `mean` (the smaller on a tie). */
export function closestBatch(batches: readonly ModelAlone[], mean: number): ModelAlone | undefined {
  let best: ModelAlone | undefined;
  for (const b of batches)
    if (!best || Math.abs(b.batchSize - mean) < Math.abs(best.batchSize - mean)) best = b;
  return best;
}

/** The step at `clients` connections, else the first. */
function stepAt(steps: readonly SystemStep[] | undefined, clients: number): SystemStep | undefined {
  return steps?.find((s) => s.connections === clients) ?? steps?.[0];
}

const status = (ok: boolean): TargetStatus => (ok ? 'met' : 'missed');

/** CPU ms per image outside the model at one step, against the model alone of the same run. */
export function cpuOutsideModel(
  step: SystemStep,
  batches: readonly ModelAlone[],
): { value: number; measured: string } | undefined {
  const model = closestBatch(batches, step.pipeline?.meanBatchSize ?? 1);
  if (!model || step.cpuMsPerImage === null) return undefined;
  const value = round(step.cpuMsPerImage - model.cpuMsPerImage, 1);
  return {
    value,
    measured:
      `${value} ms (pipeline ${step.cpuMsPerImage} − model alone ${model.cpuMsPerImage} at batch ${model.batchSize}; ` +
      `mean batch ${step.pipeline?.meanBatchSize ?? '-'}, c=${step.connections})`,
  };
}

/** The target table of a run: one row per target and workload, plus information rows. */
export function computeTargets(r: BenchResult): TargetRow[] {
  const rows: TargetRow[] = [];
  const missing = (workload: string, what: string, target: string): TargetRow => ({
    workload,
    what,
    target,
    measured: '-',
    value: null,
    status: 'not measured',
  });

  // 1. CPU per image outside the model.
  {
    const what = 'CPU per image outside the model';
    const target = `≤ ${TARGETS.cpuOutsideModelMs} ms`;
    const step = stepAt(r.workloads.yolov8n?.pipeline?.steps, TARGETS.clients);
    const out = step && cpuOutsideModel(step, r.modelAlone['yolov8n']?.batches ?? []);
    rows.push(
      out
        ? {
            workload: 'yolov8n',
            what,
            target,
            ...out,
            status: status(out.value <= TARGETS.cpuOutsideModelMs),
          }
        : missing('yolov8n', what, target),
    );
  }
  // 2. Added latency at one request at a time.
  {
    const what = 'added latency, one request at a time';
    const target = `≤ ${TARGETS.addedLatencyMs} ms`;
    const step = r.workloads.bus?.pipeline?.steps[0];
    const model = r.modelAlone['yolov8n']?.batches.find((b) => b.batchSize === 1);
    if (step && model) {
      const value = round(step.latencyMs.p50 - model.wallMsP50, 1);
      rows.push({
        workload: 'bus',
        what,
        target,
        value,
        measured: `${value} ms (pipeline p50 ${step.latencyMs.p50} − model alone p50 ${model.wallMsP50} at batch 1; ${step.ok} requests)`,
        status: status(value <= TARGETS.addedLatencyMs),
      });
    } else rows.push(missing('bus', what, target));
  }
  // 3. Throughput against the fixed reference.
  {
    const what = 'throughput / fixed in-process reference';
    const target = `≥ ${TARGETS.overReference}`;
    const step = stepAt(r.workloads.yolov8n?.pipeline?.steps, TARGETS.clients);
    const ref = r.workloads.yolov8n?.reference;
    if (step && ref && ref.imagesPerSecond > 0) {
      const value = round(step.imagesPerSecond / ref.imagesPerSecond);
      rows.push({
        workload: 'yolov8n',
        what,
        target,
        value,
        measured:
          `${value} (pipeline ${step.imagesPerSecond} images/s at c=${step.connections}, ${step.cpuMsPerImage ?? '-'} CPU ms/img; ` +
          `reference ${ref.imagesPerSecond} images/s, ${ref.cpuMsPerImage} CPU ms/img)`,
        status: status(value >= TARGETS.overReference),
      });
    } else rows.push(missing('yolov8n', what, target));
  }
  // 4. Orchestration ceiling.
  {
    const what = 'orchestration ceiling: pipeline / in-process limit';
    const target = `≥ ${TARGETS.overLimit}`;
    const pipe = r.workloads.null?.pipeline?.steps.reduce<SystemStep | undefined>(
      (a, s) => (!a || s.imagesPerSecond > a.imagesPerSecond ? s : a),
      undefined,
    );
    const limit = r.workloads.null?.limit?.levels.reduce<LimitLevel | undefined>(
      (a, l) => (!a || l.imagesPerSecond > a.imagesPerSecond ? l : a),
      undefined,
    );
    if (pipe && limit && limit.imagesPerSecond > 0) {
      const value = round(pipe.imagesPerSecond / limit.imagesPerSecond);
      const perCore = (rps: number, cores: number) => (cores > 0 ? round(rps / cores, 1) : '-');
      rows.push({
        workload: 'null',
        what,
        target,
        value,
        measured:
          `${value} (best of each: pipeline ${pipe.imagesPerSecond} req/s at c=${pipe.connections}, ${perCore(pipe.imagesPerSecond, pipe.cpuCores)} per busy core; ` +
          `limit ${limit.imagesPerSecond} req/s at ${limit.inflight} in flight, ${perCore(limit.imagesPerSecond, limit.cpuCores)} per busy core; ` +
          `per machine core ${round(pipe.imagesPerSecond / r.machine.cores, 1)} and ${round(limit.imagesPerSecond / r.machine.cores, 1)})`,
        status: status(value >= TARGETS.overLimit),
      });
    } else rows.push(missing('null', what, target));
    const step = stepAt(r.workloads.null?.pipeline?.steps, TARGETS.clients);
    const out = step && cpuOutsideModel(step, r.modelAlone['null']?.batches ?? []);
    if (out)
      rows.push({
        workload: 'null',
        what: 'CPU per image outside the model',
        target: '(no target)',
        ...out,
        status: 'info',
      });
  }
  // 5. Accuracy through the stack.
  {
    const what = 'coco128 mAP50-95 through the stack';
    const floor = round(MAP50_95_BASELINE - MAP_TOLERANCE, 4);
    const target = `≥ ${MAP50_95_BASELINE} (− ${MAP_TOLERANCE})`;
    const a = r.accuracy;
    rows.push(
      a
        ? {
            workload: 'yolov8n',
            what,
            target,
            value: a.map50to95,
            measured: `${a.map50to95} (mAP50 ${a.map50}; ${a.images} images, ${a.predictions} boxes)`,
            status: status(a.map50to95 >= floor),
          }
        : missing('yolov8n', what, target),
    );
  }
  // 6. Redis commands per image.
  for (const [model, c] of Object.entries(r.redisCommands)) {
    if (!c) continue;
    rows.push({
      workload: model,
      what: 'Redis commands per image (bus.jpg, MONITOR)',
      target: '(count, cut)',
      value: c.sentPerImage,
      measured:
        `${c.sentPerImage} sent, of which ${c.scriptsPerImage} scripts running ${c.inScriptsPerImage} commands; ` +
        `at rest ${c.idleSentPerSecond} sent/s + ${c.idleInScriptsPerSecond}/s in scripts`,
      status: 'info',
    });
  }
  // 7. CPU per process per image.
  {
    const step = stepAt(r.workloads.yolov8n?.pipeline?.steps, TARGETS.clients);
    if (step)
      rows.push({
        workload: 'yolov8n',
        what: `CPU ms per image by process, c=${step.connections}`,
        target: '(see tables)',
        value: step.cpuMsPerImage,
        measured: Object.entries(step.cpuCoresByProcess)
          .map(([p, cores]) => `${p} ${perImage(cores, step.imagesPerSecond) ?? '-'}`)
          .join(', '),
        status: 'info',
      });
  }
  return rows;
}
