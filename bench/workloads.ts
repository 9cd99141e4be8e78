import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { drawImage, type Shape, type ShapeColour } from '../test/helpers/images.js';

/**
 * The workloads of the benchmark: which model, which images, which client concurrencies.
 *  - `yolov8n`: the real model on real photos (yolov8n at 640 on COCO128), 8 clients (and 1);
 *  - `bus`: the same model, `bus.jpg` one request at a time (the added latency);
 *  - `null`: a model that costs nothing on small JPEGs, so what is measured is the pipeline's
 *    own work (HTTP, queues, Redis, decode, serialisation): the orchestration ceiling;
 *  - `tiny`: the project's generated tiny model on small drawn PNGs (not run by default).
 */
export const SHARED_DIR = fileURLToPath(new URL('../../shared/', import.meta.url));
export const COCO128_IMAGES = join(SHARED_DIR, 'data/coco128/images');
export const COCO128_LABELS = join(SHARED_DIR, 'data/coco128/labels');
export const BUS_JPG = join(SHARED_DIR, 'data/samples/bus.jpg');
export const YOLOV8N_MODEL = join(SHARED_DIR, 'models/yolov8n-dynamic.onnx');
export const NULL_MODEL = join(SHARED_DIR, 'models/null-640.onnx');

/** Width of the null workload's JPEGs: the COCO128 images resized (aspect kept), quality 85. */
export const SMALL_JPEG_WIDTH = 160;
export const SMALL_JPEG_QUALITY = 85;

export type WorkloadName = 'yolov8n' | 'bus' | 'null' | 'tiny';
export const WORKLOADS: readonly WorkloadName[] = ['yolov8n', 'bus', 'null', 'tiny'];
/** What `npm run bench` runs without `--workloads`. */
export const DEFAULT_WORKLOADS: readonly WorkloadName[] = ['yolov8n', 'bus', 'null'];

export interface Workload {
  name: WorkloadName;
  /** ONNX file; undefined serves the generated tiny detector. */
  modelPath: string | undefined;
  confidence: number;
  /** Client connections of each load step (`--concurrency` replaces them, except for `bus`). */
  concurrency: { normal: number[]; quick: number[] };
  /** Whether `--concurrency` may change the steps (not for the one-at-a-time workload). */
  fixedConcurrency: boolean;
  /** Least answers in each measured window (the window is extended until they arrived). */
  minAnswers: number;
  describe: string;
}

/** The definition of a workload by name. */
export function workload(name: WorkloadName): Workload {
  switch (name) {
    case 'yolov8n':
      return {
        name,
        modelPath: YOLOV8N_MODEL,
        confidence: 0.25,
        concurrency: { normal: [8, 1], quick: [8] },
        fixedConcurrency: false,
        minAnswers: 0,
        describe: 'yolov8n-dynamic.onnx at 640×640, the 128 COCO128 JPEGs, confidence 0.25',
      };
    case 'bus':
      return {
        name,
        modelPath: YOLOV8N_MODEL,
        confidence: 0.25,
        concurrency: { normal: [1], quick: [1] },
        fixedConcurrency: true,
        minAnswers: 20,
        describe: 'yolov8n-dynamic.onnx, bus.jpg (810×1080) one request at a time, confidence 0.25',
      };
    case 'null':
      return {
        name,
        modelPath: NULL_MODEL,
        confidence: 0.25,
        concurrency: { normal: [8, 32], quick: [16] },
        fixedConcurrency: false,
        minAnswers: 0,
        describe: `null-640.onnx (returns zeros), the COCO128 JPEGs resized to ${SMALL_JPEG_WIDTH} px wide (JPEG q${SMALL_JPEG_QUALITY})`,
      };
    case 'tiny':
      return {
        name,
        modelPath: undefined,
        confidence: 0.25,
        concurrency: { normal: [8, 32], quick: [16] },
        fixedConcurrency: false,
        minAnswers: 0,
        describe: 'generated tiny-shapes model at 320×320, 32 drawn 320×240 PNGs, confidence 0.25',
      };
  }
}

/** The COCO128 JPEGs, sorted by name. */
export function coco128(): Array<{ name: string; bytes: Buffer }> {
  return readdirSync(COCO128_IMAGES)
    .filter((f) => f.endsWith('.jpg'))
    .sort()
    .map((f) => ({ name: f, bytes: readFileSync(join(COCO128_IMAGES, f)) }));
}

/** The encoded images of a workload, in a fixed order (the null workload's made now). */
export async function loadImages(name: WorkloadName): Promise<Buffer[]> {
  switch (name) {
    case 'yolov8n':
      return coco128().map((i) => i.bytes);
    case 'bus':
      return [readFileSync(BUS_JPG)];
    case 'null':
      return Promise.all(
        coco128().map(({ bytes }) =>
          sharp(bytes)
            .rotate()
            .resize({ width: SMALL_JPEG_WIDTH })
            .jpeg({ quality: SMALL_JPEG_QUALITY })
            .toBuffer(),
        ),
      );
    case 'tiny': {
      const colours: ShapeColour[] = ['red', 'green', 'blue'];
      return Promise.all(
        Array.from({ length: 32 }, (_, i) => {
          const shapes: Shape[] = [
            { colour: colours[i % 3]!, x: 10 + i * 3, y: 20 + i * 2, w: 60, h: 40 },
            { colour: colours[(i + 1) % 3]!, x: 180, y: 100 + (i % 8) * 5, w: 80, h: 90 },
          ];
          return drawImage(320, 240, shapes);
        }),
      );
    }
  }
}

/** Request bodies for POST /infer/object_detection: Roboflow's JSON form with base64 images. */
export function jsonBodies(
  images: readonly Buffer[],
  confidence: number,
  extra: Record<string, unknown> = {},
): Buffer[] {
  return images.map((img) =>
    Buffer.from(
      JSON.stringify({
        image: { type: 'base64', value: img.toString('base64') },
        confidence,
        ...extra,
      }),
    ),
  );
}
