/**
 * A small GGUF v3 writer for tests: typed metadata, tensors in F32 / F16 / BF16 / Q8_0 / Q4_0 / Q4_K / Q6_K (each
 * quantized here from f32 values by a plain round-to-nearest encoder of the block format, from the GGUF
 * specification's block definitions), aligned as the specification says. Also the GGUF twin of an HF checkpoint
 * (llama / qwen2 metadata and tensor names, llama q/k rows in interleaved-pair order as llama.cpp's converter
 * writes them), for end-to-end tests of the loader.
 */
import fs from 'node:fs';
import type { Checkpoint } from '../../checkpoint/checkpoint.js';
import { f16ToF32, f32ToBf16, f32ToF16 } from '../../util/dtype.js';

export type GgufWriteType = 'F32' | 'F16' | 'BF16' | 'Q8_0' | 'Q4_0' | 'Q5_0' | 'Q4_K' | 'Q6_K';
const TYPE_ID: Record<GgufWriteType, number> = {
  F32: 0,
  F16: 1,
  Q4_0: 2,
  Q5_0: 6,
  Q8_0: 8,
  Q4_K: 12,
  Q6_K: 14,
  BF16: 30,
};

/** A metadata value with its GGUF type. */
export type GgufKv =
  | { type: 'u8' | 'i8' | 'u16' | 'i16' | 'u32' | 'i32' | 'f32' | 'u64' | 'i64' | 'f64'; value: number }
  | { type: 'bool'; value: boolean }
  | { type: 'string'; value: string }
  | { type: 'array'; of: 'string'; value: string[] }
  | { type: 'array'; of: 'f32' | 'i32' | 'u32'; value: number[] };

export const kv = {
  u32: (value: number): GgufKv => ({ type: 'u32', value }),
  u64: (value: number): GgufKv => ({ type: 'u64', value }),
  f32: (value: number): GgufKv => ({ type: 'f32', value }),
  bool: (value: boolean): GgufKv => ({ type: 'bool', value }),
  str: (value: string): GgufKv => ({ type: 'string', value }),
  strs: (value: string[]): GgufKv => ({ type: 'array', of: 'string', value }),
  f32s: (value: number[]): GgufKv => ({ type: 'array', of: 'f32', value }),
  i32s: (value: number[]): GgufKv => ({ type: 'array', of: 'i32', value }),
};

export interface GgufTensorToWrite {
  name: string;
  type: GgufWriteType;
  /** ggml dims: ne[0] (the contiguous one) first, so a (rows, cols) matrix is [cols, rows]. */
  dims: number[];
  /** Stored bytes (encodeGgml). */
  data: Uint8Array;
}

const VALUE_TYPE: Record<string, number> = {
  u8: 0,
  i8: 1,
  u16: 2,
  i16: 3,
  u32: 4,
  i32: 5,
  f32: 6,
  bool: 7,
  string: 8,
  array: 9,
  u64: 10,
  i64: 11,
  f64: 12,
};

class Bytes {
  private parts: Buffer[] = [];
  length = 0;
  push(b: Buffer): void {
    this.parts.push(b);
    this.length += b.length;
  }
  u32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v >>> 0);
    this.push(b);
  }
  u64(v: number): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.push(b);
  }
  str(s: string): void {
    const b = Buffer.from(s, 'utf8');
    this.u64(b.length);
    this.push(b);
  }
  scalar(type: string, v: number | boolean | string): void {
    if (type === 'string') {
      this.str(v as string);
      return;
    }
    const n = v as number;
    const size: Record<string, number> = { u8: 1, i8: 1, bool: 1, u16: 2, i16: 2, u32: 4, i32: 4, f32: 4 };
    const b = Buffer.alloc(size[type] ?? 8);
    if (type === 'u8') b.writeUInt8(n);
    else if (type === 'i8') b.writeInt8(n);
    else if (type === 'bool') b.writeUInt8(v ? 1 : 0);
    else if (type === 'u16') b.writeUInt16LE(n);
    else if (type === 'i16') b.writeInt16LE(n);
    else if (type === 'u32') b.writeUInt32LE(n >>> 0);
    else if (type === 'i32') b.writeInt32LE(n);
    else if (type === 'f32') b.writeFloatLE(n);
    else if (type === 'u64') b.writeBigUInt64LE(BigInt(n));
    else if (type === 'i64') b.writeBigInt64LE(BigInt(n));
    else if (type === 'f64') b.writeDoubleLE(n);
    else throw new Error(`bad type ${type}`);
    this.push(b);
  }
  pad(align: number): void {
    const n = (align - (this.length % align)) % align;
    if (n) this.push(Buffer.alloc(n));
  }
  concat(): Buffer {
    return Buffer.concat(this.parts);
  }
}

