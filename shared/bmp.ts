import { ErrorCode, PipelineError } from './errors.js';

/**
 * Windows BMP, read without libvips (sharp's libvips has no BMP loader). Pure functions over the
 * file's bytes: the header (for the pixel limit, before any pixel is decoded), then the pixels as
 * RGB. Covers what Windows, browsers and OpenCV write and read: the OS/2 core header and the
 * Windows info headers v1–v5; 1, 4 and 8 bits per pixel with a palette (uncompressed, RLE8 and
 * RLE4); 16 and 32 bits with the default or given channel masks; 24 bits; bottom-up and
 * top-down rows. Alpha is dropped, as OpenCV's colour decode (Roboflow's) drops it. Layout:
 * Microsoft's "Bitmap Storage" documentation (BITMAPINFOHEADER, BITMAPV5HEADER, "Compression").
 *
 * The npm decoders tried first (bmp-ts 1.0.9, @cwasm/nsbmp 0.1.3, decode-bmp 0.2.1, fast-bmp
 * 4.0.1) each mis-decoded or refused common files: palette images of odd width, RLE8 as
 * ImageMagick writes it, top-down rows, or anything but a v5 header.
 */

/** What the header says, enough to size and decode the pixels. */
export interface BmpHeader {
  width: number;
  /** Rows, always positive; `topDown` says their order. */
  height: number;
  topDown: boolean;
  bitsPerPixel: number;
  /** 0 none, 1 RLE8, 2 RLE4, 3 bit fields, 6 bit fields with alpha. */
  compression: number;
  /** Byte offset of the pixel rows. */
  dataOffset: number;
  /** Palette entries as [r, g, b], for 1, 4 and 8 bits per pixel. */
  palette: Array<[number, number, number]>;
  /** Red, green and blue masks of a 16- or 32-bit pixel. */
  masks: [number, number, number];
}

/** Decoded pixels: width × height × 3 bytes, RGB, rows top first. */
export interface BmpImage {
  width: number;
  height: number;
  pixels: Buffer;
}

const CORE_HEADER = 12;
const INFO_HEADER = 40;

/** True when the bytes start like a BMP file ("BM" and a known header size). */
export function isBmp(bytes: Buffer): boolean {
  if (bytes.length < 26 || bytes[0] !== 0x42 || bytes[1] !== 0x4d) return false;
  const size = bytes.readUInt32LE(14);
  return size === CORE_HEADER || (size >= INFO_HEADER && size <= 124);
}

/**
 * Reads a BMP header.
 *
 * @throws PipelineError IMAGE_DECODE_FAILED for a malformed header, UNSUPPORTED_IMAGE for a BMP
 *   that wraps JPEG or PNG data or uses an unknown compression or bit depth.
 */
export function readBmpHeader(bytes: Buffer): BmpHeader {
  if (!isBmp(bytes)) throw invalid('not a BMP file');
  const headerSize = bytes.readUInt32LE(14);
  if (bytes.length < 14 + headerSize) throw invalid('the header is truncated');
  const core = headerSize === CORE_HEADER;
  const width = core ? bytes.readUInt16LE(18) : bytes.readInt32LE(18);
  const rawHeight = core ? bytes.readUInt16LE(20) : bytes.readInt32LE(22);
  const bitsPerPixel = bytes.readUInt16LE(core ? 24 : 28);
  const compression = core ? 0 : bytes.readUInt32LE(30);
  if (width <= 0 || rawHeight === 0 || rawHeight === -0x80000000)
    throw invalid(`its size ${width}x${rawHeight} is not an image size`);
  if (compression === 4 || compression === 5)
    throw unsupported(`BMP files that wrap ${compression === 4 ? 'JPEG' : 'PNG'} data`);
  // Each compression allows only some depths (Microsoft's "Compression" table).
  const valid: Record<number, readonly number[]> = {
    0: [1, 4, 8, 16, 24, 32],
    1: [8],
    2: [4],
    3: [16, 32],
    6: [16, 32],
  };
  if (!valid[compression]?.includes(bitsPerPixel))
    throw unsupported(
      `BMP files with compression ${compression} and ${bitsPerPixel} bits per pixel`,
    );

  // Bit field masks sit inside a v2+ header, or just after a v1 (40-byte) header.
  let after = 14 + headerSize;
  let masks: [number, number, number] =
    bitsPerPixel === 16 ? [0x7c00, 0x03e0, 0x001f] : [0xff0000, 0x00ff00, 0x0000ff];
  if (compression === 3 || compression === 6) {
    const at = 54;
    if (headerSize === INFO_HEADER) after += compression === 6 ? 16 : 12;
    if (bytes.length < at + 12) throw invalid('the channel masks are truncated');
    masks = [bytes.readUInt32LE(at), bytes.readUInt32LE(at + 4), bytes.readUInt32LE(at + 8)];
  }

  const palette: Array<[number, number, number]> = [];
  if (bitsPerPixel <= 8) {
    const used = core ? 0 : bytes.readUInt32LE(46);
    const count = Math.min(used === 0 ? 1 << bitsPerPixel : used, 256);
    const entry = core ? 3 : 4;
    if (bytes.length < after + count * entry) throw invalid('the palette is truncated');
    for (let i = 0; i < count; i++) {
      const o = after + i * entry;
      palette.push([bytes[o + 2]!, bytes[o + 1]!, bytes[o]!]);
    }
  }
  return {
    width,
    height: Math.abs(rawHeight),
    topDown: rawHeight < 0,
    bitsPerPixel,
    compression,
    dataOffset: bytes.readUInt32LE(10),
    palette,
    masks,
  };
}

