/**
 * Small random-init HF checkpoints written from a seed, for tests and benchmarks (`sift bench --synthetic`) that need a whole model (loader, forward pass,
 * kernels end to end) without a download. Every tensor is drawn from its own stream keyed by (seed, role), so the
 * same seed gives the same weights whatever the dtype, sharding or the name a tied matrix is stored under;
 * q/k/v biases come from streams of their own, so a Qwen2 model with biasStd 0 equals the Llama model of its seed.
 *
 * Scales keep activations O(1) through a few layers and logits far from flat: projections ~ N(0, 1/fan_in),
 * residual-out projections (o, down) a little smaller, norm weights 1 ± 0.1, embeddings / lm_head ~ N(0, 4/hidden).
 */
import fs from 'node:fs';
import path from 'node:path';
import { encodeFromF32, type WeightDType } from '../util/dtype.js';
import { Rng } from '../util/rng.js';
import { checkpointLayout, EMBED_NAME, LM_HEAD_NAME } from './checkpoint.js';
import {
  type Architecture,
  isGemma,
  MODEL_TYPE,
  type ModelConfig,
  parseModelConfig,
  type RopeScaling,
} from './config.js';
import { fusedSlices } from './fused.js';
import { GEMMA3_MULTIMODAL } from './gemma.js';
import { INDEX_FILE, SINGLE_FILE, type TensorToWrite, writeSafetensors } from './safetensors.js';

export interface SyntheticOptions {
  architecture: Architecture;
  dtype: WeightDType;
  /** Two or three shards plus model.safetensors.index.json. */
  sharded: boolean;
  /** untied: embed_tokens and lm_head; tied-embed: only embed_tokens; tied-lmhead: only lm_head. */
  tie: 'untied' | 'tied-embed' | 'tied-lmhead';
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  /** Written to config.json as head_dim when given (else hidden / heads). */
  headDim?: number;
  intermediate: number;
  vocab: number;
  ropeTheta?: number;
  ropeScaling?: RopeScaling;
  maxPositions?: number;
  /** Std of q/k/v biases when the architecture has them (default 0.2; 0 writes zero biases). */
  biasStd?: number;
  /**
   * sliding_window written to config.json (Mistral, Phi-3; Qwen2/3 with use_sliding_window true and
   * max_window_layers = `windowFromLayer`, default 0: every layer slides).
   */
  slidingWindow?: number;
  windowFromLayer?: number;
  /** Gemma 2/3: query_pre_attn_scalar (default head_dim) and the soft-caps (default none: null in config.json). */
  queryPreAttnScalar?: number;
  attnLogitSoftcap?: number;
  finalLogitSoftcap?: number;
  /** Gemma 3: rope_local_base_freq (default 10000) and sliding_window_pattern (default 6). */
  ropeLocalTheta?: number;
  slidingWindowPattern?: number;
  /**
   * Gemma 3: written as a multimodal checkpoint (Gemma3ForConditionalGeneration: the text config under
   * text_config, its tensors under language_model.model., plus a stand-in vision tensor sift must ignore).
   */
  multimodal?: boolean;
  seed: number;
}

export interface SyntheticVariant extends SyntheticOptions {
  /** Short label for test names. */
  name: string;
}

const BOS = 1;
const EOS = 2;