/** The bytes of a GGUF v3 file. */
export function ggufBytes(metadata: Record<string, GgufKv>, tensors: GgufTensorToWrite[], alignment = 32): Buffer {
  const out = new Bytes();
  out.push(Buffer.from('GGUF', 'latin1'));
  out.u32(3);
  out.u64(tensors.length);
  const meta = { ...metadata };
  if (alignment !== 32) meta['general.alignment'] = kv.u32(alignment);
  out.u64(Object.keys(meta).length);
  for (const [key, v] of Object.entries(meta)) {
    out.str(key);
    out.u32(VALUE_TYPE[v.type]);
    if (v.type === 'array') {
      out.u32(VALUE_TYPE[v.of]);
      out.u64(v.value.length);
      for (const x of v.value) out.scalar(v.of, x);
    } else out.scalar(v.type, v.value);
  }
  let offset = 0;
  const offsets: number[] = [];
  for (const t of tensors) {
    offsets.push(offset);
    offset += Math.ceil(t.data.byteLength / alignment) * alignment;
  }
  tensors.forEach((t, i) => {
    out.str(t.name);
    out.u32(t.dims.length);
    for (const d of t.dims) out.u64(d);
    out.u32(TYPE_ID[t.type]);
    out.u64(offsets[i]);
  });
  out.pad(alignment);
  for (const t of tensors) {
    out.push(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    out.pad(alignment);
  }
  return out.concat();
}

export function writeGguf(
  file: string,
  metadata: Record<string, GgufKv>,
  tensors: GgufTensorToWrite[],
  alignment = 32,
): void {
  fs.writeFileSync(file, ggufBytes(metadata, tensors, alignment));
}

// ---- block encoders (round to nearest; valid blocks, not ggml's error-minimizing search) ---------------------

const h16 = (v: number) => f16ToF32(f32ToF16(v));

function putHalf(b: Uint8Array, o: number, v: number): void {
  const h = f32ToF16(v);
  b[o] = h & 0xff;
  b[o + 1] = h >> 8;
}

const clamp = (v: number, lo: number, hi: number) => Math.max(lo, Math.min(hi, v));

/** Encodes a (rows, cols) f32 matrix as `type`; cols must be a whole number of blocks. */
export function encodeGgml(type: GgufWriteType, x: Float32Array, rows: number, cols: number): Uint8Array {
  if (x.length !== rows * cols) throw new RangeError(`${x.length} values for (${rows}, ${cols})`);
  if (type === 'F32') return new Uint8Array(x.buffer.slice(x.byteOffset, x.byteOffset + x.byteLength));
  if (type === 'F16' || type === 'BF16') {
    const u = new Uint16Array(x.length);
    for (let i = 0; i < x.length; i++) u[i] = type === 'F16' ? f32ToF16(x[i]) : f32ToBf16(x[i]);
    return new Uint8Array(u.buffer);
  }
  const blockValues = type === 'Q4_K' || type === 'Q6_K' ? 256 : 32;
  const blockBytes = { Q8_0: 34, Q4_0: 18, Q5_0: 22, Q4_K: 144, Q6_K: 210 }[type];
  if (cols % blockValues !== 0) throw new RangeError(`${cols} columns is not a whole number of ${type} blocks`);
  const nb = (rows * cols) / blockValues;
  const out = new Uint8Array(nb * blockBytes);
  for (let blk = 0; blk < nb; blk++) {
    const v = x.subarray(blk * blockValues, (blk + 1) * blockValues);
    const o = blk * blockBytes;
    if (type === 'Q8_0') encodeQ8_0(v, out, o);
    else if (type === 'Q4_0') encodeQ4_0(v, out, o);
    else if (type === 'Q5_0') encodeQ5_0(v, out, o);
    else if (type === 'Q4_K') encodeQ4_K(v, out, o);
    else encodeQ6_K(v, out, o);
  }
  return out;
}

function encodeQ8_0(v: Float32Array, b: Uint8Array, o: number): void {
  const amax = v.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
  const d = h16(amax / 127);
  putHalf(b, o, d);
  for (let i = 0; i < 32; i++) b[o + 2 + i] = (d === 0 ? 0 : clamp(Math.round(v[i] / d), -127, 127)) & 0xff;
}

function encodeQ4_0(v: Float32Array, b: Uint8Array, o: number): void {
  // ggml's choice: d = (the value of largest magnitude) / -8, so that value maps to q = 0.
  let max = 0;
  for (const x of v) if (Math.abs(x) > Math.abs(max)) max = x;
  const d = h16(max / -8);
  putHalf(b, o, d);
  const q = (x: number) => (d === 0 ? 8 : clamp(Math.round(x / d) + 8, 0, 15));
  for (let j = 0; j < 16; j++) b[o + 2 + j] = q(v[j]) | (q(v[j + 16]) << 4);
}

function encodeQ5_0(v: Float32Array, b: Uint8Array, o: number): void {
  // As Q4_0 with 5 bits: d = (the value of largest magnitude) / -16; the fifth bits go to qh (u32), value i's at bit i.
  let max = 0;
  for (const x of v) if (Math.abs(x) > Math.abs(max)) max = x;
  const d = h16(max / -16);
  putHalf(b, o, d);
  const q = (x: number) => (d === 0 ? 16 : clamp(Math.round(x / d) + 16, 0, 31));
  let qh = 0;
  for (let j = 0; j < 16; j++) {
    const [lo, hi] = [q(v[j]), q(v[j + 16])];
    b[o + 6 + j] = (lo & 0xf) | ((hi & 0xf) << 4);
    qh += (lo >> 4) * 2 ** j + (hi >> 4) * 2 ** (j + 16);
  }
  new DataView(b.buffer, b.byteOffset, b.byteLength).setUint32(o + 2, qh, true);
}

function encodeQ4_K(v: Float32Array, b: Uint8Array, o: number): void {
  const scales: number[] = [];
  const mins: number[] = [];
  for (let j = 0; j < 8; j++) {
    const s = v.subarray(j * 32, j * 32 + 32);
    const lo = Math.min(0, ...s);
    const hi = Math.max(...s);
    scales.push((hi - lo) / 15);
    mins.push(-lo);
  }
  const d = h16(Math.max(...scales) / 63);
  const dmin = h16(Math.max(...mins) / 63);
  putHalf(b, o, d);
  putHalf(b, o + 2, dmin);
  const sc = scales.map((s) => (d === 0 ? 0 : clamp(Math.round(s / d), 0, 63)));
  const m = mins.map((x) => (dmin === 0 ? 0 : clamp(Math.round(x / dmin), 0, 63)));
  for (let j = 0; j < 4; j++) {
    b[o + 4 + j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
    b[o + 4 + j + 4] = (m[j] & 63) | ((m[j + 4] >> 4) << 6);
    b[o + 4 + j + 8] = (sc[j + 4] & 0xf) | ((m[j + 4] & 0xf) << 4);
  }
  for (let p = 0; p < 4; p++) {
    for (let l = 0; l < 32; l++) {
      const q = (j: number) => {
        const scale = d * sc[j];
        return scale === 0 ? 0 : clamp(Math.round((v[j * 32 + l] + dmin * m[j]) / scale), 0, 15);
      };
      b[o + 16 + p * 32 + l] = q(2 * p) | (q(2 * p + 1) << 4);
    }
  }
}

function encodeQ6_K(v: Float32Array, b: Uint8Array, o: number): void {
  const groupScale: number[] = [];
  for (let s = 0; s < 16; s++) {
    let max = 0;
    for (let i = 0; i < 16; i++) if (Math.abs(v[s * 16 + i]) > Math.abs(max)) max = v[s * 16 + i];
    groupScale.push(max / -32);
  }
  const amax = groupScale.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
  const d = h16(amax / 127);
  const sc = groupScale.map((s) => (d === 0 ? 0 : clamp(Math.round(s / d), -128, 127)));
  const q = new Int32Array(256);
  for (let i = 0; i < 256; i++) {
    const scale = d * sc[i >> 4];
    q[i] = (scale === 0 ? 0 : clamp(Math.round(v[i] / scale), -32, 31)) + 32;
  }
  for (let h = 0; h < 2; h++) {
    for (let l = 0; l < 32; l++) {
      const at = 128 * h + l;
      b[o + 64 * h + l] = (q[at] & 0xf) | ((q[at + 64] & 0xf) << 4);
      b[o + 64 * h + l + 32] = (q[at + 32] & 0xf) | ((q[at + 96] & 0xf) << 4);
      b[o + 128 + 32 * h + l] =
        (q[at] >> 4) | ((q[at + 32] >> 4) << 2) | ((q[at + 64] >> 4) << 4) | ((q[at + 96] >> 4) << 6);
    }
  }
  for (let s = 0; s < 16; s++) b[o + 192 + s] = sc[s] & 0xff;
  putHalf(b, o + 208, d);
}

// ---- the GGUF twin of an HF checkpoint ---------------------------------------------------------------------------

export interface TwinOptions {
  /** general.architecture: 'llama' (q/k rows written interleaved, as llama.cpp's converter does), 'qwen2', ... */
  arch: string;
  /** The type of each HF tensor (by name); vectors (norms, biases) stay F32 whatever this says. */
  typeOf: (hfName: string) => GgufWriteType;
  /** Tokenizer keys (tokenizer.ggml.*, tokenizer.chat_template). */
  tokenizer: Record<string, GgufKv>;
  /** Extra or overriding metadata. */
  metadata?: Record<string, GgufKv>;
}

/** GGUF tensor name of an HF tensor name, written out here apart from checkpoint/gguf-config.ts (llama.cpp's map). */
export function twinName(hf: string, arch = 'llama'): string {
  const fixed: Record<string, string> = {
    'model.embed_tokens.weight': 'token_embd.weight',
    'model.norm.weight': 'output_norm.weight',
    'lm_head.weight': 'output.weight',
  };
  if (fixed[hf]) return fixed[hf];
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(hf);
  if (!m) throw new Error(`no GGUF name for ${hf}`);
  const gemma = arch === 'gemma2' || arch === 'gemma3';
  const per: Record<string, string> = {
    'input_layernorm.weight': 'attn_norm.weight',
    'self_attn.q_proj.weight': 'attn_q.weight',
    'self_attn.k_proj.weight': 'attn_k.weight',
    'self_attn.v_proj.weight': 'attn_v.weight',
    'self_attn.q_proj.bias': 'attn_q.bias',
    'self_attn.k_proj.bias': 'attn_k.bias',
    'self_attn.v_proj.bias': 'attn_v.bias',
    'self_attn.q_norm.weight': 'attn_q_norm.weight',
    'self_attn.k_norm.weight': 'attn_k_norm.weight',
    'self_attn.o_proj.weight': 'attn_output.weight',
    'post_attention_layernorm.weight': gemma ? 'post_attention_norm.weight' : 'ffn_norm.weight',
    'pre_feedforward_layernorm.weight': 'ffn_norm.weight',
    'post_feedforward_layernorm.weight': 'post_ffw_norm.weight',
    'mlp.gate_proj.weight': 'ffn_gate.weight',
    'mlp.up_proj.weight': 'ffn_up.weight',
    'mlp.down_proj.weight': 'ffn_down.weight',
  };
  return `blk.${m[1]}.${per[m[2]]}`;
}

/** rotate_half rows -> interleaved-pair rows (llama.cpp's permute of q/k): out row (h, 2i + j) = in row (h, j * d/2 + i). */
function interleaveRows(x: Float32Array, nHeads: number, headDim: number, cols: number): Float32Array {
  const out = new Float32Array(x.length);
  const half = headDim / 2;
  for (let h = 0; h < nHeads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const src = (h * headDim + j * half + i) * cols;
        out.set(x.subarray(src, src + cols), (h * headDim + 2 * i + j) * cols);
      }
    }
  }
  return out;
}

