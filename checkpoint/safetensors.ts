/**
 * The safetensors format, host side: parse and validate a file's header, read one tensor's byte range on demand,
 * and write files atomically.
 *
 * Layout of a file: 8 bytes little-endian u64 N, then N bytes of JSON header
 *   { "__metadata__"?: {string: string}, "<name>": { "dtype": "F16", "shape": [r, c], "data_offsets": [b, e] }, ... }
 * then the data area; offsets are relative to its start (8 + N). Checkpoints run to many GB, so a file is never
 * read whole: opening reads the header, `read(name)` reads exactly that tensor's bytes.
 *
 * A sharded checkpoint is a directory with model.safetensors.index.json ({ "weight_map": {tensor: shard file} });
 * `openSafetensorsDir` opens each shard once and answers by tensor name.
 */
import fs from 'node:fs';
import path from 'node:path';
import { SiftError } from '../config/errors.js';
import type { WeightDType } from '../util/dtype.js';

/** Element sizes of every dtype the safetensors spec names (to validate offsets even of tensors we cannot use). */
const DTYPE_BYTES: Readonly<Record<string, number>> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  I64: 8,
  U64: 8,
  F64: 8,
};

/** The dtypes sift loads, as spelled in a safetensors header, and their WeightDType. */
const SUPPORTED: Readonly<Record<string, WeightDType>> = { F32: 'f32', F16: 'f16', BF16: 'bf16' };
const HEADER_DTYPE: Readonly<Record<WeightDType, string>> = { f32: 'F32', f16: 'F16', bf16: 'BF16' };

/** The spec's cap on the header's size; a larger length means a corrupt or foreign file. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export const INDEX_FILE = 'model.safetensors.index.json';
export const SINGLE_FILE = 'model.safetensors';

/** One tensor as the header describes it. */
export interface TensorEntry {
  name: string;
  /** Header dtype string, e.g. 'F16'; may be one sift cannot load (then `info`/`read` throw). */
  rawDtype: string;
  shape: readonly number[];
  /** Absolute byte range in the file: [begin, end). */
  begin: number;
  end: number;
}

/** What a caller needs to know to use a tensor. */
export interface TensorInfo {
  dtype: WeightDType;
  shape: readonly number[];
}

/** Tensor to write: raw little-endian bytes of `dtype`, row-major, prod(shape) elements. */
export interface TensorToWrite {
  name: string;
  /** 'f32' | 'f16' | 'bf16', or the header spelling 'F32' | 'F16' | 'BF16'. */
  dtype: WeightDType | 'F32' | 'F16' | 'BF16';
  shape: readonly number[];
  data: Uint8Array;
}

function invalid(message: string): SiftError {
  return new SiftError('CHECKPOINT_INVALID', message);
}

function fmtShape(shape: readonly number[]): string {
  return `(${shape.join(', ')})`;
}

function isNonNegInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** Reads exactly `length` bytes at `position` or throws naming the file. */
function readExact(fd: number, file: string, position: number, length: number, what: string): Uint8Array {
  const out = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const n = fs.readSync(fd, out, done, length - done, position + done);
    if (n === 0) throw invalid(`${file}: unexpected end of file reading ${what} (${done} of ${length} bytes)`);
    done += n;
  }
  return out;
}

/** One open .safetensors file: header parsed and validated, data read per tensor. */
export class SafetensorsFile {
  readonly path: string;
  /** The header's __metadata__ (string values), or {}. */
  readonly metadata: Readonly<Record<string, string>>;
  /** Tensors in header order. */
  readonly entries: ReadonlyMap<string, TensorEntry>;
  private fd: number | null;

  private constructor(file: string, fd: number, metadata: Record<string, string>, entries: Map<string, TensorEntry>) {
    this.path = file;
    this.fd = fd;
    this.metadata = Object.freeze(metadata);
    this.entries = entries;
  }

