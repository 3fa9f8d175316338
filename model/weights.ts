/**
 * Uploads a checkpoint's tensors to the GPU in the layout of shaders/tensor.ts: 2-D weights in their file dtype
 * (16-bit as packed pairs) or quantized (a GGUF's q8/q4 blocks as they are, or an F32/F16/BF16 matrix quantized
 * now by `quantize`: round to nearest, or calibrated by an importance matrix or GPTQ), split under the binding limit; norm weights and biases as f32.
 *
 * Fused for the forward pass's fewer, fatter kernels: q_proj, k_proj and v_proj are one matrix (their rows
 * stacked: q, then k, then v; the biases likewise), gate_proj and up_proj one matrix with their rows interleaved
 * (row 2i = gate_i, 2i + 1 = up_i, so the SwiGLU matmul reads a pair of adjacent rows per output; chunks never split
 * a pair). Quantized matrices fuse as they are (rows, scales and mins moved together) when they share a format and
 * group size. A file that mixes formats within a layer (GGUF Q4_K_M keeps v_proj in Q6_K = q8 beside q4 q/k) keeps
 * its q/k/v as consecutive parts of one format each (one matmul per part into the stacked output); gate and up in
 * different formats are decoded to f32 (exact, at 4 bytes a weight: no known mix does this). A checkpoint that
 * already stores q/k/v stacked (Phi-3's qkv_proj) is uploaded as stored; its gate_up_proj (gate rows, then up rows)
 * is interleaved like separate gate/up.
 */

import type { Checkpoint } from '../checkpoint/checkpoint.js';
import type { ModelConfig } from '../checkpoint/config.js';
import { embeddingScale } from '../checkpoint/gemma.js';
import { SiftError } from '../config/errors.js';
import type { Gpu } from '../shaders/runtime.js';
import { destroyWeight, type GpuWeight, uploadQuantized, uploadWeight, weightBytes } from '../shaders/tensor.js';
import { decodeToF32, type WeightDType } from '../util/dtype.js';
import {
  dequantize,
  firstNonFinite,
  permuteQuantizedRows,
  type QuantizedMatrix,
  quantizedBytes,
  quantizeInt8,
  quantizeQ4,
} from '../util/quant.js';
import { quantizeQ4Gptq } from '../util/quant-gptq.js';
import { quantizeQ4Weighted } from '../util/quant-weighted.js';
import {
  headPermutation,
  isIdentityPermutation,
  type LayerHeadPermutation,
  permuteQuantizedTensor,
  permuteTensor,
} from './head-permutation.js';
import type { HeadPlan } from './head-plan.js';

/** `--quantize`: int8 per output channel, or 4-bit with a scale and min per group of `group` columns. */
export type QuantizeOption =
  | { format: 'int8' }
  | {
      format: 'q4';
      group: number;
      /**
       * Matrices kept at int8 (llama.cpp's _M mixes keep such tensors wider): `embedding` = the token embedding and
       * lm_head, `attn-v` = every layer's v_proj, `ffn-down` = every layer's down_proj.
       */
      int8?: readonly Int8Role[];
      /**
       * Calibrated q4 (`--quantize-imatrix`, model/imatrix.ts): tensor name -> (cols) mean x^2 of its input channels;
       * each q4 matrix named here is quantized weighted by it (util/quant-weighted.ts). The token embedding of an
       * untied model is a lookup, not a matmul: it has no entry and stays round to nearest.
       */
      importance?: ReadonlyMap<string, Float32Array>;
      /**
       * GPTQ (`--quantize-gptq`, model/gram.ts): tensor name -> (cols, cols) mean x x^T of its input; each q4 matrix
       * named here is quantized by GPTQ with it (util/quant-gptq.ts), which takes precedence over `importance`, except
       * a tied embedding: its rows are also read one by one as token vectors, where GPTQ's moved weights are plain
       * error, so it gets the importance-weighted fit (with `importance` = diag of its Gram matrix).
       */
      gram?: ReadonlyMap<string, Float32Array>;
      /** With `gram`: GPTQ's act-order (columns by descending diag(H), static groups). */
      gptqActOrder?: boolean;
    };

