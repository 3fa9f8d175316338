/**
 * `--model file.gguf`: a GGUF file becomes a model directory whose side files are converted from its metadata and
 * whose weights stay in the .gguf, read from there on load.
 *
 * prepareGgufModel writes, once per file (keyed by path, size and modification time), into
 * `<models>/gguf/<name>-<digest>/`: config.json (gguf-config.ts), generation_config.json (its stop ids),
 * tokenizer.json and tokenizer_config.json with the chat template (gguf-tokenizer.ts), and gguf.json, which points
 * at the .gguf and caches its validated tensor table. Everything that reads model directories (text/, `sift kv`,
 * benchmarks) then works unchanged, and openCheckpoint reads tensors straight out of the .gguf (ggufCheckpoint).
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { SiftError } from '../config/errors.js';
import { decodeToF32, encodeFromF32, type WeightDType } from '../util/dtype.js';
import { dequantize, permuteQuantizedRows, type QuantizedMatrix } from '../util/quant.js';
import { type Checkpoint, type CheckpointTensorInfo, openCheckpoint } from './checkpoint.js';
import type { ModelConfig } from './config.js';
import { ggmlLayout, isGgmlQuantized, repackGgml } from './ggml.js';
import { GgufFile, type GgufTensor } from './gguf.js';
import { ggufModelDescription, ggufTensorName, hfTensorName, UNIT_OFFSET_NORMS } from './gguf-config.js';
import { ggufTokenizerFiles } from './gguf-tokenizer.js';
import { writeModelDirAtomically } from './model-dir.js';
import { modelsDir } from './models.js';

export const GGUF_LINK_FILE = 'gguf.json';

/** gguf.json: where the weights are and the tensor table checked when the directory was made. */
export interface GgufLink {
  file: string;
  size: number;
  mtimeMs: number;
  arch: string;
  interleavedQk: boolean;
  version: number;
  alignment: number;
  /** [name, ggml type, dims, begin, end] per tensor. */
  tensors: [string, number, number[], number, number][];
}

function fileStamp(file: string): { size: number; mtimeMs: number } {
  const st = fs.statSync(file);
  return { size: st.size, mtimeMs: Math.floor(st.mtimeMs) };
}

/** The model directory for a .gguf file, converted now unless a current conversion exists. */
export async function prepareGgufModel(file: string, opts: { modelsDir?: string } = {}): Promise<string> {
  const abs = path.resolve(file);
  if (!fs.existsSync(abs) || !fs.statSync(abs).isFile()) {
    throw new SiftError('MODEL_NOT_FOUND', `no GGUF file at ${abs}`);
  }
  const stamp = fileStamp(abs);
  const digest = createHash('sha256').update(`${abs}\0${stamp.size}\0${stamp.mtimeMs}`).digest('hex').slice(0, 12);
  const name = path.basename(abs).replace(/\.gguf$/i, '');
  const dest = path.join(modelsDir(opts.modelsDir), 'gguf', `${name}-${digest}`);
  if (readLink(dest)) return dest;
  const g = await GgufFile.open(abs);
  try {
    const desc = ggufModelDescription(g);
    const text = ggufTokenizerFiles(g);
    const link: GgufLink = {
      file: abs,
      ...stamp,
      arch: desc.arch,
      interleavedQk: desc.interleavedQk,
      version: g.version,
      alignment: g.alignment,
      tensors: [...g.tensors.values()].map((t) => [t.name, t.type, [...t.dims], t.begin, t.end]),
    };
    const eos = desc.config.eos_token_id as number[];
    await writeModelDirAtomically(
      dest,
      { name, sha256: digest, source: `gguf:${abs}` },
      (tmp) => {
        const w = (f: string, v: unknown) => fs.writeFileSync(path.join(tmp, f), `${JSON.stringify(v, null, 1)}\n`);
        w('config.json', desc.config);
        w('generation_config.json', { eos_token_id: eos });
        w('tokenizer.json', text.tokenizer);
        w('tokenizer_config.json', text.tokenizerConfig);
        w(GGUF_LINK_FILE, link);
        // The tensors must be loadable as the config describes them: check now, not at first use.
        openCheckpoint(tmp).close();
      },
      { keepComplete: true },
    );
    return dest;
  } finally {
    g.close();
  }
}

/** gguf.json of `dir`, or null when `dir` is not a GGUF model directory. */
export function readLink(dir: string): GgufLink | null {
  const f = path.join(dir, GGUF_LINK_FILE);
  if (!fs.existsSync(f)) return null;
  try {
    return JSON.parse(fs.readFileSync(f, 'utf8')) as GgufLink;
  } catch (e) {
    throw new SiftError('CHECKPOINT_INVALID', `${f}: not valid JSON (${(e as Error).message})`);
  }
}

/** Row order that takes q/k rows from interleaved-pair RoPE order to rotate_half order: out row i = in row order[i]. */
export function rotateHalfRowOrder(nHeads: number, headDim: number): Int32Array {
  const half = headDim / 2;
  const order = new Int32Array(nHeads * headDim);
  for (let h = 0; h < nHeads; h++) {
    for (let j = 0; j < 2; j++)
      for (let i = 0; i < half; i++) order[h * headDim + j * half + i] = h * headDim + 2 * i + j;
  }
  return order;
}

