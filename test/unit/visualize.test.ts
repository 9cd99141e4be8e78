import assert from 'node:assert/strict';
import { test } from 'node:test';
import sharp from 'sharp';
import type { Prediction } from '../../shared/contracts.js';
import { PipelineError } from '../../shared/errors.js';
import { boxColour } from '../../shared/palette.js';
import { drawPredictions, overlaySvg } from '../../services/post/visualize.js';

/** The drawing of `visualization` (sharp, no stack). */
const box = (over: Partial<Prediction> = {}): Prediction => ({
  x: 50,
  y: 40,
  width: 40,
  height: 30,
  confidence: 0.876,
  class: 'dog',
  class_id: 3,
  detection_id: 'd',
  ...over,
});

test('the overlay outlines each box in its class colour, with an escaped label when asked', () => {
  const svg = overlaySvg(200, 100, [box({ class: '<cat & "dog">' })], {
    labels: true,
    strokeWidth: 3,
  });
  assert.match(svg, /^<svg [^>]*width="200" height="100">/);
  assert.match(
    svg,
    /<rect x="30" y="25" width="40" height="30" fill="none" stroke="#FF7633" stroke-width="3"\/>/,
  );
  assert.ok(svg.includes('&lt;cat &amp; &quot;dog&quot;&gt; 0.88'), svg);
  assert.equal(boxColour(3), '#FF7633');
  const plain = overlaySvg(200, 100, [box()], { labels: false, strokeWidth: 1 });
  assert.ok(!plain.includes('<text'), plain);
});

test('drawPredictions returns a JPEG of the image size with the outline over the image', async () => {
  const grey = await sharp({
    create: { width: 200, height: 100, channels: 3, background: '#5a5a5a' },
  })
    .png()
    .toBuffer();
  const jpeg = await drawPredictions(grey, [box()], {
    labels: false,
    strokeWidth: 4,
    autoOrient: true,
    maxPixels: 1e6,
  });
  const { data, info } = await sharp(jpeg).raw().toBuffer({ resolveWithObject: true });
  assert.deepEqual([info.width, info.height], [200, 100]);
  const at = (x: number, y: number) => [...data.subarray((y * 200 + x) * 3, (y * 200 + x) * 3 + 3)];
  // The left edge (x = 30) is orange; the box's centre and the far corner are still grey.
  const [r, g, b] = at(30, 40);
  assert.ok(r! > 200 && g! > 80 && g! < 160 && b! < 100, `edge ${at(30, 40).join(',')}`);
  for (const [x, y] of [
    [50, 40],
    [190, 90],
  ] as const)
    assert.ok(
      at(x, y).every((v) => Math.abs(v - 90) < 10),
      `${x},${y}: ${at(x, y).join(',')}`,
    );
});

test('bytes that are no image are IMAGE_DECODE_FAILED', async () => {
  await assert.rejects(
    drawPredictions(Buffer.from('not an image'), [box()], {
      labels: true,
      strokeWidth: 1,
      autoOrient: true,
      maxPixels: 1e6,
    }),
    (err: unknown) => err instanceof PipelineError && err.code === 'IMAGE_DECODE_FAILED',
  );
});
