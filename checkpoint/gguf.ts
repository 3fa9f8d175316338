/**
 * The GGUF container, host side: the header (metadata key/values and tensor infos) parsed by @huggingface/gguf,
 * then checked here (types, shapes, alignment, every tensor's bytes inside the file, no overlaps); a tensor's bytes
 * are read on demand, one at a time (files run to many GB).
 *
 * Layout (GGUF v2/v3, little-endian): magic "GGUF", u32 version, u64 tensor count, u64 metadata count, the metadata
 * key/values, the tensor infos (name, n_dims, dims with ne[0] the contiguous one, ggml type, offset relative to the
 * data area), padding to `general.alignment` (default 32), then the data area.
 */
import fs from 'node:fs';
import { type GGUFParseOutput, gguf } from '@huggingface/gguf';
import { SiftError } from '../config/errors.js';
import { GGML_BLOCK, GGML_TYPE_NAMES, type GgmlTypeName, ggmlRowBytes, ggmlTypeName } from './ggml.js';

/** A metadata value as the parser gives it (64-bit integers as bigint). */
export type GgufValue = string | number | bigint | boolean | GgufValue[];

export interface GgufTensor {
  name: string;
  /** ggml_type id. */
  type: number;
  /** The type's name ('Q4_K', 'IQ2_XS', ...; 'type N' for ids the specification does not list). */
  typeName: string;
  /** ggml dims, ne[0] first (a (rows, cols) matrix is [cols, rows]). */
  dims: readonly number[];
  /** Absolute byte range in the file: [begin, end); end is -1 for types whose size sift does not know. */
  begin: number;
  end: number;
}

function invalid(message: string): SiftError {
  return new SiftError('CHECKPOINT_INVALID', message);
}

/** Bytes of a tensor of a type sift reads (throws for a partial block). */
export function ggmlTensorBytes(type: GgmlTypeName, dims: readonly number[], what: string): number {
  const cols = dims[0] ?? 1;
  const rows = dims.slice(1).reduce((a, d) => a * d, 1);
  return rows * ggmlRowBytes(type, cols, what);
}

/** One open GGUF file: header parsed and validated, tensor data read per tensor. */
export class GgufFile {
  readonly path: string;
  readonly version: number;
  readonly alignment: number;
  readonly metadata: ReadonlyMap<string, GgufValue>;
  /** Tensors in file order. */
  readonly tensors: ReadonlyMap<string, GgufTensor>;
  private fd: number | null;

  private constructor(
    file: string,
    fd: number,
    version: number,
    alignment: number,
    metadata: Map<string, GgufValue>,
    tensors: Map<string, GgufTensor>,
  ) {
    this.path = file;
    this.fd = fd;
    this.version = version;
    this.alignment = alignment;
    this.metadata = metadata;
    this.tensors = tensors;
  }

