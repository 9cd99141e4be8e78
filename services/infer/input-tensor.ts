import type { Preprocessing } from '../../shared/model-layout.js';

/**
 * The model's input: `pre` stores each image letterboxed as HWC RGB uint8 (a quarter of the
 * float32 bytes through Redis), and the inference thread turns a batch of them into the NCHW
 * float32 tensor the model takes, here.
 */

/**
 * Converts a batch of HWC RGB uint8 images into one NCHW float32 tensor, in the model's channel
 * order, each value multiplied by `scale` (1/255 for inputs in 0..1, as Ultralytics' models
 * take).
 *
 * @param src `batch` images of `height` × `width` × 3 bytes, one after the other
 * @param dst at least `batch` × 3 × `height` × `width` floats; written, not cleared
 * @param prep channel order and scale
 * @defaultValue prep `{ channelOrder: 'rgb', scale: 1 / 255 }`
 */
export function hwcToNchwFloat(
  src: Uint8Array,
  batch: number,
  height: number,
  width: number,
  dst: Float32Array,
  prep: Pick<Preprocessing, 'channelOrder' | 'scale'> = { channelOrder: 'rgb', scale: 1 / 255 },
): void {
  const plane = height * width;
  const { scale } = prep;
  // Destination plane of the source's R and B bytes.
  const rPlane = prep.channelOrder === 'rgb' ? 0 : 2 * plane;
  const bPlane = 2 * plane - rPlane;
  for (let b = 0; b < batch; b++) {
    const s0 = b * plane * 3;
    const d0 = b * plane * 3;
    const r0 = d0 + rPlane;
    const g0 = d0 + plane;
    const b0 = d0 + bPlane;
    for (let p = 0; p < plane; p++) {
      const s = s0 + p * 3;
      dst[r0 + p] = src[s]! * scale;
      dst[g0 + p] = src[s + 1]! * scale;
      dst[b0 + p] = src[s + 2]! * scale;
    }
  }
}
