import { existsSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { DetectionResponseSchema } from '../shared/contracts.js';
import {
  meanAveragePrecision,
  parseYoloLabels,
  type ImageDetections,
  type MapResult,
} from './map-metric.js';
import { round } from './proc-stats.js';
import { COCO128_LABELS, coco128 } from './workloads.js';

/**
 * Accuracy through the whole stack: each of the 128 COCO128 images sent to a running server
 * over HTTP (`POST /infer/object_detection`, base64 JSON), its predictions scored against the
 * YOLO-format labels with map-metric.ts (mAP50 and mAP50-95 as Ultralytics `val` computes them).
 *
 * Request settings are those of Ultralytics `val` (ultralytics/cfg/default.yaml: `conf`
 * defaults to 0.001 for val, `iou: 0.7`, `max_det: 300`; its NMS considers at most 30000 boxes,
 * `max_nms`): confidence 0.001, iou_threshold 0.7, max_detections 300, max_candidates 30000.
 * Differences that remain from Ultralytics' own number: the pipeline keeps the best class of each
 * anchor (Ultralytics' val NMS is multi-label) and letterboxes to a square 640×640 (val uses
 * rectangular batches). Labels are normalised to the original image: the response's `image`
 * size (oriented) turns them into pixels. Images without a label file have no objects.
 *
 * Requests go one at a time, so every image runs in a batch of one and the result does not
 * depend on how requests happened to be batched.
 *
 * Usage on its own, against a running server: tsx bench/accuracy.ts [url]
 * (default http://127.0.0.1:9001); prints one JSON line.
 */
/** Detection parameters of every accuracy request: Ultralytics `val`'s (see above). */
export const VAL_REQUEST = {
  confidence: 0.001,
  iou_threshold: 0.7,
  max_detections: 300,
  max_candidates: 30_000,
} as const;

/** coco128 mAP50-95 through the stack before the performance work (issue 14). */
export const MAP50_95_BASELINE = 0.443;
/**
 * How far below the baseline still counts as no regression. The baseline was given to three
 * decimals (±0.0005), and float differences that change no decision move the result by less
 * than 0.001; a change that loses more than 0.002 (for example a cheaper resampling in `pre`)
 * is a regression.
 */
export const MAP_TOLERANCE = 0.002;

export interface AccuracyResult extends MapResult {
  images: number;
  seconds: number;
  request: typeof VAL_REQUEST;
}

/**
 * mAP of the COCO128 images through the server at `url`, one request at a time.
 *
 * @throws Error when a request is not answered with 2xx or its answer does not parse
 */
export async function measureAccuracy(url: string): Promise<AccuracyResult> {
  const started = performance.now();
  const images: ImageDetections[] = [];
  for (const { name, bytes } of coco128()) {
    const res = await fetch(`${url}/infer/object_detection`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        image: { type: 'base64', value: bytes.toString('base64') },
        ...VAL_REQUEST,
      }),
    });
    if (!res.ok) throw new Error(`${name}: HTTP ${res.status}: ${await res.text()}`);
    const answer = DetectionResponseSchema.parse(await res.json());
    const labelFile = join(COCO128_LABELS, `${basename(name, '.jpg')}.txt`);
    const labels = existsSync(labelFile) ? readFileSync(labelFile, 'utf8') : '';
    images.push({
      groundTruth: parseYoloLabels(labels, answer.image.width, answer.image.height),
      predictions: answer.predictions.map((p) => ({
        x1: p.x - p.width / 2,
        y1: p.y - p.height / 2,
        x2: p.x + p.width / 2,
        y2: p.y + p.height / 2,
        classId: p.class_id,
        confidence: p.confidence,
      })),
    });
  }
  const m = meanAveragePrecision(images);
  return {
    ...m,
    map50: round(m.map50, 4),
    map50to95: round(m.map50to95, 4),
    images: images.length,
    seconds: round((performance.now() - started) / 1000, 1),
    request: VAL_REQUEST,
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const result = await measureAccuracy(process.argv[2] ?? 'http://127.0.0.1:9001');
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