/** Roles of the matrices a q4 upload may keep at int8 (QuantizeOption.int8). */
export const INT8_ROLES = ['embedding', 'attn-v', 'ffn-down'] as const;
export type Int8Role = (typeof INT8_ROLES)[number];

export interface LayerWeights {
  attnNorm: GPUBuffer; // (hidden) f32
  /**
   * ((heads + 2 kvHeads) * headDim, hidden): q_proj, k_proj, v_proj rows stacked; one weight, or (formats mixed
   * within the layer) consecutive parts of one format each, in row order.
   */
  qkv: GpuWeight[];
  qkvBias: GPUBuffer | null; // ((heads + 2 kvHeads) * headDim) f32
  qNorm: GPUBuffer | null; // (headDim) f32, Qwen3's per-head q RMSNorm weight
  kNorm: GPUBuffer | null; // (headDim) f32, Qwen3's per-head k RMSNorm weight
  o: GpuWeight; // (hidden, heads*headDim)
  /** (hidden) f32 the MLP's input norm: post_attention_layernorm, or (Gemma) pre_feedforward_layernorm. */
  mlpNorm: GPUBuffer;
  /** (hidden) f32 Gemma: the attention output's norm (post_attention_layernorm) before the residual add, else null. */
  attnOutNorm: GPUBuffer | null;
  /** (hidden) f32 Gemma: the MLP output's norm (post_feedforward_layernorm) before the residual add, else null. */
  mlpOutNorm: GPUBuffer | null;
  gateUp: GpuWeight; // (2 * intermediate, hidden): gate_proj / up_proj rows interleaved
  down: GpuWeight; // (hidden, intermediate)
}

export interface ModelWeights {
  config: ModelConfig;
  embed: GpuWeight; // (vocab, hidden)
  layers: LayerWeights[];
  finalNorm: GPUBuffer; // (hidden) f32
  lmHead: GpuWeight; // (vocab, hidden); the same object as embed when tied
  /** Multiplies the embedding rows: 1, or Gemma's sqrt(hidden) rounded to the embedding's dtype (checkpoint/gemma.ts). */
  embedScale: number;
  /** Bytes of GPU memory the weights occupy. */
  bytes: number;
  /**
   * The head plan the attention weights were permuted for (model/head-permutation.ts): in layer l, KV heads
   * [0, r_l) are its retrieval heads and [r_l, nKv) its streaming heads. Null: original head order.
   */
  headPlan: HeadPlan | null;
}

export interface UploadProgress {
  tensorsDone: number;
  tensorsTotal: number;
  bytesDone: number;
}

/** A 2-D tensor read for upload: its file bytes (heads permuted), or its quantized blocks. */
type HostMatrix =
  | { kind: 'raw'; data: Uint8Array; rows: number; cols: number; dtype: WeightDType }
  | { kind: 'quant'; m: QuantizedMatrix };

const hostBytes = (h: HostMatrix) => (h.kind === 'raw' ? h.data.byteLength : quantizedBytes(h.m));
const hostRows = (h: HostMatrix) => (h.kind === 'raw' ? h.rows : h.m.rows);
const hostCols = (h: HostMatrix) => (h.kind === 'raw' ? h.cols : h.m.cols);

/** Whether two matrices can be stacked or interleaved into one weight: same dtype (same format and group). */
function sameLayout(a: HostMatrix, b: HostMatrix): boolean {
  if (a.kind === 'raw' && b.kind === 'raw') return a.dtype === b.dtype && a.cols === b.cols;
  if (a.kind === 'quant' && b.kind === 'quant') {
    return a.m.format === b.m.format && a.m.group === b.m.group && a.m.cols === b.m.cols;
  }
  return false;
}