/** The gemma2 / gemma3 keys llama.cpp's converter writes: the window and, where set, the soft-caps. */
function gemmaTwinKeys(ckpt: Checkpoint, a: string): Record<string, GgufKv> {
  if (a !== 'gemma2' && a !== 'gemma3') return {};
  const c = ckpt.config;
  const out: Record<string, GgufKv> = {};
  if (c.slidingWindow !== null) out[`${a}.attention.sliding_window`] = kv.u32(c.slidingWindow);
  if (c.attnLogitSoftcap !== null) out[`${a}.attn_logit_softcapping`] = kv.f32(c.attnLogitSoftcap);
  if (c.finalLogitSoftcap !== null) out[`${a}.final_logit_softcapping`] = kv.f32(c.finalLogitSoftcap);
  return out;
}

/** Metadata and tensors of the GGUF twin of `ckpt` (an opened HF checkpoint). */
export function ggufTwin(
  ckpt: Checkpoint,
  o: TwinOptions,
): { metadata: Record<string, GgufKv>; tensors: GgufTensorToWrite[] } {
  const c = ckpt.config;
  const a = o.arch;
  const metadata: Record<string, GgufKv> = {
    'general.architecture': kv.str(a),
    'general.name': kv.str('twin'),
    [`${a}.context_length`]: kv.u32(c.maxPositionEmbeddings),
    [`${a}.embedding_length`]: kv.u32(c.hiddenSize),
    [`${a}.block_count`]: kv.u32(c.numLayers),
    [`${a}.feed_forward_length`]: kv.u32(c.intermediateSize),
    [`${a}.attention.head_count`]: kv.u32(c.numHeads),
    [`${a}.attention.head_count_kv`]: kv.u32(c.numKvHeads),
    [`${a}.attention.key_length`]: kv.u32(c.headDim),
    [`${a}.attention.value_length`]: kv.u32(c.headDim),
    [`${a}.rope.dimension_count`]: kv.u32(c.headDim),
    [`${a}.attention.layer_norm_rms_epsilon`]: kv.f32(c.rmsNormEps),
    [`${a}.rope.freq_base`]: kv.f32(c.ropeTheta),
    ...gemmaTwinKeys(ckpt, a),
    ...o.tokenizer,
    ...o.metadata,
  };
  const names = ckpt.tensorNames.filter((n) => !n.includes('rotary_emb'));
  const tensors: GgufTensorToWrite[] = [];
  for (const hf of names) {
    if (c.tieWordEmbeddings && hf === 'lm_head.weight') continue;
    const info = ckpt.info(hf);
    let values = ckpt.readF32(hf);
    const vector = info.shape.length === 1;
    const [rows, cols] = vector ? [1, info.shape[0]] : [info.shape[0], info.shape[1]];
    if (a === 'llama' && /self_attn\.(q|k)_proj\.(weight|bias)$/.test(hf)) {
      const heads = hf.includes('q_proj') ? c.numHeads : c.numKvHeads;
      values = vector ? interleaveRows(values, heads, c.headDim, 1) : interleaveRows(values, heads, c.headDim, cols);
    }
    // llama.cpp's Gemma converters store every norm as 1 + w
    if ((a === 'gemma2' || a === 'gemma3') && hf.endsWith('norm.weight')) values = values.map((x) => x + 1);
    const type = vector ? 'F32' : o.typeOf(hf);
    tensors.push({
      name: twinName(hf, a),
      type,
      dims: vector ? [cols] : [cols, rows],
      data: encodeGgml(type, values, rows, cols),
    });
  }
  return { metadata, tensors };
}