  /** Opens `file` and validates its header and offsets; reads no tensor data. */
  static open(file: string): SafetensorsFile {
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch (e) {
      throw invalid(`${file}: cannot open (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
    }
    try {
      const { metadata, entries } = parseHeader(fd, file);
      return new SafetensorsFile(file, fd, metadata, entries);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  private entry(name: string): TensorEntry {
    const e = this.entries.get(name);
    if (!e) throw invalid(`${this.path}: tensor ${name} not found`);
    return e;
  }

  /** dtype and shape; throws CHECKPOINT_UNSUPPORTED for a dtype sift cannot load. */
  info(name: string): TensorInfo {
    const e = this.entry(name);
    const dtype = SUPPORTED[e.rawDtype];
    if (!dtype) {
      throw new SiftError(
        'CHECKPOINT_UNSUPPORTED',
        `${this.path}: tensor ${name} has dtype ${e.rawDtype}; supported: ${Object.keys(SUPPORTED).join(', ')}`,
      );
    }
    return { dtype, shape: e.shape };
  }

  /** The tensor's raw little-endian bytes (a fresh, 8-byte-aligned buffer), read from disk now. */
  read(name: string): Uint8Array {
    this.info(name); // dtype check
    const e = this.entry(name);
    if (this.fd === null) throw invalid(`${this.path}: read of ${name} after close`);
    return readExact(this.fd, this.path, e.begin, e.end - e.begin, `tensor ${name}`);
  }

  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
  }
}

function parseHeader(
  fd: number,
  file: string,
): { metadata: Record<string, string>; entries: Map<string, TensorEntry> } {
  const size = fs.fstatSync(fd).size;
  if (size < 8)
    throw invalid(`${file}: ${size} bytes is too short for a safetensors file (need an 8-byte header length)`);
  const lenBytes = readExact(fd, file, 0, 8, 'header length');
  const headerLen64 = new DataView(lenBytes.buffer).getBigUint64(0, true);
  if (headerLen64 > BigInt(size - 8)) {
    throw invalid(`${file}: header length ${headerLen64} runs past the end of the file (${size} bytes)`);
  }
  const headerLen = Number(headerLen64);
  if (headerLen > MAX_HEADER_BYTES) throw invalid(`${file}: header length ${headerLen} exceeds ${MAX_HEADER_BYTES}`);
  const headerText = new TextDecoder().decode(readExact(fd, file, 8, headerLen, 'header'));
  let header: unknown;
  try {
    header = JSON.parse(headerText);
  } catch (e) {
    throw invalid(`${file}: header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    throw invalid(`${file}: header is not a JSON object`);
  }
  const dataStart = 8 + headerLen;
  const dataLen = size - dataStart;
  const metadata: Record<string, string> = {};
  const entries = new Map<string, TensorEntry>();
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
        throw invalid(`${file}: __metadata__ is not an object`);
      }
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== 'string') throw invalid(`${file}: __metadata__.${k} is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    if (typeof raw !== 'object' || raw === null) throw invalid(`${file}: tensor ${name}: entry is not an object`);
    const { dtype, shape, data_offsets: offsets } = raw as Record<string, unknown>;
    if (typeof dtype !== 'string') throw invalid(`${file}: tensor ${name}: dtype missing`);
    const elemBytes = DTYPE_BYTES[dtype];
    if (elemBytes === undefined) {
      throw new SiftError('CHECKPOINT_UNSUPPORTED', `${file}: tensor ${name} has unknown dtype ${dtype}`);
    }
    if (!Array.isArray(shape) || !shape.every(isNonNegInt)) {
      throw invalid(`${file}: tensor ${name}: shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegInt)) {
      throw invalid(`${file}: tensor ${name}: data_offsets ${JSON.stringify(offsets)} is not [begin, end]`);
    }
    const [b, e] = offsets as [number, number];
    if (b > e || e > dataLen) {
      throw invalid(
        `${file}: tensor ${name}: data_offsets [${b}, ${e}] out of range (data area is ${dataLen} bytes; file truncated?)`,
      );
    }
    const elems = (shape as number[]).reduce((a, d) => a * d, 1);
    if (e - b !== elems * elemBytes) {
      throw invalid(
        `${file}: tensor ${name}: ${e - b} bytes in data_offsets, but shape ${fmtShape(shape as number[])} ${dtype} ` +
          `needs ${elems * elemBytes}`,
      );
    }
    entries.set(name, {
      name,
      rawDtype: dtype,
      shape: Object.freeze([...(shape as number[])]),
      begin: dataStart + b,
      end: dataStart + e,
    });
  }
  // No two tensors may share bytes.
  const sorted = [...entries.values()].filter((t) => t.end > t.begin).sort((x, y) => x.begin - y.begin);
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i].begin < sorted[i - 1].end) {
      throw invalid(`${file}: tensors ${sorted[i - 1].name} and ${sorted[i].name} overlap in the data area`);
    }
  }
  return { metadata, entries };
}

// ---- directories (single file or sharded) ---------------------------------------------------------------------

/** All tensors of a checkpoint directory, whichever file holds them. */
export class SafetensorsDir {
  readonly dir: string;
  /** The files opened (one, or every shard named in the index). */
  readonly files: readonly SafetensorsFile[];
  /** Where the tensor list came from: model.safetensors or model.safetensors.index.json (absolute path). */
  readonly source: string;
  private readonly byName: Map<string, SafetensorsFile>;

  constructor(dir: string, source: string, files: SafetensorsFile[], byName: Map<string, SafetensorsFile>) {
    this.dir = dir;
    this.source = source;
    this.files = files;
    this.byName = byName;
  }