/**
 * Decodes a BMP file to RGB. Check the header's size against the pixel limit first
 * (readBmpHeader): this allocates width × height × 3 bytes.
 *
 * @throws PipelineError IMAGE_DECODE_FAILED for truncated or malformed data, and what
 *   readBmpHeader throws.
 */
export function decodeBmp(bytes: Buffer): BmpImage {
  const h = readBmpHeader(bytes);
  const pixels = Buffer.alloc(h.width * h.height * 3);
  if (h.compression === 1 || h.compression === 2) decodeRle(bytes, h, pixels);
  else decodeRows(bytes, h, pixels);
  return { width: h.width, height: h.height, pixels };
}

function decodeRows(bytes: Buffer, h: BmpHeader, out: Buffer): void {
  const stride = Math.floor((h.bitsPerPixel * h.width + 31) / 32) * 4;
  // The last row may stop at its last pixel: some writers leave out its padding.
  const needed = h.dataOffset + stride * (h.height - 1) + Math.ceil((h.bitsPerPixel * h.width) / 8);
  if (bytes.length < needed) throw invalid('the pixel data is truncated');
  const channel = h.masks.map(maskReader);
  const [red, green, blue] = channel as [MaskReader, MaskReader, MaskReader];
  for (let y = 0; y < h.height; y++) {
    const row = h.dataOffset + stride * (h.topDown ? y : h.height - 1 - y);
    let o = y * h.width * 3;
    for (let x = 0; x < h.width; x++, o += 3) {
      switch (h.bitsPerPixel) {
        case 24: {
          const i = row + x * 3;
          out[o] = bytes[i + 2]!;
          out[o + 1] = bytes[i + 1]!;
          out[o + 2] = bytes[i]!;
          break;
        }
        case 32:
        case 16: {
          const px =
            h.bitsPerPixel === 32
              ? bytes.readUInt32LE(row + x * 4)
              : bytes.readUInt16LE(row + x * 2);
          out[o] = red(px);
          out[o + 1] = green(px);
          out[o + 2] = blue(px);
          break;
        }
        default: {
          const bit = x * h.bitsPerPixel;
          const byte = bytes[row + (bit >> 3)]!;
          const index = (byte >> (8 - h.bitsPerPixel - (bit & 7))) & ((1 << h.bitsPerPixel) - 1);
          setColour(out, o, h.palette, index);
        }
      }
    }
  }
}

/**
 * RLE8 and RLE4 (always bottom-up): runs of one colour, escapes for end of line, end of
 * bitmap, a jump (pixels skipped stay black) and literal runs padded to 16 bits.
 */
function decodeRle(bytes: Buffer, h: BmpHeader, out: Buffer): void {
  const four = h.compression === 2;
  let pos = h.dataOffset;
  let x = 0;
  let y = 0; // rows from the bottom
  const put = (index: number) => {
    if (x < h.width && y < h.height) {
      const row = h.topDown ? y : h.height - 1 - y;
      setColour(out, (row * h.width + x) * 3, h.palette, index);
    }
    x++;
  };
  const next = () => {
    if (pos >= bytes.length) throw invalid('the RLE data is truncated');
    return bytes[pos++]!;
  };
  while (y < h.height) {
    const count = next();
    const value = next();
    if (count > 0) {
      for (let i = 0; i < count; i++) put(four ? (i & 1 ? value & 0x0f : value >> 4) : value);
    } else if (value === 0) {
      x = 0;
      y++;
    } else if (value === 1) {
      return;
    } else if (value === 2) {
      x += next();
      y += next();
    } else {
      const length = four ? Math.ceil(value / 2) : value;
      for (let i = 0; i < value; i++) {
        const b = bytes[pos + (four ? i >> 1 : i)];
        if (b === undefined) throw invalid('the RLE data is truncated');
        put(four ? (i & 1 ? b & 0x0f : b >> 4) : b);
      }
      pos += length + (length & 1);
    }
  }
}

type MaskReader = (px: number) => number;

/** Reads one channel through its mask, scaled to 0–255. */
function maskReader(mask: number): MaskReader {
  if (mask === 0) return () => 0;
  let shift = 0;
  while (((mask >>> shift) & 1) === 0) shift++;
  const max = mask >>> shift;
  if (max === 0xff) return (px) => (px & mask) >>> shift;
  return (px) => Math.round((((px & mask) >>> shift) * 255) / max);
}

function setColour(
  out: Buffer,
  o: number,
  palette: ReadonlyArray<readonly [number, number, number]>,
  index: number,
): void {
  // An index past the palette is black, as in Windows and browsers.
  const c = palette[index];
  if (!c) return;
  out[o] = c[0];
  out[o + 1] = c[1];
  out[o + 2] = c[2];
}

function invalid(why: string): PipelineError {
  return new PipelineError(
    ErrorCode.IMAGE_DECODE_FAILED,
    `the BMP image could not be decoded: ${why}`,
  );
}

function unsupported(what: string): PipelineError {
  return new PipelineError(
    ErrorCode.UNSUPPORTED_IMAGE,
    `${what} are not supported; send a PNG or JPEG`,
  );
}
