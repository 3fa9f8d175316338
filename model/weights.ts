/**
 * Uploads a checkpoint's tensors to the GPU in the layout of shaders/tensor.ts: 2-D weights in their file dtype
 * (16-bit as packed pairs), split under the binding limit; norm weights and biases as f32.
 *
 * Fused for the forward pass's fewer, fatter kernels: q_proj, k_proj and v_proj are one matrix (their rows
 * stacked: q, then k, then v; the biases likewise), gate_proj and up_proj one matrix with their rows interleaved
 * (row 2i = gate_i, 2i + 1 = up_i, so the SwiGLU matmul reads a pair of adjacent rows per output; chunks never split
 * a pair).
 */

import type { Checkpoint } from '../checkpoint/checkpoint.js';
import type { ModelConfig } from '../checkpoint/config.js';
import { SiftError } from '../config/errors.js';
import type { Gpu } from '../shaders/runtime.js';
import { destroyWeight, type GpuWeight, uploadQuantized, uploadWeight, weightBytes } from '../shaders/tensor.js';
import { firstNonFinite, type QuantizedMatrix, quantizedBytes, quantizeInt8, quantizeQ4 } from '../util/quant.js';
import {
  headPermutation,
  isIdentityPermutation,
  type LayerHeadPermutation,
  permuteQuantizedTensor,
  permuteTensor,
} from './head-permutation.js';

/** `--quantize`: int8 per output channel, or 4-bit with a scale and min per group of `group` columns. */
export type QuantizeOption =
  | { format: 'int8' }
  | {
      format: 'q4';
      group: number;
      /** Keep the token embedding and lm_head at int8 (llama.cpp's _M mixes keep the output layer wider). */
      embeddingInt8?: boolean;
    };

import type { HeadPlan } from './head-plan.js';

export interface LayerWeights {
  attnNorm: GPUBuffer; // (hidden) f32
  qkv: GpuWeight; // ((heads + 2 kvHeads) * headDim, hidden): q_proj, k_proj, v_proj rows stacked
  qkvBias: GPUBuffer | null; // ((heads + 2 kvHeads) * headDim) f32
  o: GpuWeight; // (hidden, heads*headDim)
  mlpNorm: GPUBuffer; // (hidden) f32
  gateUp: GpuWeight; // (2 * intermediate, hidden): gate_proj / up_proj rows interleaved
  down: GpuWeight; // (hidden, intermediate)
}

