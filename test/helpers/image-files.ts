import { deflateSync } from 'node:zlib';

/**
 * Image files built byte by byte for tests: BMP in its variants (sharp writes none), and headers
 * that declare any size, to test the pixel limit without making the pixels.
 */

export interface BmpOptions {
  /** 24 (BGR) or 32 (BGRX, or BGRA with `alpha`). */
  bits: 24 | 32;
  /** Rows top first (negative height) instead of bottom first. */
  topDown?: boolean;
  /**
   * `info`: the 40-byte BITMAPINFOHEADER (what most software writes); `v5`: BITMAPV5HEADER with
   * channel masks (what ImageMagick and Windows write for 32 bits).
   */
  header?: 'info' | 'v5';
  /** With 32 bits: this alpha in every pixel (v5 header with an alpha mask). */
  alpha?: number;
}

/** A BMP file of these RGB pixels (width × height × 3, rows top first). */
export function encodeBmp(rgb: Buffer, width: number, height: number, opts: BmpOptions): Buffer {
  const bytesPerPixel = opts.bits / 8;
  const stride = Math.ceil((width * bytesPerPixel) / 4) * 4;
  const headerSize = opts.header === 'v5' ? 124 : 40;
  const offset = 14 + headerSize;
  const file = Buffer.alloc(offset + stride * height);
  file.write('BM', 0, 'latin1');
  file.writeUInt32LE(file.length, 2);
  file.writeUInt32LE(offset, 10);
  file.writeUInt32LE(headerSize, 14);
  file.writeInt32LE(width, 18);
  file.writeInt32LE(opts.topDown ? -height : height, 22);
  file.writeUInt16LE(1, 26);
  file.writeUInt16LE(opts.bits, 28);
  file.writeUInt32LE(stride * height, 34);
  if (opts.header === 'v5') {
    file.writeUInt32LE(opts.bits === 32 ? 3 : 0, 30); // BI_BITFIELDS for 32 bits
    file.writeUInt32LE(0x00ff0000, 54);
    file.writeUInt32LE(0x0000ff00, 58);
    file.writeUInt32LE(0x000000ff, 62);
    file.writeUInt32LE(opts.alpha === undefined ? 0 : 0xff000000, 66);
    file.write('BGRs', 70, 'latin1'); // LCS_sRGB, stored little-endian
  }
  for (let y = 0; y < height; y++) {
    const row = offset + stride * (opts.topDown ? y : height - 1 - y);
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      const o = row + x * bytesPerPixel;
      file[o] = rgb[i + 2]!;
      file[o + 1] = rgb[i + 1]!;
      file[o + 2] = rgb[i]!;
      if (opts.bits === 32) file[o + 3] = opts.alpha ?? 0;
    }
  }
  return file;
}

/** An 8-bit palette BMP, RLE8-compressed: each row one run per `runs` entry. */
export function encodeRle8Bmp(
  palette: ReadonlyArray<readonly [number, number, number]>,
  rows: ReadonlyArray<ReadonlyArray<readonly [count: number, index: number]>>,
  width: number,
): Buffer {
  const data: number[] = [];
  // Bottom row first.
  for (const runs of [...rows].reverse()) {
    for (const [count, index] of runs) data.push(count, index);
    data.push(0, 0);
  }
  data.push(0, 1);
  const offset = 14 + 40 + palette.length * 4;
  const file = Buffer.alloc(offset + data.length);
  file.write('BM', 0, 'latin1');
  file.writeUInt32LE(file.length, 2);
  file.writeUInt32LE(offset, 10);
  file.writeUInt32LE(40, 14);
  file.writeInt32LE(width, 18);
  file.writeInt32LE(rows.length, 22);
  file.writeUInt16LE(1, 26);
  file.writeUInt16LE(8, 28);
  file.writeUInt32LE(1, 30); // BI_RLE8
  file.writeUInt32LE(data.length, 34);
  file.writeUInt32LE(palette.length, 46);
  palette.forEach(([r, g, b], i) => {
    file[54 + i * 4] = b;
    file[55 + i * 4] = g;
    file[56 + i * 4] = r;
  });
  Buffer.from(data).copy(file, offset);
  return file;
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes: Buffer): number {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function pngChunk(type: string, data: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const out = Buffer.alloc(8 + data.length + 4);
  out.writeUInt32BE(data.length, 0);
  body.copy(out, 4);
  out.writeUInt32BE(crc32(body), 8 + data.length);
  return out;
}

/**
 * A PNG that declares `width` × `height` (8-bit RGB) and holds almost no pixel data: a few dozen bytes
 * whatever the size it claims.
 */
export function pngDeclaring(width: number, height: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', ihdr),
    // The first row's filter byte and a few pixels; a reader needs an IDAT to accept the header.
    pngChunk('IDAT', deflateSync(Buffer.alloc(16))),
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
}

/** A copy of a JPEG whose start-of-frame declares `width` × `height` (each at most 65535). */
export function jpegDeclaring(jpeg: Buffer, width: number, height: number): Buffer {
  const out = Buffer.from(jpeg);
  let pos = 2;
  while (pos + 4 <= out.length) {
    if (out[pos] !== 0xff) throw new Error(`no JPEG marker at ${pos}`);
    const marker = out[pos + 1]!;
    const length = out.readUInt16BE(pos + 2);
    // SOF0–SOF15, except DHT (C4), JPG (C8) and DAC (CC).
    if (marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker)) {
      out.writeUInt16BE(height, pos + 5);
      out.writeUInt16BE(width, pos + 7);
      return out;
    }
    pos += 2 + length;
  }
  throw new Error('no start-of-frame marker');
}

/** A copy of a HEIF file whose `ispe` (image size) boxes declare `width` × `height`. */
export function heifDeclaring(heif: Buffer, width: number, height: number): Buffer {
  const out = Buffer.from(heif);
  let found = 0;
  for (let at = out.indexOf('ispe'); at >= 0; at = out.indexOf('ispe', at + 4)) {
    // box type, then version and flags (4 bytes), then width and height.
    out.writeUInt32BE(width, at + 8);
    out.writeUInt32BE(height, at + 12);
    found++;
  }
  if (found === 0) throw new Error('no ispe box');
  return out;
}