/** Row-stacks matrices of one layout (sameLayout). */
function stackHost(ms: HostMatrix[]): HostMatrix {
  if (ms.length === 1) return ms[0];
  const first = ms[0];
  if (first.kind === 'raw') {
    const raws = ms as Extract<HostMatrix, { kind: 'raw' }>[];
    const data = new Uint8Array(raws.reduce((n, m) => n + m.data.byteLength, 0));
    let o = 0;
    for (const m of raws) {
      data.set(m.data, o);
      o += m.data.byteLength;
    }
    return { ...first, data, rows: raws.reduce((n, m) => n + m.rows, 0) };
  }
  const qs = (ms as Extract<HostMatrix, { kind: 'quant' }>[]).map((h) => h.m);
  const cat = <A extends Uint32Array | Float32Array>(parts: A[], make: (n: number) => A): A => {
    const out = make(parts.reduce((n, p) => n + p.length, 0));
    let o = 0;
    for (const p of parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  };
  const m: QuantizedMatrix = {
    ...qs[0],
    rows: qs.reduce((n, q) => n + q.rows, 0),
    values: cat(
      qs.map((q) => q.values),
      (n) => new Uint32Array(n),
    ),
    scales: cat(
      qs.map((q) => q.scales),
      (n) => new Float32Array(n),
    ),
    mins: qs[0].mins
      ? cat(
          qs.map((q) => q.mins as Float32Array),
          (n) => new Float32Array(n),
        )
      : null,
    scaleF16: qs.every((q) => q.scaleF16),
  };
  return { kind: 'quant', m };
}

/** A matrix decoded to f32 (quantized ones as the kernels decode them). */
function toF32(h: HostMatrix): HostMatrix {
  const f = h.kind === 'quant' ? dequantize(h.m) : decodeToF32(h.data, h.dtype);
  const data = new Uint8Array(f.buffer, f.byteOffset, f.byteLength);
  return { kind: 'raw', data, rows: hostRows(h), cols: hostCols(h), dtype: 'f32' };
}

/** A matrix's importances (INVALID_ARGUMENT naming the tensor when the map lacks it or its width differs). */
function importanceOf(m: ReadonlyMap<string, Float32Array>, name: string, cols: number): Float32Array {
  const v = m.get(name);
  if (!v || v.length !== cols) {
    throw new SiftError(
      'INVALID_ARGUMENT',
      `importance matrix: tensor ${name} ${v ? `has ${v.length} values for ${cols} columns` : 'has no entry'}`,
      { param: 'quantizeImatrix' },
    );
  }
  return v;
}

/** A matrix's input Gram matrix (INVALID_ARGUMENT naming the tensor when the map lacks it or its width differs). */
function gramOf(m: ReadonlyMap<string, Float32Array>, name: string, cols: number): Float32Array {
  const v = m.get(name);
  if (!v || v.length !== cols * cols) {
    throw new SiftError(
      'INVALID_ARGUMENT',
      `GPTQ statistics: tensor ${name} ${v ? `has ${v.length} values for ${cols} x ${cols}` : 'has no entry'}`,
      { param: 'quantizeGptq' },
    );
  }
  return v;
}

export function uploadModel(
  gpu: Gpu,
  ckpt: Checkpoint,
  opts: {
    onProgress?: (p: UploadProgress) => void;
    maxChunkBytes?: number;
    /** Reorder each layer's heads: retrieval heads first, then streaming heads (see head-permutation.ts). */
    headPlan?: HeadPlan;
    /** Quantize every F32/F16/BF16 matrix at load (already quantized GGUF tensors stay as they are). */
    quantize?: QuantizeOption;
  } = {},
): ModelWeights {
  const c = ckpt.config;
  let perm: LayerHeadPermutation[] | null = opts.headPlan ? headPermutation(opts.headPlan, c) : null;
  if (perm && isIdentityPermutation(perm)) perm = null;
  const L = c.numLayers;
  const total =
    3 +
    L * (9 + (c.attentionBias ? 3 : 0) + (c.qkNorm ? 2 : 0) + (c.sandwichNorms ? 2 : 0)) +
    (ckpt.lmHeadName === ckpt.embeddingName ? 0 : 1);
  let done = 0;
  let bytes = 0;
  const tick = (n: number) => {
    done++;
    bytes += n;
    opts.onProgress?.({ tensorsDone: done, tensorsTotal: total, bytesDone: bytes });
  };
  /** A 2-D tensor as it goes to the GPU: quantized (a GGUF's blocks, or `quantize`) or its file bytes; heads permuted. */
  const hostMatrix = (name: string): HostMatrix => {
    const info = ckpt.info(name);
    if (info.shape.length !== 2) {
      throw new SiftError('CHECKPOINT_INVALID', `${ckpt.dir}: tensor ${name} has shape [${info.shape}], expected 2-D`);
    }
    const dtype = info.dtype;
    let q: QuantizedMatrix | null = null;
    if (dtype === 'q8' || dtype === 'q4') q = ckpt.readQuantized(name);
    else if (opts.quantize) {
      const f = ckpt.readF32(name);
      const bad = firstNonFinite(f);
      if (bad >= 0) {
        throw new SiftError(
          'CHECKPOINT_INVALID',
          `${ckpt.dir}: tensor ${name} holds ${f[bad]} at ${bad}; cannot quantize`,
        );
      }
      const [rows, cols] = info.shape;
      const o = opts.quantize;
      const role: Int8Role | null =
        name === ckpt.embeddingName || name === ckpt.lmHeadName
          ? 'embedding'
          : name.endsWith('.self_attn.v_proj.weight')
            ? 'attn-v'
            : name.endsWith('.mlp.down_proj.weight')
              ? 'ffn-down'
              : null;
      q =
        o.format === 'int8' || (role !== null && o.int8?.includes(role))
          ? quantizeInt8(f, rows, cols)
          : o.gram && name !== ckpt.embeddingName
            ? quantizeQ4Gptq(f, rows, cols, o.group, gramOf(o.gram, name, cols), { actOrder: o.gptqActOrder })
            : o.importance && (name !== ckpt.embeddingName || name === ckpt.lmHeadName)
              ? quantizeQ4Weighted(f, rows, cols, o.group, importanceOf(o.importance, name, cols))
              : quantizeQ4(f, rows, cols, o.group);
    }
    if (q) return { kind: 'quant', m: perm ? permuteQuantizedTensor(name, q, perm) : q };
    if (dtype === 'q8' || dtype === 'q4') throw new SiftError('INTERNAL', `tensor ${name}: ${dtype} not read`);
    const raw = ckpt.read(name);
    const data = perm ? permuteTensor(name, raw, info.shape[0], perm) : raw;
    return { kind: 'raw', data, rows: info.shape[0], cols: info.shape[1], dtype };
  };
  const upload = (label: string, h: HostMatrix, rowMultiple = 1): GpuWeight => {
    if (h.kind === 'quant') {
      if (rowMultiple !== 1 && h.m.rows % rowMultiple !== 0) {
        throw new SiftError('INTERNAL', `${label}: ${h.m.rows} rows are not whole groups of ${rowMultiple}`);
      }
      return uploadQuantized(gpu, label, h.m, opts.maxChunkBytes, rowMultiple);
    }
    return uploadWeight(gpu, label, h.dtype, h.rows, h.cols, h.data, opts.maxChunkBytes, rowMultiple);
  };
  const matrix = (name: string): GpuWeight => {
    const h = hostMatrix(name);
    const w = upload(name, h);
    tick(hostBytes(h));
    return w;
  };
  /**
   * A checkpoint that stores the stacked matrix itself under `label` (Phi-3's qkv_proj: q, k, v rows in this order,
   * checkpoint/fused.ts) is uploaded as it is stored when nothing reorders or requantizes its parts; null otherwise.
   */
  const storedStack = (label: string, names: string[]): GpuWeight | null => {
    if (perm || opts.quantize || !ckpt.has(label) || !names.every((n) => ckpt.has(n))) return null;
    const info = ckpt.info(label);
    const parts = names.map((n) => ckpt.info(n));
    const dtype = info.dtype;
    const rows = parts.reduce((n, x) => n + x.shape[0], 0);
    if (dtype === 'q8' || dtype === 'q4' || info.shape.length !== 2 || info.shape[0] !== rows) return null;
    if (parts.some((x) => x.dtype !== dtype || x.shape[1] !== info.shape[1])) return null;
    const data = ckpt.read(label);
    for (const x of parts) tick((data.byteLength / rows) * x.shape[0]);
    return upload(label, { kind: 'raw', data, rows, cols: info.shape[1], dtype });
  };
  /** Row-stacked matrices (q, k, v): one weight, or one per run of consecutive matrices of one layout. */
  const stacked = (label: string, names: string[]): GpuWeight[] => {
    const stored = storedStack(label, names);
    if (stored) return [stored];
    const ms = names.map(hostMatrix);
    const cols = hostCols(ms[0]);
    if (ms.some((m) => hostCols(m) !== cols)) {
      throw new SiftError('CHECKPOINT_INVALID', `${ckpt.dir}: ${names.join(', ')} differ in columns`);
    }
    for (const m of ms) tick(hostBytes(m));
    const runs: HostMatrix[][] = [];
    for (const m of ms) {
      const run = runs[runs.length - 1];
      if (run && sameLayout(run[0], m)) run.push(m);
      else runs.push([m]);
    }
    return runs.map((run, i) => upload(runs.length === 1 ? label : `${label}#${i}`, stackHost(run)));
  };
  /** gate_proj and up_proj interleaved by rows (2i = gate_i, 2i + 1 = up_i), chunks holding whole pairs. */
  const interleaved = (label: string, gateName: string, upName: string): GpuWeight => {
    let g = hostMatrix(gateName);
    let u = hostMatrix(upName);
    tick(hostBytes(g));
    tick(hostBytes(u));
    const rows = hostRows(g);
    if (rows !== hostRows(u) || hostCols(g) !== hostCols(u)) {
      throw new SiftError('CHECKPOINT_INVALID', `${ckpt.dir}: ${gateName} and ${upName} differ in shape`);
    }
    if (!sameLayout(g, u)) {
      // one SwiGLU kernel reads both rows of a pair in one format: decode both to f32
      g = toF32(g);
      u = toF32(u);
    }
    if (g.kind === 'quant' && u.kind === 'quant') {
      const both = (stackHost([g, u]) as Extract<HostMatrix, { kind: 'quant' }>).m;
      const order = new Uint32Array(2 * rows);
      for (let r = 0; r < rows; r++) {
        order[2 * r] = r;
        order[2 * r + 1] = rows + r;
      }
      return upload(label, { kind: 'quant', m: permuteQuantizedRows(both, order) }, 2);
    }
    const gr = g as Extract<HostMatrix, { kind: 'raw' }>;
    const ur = u as Extract<HostMatrix, { kind: 'raw' }>;
    const rowBytes = gr.data.byteLength / rows;
    const data = new Uint8Array(2 * gr.data.byteLength);
    for (let r = 0; r < rows; r++) {
      data.set(gr.data.subarray(r * rowBytes, (r + 1) * rowBytes), 2 * r * rowBytes);
      data.set(ur.data.subarray(r * rowBytes, (r + 1) * rowBytes), (2 * r + 1) * rowBytes);
    }
    return upload(label, { ...gr, data, rows: 2 * rows }, 2);
  };
  const rawVector = (name: string): Float32Array => {
    const raw = ckpt.readF32(name);
    // Gemma's RMSNorms scale by (1 + w): the plain RMSNorm kernels take 1 + w
    if (c.normUnitOffset && name.endsWith('norm.weight')) for (let i = 0; i < raw.length; i++) raw[i] += 1;
    return perm
      ? new Float32Array(
          permuteTensor(name, new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength), 1, perm).buffer,
        )
      : raw;
  };
  const vector = (name: string): GPUBuffer => {
    const data = rawVector(name);
    const b = gpu.upload(name, data);
    tick(data.byteLength);
    return b;
  };
  const stackedVector = (label: string, names: string[]): GPUBuffer => {
    const vs = names.map(rawVector);
    const data = new Float32Array(vs.reduce((n, v) => n + v.length, 0));
    let o = 0;
    for (const v of vs) {
      data.set(v, o);
      o += v.length;
      tick(v.byteLength);
    }
    return gpu.upload(label, data);
  };
  const embed = matrix(ckpt.embeddingName);
  const layers: LayerWeights[] = [];
  for (let i = 0; i < L; i++) {
    const p = `model.layers.${i}.`;
    const qkv = ['q_proj', 'k_proj', 'v_proj'].map((n) => `${p}self_attn.${n}`);
    layers.push({
      attnNorm: vector(`${p}input_layernorm.weight`),
      qkv: stacked(
        `${p}self_attn.qkv_proj.weight`,
        qkv.map((n) => `${n}.weight`),
      ),
      qkvBias: c.attentionBias
        ? stackedVector(
            `${p}self_attn.qkv_proj.bias`,
            qkv.map((n) => `${n}.bias`),
          )
        : null,
      qNorm: c.qkNorm ? vector(`${p}self_attn.q_norm.weight`) : null,
      kNorm: c.qkNorm ? vector(`${p}self_attn.k_norm.weight`) : null,
      o: matrix(`${p}self_attn.o_proj.weight`),
      mlpNorm: vector(`${p}${c.sandwichNorms ? 'pre_feedforward' : 'post_attention'}_layernorm.weight`),
      attnOutNorm: c.sandwichNorms ? vector(`${p}post_attention_layernorm.weight`) : null,
      mlpOutNorm: c.sandwichNorms ? vector(`${p}post_feedforward_layernorm.weight`) : null,
      gateUp: interleaved(`${p}mlp.gate_up_proj.weight`, `${p}mlp.gate_proj.weight`, `${p}mlp.up_proj.weight`),
      down: matrix(`${p}mlp.down_proj.weight`),
    });
  }
  const finalNorm = vector('model.norm.weight');
  const lmHead = ckpt.lmHeadName === ckpt.embeddingName ? embed : matrix(ckpt.lmHeadName);
  return {
    config: c,
    embed,
    layers,
    finalNorm,
    lmHead,
    embedScale: c.scaleEmbeddings ? embeddingScale(c.hiddenSize, ckpt.info(ckpt.embeddingName).dtype) : 1,
    bytes,
    headPlan: opts.headPlan ?? null,
  };
}