/** FNV-1a of `s` mixed with `seed`: a stream id per (seed, role). */
function streamSeed(seed: number, role: string): number {
  let h = 0x811c9dc5 ^ seed;
  for (let i = 0; i < role.length; i++) h = Math.imul(h ^ role.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** The config.json a checkpoint of `o` carries. */
export function syntheticConfigJson(o: SyntheticOptions): Record<string, unknown> {
  const cfg: Record<string, unknown> = {
    architectures: [o.architecture],
    model_type: MODEL_TYPE[o.architecture],
    hidden_size: o.hidden,
    intermediate_size: o.intermediate,
    num_hidden_layers: o.layers,
    num_attention_heads: o.heads,
    num_key_value_heads: o.kvHeads,
    vocab_size: o.vocab,
    rms_norm_eps: 1e-5,
    rope_theta: o.ropeTheta ?? 10000,
    max_position_embeddings: o.maxPositions ?? 2048,
    tie_word_embeddings: o.tie !== 'untied',
    bos_token_id: BOS,
    eos_token_id: EOS,
    hidden_act: 'silu',
    torch_dtype: { f32: 'float32', f16: 'float16', bf16: 'bfloat16' }[o.dtype],
  };
  if (o.headDim !== undefined) cfg.head_dim = o.headDim;
  if (o.architecture === 'LlamaForCausalLM' || o.architecture === 'Qwen3ForCausalLM') cfg.attention_bias = false;
  if (o.architecture === 'MistralForCausalLM' || o.architecture === 'Phi3ForCausalLM') {
    cfg.sliding_window = o.slidingWindow ?? null;
  }
  if (o.architecture === 'Qwen2ForCausalLM' || o.architecture === 'Qwen3ForCausalLM') {
    cfg.use_sliding_window = o.slidingWindow !== undefined;
    cfg.sliding_window = o.slidingWindow ?? null;
    cfg.max_window_layers = o.windowFromLayer ?? 0;
  }
  if (isGemma(o.architecture)) {
    // every key the family reads, none left to HF's defaults (tests/checkpoint cover the defaults)
    cfg.head_dim = o.headDim ?? o.hidden / o.heads;
    cfg.hidden_act = 'gelu_pytorch_tanh';
    cfg.hidden_activation = 'gelu_pytorch_tanh';
    cfg.rms_norm_eps = 1e-6;
    cfg.attention_bias = false;
    cfg.query_pre_attn_scalar = o.queryPreAttnScalar ?? cfg.head_dim;
    cfg.sliding_window = o.slidingWindow ?? 4096;
    cfg.attn_logit_softcapping = o.attnLogitSoftcap ?? null;
    cfg.final_logit_softcapping = o.finalLogitSoftcap ?? null;
    if (o.architecture === 'Gemma3ForCausalLM') {
      cfg.rope_local_base_freq = o.ropeLocalTheta ?? 10000;
      cfg.sliding_window_pattern = o.slidingWindowPattern ?? 6;
    }
  }
  const rs = o.ropeScaling ?? { type: 'none' };
  // Both spellings of the kind occur in the wild: older configs say `type`, newer `rope_type`.
  if (rs.type === 'linear') {
    // Gemma 3's own configs say rope_type (transformers 5 reads `type` there as the default rope, factor ignored)
    cfg.rope_scaling = isGemma(o.architecture)
      ? { rope_type: 'linear', factor: rs.factor }
      : { type: 'linear', factor: rs.factor };
  } else if (rs.type === 'llama3') {
    cfg.rope_scaling = {
      rope_type: 'llama3',
      factor: rs.factor,
      low_freq_factor: rs.lowFreqFactor,
      high_freq_factor: rs.highFreqFactor,
      original_max_position_embeddings: rs.originalMaxPositionEmbeddings,
    };
  } else if (rs.type === 'yarn') {
    cfg.rope_scaling = {
      rope_type: 'yarn',
      factor: rs.factor,
      original_max_position_embeddings: rs.originalMaxPositionEmbeddings,
      beta_fast: rs.betaFast,
      beta_slow: rs.betaSlow,
      attention_factor: rs.attentionFactor,
      truncate: rs.truncate,
    };
  } else if (rs.type === 'dynamic') cfg.rope_scaling = { type: 'dynamic', factor: rs.factor };
  else if (rs.type === 'longrope') {
    cfg.rope_scaling = {
      type: 'longrope',
      short_factor: [...rs.shortFactor],
      long_factor: [...rs.longFactor],
      attention_factor: rs.attentionFactor,
    };
    cfg.original_max_position_embeddings = rs.originalMaxPositionEmbeddings;
  } else cfg.rope_scaling = null;
  return cfg;
}

/**
 * config.json as written: a multimodal Gemma 3 nests the text config under text_config (HF's Gemma3Config), with
 * a stand-in vision config.
 */
function writtenConfigJson(o: SyntheticOptions): Record<string, unknown> {
  const cfg = syntheticConfigJson(o);
  if (!o.multimodal) return cfg;
  const { architectures: _a, torch_dtype, bos_token_id, eos_token_id, tie_word_embeddings, ...text } = cfg;
  return {
    architectures: [GEMMA3_MULTIMODAL],
    model_type: 'gemma3',
    text_config: text,
    vision_config: { model_type: 'siglip_vision_model', hidden_size: 8 },
    bos_token_id,
    eos_token_id,
    tie_word_embeddings,
    torch_dtype,
  };
}

/** The stored name of tensor `name`: a multimodal Gemma 3 keeps its text model under language_model. */
function storedName(o: SyntheticOptions, name: string): string {
  const text = name.startsWith('model.') || name === LM_HEAD_NAME;
  return o.multimodal && text ? `language_model.${name}` : name;
}

/** f32 values of one tensor, drawn from the stream of its role. */
function tensorValues(o: SyntheticOptions, name: string, shape: readonly number[]): Float32Array {
  const n = shape.reduce((a, d) => a * d, 1);
  const headDim = o.headDim ?? o.hidden / o.heads;
  // The tied matrix is the same values under either name.
  const role = name === LM_HEAD_NAME && o.tie !== 'untied' ? EMBED_NAME : name;
  const rng = new Rng(streamSeed(o.seed, role));
  if (name.endsWith('norm.weight')) {
    const w = rng.uniformArray(n, 0.1);
    // Gemma's norms scale by (1 + w): w near 0
    if (!isGemma(o.architecture)) for (let i = 0; i < n; i++) w[i] += 1;
    return w;
  }
  if (name.endsWith('.bias')) return rng.normalArray(n, o.biasStd ?? 0.2);
  if (role === EMBED_NAME || role === LM_HEAD_NAME) return rng.normalArray(n, 2 / Math.sqrt(o.hidden));
  if (name.endsWith('o_proj.weight')) return rng.normalArray(n, 0.7 / Math.sqrt(o.heads * headDim));
  if (name.endsWith('down_proj.weight')) return rng.normalArray(n, 0.7 / Math.sqrt(o.intermediate));
  return rng.normalArray(n, 1 / Math.sqrt(shape[shape.length - 1]));
}

interface StoredTensor {
  name: string;
  shape: readonly number[];
  /** A fused tensor (Phi-3's qkv_proj, gate_up_proj): the split tensors whose rows it stacks, in order. */
  parts?: { name: string; shape: readonly number[] }[];
}

/**
 * The tensors a checkpoint of `o` stores, in file order (HF order: embeddings, layers, norm, lm_head). Phi-3 stores
 * q/k/v as one qkv_proj and gate/up as one gate_up_proj (each part keeps its own random stream).
 */
function storedLayout(o: SyntheticOptions): StoredTensor[] {
  const config = configForLayout(o);
  const slices = fusedSlices(config);
  const layout: StoredTensor[] = [];
  for (const t of checkpointLayout(config)) {
    const s = slices.get(t.name);
    if (!s) layout.push(t);
    else if (s.row0 === 0) {
      const parts = [...slices]
        .filter(([, x]) => x.stored === s.stored)
        .map(([name, x]) => ({ name, shape: [x.rows, t.shape[1]] }));
      layout.push({ name: s.stored, shape: [s.storedRows, t.shape[1]], parts });
    }
  }
  if (o.tie !== 'tied-lmhead') return layout;
  // tied-lmhead: the shared matrix is stored as lm_head only, after the final norm.
  const embed = layout.find((t) => t.name === EMBED_NAME)!;
  return [...layout.filter((t) => t.name !== EMBED_NAME), { name: LM_HEAD_NAME, shape: embed.shape }];
}

/** The ModelConfig the written config.json parses to. */
function configForLayout(o: SyntheticOptions): ModelConfig {
  return parseModelConfig(syntheticConfigJson(o));
}

/**
 * Writes config.json, generation_config.json and the weights of a random-init model into `dir` (created if
 * needed). Tensors are generated shard by shard, so a large shape never sits in memory all at once when sharded.
 */
export function writeSyntheticCheckpoint(dir: string, o: SyntheticOptions): void {
  if (o.vocab <= EOS) throw new Error(`synthetic checkpoint: vocab ${o.vocab} must exceed the eos id ${EOS}`);
  fs.mkdirSync(dir, { recursive: true });
  if (o.multimodal && o.architecture !== 'Gemma3ForCausalLM') {
    throw new Error('synthetic checkpoint: multimodal is a Gemma 3 layout');
  }
  fs.writeFileSync(path.join(dir, 'config.json'), `${JSON.stringify(writtenConfigJson(o), null, 2)}\n`);
  fs.writeFileSync(
    path.join(dir, 'generation_config.json'),
    `${JSON.stringify({ bos_token_id: BOS, eos_token_id: EOS }, null, 2)}\n`,
  );
  const layout = storedLayout(o);
  const values = (t: StoredTensor): Float32Array => {
    if (!t.parts) return tensorValues(o, t.name, t.shape);
    const out = new Float32Array(t.shape[0] * t.shape[1]);
    let at = 0;
    for (const p of t.parts) {
      const v = tensorValues(o, p.name, p.shape);
      out.set(v, at);
      at += v.length;
    }
    return out;
  };
  const make = (t: StoredTensor): TensorToWrite => ({
    name: storedName(o, t.name),
    dtype: o.dtype,
    shape: t.shape,
    data: encodeFromF32(values(t), o.dtype),
  });
  if (o.multimodal) layout.push({ name: 'vision_tower.vision_model.stand_in.weight', shape: [2, 8] });
  const metadata = { format: 'pt' };
  if (!o.sharded) {
    writeSafetensors(path.join(dir, SINGLE_FILE), layout.map(make), metadata);
    return;
  }
  // Contiguous runs of roughly equal byte size.
  const nShards = o.layers >= 3 ? 3 : 2;
  const bytes = layout.map((t) => t.shape.reduce((a, d) => a * d, 1) * (o.dtype === 'f32' ? 4 : 2));
  const total = bytes.reduce((a, b) => a + b, 0);
  const groups: (typeof layout)[] = [[]];
  let acc = 0;
  layout.forEach((t, i) => {
    const left = layout.length - i; // tensors not yet placed, this one included
    const shardsAfter = nShards - groups.length;
    const cur = groups[groups.length - 1];
    // Start the next shard when this one has its share of the bytes, or when every later shard needs a tensor.
    if (cur.length > 0 && shardsAfter > 0 && (acc >= (total * groups.length) / nShards || left === shardsAfter)) {
      groups.push([]);
    }
    groups[groups.length - 1].push(t);
    acc += bytes[i];
  });
  const weightMap: Record<string, string> = {};
  groups.forEach((g, s) => {
    const file = `model-${String(s + 1).padStart(5, '0')}-of-${String(nShards).padStart(5, '0')}.safetensors`;
    writeSafetensors(path.join(dir, file), g.map(make), metadata);
    for (const t of g) weightMap[storedName(o, t.name)] = file;
  });
  fs.writeFileSync(
    path.join(dir, INDEX_FILE),
    `${JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2)}\n`,
  );
}

// ---- presets ------------------------------------------------------------------------------------------------------

/**
 * Tiny variants (hidden <= 96, 2-3 layers, vocab <= 300) covering each architecture x dtype, sharded and not,
 * tied both ways, GQA 1:1 and 4:1, a head_dim override, odd sizes, every RoPE scaling kind, sliding windows and
 * Gemma 2/3 (soft-caps, query_pre_attn_scalar, local RoPE, a multimodal Gemma 3 layout).
 */
export const SYNTHETIC_VARIANTS: readonly SyntheticVariant[] = Object.freeze([
  {
    name: 'llama-f32-mha',
    architecture: 'LlamaForCausalLM',
    dtype: 'f32',
    sharded: false,
    tie: 'untied',
    hidden: 64,
    layers: 2,
    heads: 4,
    kvHeads: 4,
    intermediate: 128,
    vocab: 256,
    seed: 101,
  },
  {
    name: 'llama-f16-gqa4-sharded-llama3rope',
    architecture: 'LlamaForCausalLM',
    dtype: 'f16',
    sharded: true,
    tie: 'untied',
    hidden: 64,
    layers: 3,
    heads: 8,
    kvHeads: 2,
    intermediate: 160,
    vocab: 200,
    ropeTheta: 500000,
    ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 64 },
    maxPositions: 512,
    seed: 102,
  },
  {
    name: 'llama-bf16-tied-embed-linear',
    architecture: 'LlamaForCausalLM',
    dtype: 'bf16',
    sharded: false,
    tie: 'tied-embed',
    hidden: 48,
    layers: 2,
    heads: 4,
    kvHeads: 2,
    intermediate: 96,
    vocab: 160,
    ropeScaling: { type: 'linear', factor: 2 },
    seed: 103,
  },
  {
    name: 'llama-f32-odd-sizes',
    architecture: 'LlamaForCausalLM',
    dtype: 'f32',
    sharded: true,
    tie: 'untied',
    hidden: 40,
    layers: 3,
    heads: 4,
    kvHeads: 2,
    headDim: 10,
    intermediate: 97,
    vocab: 131,
    seed: 104,
  },
  {
    name: 'llama-f16-headdim-override-tied-lmhead',
    architecture: 'LlamaForCausalLM',
    dtype: 'f16',
    sharded: false,
    tie: 'tied-lmhead',
    hidden: 64,
    layers: 2,
    heads: 4,
    kvHeads: 2,
    headDim: 32,
    intermediate: 128,
    vocab: 256,
    seed: 105,
  },
  {
    name: 'mistral-f32-gqa4-sharded',
    architecture: 'MistralForCausalLM',
    dtype: 'f32',
    sharded: true,
    tie: 'untied',
    hidden: 64,
    layers: 2,
    heads: 8,
    kvHeads: 2,
    intermediate: 128,
    vocab: 300,
    ropeTheta: 1000000,
    seed: 201,
  },
  {
    name: 'mistral-f16-tied-embed',
    architecture: 'MistralForCausalLM',
    dtype: 'f16',
    sharded: false,
    tie: 'tied-embed',
    hidden: 32,
    layers: 2,
    heads: 4,
    kvHeads: 1,
    headDim: 8,
    intermediate: 80,
    vocab: 128,
    seed: 202,
  },
  {
    name: 'mistral-bf16-mha-linear-sharded',
    architecture: 'MistralForCausalLM',
    dtype: 'bf16',
    sharded: true,
    tie: 'untied',
    hidden: 96,
    layers: 3,
    heads: 6,
    kvHeads: 6,
    intermediate: 256,
    vocab: 128,
    ropeScaling: { type: 'linear', factor: 4 },
    seed: 203,
  },
  {
    name: 'qwen2-f32-mha-tied-embed',
    architecture: 'Qwen2ForCausalLM',
    dtype: 'f32',
    sharded: false,
    tie: 'tied-embed',
    hidden: 64,
    layers: 2,
    heads: 4,
    kvHeads: 4,
    intermediate: 128,
    vocab: 256,
    ropeTheta: 1000000,
    seed: 301,
  },
  {
    name: 'qwen2-f16-gqa4-sharded-llama3rope',
    architecture: 'Qwen2ForCausalLM',
    dtype: 'f16',
    sharded: true,
    tie: 'untied',
    hidden: 64,
    layers: 3,
    heads: 8,
    kvHeads: 2,
    intermediate: 128,
    vocab: 200,
    ropeScaling: { type: 'llama3', factor: 4, lowFreqFactor: 1, highFreqFactor: 2, originalMaxPositionEmbeddings: 32 },
    seed: 302,
  },
  {
    name: 'qwen2-bf16-odd-tied-lmhead',
    architecture: 'Qwen2ForCausalLM',
    dtype: 'bf16',
    sharded: false,
    tie: 'tied-lmhead',
    hidden: 40,
    layers: 2,
    heads: 4,
    kvHeads: 1,
    headDim: 10,
    intermediate: 97,
    vocab: 131,
    seed: 303,
  },
  {
    name: 'qwen2-f16-headdim-override',
    architecture: 'Qwen2ForCausalLM',
    dtype: 'f16',
    sharded: false,
    tie: 'untied',
    hidden: 48,
    layers: 2,
    heads: 3,
    kvHeads: 1,
    headDim: 24,
    intermediate: 112,
    vocab: 160,
    seed: 304,
  },
  {
    name: 'qwen2-f32-gqa-yarn',
    architecture: 'Qwen2ForCausalLM',
    dtype: 'f32',
    sharded: false,
    tie: 'untied',
    hidden: 64,
    layers: 2,
    heads: 4,
    kvHeads: 2,
    intermediate: 96,
    vocab: 128,
    ropeTheta: 1000000,
    ropeScaling: {
      type: 'yarn',
      factor: 4,
      originalMaxPositionEmbeddings: 32,
      betaFast: 32,
      betaSlow: 1,
      attentionFactor: 1.3,
      truncate: true,
    },
    seed: 305,
  },
  {
    name: 'llama-f16-longrope',
    architecture: 'LlamaForCausalLM',
    dtype: 'f16',
    sharded: false,
    tie: 'tied-embed',
    hidden: 64,
    layers: 2,
    heads: 4,
    kvHeads: 1,
    intermediate: 96,
    vocab: 128,
    maxPositions: 512,
    ropeScaling: {
      type: 'longrope',
      shortFactor: [1, 1, 1.1, 1.3, 1.6, 2, 2.5, 3],
      longFactor: [1, 1.5, 2, 3, 5, 8, 12, 16],
      originalMaxPositionEmbeddings: 64,
      attentionFactor: 1.15,
    },
    seed: 206,
  },
  {
    name: 'llama-bf16-dynamic-ntk',
    architecture: 'LlamaForCausalLM',
    dtype: 'bf16',
    sharded: false,
    tie: 'untied',
    hidden: 48,
    layers: 2,
    heads: 2,
    kvHeads: 2,
    intermediate: 80,
    vocab: 100,
    maxPositions: 128,
    ropeScaling: { type: 'dynamic', factor: 3 },
    seed: 207,
  },
  {
    name: 'mistral-f16-gqa-window',
    architecture: 'MistralForCausalLM',
    dtype: 'f16',
    sharded: false,
    tie: 'untied',
    hidden: 48,
    layers: 2,
    heads: 4,
    kvHeads: 2,
    intermediate: 96,
    vocab: 128,
    slidingWindow: 6,
    seed: 208,
  },
  {
    name: 'qwen3-f32-gqa-qknorm-tied',
    architecture: 'Qwen3ForCausalLM',
    dtype: 'f32',
    sharded: false,
    tie: 'tied-embed',
    hidden: 64,
    layers: 2,
    heads: 4,
    kvHeads: 2,
    headDim: 32,
    intermediate: 96,
    vocab: 128,
    ropeTheta: 1000000,
    seed: 401,
  },
  {
    name: 'qwen3-bf16-window-from-layer1-sharded',
    architecture: 'Qwen3ForCausalLM',
    dtype: 'bf16',
    sharded: true,
    tie: 'untied',
    hidden: 48,
    layers: 3,
    heads: 6,
    kvHeads: 2,
    headDim: 16,
    intermediate: 80,
    vocab: 150,
    slidingWindow: 5,
    windowFromLayer: 1,
    seed: 402,
  },
  {
    name: 'phi3-f16-fused-longrope',
    architecture: 'Phi3ForCausalLM',
    dtype: 'f16',
    sharded: false,
    tie: 'untied',
    hidden: 64,
    layers: 2,
    heads: 4,
    kvHeads: 4,
    intermediate: 112,
    vocab: 160,
    maxPositions: 512,
    ropeScaling: {
      type: 'longrope',
      shortFactor: [1, 1.05, 1.1, 1.2, 1.4, 1.7, 2, 2.4],
      longFactor: [1, 1.3, 2, 3, 4.5, 7, 10, 14],
      originalMaxPositionEmbeddings: 64,
      attentionFactor: 1.19,
    },
    seed: 501,
  },
  {
    name: 'phi3-f32-gqa-fused-sharded',
    architecture: 'Phi3ForCausalLM',
    dtype: 'f32',
    sharded: true,
    tie: 'untied',
    hidden: 48,
    layers: 3,
    heads: 8,
    kvHeads: 2,
    headDim: 8,
    intermediate: 72,
    vocab: 140,
    seed: 502,
  },
  {
    name: 'phi3-bf16-window',
    architecture: 'Phi3ForCausalLM',
    dtype: 'bf16',
    sharded: false,
    tie: 'untied',
    hidden: 32,
    layers: 2,
    heads: 4,
    kvHeads: 4,
    intermediate: 64,
    vocab: 100,
    slidingWindow: 4,
    seed: 503,
  },
  {
    name: 'gemma2-f32-gqa-softcap-window',
    architecture: 'Gemma2ForCausalLM',
    dtype: 'f32',
    sharded: false,
    tie: 'tied-embed',
    hidden: 64,
    layers: 3,
    heads: 4,
    kvHeads: 2,
    headDim: 16,
    intermediate: 96,
    vocab: 128,
    slidingWindow: 6,
    queryPreAttnScalar: 24,
    attnLogitSoftcap: 1.5,
    finalLogitSoftcap: 3,
    seed: 601,
  },
  {
    name: 'gemma2-bf16-mha-sharded-tied-lmhead',
    architecture: 'Gemma2ForCausalLM',
    dtype: 'bf16',
    sharded: true,
    tie: 'tied-lmhead',
    hidden: 48,
    layers: 2,
    heads: 4,
    kvHeads: 4,
    headDim: 12,
    intermediate: 80,
    vocab: 100,
    slidingWindow: 5,
    attnLogitSoftcap: 50,
    finalLogitSoftcap: 30,
    seed: 602,
  },
  {
    name: 'gemma3-f16-gqa-qknorm-local-rope',
    architecture: 'Gemma3ForCausalLM',
    dtype: 'f16',
    sharded: false,
    tie: 'tied-embed',
    hidden: 64,
    layers: 3,
    heads: 4,
    kvHeads: 1,
    headDim: 16,
    intermediate: 112,
    vocab: 128,
    slidingWindow: 7,
    slidingWindowPattern: 3,
    ropeTheta: 1000000,
    ropeLocalTheta: 10000,
    ropeScaling: { type: 'linear', factor: 2 },
    seed: 701,
  },
  {
    name: 'gemma3-bf16-multimodal',
    architecture: 'Gemma3ForCausalLM',
    dtype: 'bf16',
    sharded: true,
    tie: 'tied-embed',
    hidden: 48,
    layers: 2,
    heads: 2,
    kvHeads: 1,
    headDim: 24,
    intermediate: 64,
    vocab: 90,
    slidingWindow: 4,
    slidingWindowPattern: 2,
    queryPreAttnScalar: 20,
    multimodal: true,
    seed: 702,
  },
]);

/** A stories-sized shape (~270 MB at f16, 3 shards) for benchmarks; writing it takes ~25 s on one busy core. */
export const SMALL_REAL_SHAPE: SyntheticVariant = Object.freeze({
  name: 'small-real-f16',
  architecture: 'LlamaForCausalLM',
  dtype: 'f16',
  sharded: true,
  tie: 'untied',
  hidden: 768,
  layers: 12,
  heads: 12,
  kvHeads: 12,
  intermediate: 2048,
  vocab: 32000,
  maxPositions: 32768,
  seed: 7,
});

/**
 * Llama-3-8B's attention shape (32 q heads, 8 KV heads, head_dim 128, rope theta 500000, 128k positions) on a small
 * residual stream (hidden 512, 4 layers, intermediate 1024, vocab 1024) so attention dominates a decode step;
 * ~55 MB at f16, written in seconds. For `sift bench decode --synthetic llama3-attn`.
 */
export const LLAMA3_ATTN_SHAPE: SyntheticVariant = Object.freeze({
  name: 'llama3-attn',
  architecture: 'LlamaForCausalLM',
  dtype: 'f16',
  sharded: false,
  tie: 'untied',
  hidden: 512,
  layers: 4,
  heads: 32,
  kvHeads: 8,
  headDim: 128,
  intermediate: 1024,
  vocab: 1024,
  ropeTheta: 500000,
  maxPositions: 131072,
  seed: 8,
});

/**
 * Llama-3-8B's layout where the host cost of a decode step is decided: 32 layers, 32 q / 8 KV heads of 128, vocab
 * 128256, bf16, 128k positions; but a residual stream of 64 and an MLP of 128, so the kernels cost almost nothing
 * and a step measures dispatches, uploads, read-back and sampling (~76 MB). The default of `sift bench step`.
 */
export const LLAMA3_8B_NARROW_SHAPE: SyntheticVariant = Object.freeze({
  name: 'llama3-8b-narrow',
  architecture: 'LlamaForCausalLM',
  dtype: 'bf16',
  sharded: false,
  tie: 'untied',
  hidden: 64,
  layers: 32,
  heads: 32,
  kvHeads: 8,
  headDim: 128,
  intermediate: 128,
  vocab: 128256,
  ropeTheta: 500000,
  maxPositions: 131072,
  seed: 9,
});

/**
 * Llama-3-8B at its real widths (hidden 4096, MLP 14336, vocab 128256, bf16): ~16 GB at 32 layers, so for a GPU
 * machine; `sift bench step --layers 4` writes a 4-layer cut (~2.8 GB).
 */
export const LLAMA3_8B_SHAPE: SyntheticVariant = Object.freeze({
  ...LLAMA3_8B_NARROW_SHAPE,
  name: 'llama3-8b',
  sharded: true,
  hidden: 4096,
  intermediate: 14336,
});

/** Named shapes for `sift bench --synthetic NAME`. */
export const SYNTHETIC_PRESETS: Readonly<Record<string, SyntheticVariant>> = Object.freeze({
  'small-real': SMALL_REAL_SHAPE,
  'llama3-attn': LLAMA3_ATTN_SHAPE,
  'llama3-8b-narrow': LLAMA3_8B_NARROW_SHAPE,
  'llama3-8b': LLAMA3_8B_SHAPE,
});
