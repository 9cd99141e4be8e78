import { perImage } from './measure.js';
import { round } from './proc-stats.js';
import type { BenchResult, Machine, TargetRow } from './result.js';

/** The text report of one `npm run bench` run (stdout and bench/results/latest.txt). */
export function formatReport(r: BenchResult): string {
  const lines: string[] = [describeMachine(r.startedAt, r.machine)];
  if (r.stages) {
    const s = r.stages;
    lines.push('\nsingle stages (CPU ms of one core per image)');
    lines.push(
      `  pre: decode + letterbox of ${s.pre.image} to 640×640: ${s.pre.msCpu} ms (wall ${s.pre.msWall} ms; the JPEG decode alone ${s.pre.decodeOnlyMsCpu} ms)`,
    );
    lines.push(`  infer thread: uint8 → float32 of one 640×640 image: ${s.floatConversionMs} ms`);
    for (const p of s.post)
      lines.push(
        `  post at confidence ${p.confidence}: ${p.totalMs} ms (decodeYolov8 ${p.decodeMs} + NMS and response ${p.nmsAndResponseMs}; ${p.candidates} candidates, ${p.detections} boxes)`,
      );
  }
  for (const [model, m] of Object.entries(r.modelAlone)) {
    if (!m) continue;
    lines.push(
      `\nmodel alone, ${model} (session.run on a ready float32 batch; ${m.sessionOptions})`,
    );
    lines.push(
      row(['batch', 'images/s', 'ms/run', 'p50 ms/run', 'CPU ms/img'], [7, 10, 10, 11, 11]),
    );
    for (const b of m.batches)
      lines.push(
        row(
          [b.batchSize, b.imagesPerSecond, b.msPerBatch, b.wallMsP50, b.cpuMsPerImage],
          [7, 10, 10, 11, 11],
        ),
      );
  }
  const w = [10, 5, 9, 9, 9, 9, 7, 11, 9];
  for (const [name, wr] of Object.entries(r.workloads)) {
    if (!wr) continue;
    lines.push(`\n${name}: ${wr.describe}`);
    lines.push(
      row(
        [
          'system',
          'conc',
          'images/s',
          'p50 ms',
          'p90 ms',
          'p99 ms',
          'cores',
          'CPU ms/img',
          'RSS MiB',
        ],
        w,
      ),
    );
    const ref = wr.reference;
    if (ref)
      lines.push(
        row(
          [
            'reference',
            2,
            ref.imagesPerSecond,
            ref.latencyMsP50,
            '',
            '',
            ref.cpuCores,
            ref.cpuMsPerImage,
            '',
          ],
          w,
        ),
      );
    for (const l of wr.limit?.levels ?? [])
      lines.push(
        row(
          [
            'limit',
            l.inflight,
            l.imagesPerSecond,
            l.latencyMs.p50,
            l.latencyMs.p90,
            l.latencyMs.p99,
            l.cpuCores,
            perImage(l.cpuCores, l.imagesPerSecond),
            l.rssMiB,
          ],
          w,
        ),
      );
    for (const [sys, sr] of [
      ['standard', wr.standard],
      ['pipeline', wr.pipeline],
    ] as const) {
      for (const s of sr?.steps ?? []) {
        const rss = Object.values(s.rssMiBUnderLoad).reduce((a, b) => a + b, 0);
        lines.push(
          row(
            [
              sys,
              s.connections,
              s.imagesPerSecond,
              s.latencyMs.p50,
              s.latencyMs.p90,
              s.latencyMs.p99,
              s.cpuCores,
              s.cpuMsPerImage,
              round(rss, 0),
            ],
            w,
          ),
        );
      }
    }
    if (!wr.pipeline) continue;
    const pw = [6, 8, 8, 8, 8, 8, 8, 6, 9, 9];
    lines.push(
      '  pipeline per image: mean queue wait (q) and stage time (s) in ms, mean batch, Redis KB in/out',
    );
    lines.push(
      row(
        [
          'conc',
          'q pre',
          's pre',
          'q infer',
          's infer',
          'q post',
          's post',
          'batch',
          'KB in',
          'KB out',
        ],
        pw,
      ),
    );
    for (const s of wr.pipeline.steps) {
      const p = s.pipeline;
      if (!p) continue;
      lines.push(
        row(
          [
            s.connections,
            p.queueWaitMs['pre'],
            p.stageMs['pre'],
            p.queueWaitMs['infer'],
            p.stageMs['infer'],
            p.queueWaitMs['post'],
            p.stageMs['post'],
            p.meanBatchSize,
            round(p.redisBytesInPerImage / 1024, 0),
            round(p.redisBytesOutPerImage / 1024, 0),
          ],
          pw,
        ),
      );
    }
    for (const s of wr.pipeline.steps) {
      const cpu = Object.entries(s.cpuCoresByProcess)
        .map(([k, v]) => `${k} ${perImage(v, s.imagesPerSecond) ?? '-'}`)
        .join(', ');
      lines.push(`  pipeline CPU ms per image by process, c=${s.connections}: ${cpu}`);
    }
    const rest = Object.entries(wr.pipeline.rssMiBAtRest)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ');
    lines.push(`  pipeline RSS at rest (MiB): ${rest}`);
  }
  for (const [model, c] of Object.entries(r.redisCommands)) {
    if (!c) continue;
    const top = Object.entries(c.perImageByCommand)
      .filter(([, v]) => Math.abs(v) >= 0.5)
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `${k} ${v}`)
      .join(', ');
    lines.push(
      `\nRedis commands per image, ${model} pipeline (${c.requests} sequential bus.jpg, MONITOR, idle background removed): ` +
        `${c.sentPerImage} sent by clients, of which ${c.scriptsPerImage} scripts; ${c.inScriptsPerImage} run inside scripts. ` +
        `At rest: ${c.idleSentPerSecond} sent/s, ${c.idleInScriptsPerSecond}/s inside scripts.\n  by command: ${top}`,
    );
  }
  if (r.accuracy) {
    const a = r.accuracy;
    lines.push(
      `\naccuracy through the stack (coco128, ${a.images} images, confidence ${a.request.confidence}, IoU ${a.request.iou_threshold}, ` +
        `max ${a.request.max_detections} boxes): mAP50 ${a.map50}, mAP50-95 ${a.map50to95} (${a.classes} classes, ${a.groundTruthBoxes} boxes, ${a.seconds} s)`,
    );
  }
  lines.push('', formatTargets(r.targets));
  return `${lines.join('\n')}\n`;
}

/** The machine line every report starts with. */
export function describeMachine(startedAt: string, m: Machine): string {
  return (
    `\nstaged-detect benchmark, ${startedAt}, ${m.cores} cores (${m.cpu}), ` +
    `load average at start ${m.loadAverageAtStart.join(' ')}, Node ${m.node}`
  );
}

/** The target table as text: workload, target, status, then what was measured. */
export function formatTargets(rows: readonly TargetRow[]): string {
  const lines = ['targets (issue 14), all from this run:'];
  const w = [8, 50, 18, 12];
  lines.push(
    row(['workload', 'target', '', 'status'], w, true) + '  measured',
    row(['--------', '------', '', '------'], w, true) + '  --------',
  );
  for (const t of rows)
    lines.push(row([t.workload, t.what, t.target, t.status], w, true) + `  ${t.measured}`);
  return lines.join('\n');
}

function row(
  cells: ReadonlyArray<string | number | null | undefined>,
  widths: readonly number[],
  left = false,
): string {
  return cells
    .map((c, i) => {
      const text = String(c ?? '-');
      const width = widths[i] ?? 8;
      return left ? text.padEnd(width) : text.padStart(width);
    })
    .join(' ');
}
