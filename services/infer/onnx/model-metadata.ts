/**
 * Reads ModelProto.metadata_props from an ONNX file and parses the Ultralytics `names` entry.
 *
 * onnxruntime-node exposes no metadata API, and pulling in a full protobuf/ONNX library to read a
 * handful of strings is not worth it, so this scans the raw bytes with the tiny wire-format reader.
 */
import { decodeString, readFields } from './protobuf.js';

/** ModelProto.metadata_props (repeated StringStringEntryProto). */
const MODEL_METADATA_PROPS = 14;
const ENTRY_KEY = 1;
const ENTRY_VALUE = 2;

/**
 * Returns the metadata_props of a serialized ModelProto as a plain record (later duplicates win).
 * Only the top level of ModelProto is walked: the graph (field 7), which holds nearly all the bytes,
 * is skipped as an opaque slice without being decoded. Returns an empty record when the model has
 * no metadata. Throws if the bytes are not valid protobuf.
 */
export function readOnnxMetadata(bytes: Uint8Array): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of readFields(bytes)) {
    if (f.field !== MODEL_METADATA_PROPS || f.wireType !== 2) continue;
    let key = '';
    let value = '';
    for (const e of readFields(f.value)) {
      if (e.wireType !== 2) continue;
      if (e.field === ENTRY_KEY) key = decodeString(e.value);
      else if (e.field === ENTRY_VALUE) value = decodeString(e.value);
    }
    out[key] = value;
  }
  return out;
}

/** Single-character escapes that Python's repr() can emit inside a str literal. */
const SIMPLE_ESCAPES: Record<string, string> = {
  '\\': '\\',
  "'": "'",
  '"': '"',
  n: '\n',
  r: '\r',
  t: '\t',
  a: '\x07',
  b: '\b',
  f: '\f',
  v: '\v',
  '0': '\0',
};

/**
 * Parses the Ultralytics `names` metadata value, which is the Python repr of a dict from class index
 * to name, e.g. `{0: 'person', 1: 'bicycle', 2: "tie's"}`. Keys may appear in any order, strings may
 * use either quote style with Python escapes (\\, \', \n, \xhh, \uXXXX, ...), a trailing comma is
 * allowed. Returns the names ordered by index.
 *
 * Returns undefined when the text is not such a dict, when it is empty, or when the keys are not
 * exactly 0..n-1 (duplicates or gaps): class ids index this array, so a sparse one would be a trap.
 */
export function parseClassNames(namesValue: string): string[] | undefined {
  const s = namesValue;
  let pos = 0;
  const ws = (): void => {
    while (pos < s.length && /\s/.test(s[pos] ?? '')) pos++;
  };
  const expect = (ch: string): boolean => {
    ws();
    if (s[pos] !== ch) return false;
    pos++;
    return true;
  };
  const readInt = (): number | undefined => {
    ws();
    const m = /^\d+/.exec(s.slice(pos, pos + 16));
    if (!m) return undefined;
    pos += m[0].length;
    return Number(m[0]);
  };
  const readStr = (): string | undefined => {
    ws();
    const quote = s[pos];
    if (quote !== "'" && quote !== '"') return undefined;
    pos++;
    let out = '';
    while (pos < s.length) {
      const c = s[pos++] ?? '';
      if (c === quote) return out;
      if (c === '\n') return undefined; // repr never breaks a line inside a literal
      if (c !== '\\') {
        out += c;
        continue;
      }
      const e = s[pos++] ?? '';
      const simple = SIMPLE_ESCAPES[e];
      if (simple !== undefined) {
        out += simple;
        continue;
      }
      const hexLen = e === 'x' ? 2 : e === 'u' ? 4 : e === 'U' ? 8 : 0;
      const hex = s.slice(pos, pos + hexLen);
      if (hexLen === 0 || !/^[0-9a-fA-F]+$/.test(hex) || hex.length !== hexLen) return undefined;
      const cp = parseInt(hex, 16);
      if (cp > 0x10ffff) return undefined;
      out += String.fromCodePoint(cp);
      pos += hexLen;
    }
    return undefined; // unterminated literal
  };

  if (!expect('{')) return undefined;
  const byIndex = new Map<number, string>();
  ws();
  if (s[pos] !== '}') {
    for (;;) {
      const key = readInt();
      if (key === undefined || !expect(':')) return undefined;
      const name = readStr();
      if (name === undefined || byIndex.has(key)) return undefined;
      byIndex.set(key, name);
      if (expect(',')) {
        ws();
        if (s[pos] === '}') break; // trailing comma
        continue;
      }
      break;
    }
  }
  if (!expect('}')) return undefined;
  ws();
  if (pos !== s.length || byIndex.size === 0) return undefined;

  const names: string[] = [];
  for (let i = 0; i < byIndex.size; i++) {
    const name = byIndex.get(i);
    if (name === undefined) return undefined; // gap in the indices
    names.push(name);
  }
  return names;
}

/** The metadata entry that gives a model's recommended confidence threshold. */
export const RECOMMENDED_CONFIDENCE_KEY = 'recommended_confidence';

/**
 * The recommended confidence threshold from a model's metadata (`recommended_confidence`, a
 * decimal number in 0..1, e.g. `'0.35'`). Returns null when the entry is absent or is not such
 * a number: the request then falls back to the server's default.
 */
export function parseRecommendedConfidence(metadata: Record<string, string>): number | null {
  const text = metadata[RECOMMENDED_CONFIDENCE_KEY]?.trim();
  if (text === undefined || text === '') return null;
  const value = Number(text);
  return Number.isFinite(value) && value >= 0 && value <= 1 ? value : null;
}
