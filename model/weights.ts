/**
 * Uploads a checkpoint's tensors to the GPU in the layout of shaders/tensor.ts: 2-D weights in their file dtype
 * (16-bit as packed pairs) or quantized (a GGUF's q8/q4 blocks as they are, or an F32/F16/BF16 matrix quantized
 * now by `quantize`, round to nearest), split under the binding limit; norm weights and biases as f32.
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
      /**
       * Matrices kept at int8 (llama.cpp's _M mixes keep such tensors wider): `embedding` = the token embedding and
       * lm_head, `attn-v` = every layer's v_proj, `ffn-down` = every layer's down_proj.
       */
      int8?: readonly Int8Role[];
    };

/** Roles of the matrices a q4 upload may keep at int8 (QuantizeOption.int8). */
export const INT8_ROLES = ['embedding', 'attn-v', 'ffn-down'] as const;
export type Int8Role = (typeof INT8_ROLES)[number];

import type { HeadPlan } from './head-plan.js';

export interface LayerWeights {
  attnNorm: GPUBuffer; // (hidden) f32
  q: GpuWeight; // (heads*headDim, hidden)
  k: GpuWeight; // (kvHeads*headDim, hidden)
  v: GpuWeight; // (kvHeads*headDim, hidden)
  qBias: GPUBuffer | null; // (heads*headDim) f32
  kBias: GPUBuffer | null; // (kvHeads*headDim) f32
  vBias: GPUBuffer | null; // (kvHeads*headDim) f32
  qNorm: GPUBuffer | null; // (headDim) f32, Qwen3's per-head q RMSNorm weight
  kNorm: GPUBuffer | null; // (headDim) f32, Qwen3's per-head k RMSNorm weight
  o: GpuWeight; // (hidden, heads*headDim)
  mlpNorm: GPUBuffer; // (hidden) f32
  gate: GpuWeight; // (intermediate, hidden)
  up: GpuWeight; // (intermediate, hidden)
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
    /** Quantize every F32/F16/BF16 matrix at load (already quantized GGUF tensors stay as they are). */
    quantize?: QuantizeOption;
  } = {},
): ModelWeights {
  const c = ckpt.config;
  let perm: LayerHeadPermutation[] | null = opts.headPlan ? headPermutation(opts.headPlan, c) : null;
  if (perm && isIdentityPermutation(perm)) perm = null;
  const L = c.numLayers;
  const total =
    3 + L * (9 + (c.attentionBias ? 3 : 0) + (c.qkNorm ? 2 : 0)) + (ckpt.lmHeadName === ckpt.embeddingName ? 0 : 1);
  let done = 0;
  let bytes = 0;
  const tick = (n: number) => {
    done++;
    bytes += n;
    opts.onProgress?.({ tensorsDone: done, tensorsTotal: total, bytesDone: bytes });
  };
  const matrix = (name: string): GpuWeight => {
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
          : quantizeQ4(f, rows, cols, o.group);
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
    const w = uploadWeight(gpu, name, dtype, info.shape[0], info.shape[1], data, opts.maxChunkBytes);
    tick(data.byteLength);
    return w;
  };
  const vector = (name: string): GPUBuffer => {
    const raw = ckpt.readF32(name);
    const data = perm
      ? new Float32Array(
          permuteTensor(name, new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength), 1, perm).buffer,
        )
      : raw;
    const b = gpu.upload(name, data);
    tick(data.byteLength);
    return b;
  };
  const embed = matrix(ckpt.embeddingName);
  const layers: LayerWeights[] = [];
  for (let i = 0; i < L; i++) {
    const p = `model.layers.${i}.`;
    layers.push({
      attnNorm: vector(`${p}input_layernorm.weight`),
      q: matrix(`${p}self_attn.q_proj.weight`),
      k: matrix(`${p}self_attn.k_proj.weight`),
      v: matrix(`${p}self_attn.v_proj.weight`),
      qBias: c.attentionBias ? vector(`${p}self_attn.q_proj.bias`) : null,
      kBias: c.attentionBias ? vector(`${p}self_attn.k_proj.bias`) : null,
      vBias: c.attentionBias ? vector(`${p}self_attn.v_proj.bias`) : null,
      qNorm: c.qkNorm ? vector(`${p}self_attn.q_norm.weight`) : null,
      kNorm: c.qkNorm ? vector(`${p}self_attn.k_norm.weight`) : null,
      o: matrix(`${p}self_attn.o_proj.weight`),
      mlpNorm: vector(`${p}post_attention_layernorm.weight`),
      gate: matrix(`${p}mlp.gate_proj.weight`),
      up: matrix(`${p}mlp.up_proj.weight`),
      down: matrix(`${p}mlp.down_proj.weight`),
    });
  }
  const finalNorm = vector('model.norm.weight');
  const lmHead = ckpt.lmHeadName === ckpt.embeddingName ? embed : matrix(ckpt.lmHeadName);
  return { config: c, embed, layers, finalNorm, lmHead, bytes, headPlan: opts.headPlan ?? null };
}

export function destroyModel(w: ModelWeights): void {
  destroyWeight(w.embed);
  if (w.lmHead !== w.embed) destroyWeight(w.lmHead);
  w.finalNorm.destroy();
  for (const l of w.layers) {
    for (const m of [l.q, l.k, l.v, l.o, l.gate, l.up, l.down]) destroyWeight(m);
    for (const b of [l.attnNorm, l.mlpNorm, l.qBias, l.kBias, l.vBias, l.qNorm, l.kNorm]) b?.destroy();
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
    for (const b of [l.attnNorm, l.mlpNorm, l.qBias, l.kBias, l.vBias, l.qNorm, l.kNorm]) n += b?.size ?? 0;
  }
  n += w.finalNorm.size + weightBytes(w.lmHead);
  return n + Math.ceil(weightBytes(w.embed) / w.embed.rows);
}
