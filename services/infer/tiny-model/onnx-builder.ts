/**
 * A tiny typed builder for ONNX ModelProto bytes, on top of the hand-written protobuf writer.
 *
 * It covers only what the generated test models need: nodes with int / ints / float attributes,
 * float32 and int64 initializers stored as raw_data, typed graph inputs/outputs whose dims may be
 * symbolic, one default-domain opset import and metadata_props. Field numbers come from onnx.proto
 * and are named here so the encoder reads like the schema.
 *
 * Output is deterministic: everything is emitted in insertion order and nothing depends on time.
 */
import { ProtoWriter } from '../onnx/protobuf.js';

const Model = {
  irVersion: 1,
  producerName: 2,
  producerVersion: 3,
  graph: 7,
  opsetImport: 8,
  metadataProps: 14,
} as const;
const Graph = { node: 1, name: 2, initializer: 5, input: 11, output: 12 } as const;
const Node = { input: 1, output: 2, name: 3, opType: 4, attribute: 5 } as const;
const Attr = { name: 1, f: 2, i: 3, ints: 8, type: 20 } as const;
const AttrType = { FLOAT: 1, INT: 2, INTS: 7 } as const;
const Tensor = { dims: 1, dataType: 2, name: 8, rawData: 9 } as const;
const ValueInfo = { name: 1, type: 2 } as const;
const StringStringEntry = { key: 1, value: 2 } as const;

/** TensorProto.DataType values used here. */
export const DataType = { FLOAT: 1, BOOL: 9, INT64: 7 } as const;
export type DataType = (typeof DataType)[keyof typeof DataType];

/** A dimension: a fixed size, or a symbolic name (dim_param) such as 'batch'. */
export type Dim = number | string;

/** Attribute values are tagged because a JS number cannot tell int from float. */
export type AttributeValue =
  | { type: 'int'; value: number }
  | { type: 'ints'; value: readonly number[] }
  | { type: 'float'; value: number };

export const attrInt = (value: number): AttributeValue => ({ type: 'int', value });
export const attrInts = (value: readonly number[]): AttributeValue => ({ type: 'ints', value });
export const attrFloat = (value: number): AttributeValue => ({ type: 'float', value });

export interface NodeSpec {
  opType: string;
  inputs: readonly string[];
  outputs: readonly string[];
  name?: string;
  attributes?: Readonly<Record<string, AttributeValue>>;
}

export interface InitializerSpec {
  name: string;
  dataType: typeof DataType.FLOAT | typeof DataType.INT64;
  dims: readonly number[];
  /** Little-endian element bytes, exactly product(dims) elements. */
  rawData: Uint8Array;
}

export interface ValueInfoSpec {
  name: string;
  elemType: DataType;
  dims: readonly Dim[];
}

export interface ModelSpec {
  graphName: string;
  nodes: readonly NodeSpec[];
  initializers: readonly InitializerSpec[];
  inputs: readonly ValueInfoSpec[];
  outputs: readonly ValueInfoSpec[];
  producerName: string;
  producerVersion?: string;
  /** Default 7. */
  irVersion?: number;
  /** Default-domain opset version, default 13. */
  opsetVersion?: number;
  metadata?: Readonly<Record<string, string>>;
}

function writeAttribute(w: ProtoWriter, name: string, a: AttributeValue): void {
  w.string(Attr.name, name);
  switch (a.type) {
    case 'float':
      w.float(Attr.f, a.value).varint(Attr.type, AttrType.FLOAT);
      break;
    case 'int':
      w.varint(Attr.i, a.value).varint(Attr.type, AttrType.INT);
      break;
    case 'ints':
      // ints is `repeated int64` without [packed=true] in onnx.proto (proto2), so emit one
      // unpacked field per value; protobuf parsers accept either form but this is the canonical one.
      for (const v of a.value) w.varint(Attr.ints, v);
      w.varint(Attr.type, AttrType.INTS);
      break;
  }
}

function writeValueInfo(w: ProtoWriter, v: ValueInfoSpec): void {
  w.string(ValueInfo.name, v.name);
  // TypeProto.tensor_type(1) -> Tensor{elem_type(1), shape(2) -> TensorShapeProto{dim(1)*}}
  w.message(ValueInfo.type, (type) =>
    type.message(1, (tensor) => {
      tensor.varint(1, v.elemType);
      tensor.message(2, (shape) => {
        for (const d of v.dims) {
          shape.message(1, (dim) => {
            if (typeof d === 'number') dim.varint(1, d);
            else dim.string(2, d);
          });
        }
      });
    }),
  );
}

