import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { drawImage, type Shape, type ShapeColour } from '../test/helpers/images.js';

/**
 * The two workloads of the benchmark: a real model on real photos (yolov8n at 640 on COCO128),
 * and the project's tiny model on small drawn images, where the model costs almost nothing and
 * what is measured is the orchestration around it.
 */
export const SHARED_DIR = fileURLToPath(new URL('../../shared/', import.meta.url));

export type WorkloadName = 'yolov8n' | 'tiny';
export const WORKLOADS: readonly WorkloadName[] = ['yolov8n', 'tiny'];

export interface Workload {
  name: WorkloadName;
  /** ONNX file; undefined serves the generated tiny detector. */
  modelPath: string | undefined;
  confidence: number;
  describe: string;
}

export function workload(name: WorkloadName): Workload {
  return name === 'yolov8n'
    ? {
        name,
        modelPath: join(SHARED_DIR, 'models/yolov8n-dynamic.onnx'),
        confidence: 0.25,
        describe: 'yolov8n-dynamic.onnx at 640×640, the 128 COCO128 JPEGs, confidence 0.25',
      }
    : {
        name,
        modelPath: undefined,
        confidence: 0.25,
        describe: 'generated tiny-shapes model at 320×320, 32 drawn 320×240 PNGs, confidence 0.25',
      };
}

/** The encoded images of a workload, in a fixed order. */
export async function loadImages(name: WorkloadName): Promise<Buffer[]> {
  if (name === 'yolov8n') {
    const dir = join(SHARED_DIR, 'data/coco128/images');
    return readdirSync(dir)
      .filter((f) => f.endsWith('.jpg'))
      .sort()
      .map((f) => readFileSync(join(dir, f)));
  }
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

/** Request bodies for POST /infer/object_detection: Roboflow's JSON form with base64 images. */
export function jsonBodies(images: readonly Buffer[], confidence: number): Buffer[] {
  return images.map((img) =>
    Buffer.from(
      JSON.stringify({ image: { type: 'base64', value: img.toString('base64') }, confidence }),
    ),
  );
}