/** tokenizer.ggml.* keys of a SentencePiece ("llama") vocabulary written like tests/helpers/tiny-text.ts's. */
export function sentencePieceKeys(pieces: readonly string[], byteFallback: boolean): Record<string, GgufKv> {
  const tokens = ['<unk>', '<s>', '</s>'];
  const types = [2, 3, 3];
  if (byteFallback) {
    for (let b = 0; b < 256; b++) {
      tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
      types.push(6);
    }
  }
  const first = tokens.length;
  for (const p of pieces) {
    tokens.push(p);
    types.push(1);
  }
  const scores = tokens.map((_, i) => (i < first ? 0 : -(i - first)));
  return {
    'tokenizer.ggml.model': kv.str('llama'),
    'tokenizer.ggml.tokens': kv.strs(tokens),
    'tokenizer.ggml.scores': kv.f32s(scores),
    'tokenizer.ggml.token_type': kv.i32s(types),
    'tokenizer.ggml.bos_token_id': kv.u32(1),
    'tokenizer.ggml.eos_token_id': kv.u32(2),
    'tokenizer.ggml.unknown_token_id': kv.u32(0),
  };
}

/**
 * tokenizer.ggml.* keys equivalent to an HF SentencePiece-BPE tokenizer.json (as sift's llama2.c importer writes
 * them): tokens by id, types (unknown, control, byte, normal) and scores that rank each piece by the first merge
 * that makes it, which is the order the merges were derived in.
 */
