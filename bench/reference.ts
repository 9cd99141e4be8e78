/**
 * The fixed in-process reference: the yardstick the pipeline's throughput is reported
 * against. KEEP THIS FILE UNCHANGED FROM RUN TO RUN: it is not something to optimise, and it
 * imports nothing from the project (only sharp, onnxruntime-node and Node's built-ins), so that
 * making the project faster never moves the yardstick.
 *
 * What a straightforward single-process YOLOv8 server does per image, minus HTTP:
 *  - sharp: decode, EXIF orientation, resize to fit inside 640×640 and centre on grey 114;
 *  - a plain JS loop: uint8 RGB HWC → float32 NCHW / 255;
 *  - onnxruntime-node `InferenceSession.create(path)` with default options, batch of one;
 *  - JS decoding of the YOLOv8 output [1, 84, 8400] (best class per anchor, confidence 0.25)
 *    and greedy per-class NMS (IoU 0.3, at most 300 boxes), boxes mapped back to the image;
 * two images at a time (two concurrent loops over the images), no HTTP, no Redis.
 *
 * Usage: tsx bench/reference.ts <model.onnx> <images dir> <seconds> <warm-up seconds>
 * Progress on stderr; one JSON line on stdout: images/s, CPU ms per image, latency p50.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';

const SIZE = 640;
const CONFIDENCE = 0.25;
const IOU = 0.3;
const MAX_DETECTIONS = 300;
const LOOPS = 2;

const [modelPath, imagesDir, secondsArg = '10', warmupArg = '3'] = process.argv.slice(2);
if (!modelPath || !imagesDir)
  throw new Error('usage: reference.ts <model> <images dir> [s] [warm-up s]');

interface Detection {
  x1: number;
  y1: number;
  x2: number;
  y2: number;
  score: number;
  classId: number;
}

async function letterbox(bytes: Buffer) {
  const meta = await sharp(bytes).metadata();
  const swap = (meta.orientation ?? 1) >= 5;
  const width = (swap ? meta.height : meta.width) ?? SIZE;
  const height = (swap ? meta.width : meta.height) ?? SIZE;
  const scale = Math.min(SIZE / width, SIZE / height);
  const w = Math.round(width * scale);
  const h = Math.round(height * scale);
  const left = Math.floor((SIZE - w) / 2);
  const top = Math.floor((SIZE - h) / 2);
  const grey = { r: 114, g: 114, b: 114 };
  const pixels = await sharp(bytes)
    .rotate()
    .removeAlpha()
    .toColourspace('srgb')
    .resize(w, h, { fit: 'fill' })
    .extend({ left, top, right: SIZE - w - left, bottom: SIZE - h - top, background: grey })
    .raw()
    .toBuffer();
  return { pixels, scale, left, top };
}

function toFloat(pixels: Buffer): Float32Array {
  const plane = SIZE * SIZE;
  const out = new Float32Array(3 * plane);
  for (let i = 0; i < plane; i++) {
    out[i] = pixels[i * 3]! / 255;
    out[plane + i] = pixels[i * 3 + 1]! / 255;
    out[2 * plane + i] = pixels[i * 3 + 2]! / 255;
  }
  return out;
}

function decode(out: Float32Array, anchors: number, scale: number, left: number, top: number) {
  const classes = out.length / anchors - 4;
  const found: Detection[] = [];
  for (let a = 0; a < anchors; a++) {
    let best = -1;
    let score = CONFIDENCE;
    for (let c = 0; c < classes; c++) {
      const s = out[(4 + c) * anchors + a]!;
      if (s >= score) {
        score = s;
        best = c;
      }
    }
    if (best < 0) continue;
    const cx = out[a]!;
    const cy = out[anchors + a]!;
    const w = out[2 * anchors + a]!;
    const h = out[3 * anchors + a]!;
    found.push({
      x1: (cx - w / 2 - left) / scale,
      y1: (cy - h / 2 - top) / scale,
      x2: (cx + w / 2 - left) / scale,
      y2: (cy + h / 2 - top) / scale,
      score,
      classId: best,
    });
  }
  return found;
}

function iou(a: Detection, b: Detection): number {
  const w = Math.max(0, Math.min(a.x2, b.x2) - Math.max(a.x1, b.x1));
  const h = Math.max(0, Math.min(a.y2, b.y2) - Math.max(a.y1, b.y1));
  const inter = w * h;
  const union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter;
  return union > 0 ? inter / union : 0;
}

function nms(found: Detection[]): Detection[] {
  found.sort((a, b) => b.score - a.score);
  const kept: Detection[] = [];
  for (const d of found) {
    if (kept.length >= MAX_DETECTIONS) break;
    if (kept.every((k) => k.classId !== d.classId || iou(k, d) <= IOU)) kept.push(d);
  }
  return kept;
}

const images = readdirSync(imagesDir)
  .filter((f) => f.endsWith('.jpg'))
  .sort()
  .map((f) => readFileSync(join(imagesDir, f)));
const session = await ort.InferenceSession.create(modelPath);
const inputName = session.inputNames[0]!;
const outputName = session.outputNames[0]!;

async function detect(bytes: Buffer): Promise<Detection[]> {
  const { pixels, scale, left, top } = await letterbox(bytes);
  const input = new ort.Tensor('float32', toFloat(pixels), [1, 3, SIZE, SIZE]);
  const result = await session.run({ [inputName]: input });
  const output = result[outputName]!;
  return nms(decode(output.data as Float32Array, output.dims[2]!, scale, left, top));
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
let next = 0;
let stop = false;
let open = false;
let finished = 0;
const latencies: number[] = [];
const loops = Array.from({ length: LOOPS }, async () => {
  while (!stop) {
    const t = performance.now();
    await detect(images[next++ % images.length]!);
    finished++;
    if (open) latencies.push(performance.now() - t);
  }
});
process.stderr.write(`  reference: ${LOOPS} loops, ${secondsArg} s …\n`);
await sleep(Number(warmupArg) * 1000);
while (finished < LOOPS) await sleep(50);
const cpu0 = process.cpuUsage();
const t0 = performance.now();
open = true;
await sleep(Number(secondsArg) * 1000);
open = false;
const wall = (performance.now() - t0) / 1000;
const cpu = process.cpuUsage(cpu0);
stop = true;
await Promise.all(loops);
await session.release();
latencies.sort((a, b) => a - b);
const cpuSeconds = (cpu.user + cpu.system) / 1e6;
const round = (v: number) => Math.round(v * 100) / 100;
process.stdout.write(
  `${JSON.stringify({
    imagesPerSecond: round(latencies.length / wall),
    cpuMsPerImage: round((cpuSeconds * 1000) / Math.max(1, latencies.length)),
    cpuCores: round(cpuSeconds / wall),
    latencyMsP50: round(latencies[Math.floor(latencies.length / 2)] ?? NaN),
    images: latencies.length,
    seconds: round(wall),
  })}\n`,
);
process.exit(0);