  /** Opens `file` and validates its header and tensor table; reads no tensor data. */
  static async open(file: string): Promise<GgufFile> {
    let size: number;
    try {
      size = fs.statSync(file).size;
    } catch (e) {
      throw new SiftError('MODEL_NOT_FOUND', `${file}: cannot open (${(e as NodeJS.ErrnoException).code ?? e})`);
    }
    if (size < 24) throw invalid(`${file}: ${size} bytes is too short for a GGUF file`);
    const fd = fs.openSync(file, 'r');
    try {
      const magic = Buffer.alloc(4);
      fs.readSync(fd, magic, 0, 4, 0);
      if (magic.toString('latin1') !== 'GGUF') {
        throw invalid(`${file}: not a GGUF file (starts with ${JSON.stringify(magic.toString('latin1'))})`);
      }
      let parsed: GGUFParseOutput<{ strict: false }>;
      try {
        parsed = (await gguf(file, { allowLocalFile: true })) as unknown as GGUFParseOutput<{ strict: false }>;
      } catch (e) {
        const why = e instanceof RangeError ? 'the header runs past the end of the file' : (e as Error).message;
        throw invalid(`${file}: unreadable GGUF header (${why}); truncated or corrupt file?`);
      }
      if (!parsed.littleEndian) {
        throw new SiftError('CHECKPOINT_UNSUPPORTED', `${file}: big-endian GGUF files are not supported`);
      }
      const metadata = new Map<string, GgufValue>();
      for (const [k, v] of Object.entries(parsed.metadata)) {
        if (k === 'version' || k === 'tensor_count' || k === 'kv_count') continue;
        metadata.set(k, v as GgufValue);
      }
      const version = Number(parsed.metadata.version);
      const alignment = Number(metadata.get('general.alignment') ?? 32);
      if (!Number.isInteger(alignment) || alignment <= 0 || alignment % 8 !== 0) {
        throw invalid(`${file}: metadata key general.alignment (${alignment}) must be a positive multiple of 8`);
      }
      const dataStart = Number(parsed.tensorDataOffset);
      if (dataStart > size) {
        throw invalid(
          `${file}: the header (${dataStart} bytes) runs past the end of the file (${size} bytes); truncated?`,
        );
      }
      const tensors = new Map<string, GgufTensor>();
      for (const t of parsed.tensorInfos) {
        const what = `${file}: tensor ${t.name}`;
        if (tensors.has(t.name)) throw invalid(`${what} appears twice`);
        const dims = t.shape.map(Number);
        if (dims.length < 1 || dims.length > 4 || !dims.every((d) => Number.isSafeInteger(d) && d > 0)) {
          throw invalid(`${what} has dims [${t.shape.join(', ')}]; expected 1 to 4 positive sizes`);
        }
        const rel = Number(t.offset);
        if (!Number.isSafeInteger(rel) || rel % alignment !== 0) {
          throw invalid(`${what} has offset ${t.offset}, not a multiple of the alignment ${alignment}`);
        }
        const entry = GgufFile.describe(t.name, t.dtype, dims, dataStart + rel, -1, what);
        if (entry.end > size) {
          throw invalid(
            `${what} (${entry.typeName}, dims [${dims.join(', ')}]) needs bytes [${entry.begin}, ${entry.end}) but ` +
              `the file has ${size} bytes; truncated file?`,
          );
        }
        tensors.set(t.name, entry);
      }
      const sorted = [...tensors.values()].filter((t) => t.end > t.begin).sort((a, b) => a.begin - b.begin);
      for (let i = 1; i < sorted.length; i++) {
        if (sorted[i].begin < sorted[i - 1].end) {
          throw invalid(`${file}: tensors ${sorted[i - 1].name} and ${sorted[i].name} overlap in the data area`);
        }
      }
      return new GgufFile(file, fd, version, alignment, metadata, tensors);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  /**
   * A tensor entry: its type's name and, for types sift reads, its end (`end` < 0 computes it from dims; a given
   * end must agree).
   */
  static describe(
    name: string,
    type: number,
    dims: readonly number[],
    begin: number,
    end: number,
    what = `tensor ${name}`,
  ): GgufTensor {
    const tn = ggmlTypeName(type);
    const typeName = GGML_TYPE_NAMES[type] ?? `type ${type}`;
    const computed = tn ? begin + ggmlTensorBytes(tn, dims, what) : -1;
    if (end >= 0 && end !== computed) throw invalid(`${what}: cached byte range disagrees with its type and dims`);
    return { name, type, typeName, dims: Object.freeze([...dims]), begin, end: computed };
  }

  /** Reopens a file whose tensor table was validated before (a GGUF model directory's gguf.json). */
  static reopen(file: string, version: number, alignment: number, tensors: Map<string, GgufTensor>): GgufFile {
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch (e) {
      throw new SiftError('MODEL_NOT_FOUND', `${file}: cannot open (${(e as NodeJS.ErrnoException).code ?? e})`);
    }
    return new GgufFile(file, fd, version, alignment, new Map(), tensors);
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  /** The tensor's entry; CHECKPOINT_INVALID naming it when absent. */
  tensor(name: string): GgufTensor {
    const t = this.tensors.get(name);
    if (!t) throw invalid(`${this.path}: tensor ${name} missing`);
    return t;
  }

  /** The tensor's type name if sift reads it; CHECKPOINT_UNSUPPORTED naming the tensor and type otherwise. */
  typeOf(name: string): GgmlTypeName {
    const t = this.tensor(name);
    const n = ggmlTypeName(t.type);
    if (!n) {
      throw new SiftError(
        'CHECKPOINT_UNSUPPORTED',
        `${this.path}: tensor ${name} has ggml type ${t.typeName}; supported: ${Object.keys(GGML_BLOCK).join(', ')}`,
      );
    }
    return n;
  }

  /** The tensor's bytes as stored (a fresh buffer), read from disk now. */
  read(name: string): Uint8Array {
    this.typeOf(name);
    const t = this.tensor(name);
    if (this.fd === null) throw invalid(`${this.path}: read of ${name} after close`);
    const out = new Uint8Array(t.end - t.begin);
    let done = 0;
    while (done < out.length) {
      const n = fs.readSync(this.fd, out, done, out.length - done, t.begin + done);
      if (n === 0) throw invalid(`${this.path}: unexpected end of file reading tensor ${name}`);
      done += n;
    }
    return out;
  }

  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
  }

  // ---- typed metadata access: every error names the key ----------------------------------------------------

  /** A number-valued key (any integer or float type), or `fallback` when absent. */
  number(key: string, fallback?: number): number {
    const v = this.metadata.get(key);
    if (v === undefined) {
      if (fallback === undefined) throw invalid(`${this.path}: metadata key ${key} missing`);
      return fallback;
    }
    const n = typeof v === 'bigint' ? Number(v) : v;
    if (typeof n !== 'number' || !Number.isFinite(n)) {
      throw invalid(`${this.path}: metadata key ${key} (${fmt(v)}) must be a number`);
    }
    return n;
  }

  /** A positive-integer key. */
  count(key: string, fallback?: number): number {
    const n = this.number(key, fallback);
    if (!Number.isSafeInteger(n) || n <= 0) {
      throw invalid(`${this.path}: metadata key ${key} (${n}) must be a positive integer`);
    }
    return n;
  }

  string(key: string): string | undefined {
    const v = this.metadata.get(key);
    if (v === undefined) return undefined;
    if (typeof v !== 'string') throw invalid(`${this.path}: metadata key ${key} (${fmt(v)}) must be a string`);
    return v;
  }

  boolean(key: string): boolean | undefined {
    const v = this.metadata.get(key);
    if (v === undefined) return undefined;
    if (typeof v !== 'boolean') throw invalid(`${this.path}: metadata key ${key} (${fmt(v)}) must be a boolean`);
    return v;
  }

  /** An array key whose elements all satisfy `is` (named `what` in the error). */
  array<T>(key: string, is: (x: unknown) => x is T, what: string): T[] | undefined {
    const v = this.metadata.get(key);
    if (v === undefined) return undefined;
    if (!Array.isArray(v)) throw invalid(`${this.path}: metadata key ${key} (${fmt(v)}) must be an array of ${what}`);
    for (let i = 0; i < v.length; i++) {
      if (!is(v[i])) throw invalid(`${this.path}: metadata key ${key}[${i}] (${fmt(v[i])}) must be ${what}`);
    }
    return v as T[];
  }
}

function fmt(v: GgufValue): string {
  if (Array.isArray(v)) return `an array of ${v.length}`;
  return typeof v === 'bigint' ? String(v) : JSON.stringify(v);
}
