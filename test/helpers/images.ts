import assert from 'node:assert/strict';
import type { Prediction } from '../../shared/contracts.js';
import sharp from 'sharp';

/**
 * Test images for the generated tiny detector: solid red, green and blue rectangles on a grey
 * background, which the tiny detector finds exactly (see services/infer/tiny-model).
 */
export type ShapeColour = 'red' | 'green' | 'blue';

export interface Shape {
  colour: ShapeColour;
  /** Left, top, width, height in pixels of the displayed image. */
  x: number;
  y: number;
  w: number;
  h: number;
}

const RGB: Record<ShapeColour, [number, number, number]> = {
  red: [255, 0, 0],
  green: [0, 255, 0],
  blue: [0, 0, 255],
};

/** Raw RGB pixels of the displayed image. */
export function drawPixels(width: number, height: number, shapes: readonly Shape[]): Buffer {
  const px = Buffer.alloc(width * height * 3, 90);
  for (const s of shapes) {
    const [r, g, b] = RGB[s.colour];
    for (let y = s.y; y < s.y + s.h; y++) {
      for (let x = s.x; x < s.x + s.w; x++) {
        const o = (y * width + x) * 3;
        px[o] = r;
        px[o + 1] = g;
        px[o + 2] = b;
      }
    }
  }
  return px;
}

export interface DrawOptions {
  format?: 'png' | 'jpeg';
  /**
   * Store the pixels rotated and tag the file with this EXIF orientation, so that the image
   * only looks like `shapes` once oriented. Supports 1 (none), 3, 6 and 8.
   */
  orientation?: 1 | 3 | 6 | 8;
}

export async function drawImage(
  width: number,
  height: number,
  shapes: readonly Shape[],
  opts: DrawOptions = {},
): Promise<Buffer> {
  const orientation = opts.orientation ?? 1;
  // Orientation n means "rotate the stored image by this much clockwise to display it"; store
  // the displayed image rotated the other way.
  const undo = { 1: 0, 3: 180, 6: 270, 8: 90 }[orientation];
  let img = sharp(drawPixels(width, height, shapes), { raw: { width, height, channels: 3 } });
  if (undo !== 0) img = sharp(await img.rotate(undo).png().toBuffer());
  const encoded =
    opts.format === 'jpeg' ? img.jpeg({ quality: 95, chromaSubsampling: '4:4:4' }) : img.png();
  return orientation === 1 ? encoded.toBuffer() : encoded.withMetadata({ orientation }).toBuffer();
}

/** Expected prediction for a shape: Roboflow centre format. */
export function expectedBox(s: Shape): { x: number; y: number; width: number; height: number } {
  return { x: s.x + s.w / 2, y: s.y + s.h / 2, width: s.w, height: s.h };
}

/**
 * Asserts that predictions are exactly these shapes (one each, the tiny detector's class ids),
 * boxes within 2 px, each with the given confidence.
 */
export function assertShapes(
  predictions: Prediction[],
  shapes: readonly Shape[],
  confidence = 1,
): void {
  assert.deepEqual(
    predictions.map((p) => p.class).sort(),
    shapes.map((s) => s.colour).sort(),
    `classes: ${JSON.stringify(predictions)}`,
  );
  for (const s of shapes) {
    const p = predictions.find((q) => q.class === s.colour)!;
    const want = expectedBox(s);
    for (const k of ['x', 'y', 'width', 'height'] as const) {
      assert.ok(Math.abs(p[k] - want[k]) <= 2, `${s.colour}.${k}: got ${p[k]}, want ${want[k]}`);
    }
    assert.ok(Math.abs(p.confidence - confidence) < 1e-3, `${s.colour}: ${p.confidence}`);
    assert.equal(p.class_id, ['red', 'green', 'blue'].indexOf(s.colour));
    assert.match(p.detection_id, /^[0-9a-f-]{36}$/);
  }
}