  get tensorNames(): string[] {
    return [...this.byName.keys()];
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  /** The file (shard) that holds `name`, or undefined. */
  fileOf(name: string): SafetensorsFile | undefined {
    return this.byName.get(name);
  }

  private file(name: string): SafetensorsFile {
    const f = this.byName.get(name);
    if (!f) throw invalid(`${this.source}: tensor ${name} not found`);
    return f;
  }

  info(name: string): TensorInfo {
    return this.file(name).info(name);
  }

  read(name: string): Uint8Array {
    return this.file(name).read(name);
  }

  close(): void {
    for (const f of this.files) f.close();
  }
}

/**
 * Opens the weights of an HF directory: model.safetensors.index.json when present (each shard opened once),
 * else model.safetensors. Throws CHECKPOINT_INVALID naming the directory when neither exists.
 */
export function openSafetensorsDir(dir: string): SafetensorsDir {
  const indexPath = path.join(dir, INDEX_FILE);
  const singlePath = path.join(dir, SINGLE_FILE);
  if (fs.existsSync(indexPath)) {
    let index: unknown;
    try {
      index = JSON.parse(fs.readFileSync(indexPath, 'utf8'));
    } catch (e) {
      throw invalid(`${indexPath}: not valid JSON (${(e as Error).message})`);
    }
    const weightMap = (index as { weight_map?: unknown } | null)?.weight_map;
    if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
      throw invalid(`${indexPath}: weight_map missing or not an object`);
    }
    const shards = new Map<string, SafetensorsFile>();
    const byName = new Map<string, SafetensorsFile>();
    try {
      for (const [name, shard] of Object.entries(weightMap as Record<string, unknown>)) {
        if (typeof shard !== 'string' || shard.includes('/') || shard.includes('\\') || shard.startsWith('.')) {
          throw invalid(
            `${indexPath}: weight_map.${name} is not a file name in the directory: ${JSON.stringify(shard)}`,
          );
        }
        let f = shards.get(shard);
        if (!f) {
          const shardPath = path.join(dir, shard);
          if (!fs.existsSync(shardPath)) throw invalid(`${indexPath}: shard ${shard} (for ${name}) does not exist`);
          f = SafetensorsFile.open(shardPath);
          shards.set(shard, f);
        }
        if (!f.has(name)) throw invalid(`${f.path}: tensor ${name} missing (the index maps it to this shard)`);
        byName.set(name, f);
      }
    } catch (e) {
      for (const f of shards.values()) f.close();
      throw e;
    }
    return new SafetensorsDir(dir, indexPath, [...shards.values()], byName);
  }
  if (fs.existsSync(singlePath)) {
    const f = SafetensorsFile.open(singlePath);
    const byName = new Map<string, SafetensorsFile>();
    for (const name of f.entries.keys()) byName.set(name, f);
    return new SafetensorsDir(dir, singlePath, [f], byName);
  }
  throw invalid(`${dir}: no weights (expected ${SINGLE_FILE} or ${INDEX_FILE})`);
}

// ---- writing ----------------------------------------------------------------------------------------------------

/**
 * Writes `tensors` (in the given order, contiguous) and optional string metadata to `file`, atomically:
 * the bytes go to a temporary file beside it, which is renamed over `file` only when complete.
 */
export function writeSafetensors(
  file: string,
  tensors: readonly TensorToWrite[],
  metadata?: Readonly<Record<string, string>>,
): void {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) header.__metadata__ = { ...metadata };
  let offset = 0;
  for (const t of tensors) {
    if (t.name === '__metadata__' || Object.hasOwn(header, t.name)) {
      throw new SiftError('INVALID_ARGUMENT', `${file}: tensor name ${t.name} is reserved or repeated`);
    }
    const dtype = t.dtype in HEADER_DTYPE ? HEADER_DTYPE[t.dtype as WeightDType] : t.dtype;
    const elemBytes = DTYPE_BYTES[dtype];
    if (!SUPPORTED[dtype] || elemBytes === undefined) {
      throw new SiftError('INVALID_ARGUMENT', `${file}: tensor ${t.name}: cannot write dtype ${t.dtype}`);
    }
    if (!t.shape.every(isNonNegInt)) throw new SiftError('INVALID_ARGUMENT', `${file}: tensor ${t.name}: bad shape`);
    const need = t.shape.reduce((a, d) => a * d, 1) * elemBytes;
    if (t.data.byteLength !== need) {
      throw new SiftError(
        'INVALID_ARGUMENT',
        `${file}: tensor ${t.name}: ${t.data.byteLength} bytes given, shape ${fmtShape(t.shape)} ${dtype} needs ${need}`,
      );
    }
    header[t.name] = { dtype, shape: [...t.shape], data_offsets: [offset, offset + need] };
    offset += need;
  }
  let json = JSON.stringify(header);
  // Pad with spaces so the data area starts 8-byte aligned (as the reference writer does).
  json += ' '.repeat((8 - ((Buffer.byteLength(json) + 8) % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const lenBytes = Buffer.alloc(8);
  lenBytes.writeBigUInt64LE(BigInt(headerBytes.byteLength));

  const tmp = `${file}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
  const fd = fs.openSync(tmp, 'w');
  try {
    writeAll(fd, lenBytes);
    writeAll(fd, headerBytes);
    for (const t of tensors) writeAll(fd, t.data);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fs.renameSync(tmp, file);
  } catch (e) {
    try {
      fs.closeSync(fd);
    } catch {
      // already closed
    }
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

function writeAll(fd: number, data: Uint8Array): void {
  let done = 0;
  while (done < data.byteLength) done += fs.writeSync(fd, data, done, data.byteLength - done);
}
