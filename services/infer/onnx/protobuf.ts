/**
 * Minimal protobuf wire-format encoder and decoder.
 *
 * Only what ONNX files need: varints, length-delimited fields (strings, bytes, sub-messages),
 * fixed32 floats and packed repeated int64 / float. No schema, no reflection: callers pass field
 * numbers from onnx.proto directly. Written by hand so the project needs no protobuf dependency
 * just to read three metadata strings or to emit a tiny test model.
 *
 * Wire types: 0 = varint, 1 = fixed64, 2 = length-delimited, 5 = fixed32. Groups (3, 4) are
 * deprecated and never used by ONNX, so the reader rejects them instead of guessing.
 */

export const WireType = {
  Varint: 0,
  Fixed64: 1,
  LengthDelimited: 2,
  Fixed32: 5,
} as const;

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder('utf-8', { fatal: false });

/** Encodes one message. Sub-messages are encoded into their own writer first because the
 *  length prefix must precede the body and protobuf has no end marker. */
export class ProtoWriter {
  private buf = new Uint8Array(256);
  private len = 0;

  private ensure(extra: number): void {
    if (this.len + extra <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + extra) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }

  private pushByte(b: number): void {
    this.ensure(1);
    this.buf[this.len++] = b;
  }

  private pushBytes(bytes: Uint8Array): void {
    this.ensure(bytes.length);
    this.buf.set(bytes, this.len);
    this.len += bytes.length;
  }

  /** Raw varint, no tag. Goes through BigInt so negative int64 values get the 10-byte
   *  two's-complement form protobuf requires (a JS `>>>` would truncate to 32 bits). */
  private rawVarint(n: number | bigint): void {
    if (typeof n === 'number' && !Number.isSafeInteger(n)) {
      throw new RangeError(`varint value must be a safe integer, got ${n}`);
    }
    let v = BigInt.asUintN(64, BigInt(n));
    while (v >= 0x80n) {
      this.pushByte(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    this.pushByte(Number(v));
  }

  private tag(field: number, wireType: number): void {
    if (!Number.isInteger(field) || field < 1 || field > 0x1fffffff) {
      throw new RangeError(`invalid field number ${field}`);
    }
    this.rawVarint(field * 8 + wireType);
  }

  /** int32/int64/uint64/enum/bool field. */
  varint(field: number, n: number | bigint): this {
    this.tag(field, WireType.Varint);
    this.rawVarint(n);
    return this;
  }

  /** UTF-8 string field. */
  string(field: number, s: string): this {
    return this.bytes(field, textEncoder.encode(s));
  }

  /** bytes field (also used for ONNX raw_data). */
  bytes(field: number, data: Uint8Array): this {
    this.tag(field, WireType.LengthDelimited);
    this.rawVarint(data.length);
    this.pushBytes(data);
    return this;
  }

  /** Embedded message field; `build` fills a fresh writer for the sub-message. */
  message(field: number, build: (w: ProtoWriter) => void): this {
    const sub = new ProtoWriter();
    build(sub);
    return this.bytes(field, sub.finish());
  }

  /** float field (fixed32, little-endian IEEE 754 single). */
  float(field: number, x: number): this {
    this.tag(field, WireType.Fixed32);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, x, true);
    this.pushBytes(b);
    return this;
  }

  /** Packed repeated int64: one length-delimited field holding concatenated varints. Empty
   *  arrays emit nothing, since an empty packed field and an absent one mean the same. */
  packedInt64(field: number, values: readonly (number | bigint)[]): this {
    if (values.length === 0) return this;
    const body = new ProtoWriter();
    for (const v of values) body.rawVarint(v);
    return this.bytes(field, body.finish());
  }

  /** Packed repeated float: concatenated little-endian float32 values. */
  packedFloat(field: number, values: ArrayLike<number>): this {
    if (values.length === 0) return this;
    const b = new Uint8Array(values.length * 4);
    const dv = new DataView(b.buffer);
    for (let i = 0; i < values.length; i++) dv.setFloat32(i * 4, values[i] ?? 0, true);
    return this.bytes(field, b);
  }

  /** Returns a copy of the encoded bytes, trimmed to length. */
  finish(): Uint8Array {
    return this.buf.slice(0, this.len);
  }
}

/** One decoded field. Length-delimited and fixed-width values are views into the input (no copy),
 *  so skipping a 12 MB graph costs nothing. Varints are bigint to keep full uint64 range. */
export type ProtoField =
  | { field: number; wireType: 0; value: bigint }
  | { field: number; wireType: 1 | 2 | 5; value: Uint8Array };

/** Reads one varint at `pos`; returns the value and the position after it. */
export function readVarint(buf: Uint8Array, pos: number): { value: bigint; next: number } {
  let result = 0n;
  let shift = 0n;
  for (let i = 0; i < 10; i++) {
    const b = buf[pos + i];
    if (b === undefined) throw new RangeError('protobuf: truncated varint');
    result |= BigInt(b & 0x7f) << shift;
    if ((b & 0x80) === 0) return { value: BigInt.asUintN(64, result), next: pos + i + 1 };
    shift += 7n;
  }
  throw new RangeError('protobuf: varint longer than 10 bytes');
}

/** Iterates the top-level fields of one message. Nested messages are returned as bytes; call
 *  readFields again on them to descend. Throws on truncated input or unsupported wire types. */
export function* readFields(buf: Uint8Array): Generator<ProtoField, void, undefined> {
  let pos = 0;
  while (pos < buf.length) {
    const t = readVarint(buf, pos);
    pos = t.next;
    const field = Number(t.value >> 3n);
    const wireType = Number(t.value & 7n);
    if (field === 0) throw new RangeError('protobuf: field number 0');
    switch (wireType) {
      case 0: {
        const v = readVarint(buf, pos);
        pos = v.next;
        yield { field, wireType: 0, value: v.value };
        break;
      }
      case 1:
      case 5: {
        const size = wireType === 1 ? 8 : 4;
        if (pos + size > buf.length) throw new RangeError('protobuf: truncated fixed field');
        yield { field, wireType, value: buf.subarray(pos, pos + size) };
        pos += size;
        break;
      }
      case 2: {
        const l = readVarint(buf, pos);
        const size = Number(l.value);
        pos = l.next;
        if (pos + size > buf.length)
          throw new RangeError('protobuf: truncated length-delimited field');
        yield { field, wireType: 2, value: buf.subarray(pos, pos + size) };
        pos += size;
        break;
      }
      default:
        throw new RangeError(`protobuf: unsupported wire type ${wireType} (field ${field})`);
    }
  }
}

/** Decodes a length-delimited field value as UTF-8. */
export function decodeString(bytes: Uint8Array): string {
  return textDecoder.decode(bytes);
}

/** Decodes a fixed32 field value as a float. */
export function decodeFloat(bytes: Uint8Array): number {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getFloat32(0, true);
}

/** Decodes a packed repeated varint field (e.g. int64 dims) into bigints. */
export function decodePackedVarints(bytes: Uint8Array): bigint[] {
  const out: bigint[] = [];
  let pos = 0;
  while (pos < bytes.length) {
    const v = readVarint(bytes, pos);
    out.push(v.value);
    pos = v.next;
  }
  return out;
}