export function sentencePieceKeysFromTokenizerJson(json: {
  model: { vocab: Record<string, number>; merges: (string | [string, string])[] };
  added_tokens?: { id: number; content: string }[];
}): Record<string, GgufKv> {
  const n = Object.keys(json.model.vocab).length;
  const tokens = new Array<string>(n);
  for (const [piece, id] of Object.entries(json.model.vocab)) tokens[id] = piece;
  const rank = new Map<string, number>();
  json.model.merges.forEach((m, i) => {
    const [l, r] = typeof m === 'string' ? m.split(' ') : m;
    if (!rank.has(l + r)) rank.set(l + r, i);
  });
  const control = new Set((json.added_tokens ?? []).map((t) => t.id));
  const types = tokens.map((t, id) => (t === '<unk>' ? 2 : control.has(id) ? 3 : /^<0x[0-9A-F]{2}>$/.test(t) ? 6 : 1));
  const scores = tokens.map((t) => -(rank.get(t) ?? n + 1));
  return {
    'tokenizer.ggml.model': kv.str('llama'),
    'tokenizer.ggml.tokens': kv.strs(tokens),
    'tokenizer.ggml.scores': kv.f32s(scores),
    'tokenizer.ggml.token_type': kv.i32s(types),
    'tokenizer.ggml.bos_token_id': kv.u32(tokens.indexOf('<s>')),
    'tokenizer.ggml.eos_token_id': kv.u32(tokens.indexOf('</s>')),
    'tokenizer.ggml.unknown_token_id': kv.u32(tokens.indexOf('<unk>')),
  };
}