export function destroyModel(w: ModelWeights): void {
  destroyWeight(w.embed);
  if (w.lmHead !== w.embed) destroyWeight(w.lmHead);
  w.finalNorm.destroy();
  for (const l of w.layers) {
    for (const m of [...l.qkv, l.o, l.gateUp, l.down]) destroyWeight(m);
    for (const b of [l.attnNorm, l.mlpNorm, l.attnOutNorm, l.mlpOutNorm, l.qkvBias, l.qNorm, l.kNorm]) b?.destroy();
  }
}

/**
 * Weight bytes one decode step reads from GPU memory: every layer's matrices, norms and biases, the final norm and
 * lm_head in full, and one row of the embedding table.
 */
export function decodeStepWeightBytes(w: ModelWeights): number {
  let n = 0;
  for (const l of w.layers) {
    for (const m of [...l.qkv, l.o, l.gateUp, l.down]) n += weightBytes(m);
    for (const b of [l.attnNorm, l.mlpNorm, l.attnOutNorm, l.mlpOutNorm, l.qkvBias, l.qNorm, l.kNorm]) {
      n += b?.size ?? 0;
    }
  }
  n += w.finalNorm.size + weightBytes(w.lmHead);
  return n + Math.ceil(weightBytes(w.embed) / w.embed.rows);
}