export interface ModelWeights {
  config: ModelConfig;
  embed: GpuWeight; // (vocab, hidden)
  layers: LayerWeights[];
  finalNorm: GPUBuffer; // (hidden) f32
  lmHead: GpuWeight; // (vocab, hidden); the same object as embed when tied
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

export function uploadModel(
  gpu: Gpu,
  ckpt: Checkpoint,
  opts: {
    onProgress?: (p: UploadProgress) => void;
    maxChunkBytes?: number;
    /** Reorder each layer's heads: retrieval heads first, then streaming heads (see head-permutation.ts). */
    headPlan?: HeadPlan;
  } = {},
): ModelWeights {
  const c = ckpt.config;
  let perm: LayerHeadPermutation[] | null = opts.headPlan ? headPermutation(opts.headPlan, c) : null;
  if (perm && isIdentityPermutation(perm)) perm = null;
  const L = c.numLayers;
  const perLayer = c.attentionBias ? 12 : 9;
  const total = 3 + L * perLayer + (ckpt.lmHeadName === ckpt.embeddingName ? 0 : 1);
  let done = 0;
  let bytes = 0;
  const tick = (n: number) => {
    done++;
    bytes += n;
    opts.onProgress?.({ tensorsDone: done, tensorsTotal: total, bytesDone: bytes });
  };
  /** A 2-D tensor's bytes in its file dtype, heads permuted; its shape and dtype. */
  const rawMatrix = (name: string) => {
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
      q =
        opts.quantize.format === 'int8' ? quantizeInt8(f, rows, cols) : quantizeQ4(f, rows, cols, opts.quantize.group);
    }
    if (q) {
      const m = perm ? permuteQuantizedTensor(name, q, perm) : q;
      const w = uploadQuantized(gpu, name, m, opts.maxChunkBytes);
      tick(quantizedBytes(m));
      return w;
    }
    if (dtype === 'q8' || dtype === 'q4') throw new SiftError('INTERNAL', `tensor ${name}: ${dtype} not read`);
    const raw = ckpt.read(name);
    const data = perm ? permuteTensor(name, raw, info.shape[0], perm) : raw;
    return { data, rows: info.shape[0], cols: info.shape[1], dtype: info.dtype };
  };
  const matrix = (name: string): GpuWeight => {
    const m = rawMatrix(name);
    const w = uploadWeight(gpu, name, m.dtype, m.rows, m.cols, m.data, opts.maxChunkBytes);
    tick(m.data.byteLength);
    return w;
  };
  /** Row-stacked matrices (q, k, v) as one weight. */
  const stacked = (label: string, names: string[]): GpuWeight => {
    const ms = names.map(rawMatrix);
    const { cols, dtype } = ms[0];
    if (ms.some((m) => m.cols !== cols || m.dtype !== dtype)) {
      throw new SiftError('CHECKPOINT_INVALID', `${ckpt.dir}: ${names.join(', ')} differ in columns or dtype`);
    }
    const data = new Uint8Array(ms.reduce((n, m) => n + m.data.byteLength, 0));
    let o = 0;
    for (const m of ms) {
      data.set(m.data, o);
      o += m.data.byteLength;
      tick(m.data.byteLength);
    }
    const rows = ms.reduce((n, m) => n + m.rows, 0);
    return uploadWeight(gpu, label, dtype, rows, cols, data, opts.maxChunkBytes);
  };
  /** gate_proj and up_proj interleaved by rows (2i = gate_i, 2i + 1 = up_i), chunks holding whole pairs. */
  const interleaved = (label: string, gateName: string, upName: string): GpuWeight => {
    const g = rawMatrix(gateName);
    const u = rawMatrix(upName);
    if (g.rows !== u.rows || g.cols !== u.cols || g.dtype !== u.dtype) {
      throw new SiftError('CHECKPOINT_INVALID', `${ckpt.dir}: ${gateName} and ${upName} differ in shape or dtype`);
    }
    const rowBytes = g.data.byteLength / g.rows;
    const data = new Uint8Array(2 * g.data.byteLength);
    for (let r = 0; r < g.rows; r++) {
      data.set(g.data.subarray(r * rowBytes, (r + 1) * rowBytes), 2 * r * rowBytes);
      data.set(u.data.subarray(r * rowBytes, (r + 1) * rowBytes), (2 * r + 1) * rowBytes);
    }
    tick(g.data.byteLength);
    tick(u.data.byteLength);
    return uploadWeight(gpu, label, g.dtype, 2 * g.rows, g.cols, data, opts.maxChunkBytes, 2);
  };
  const rawVector = (name: string): Float32Array => {
    const raw = ckpt.readF32(name);
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
      o: matrix(`${p}self_attn.o_proj.weight`),
      mlpNorm: vector(`${p}post_attention_layernorm.weight`),
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
    bytes,
    headPlan: opts.headPlan ?? null,
  };
}

export function destroyModel(w: ModelWeights): void {
  destroyWeight(w.embed);
  if (w.lmHead !== w.embed) destroyWeight(w.lmHead);
  w.finalNorm.destroy();
  for (const l of w.layers) {
    for (const m of [l.qkv, l.o, l.gateUp, l.down]) destroyWeight(m);
    for (const b of [l.attnNorm, l.mlpNorm, l.qkvBias]) b?.destroy();
  }
}

/**
 * Weight bytes one decode step reads from GPU memory: every layer's matrices, norms and biases, the final norm and
 * lm_head in full, and one row of the embedding table.
 */
export function decodeStepWeightBytes(w: ModelWeights): number {
  let n = 0;
  for (const l of w.layers) {
    for (const m of [l.q, l.k, l.v, l.o, l.gate, l.up, l.down]) n += weightBytes(m);
    for (const b of [l.attnNorm, l.mlpNorm, l.qBias, l.kBias, l.vBias]) n += b?.size ?? 0;
  }
  n += w.finalNorm.size + weightBytes(w.lmHead);
  return n + Math.ceil(weightBytes(w.embed) / w.embed.rows);
}
