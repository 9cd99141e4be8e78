/**
 * The compact binary form in which `infer` hands detection candidates to `post`.
 *
 * A model's raw output is large (YOLOv8 at 640: 2.8 MB per image) and layout-specific. The
 * inference process decodes it into candidates that passed the request's confidence threshold
 * and stores only those: six little-endian float32 per candidate,
 * `cx, cy, w, h, score, classId`, in model-input pixels. `post` never needs to know the
 * model's output layout.
 */
export const CANDIDATE_STRIDE = 6;

export interface Candidate {
  cx: number;
  cy: number;
  w: number;
  h: number;
  score: number;
  classId: number;
}

/** Bytes of a packed candidate array, ready for a binary Redis value. */
export function encodeCandidates(packed: Float32Array): Buffer {
  if (packed.length % CANDIDATE_STRIDE !== 0) {
    throw new RangeError(
      `candidate array length ${packed.length} is not a multiple of ${CANDIDATE_STRIDE}`,
    );
  }
  return Buffer.from(packed.buffer, packed.byteOffset, packed.byteLength);
}

/** Decodes bytes written by encodeCandidates (copying, since Buffers may be unaligned). */
export function decodeCandidates(bytes: Uint8Array): Candidate[] {
  if (bytes.byteLength % (CANDIDATE_STRIDE * 4) !== 0) {
    throw new RangeError(`candidate buffer of ${bytes.byteLength} bytes is malformed`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: Candidate[] = [];
  for (let off = 0; off < bytes.byteLength; off += CANDIDATE_STRIDE * 4) {
    out.push({
      cx: view.getFloat32(off, true),
      cy: view.getFloat32(off + 4, true),
      w: view.getFloat32(off + 8, true),
      h: view.getFloat32(off + 12, true),
      score: view.getFloat32(off + 16, true),
      classId: view.getFloat32(off + 20, true),
    });
  }
  return out;
}
