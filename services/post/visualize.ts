import type { Prediction } from '../../shared/contracts.js';
import { decodeError, openImage } from '../../shared/image-decoder.js';
import { boxColour } from '../../shared/palette.js';

/**
 * The sharp adapter of the `post` stage for `visualize_predictions`: the original image, oriented
 * as `pre` oriented it (the boxes are in that image's pixels), with each box drawn as an SVG
 * overlay composited on it, encoded as JPEG.
 */
export interface DrawOptions {
  /** Draw each box's class name and confidence above it. */
  labels: boolean;
  /** Box outline width in pixels. */
  strokeWidth: number;
  /** Apply the EXIF orientation first, as `pre` did. */
  autoOrient: boolean;
  /** Largest width × height decoded (the image already passed this check in `pre`). */
  maxPixels: number;
}

/**
 * Draws the predictions over the image and returns it as JPEG (quality 90), in one libvips
 * pipeline: the decoded pixels never reach JavaScript's heap, where a 16-megapixel image would
 * sit as 48 MB until the next garbage collection.
 *
 * @param bytes the original image, as uploaded
 * @param predictions boxes in the pixels of the image oriented as `pre` oriented it
 * @throws PipelineError IMAGE_DECODE_FAILED when the image cannot be decoded or drawn on
 */
export async function drawPredictions(
  bytes: Buffer,
  predictions: readonly Prediction[],
  opts: DrawOptions,
): Promise<Buffer> {
  try {
    // Decoded (and oriented) as `pre` did (the same decoder), so the overlay lies on the image
    // as the boxes saw it; composited in the same pipeline. SVG passed `pre`'s check already.
    const { image, width, height } = await openImage(bytes, opts.autoOrient, {
      maxPixels: opts.maxPixels,
      allowSvg: true,
    });
    const overlay = Buffer.from(overlaySvg(width, height, predictions, opts));
    return await image
      .removeAlpha()
      .toColourspace('srgb')
      .composite([{ input: overlay, left: 0, top: 0 }])
      .jpeg({ quality: 90 })
      .toBuffer();
  } catch (err) {
    throw decodeError(err, 'the visualization could not be drawn');
  }
}

/** The SVG overlay, the size of the image: one outlined rectangle (and label) per box. */
export function overlaySvg(
  width: number,
  height: number,
  predictions: readonly Prediction[],
  opts: Pick<DrawOptions, 'labels' | 'strokeWidth'>,
): string {
  const s = opts.strokeWidth;
  // Labels scale with the image, as a fraction of its shorter side, within readable bounds.
  const fontSize = Math.round(Math.min(32, Math.max(11, Math.min(width, height) / 40)));
  const parts: string[] = [];
  for (const p of predictions) {
    const colour = boxColour(p.class_id);
    // The outline is centred on the box edge, so its inner half covers the box's border pixels.
    const x = p.x - p.width / 2;
    const y = p.y - p.height / 2;
    parts.push(
      `<rect x="${n(x)}" y="${n(y)}" width="${n(p.width)}" height="${n(p.height)}" fill="none" stroke="${colour}" stroke-width="${s}"/>`,
    );
    if (opts.labels) {
      const text = `${p.class} ${p.confidence.toFixed(2)}`;
      const boxH = Math.round(fontSize * 1.3);
      const boxW = Math.round(text.length * fontSize * 0.6 + fontSize * 0.6);
      // Above the box, or inside it when the box touches the top of the image.
      const top = y - boxH >= 0 ? y - boxH : Math.max(0, y);
      const left = Math.min(Math.max(0, x - s / 2), Math.max(0, width - boxW));
      parts.push(
        `<rect x="${n(left)}" y="${n(top)}" width="${boxW}" height="${boxH}" fill="${colour}"/>`,
        `<text x="${n(left + fontSize * 0.3)}" y="${n(top + fontSize)}" font-family="DejaVu Sans, sans-serif" font-size="${fontSize}" fill="#000000">${escapeXml(text)}</text>`,
      );
    }
  }
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">${parts.join('')}</svg>`;
}

function n(v: number): string {
  return String(Math.round(v * 10) / 10);
}

function escapeXml(s: string): string {
  return s.replace(
    /[<>&"']/g,
    (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c]!,
  );
}
