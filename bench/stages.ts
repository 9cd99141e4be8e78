import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { CANDIDATE_STRIDE, decodeCandidates, encodeCandidates } from '../shared/candidates.js';
import { letterboxToNchwFloat } from '../services/infer/input-tensor.js';
import { decodeYolov8 } from '../services/infer/output-decoder.js';
import { buildResponse } from '../services/post/postprocess.js';
import { letterboxImage } from '../services/pre/preprocess.js';
import { DECODE_LIMITS, detectionParams } from './inline-detector.js';
import { round } from './proc-stats.js';
import { SHARED_DIR } from './workloads.js';

/**
 * Single-stage timings on one core, one image at a time:
 *  - pre: decode + orient + letterbox of bus.jpg (810×1080 JPEG) to 640×640, as the `pre`
 *    stage does it (one libvips thread);
 *  - post: YOLOv8n's real output for bus.jpg (8400 anchors × 80 classes) turned into the
 *    response: decodeYolov8 (in the inference thread), the candidates' binary round trip, and
 *    NMS with the response (the `post` stage), at confidence 0.25 and at 0.001.
 * Prints one JSON object on stdout.
 */
export interface StageTimings {
  pre: {
    image: string;
    msWall: number;
    msCpu: number;
    /** The JPEG decode alone (sharp to raw pixels at full size), for comparison. */
    decodeOnlyMsCpu: number;
    iterations: number;
  };
  post: Array<{
    confidence: number;
    candidates: number;
    detections: number;
    decodeMs: number;
    nmsAndResponseMs: number;
    totalMs: number;
  }>;
  /** uint8 HWC → float32 NCHW of one 640×640 image, as the inference thread does it. */
  floatConversionMs: number;
}

sharp.concurrency(1);
const iterations = Number(process.argv[2] ?? 100);
const bus = readFileSync(join(SHARED_DIR, 'data/samples/bus.jpg'));

async function timeIt(n: number, fn: () => unknown): Promise<{ wall: number; cpu: number }> {
  for (let i = 0; i < Math.min(10, n); i++) await fn();
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await fn();
  const c = process.cpuUsage(c0);
  return { wall: (performance.now() - t0) / n, cpu: (c.user + c.system) / 1000 / n };
}

const pre = await timeIt(iterations, () => letterboxImage(bus, 640, 640, true, DECODE_LIMITS));
const decodeOnly = await timeIt(iterations, () => sharp(bus).raw().toBuffer());
const { pixels, letterbox } = await letterboxImage(bus, 640, 640, true, DECODE_LIMITS);

const input = new Float32Array(3 * 640 * 640);
const placement = {
  width: letterbox.resizedWidth,
  height: letterbox.resizedHeight,
  left: letterbox.padLeft,
  top: letterbox.padTop,
};
const conv = await timeIt(iterations, () =>
  letterboxToNchwFloat(pixels, [placement], 640, 640, input),
);

const session = await ort.InferenceSession.create(join(SHARED_DIR, 'models/yolov8n-dynamic.onnx'), {
  graphOptimizationLevel: 'all',
});
const out = await session.run({
  [session.inputNames[0]!]: new ort.Tensor('float32', input, [1, 3, 640, 640]),
});
const output = out[session.outputNames[0]!]!;
const [, channels, anchors] = output.dims as [number, number, number];
const values = output.data as Float32Array;
const classNames = Array.from({ length: channels - 4 }, (_, i) => `class_${i}`);

const post: StageTimings['post'] = [];
for (const confidence of [0.25, 0.001]) {
  const params = detectionParams(confidence);
  const filter = { confidence, allowedClassIds: null, maxCandidates: params.maxCandidates };
  const packed = decodeYolov8(values, channels, anchors, 0, filter);
  const bytes = encodeCandidates(packed);
  const respond = () =>
    buildResponse({
      inferenceId: 'bench',
      candidates: decodeCandidates(bytes),
      params,
      letterbox,
      classNames,
      elapsedSeconds: 0,
    });
  const decode = await timeIt(iterations, () => decodeYolov8(values, channels, anchors, 0, filter));
  const nms = await timeIt(iterations, respond);
  post.push({
    confidence,
    candidates: packed.length / CANDIDATE_STRIDE,
    detections: respond().predictions.length,
    decodeMs: round(decode.cpu, 3),
    nmsAndResponseMs: round(nms.cpu, 3),
    totalMs: round(decode.cpu + nms.cpu, 3),
  });
}
await session.release();

const result: StageTimings = {
  pre: {
    image: 'bus.jpg 810×1080',
    msWall: round(pre.wall),
    msCpu: round(pre.cpu),
    decodeOnlyMsCpu: round(decodeOnly.cpu),
    iterations,
  },
  post,
  floatConversionMs: round(conv.cpu, 3),
};
process.stdout.write(`${JSON.stringify(result)}\n`);