function writeInitializer(w: ProtoWriter, t: InitializerSpec): void {
  const count = t.dims.reduce((a, b) => a * b, 1);
  if (t.rawData.length !== count * (t.dataType === DataType.FLOAT ? 4 : 8)) {
    throw new Error(
      `initializer ${t.name}: raw_data size does not match dims [${t.dims.join(',')}]`,
    );
  }
  // dims is also proto2 `repeated int64` (unpacked): one varint field per dim.
  for (const d of t.dims) w.varint(Tensor.dims, d);
  w.varint(Tensor.dataType, t.dataType);
  w.string(Tensor.name, t.name);
  w.bytes(Tensor.rawData, t.rawData);
}

/** Serializes a model spec to ModelProto bytes. */
export function encodeModel(spec: ModelSpec): Uint8Array {
  const w = new ProtoWriter();
  w.varint(Model.irVersion, spec.irVersion ?? 7);
  w.string(Model.producerName, spec.producerName);
  if (spec.producerVersion !== undefined) w.string(Model.producerVersion, spec.producerVersion);
  w.message(Model.graph, (g) => {
    spec.nodes.forEach((n, i) => {
      g.message(Graph.node, (nw) => {
        for (const x of n.inputs) nw.string(Node.input, x);
        for (const y of n.outputs) nw.string(Node.output, y);
        nw.string(Node.name, n.name ?? `${n.opType}_${i}`);
        nw.string(Node.opType, n.opType);
        for (const [name, a] of Object.entries(n.attributes ?? {})) {
          nw.message(Node.attribute, (aw) => writeAttribute(aw, name, a));
        }
      });
    });
    g.string(Graph.name, spec.graphName);
    for (const t of spec.initializers)
      g.message(Graph.initializer, (tw) => writeInitializer(tw, t));
    for (const v of spec.inputs) g.message(Graph.input, (vw) => writeValueInfo(vw, v));
    for (const v of spec.outputs) g.message(Graph.output, (vw) => writeValueInfo(vw, v));
  });
  // OperatorSetIdProto{domain(1), version(2)}; the default domain is the empty string.
  w.message(Model.opsetImport, (o) => o.string(1, '').varint(2, spec.opsetVersion ?? 13));
  for (const [key, value] of Object.entries(spec.metadata ?? {})) {
    w.message(Model.metadataProps, (e) =>
      e.string(StringStringEntry.key, key).string(StringStringEntry.value, value),
    );
  }
  return w.finish();
}

/**
 * Convenience accumulator for a graph: add constants and nodes, let it name intermediates, then
 * call `build`. Node outputs are named `${prefix}` or `${prefix}_${n}` so dumps stay readable.
 */
export class GraphBuilder {
  readonly nodes: NodeSpec[] = [];
  readonly initializers: InitializerSpec[] = [];
  private readonly used = new Set<string>();

  private claim(name: string): string {
    let out = name;
    for (let n = 1; this.used.has(out); n++) out = `${name}_${n}`;
    this.used.add(out);
    return out;
  }

  /** Adds a float32 constant; returns its (possibly de-duplicated) name. */
  constFloat(name: string, dims: readonly number[], values: ArrayLike<number>): string {
    const raw = new Uint8Array(values.length * 4);
    const dv = new DataView(raw.buffer);
    for (let i = 0; i < values.length; i++) dv.setFloat32(i * 4, values[i] ?? 0, true);
    const n = this.claim(name);
    this.initializers.push({ name: n, dataType: DataType.FLOAT, dims, rawData: raw });
    return n;
  }

  /** Adds an int64 constant (e.g. Unsqueeze axes in opset 13); returns its name. */
  constInt64(name: string, dims: readonly number[], values: readonly (number | bigint)[]): string {
    const raw = new Uint8Array(values.length * 8);
    const dv = new DataView(raw.buffer);
    values.forEach((v, i) => dv.setBigInt64(i * 8, BigInt(v), true));
    const n = this.claim(name);
    this.initializers.push({ name: n, dataType: DataType.INT64, dims, rawData: raw });
    return n;
  }

  /** Adds a single-output node and returns the output name. */
  op(
    opType: string,
    inputs: readonly string[],
    out: string,
    attributes?: Readonly<Record<string, AttributeValue>>,
  ): string {
    const name = this.claim(out);
    this.nodes.push({
      opType,
      inputs,
      outputs: [name],
      name: `${opType}:${name}`,
      ...(attributes ? { attributes } : {}),
    });
    return name;
  }

  /** Reserves a name that is not produced by `op` (graph inputs). */
  reserve(name: string): string {
    if (this.used.has(name)) throw new Error(`name ${name} already used`);
    this.used.add(name);
    return name;
  }
}