function permuteRows(bytes: Uint8Array, order: Int32Array): Uint8Array {
  const rowBytes = bytes.byteLength / order.length;
  const out = new Uint8Array(bytes.byteLength);
  for (let i = 0; i < order.length; i++)
    out.set(bytes.subarray(order[i] * rowBytes, (order[i] + 1) * rowBytes), i * rowBytes);
  return out;
}

const DENSE: Readonly<Record<string, WeightDType>> = { F32: 'f32', F16: 'f16', BF16: 'bf16' };

/** A Checkpoint over a GGUF model directory (HF tensor names; q/k rows in rotate_half order). */
export function ggufCheckpoint(dir: string, config: ModelConfig): Checkpoint {
  const link = readLink(dir);
  if (!link) throw new SiftError('CHECKPOINT_INVALID', `${dir}: no ${GGUF_LINK_FILE}`);
  let stamp: { size: number; mtimeMs: number };
  try {
    stamp = fileStamp(link.file);
  } catch {
    throw new SiftError('MODEL_NOT_FOUND', `${dir}: its GGUF file ${link.file} no longer exists`);
  }
  if (stamp.size !== link.size || stamp.mtimeMs !== link.mtimeMs) {
    throw new SiftError(
      'CHECKPOINT_INVALID',
      `${link.file} changed after ${dir} was made from it; pass the .gguf to --model again to convert it anew`,
    );
  }
  const tensors = new Map<string, GgufTensor>();
  for (const [name, type, dims, begin, end] of link.tensors) {
    tensors.set(name, GgufFile.describe(name, type, dims, begin, end));
  }
  const g = GgufFile.reopen(link.file, link.version, link.alignment, tensors);
  try {
    const gname = (hf: string): string => {
      const n = ggufTensorName(hf, link.arch);
      if (!n || !g.has(n))
        throw new SiftError('CHECKPOINT_INVALID', `${link.file}: tensor ${n ?? hf} missing (for ${hf})`);
      return n;
    };
    /** Rows of q/k (and their biases) come back to rotate_half order. */
    const rowOrder = (hf: string): Int32Array | null => {
      if (!link.interleavedQk) return null;
      if (/self_attn\.q_proj\.(weight|bias)$/.test(hf)) return rotateHalfRowOrder(config.numHeads, config.headDim);
      if (/self_attn\.k_proj\.(weight|bias)$/.test(hf)) return rotateHalfRowOrder(config.numKvHeads, config.headDim);
      return null;
    };
    const info = (hf: string): CheckpointTensorInfo => {
      const n = gname(hf);
      const type = g.typeOf(n);
      const dims = g.tensor(n).dims;
      const shape = [...dims].reverse();
      if (isGgmlQuantized(type)) return { dtype: ggmlLayout(type), shape };
      return { dtype: DENSE[type], shape };
    };
    const rowsCols = (shape: readonly number[]): [number, number] => [
      shape.length > 1 ? shape.slice(0, -1).reduce((a, b) => a * b, 1) : 1,
      shape[shape.length - 1],
    ];
    const read = (hf: string): Uint8Array => {
      const n = gname(hf);
      const type = g.typeOf(n);
      if (isGgmlQuantized(type)) {
        throw new SiftError('INTERNAL', `${link.file}: tensor ${n} is ${type}; read it with readQuantized`);
      }
      const bytes = g.read(n);
      if (UNIT_OFFSET_NORMS.has(link.arch) && hf.endsWith('norm.weight')) {
        // llama.cpp stored Gemma's norm as 1 + w: give back HF's w
        const dtype = DENSE[type];
        const w = decodeToF32(bytes, dtype);
        for (let i = 0; i < w.length; i++) w[i] -= 1;
        return encodeFromF32(w, dtype);
      }
      const order = rowOrder(hf);
      return order ? permuteRows(bytes, order) : bytes;
    };
    const readQuantized = (hf: string): QuantizedMatrix => {
      const n = gname(hf);
      const type = g.typeOf(n);
      if (!isGgmlQuantized(type)) {
        throw new SiftError('INTERNAL', `${link.file}: tensor ${n} is ${type}, not a quantized type`);
      }
      const [rows, cols] = rowsCols(info(hf).shape);
      const q = repackGgml(type, g.read(n), rows, cols, `${link.file}: tensor ${n}`);
      const order = rowOrder(hf);
      return order ? permuteQuantizedRows(q, order) : q;
    };
    const readF32 = (hf: string): Float32Array => {
      const i = info(hf);
      if (i.dtype === 'q8' || i.dtype === 'q4') return dequantize(readQuantized(hf));
      return decodeToF32(read(hf), i.dtype);
    };
    const tensorNames = Object.freeze(
      [...g.tensors.keys()].map((n) => hfTensorName(n, link.arch)).filter((n): n is string => n !== null),
    );
    return {
      dir,
      config,
      tensorNames,
      embeddingName: 'model.embed_tokens.weight',
      lmHeadName: config.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight',
      has: (hf) => {
        const n = ggufTensorName(hf, link.arch);
        return n !== null && g.has(n);
      },
      info,
      read,
      readQuantized,
      readF32,
      close: () => g.close(),
    };
  } catch (e) {
    g.close();
    throw e;
  }
}
