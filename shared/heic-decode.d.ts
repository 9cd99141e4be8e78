// heic-decode ships no types; this is the part of its API that shared/heic.ts uses.
declare module 'heic-decode' {
  /** Decodes the primary image of a HEIC file to RGBA, with its rotation and mirroring applied. */
  function decode(input: { buffer: Uint8Array }): Promise<{
    width: number;
    height: number;
    /** width × height × 4 bytes, RGBA. */
    data: Uint8ClampedArray;
  }>;
  export default decode;
}
