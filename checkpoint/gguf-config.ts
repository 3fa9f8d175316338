/**
 * A GGUF file's model description -> the HF config.json it stands for, and the map from HF tensor names to GGUF
 * tensor names. config.ts then normalizes that config.json like any other, so a GGUF model and its safetensors twin
 * get the same ModelConfig. Errors name the GGUF metadata key or tensor.
 *
 * Keys read (`A` = general.architecture): A.embedding_length, A.block_count, A.feed_forward_length,
 * A.attention.head_count(_kv), A.attention.key_length / value_length (head_dim), A.rope.dimension_count (must be the
 * whole head: partial rotary is not supported), A.attention.layer_norm_rms_epsilon, A.rope.freq_base, A.context_length,
 * A.rope.scaling.* (linear, yarn) or A.rope.scale_linear, A.attention.sliding_window, A.vocab_size (else the token
 * list or token_embd's rows); token ids from tokenizer.ggml.*; tied embeddings when output.weight is absent; q/k/v
 * biases when blk.0.attn_q.bias is present. A rope_freqs.weight tensor (Llama 3.1's frequency factors, baked in by
 * llama.cpp's converter) becomes rope_scaling longrope with equal short and long factors and attention factor 1,
 * which is exactly "divide each inverse frequency by its factor".
 * gemma2 / gemma3 (llama.cpp's Gemma converters): norms stored as 1 + w, the attention output's norm as
 * post_attention_norm, the MLP's as ffn_norm and post_ffw_norm; soft-caps and the rest as gemmaKeys says.
 */
import { SiftError } from '../config/errors.js';
import type { Architecture } from './config.js';
import { MODEL_TYPE } from './config.js';
import type { GgufFile } from './gguf.js';

/** general.architecture values sift loads, and the HF architecture each stands for. */
export const GGUF_ARCHITECTURES: Readonly<Record<string, Architecture>> = {
  llama: 'LlamaForCausalLM',
  mistral: 'MistralForCausalLM',
  qwen2: 'Qwen2ForCausalLM',
  qwen3: 'Qwen3ForCausalLM',
  gemma2: 'Gemma2ForCausalLM',
  gemma3: 'Gemma3ForCausalLM',
};

/**
 * Architectures whose converter stores every norm weight as 1 + w (llama.cpp's Gemma converters bake Gemma's
 * (1 + w) into the weight): sift subtracts the 1 on read, so the tensors are HF's.
 */
export const UNIT_OFFSET_NORMS: ReadonlySet<string> = new Set(['gemma2', 'gemma3']);

/**
 * Architectures whose converter stores q/k rows in interleaved-pair RoPE order (llama.cpp's LLAMA rope type):
 * their rows are permuted back to HF's rotate_half order on load.
 */
const INTERLEAVED_QK: ReadonlySet<string> = new Set(['llama', 'mistral']);

/** Per-layer HF -> GGUF tensor names (llama.cpp's tensor map); post_attention_layernorm differs by family. */
const LAYER_NAMES: readonly [hf: string, gguf: string][] = [
  ['input_layernorm.weight', 'attn_norm.weight'],
  ['self_attn.q_proj.weight', 'attn_q.weight'],
  ['self_attn.k_proj.weight', 'attn_k.weight'],
  ['self_attn.v_proj.weight', 'attn_v.weight'],
  ['self_attn.q_proj.bias', 'attn_q.bias'],
  ['self_attn.k_proj.bias', 'attn_k.bias'],
  ['self_attn.v_proj.bias', 'attn_v.bias'],
  ['self_attn.q_norm.weight', 'attn_q_norm.weight'],
  ['self_attn.k_norm.weight', 'attn_k_norm.weight'],
  ['self_attn.o_proj.weight', 'attn_output.weight'],
  ['mlp.gate_proj.weight', 'ffn_gate.weight'],
  ['mlp.up_proj.weight', 'ffn_up.weight'],
  ['mlp.down_proj.weight', 'ffn_down.weight'],
];

/** Gemma's four norms per layer: the attention output's norm, the MLP's input norm (ffn_norm) and its output's. */
const GEMMA_NORMS: readonly [hf: string, gguf: string][] = [
  ['post_attention_layernorm.weight', 'post_attention_norm.weight'],
  ['pre_feedforward_layernorm.weight', 'ffn_norm.weight'],
  ['post_feedforward_layernorm.weight', 'post_ffw_norm.weight'],
];

function layerNames(arch?: string): readonly [string, string][] {
  const gemma = arch !== undefined && UNIT_OFFSET_NORMS.has(arch);
  return [...LAYER_NAMES, ...(gemma ? GEMMA_NORMS : [['post_attention_layernorm.weight', 'ffn_norm.weight']])] as [
    string,
    string,
  ][];
}

const FIXED_NAMES: Readonly<Record<string, string>> = {
  'model.embed_tokens.weight': 'token_embd.weight',
  'model.norm.weight': 'output_norm.weight',
  'lm_head.weight': 'output.weight',
};

/** The GGUF tensor holding each HF tensor (layer tensors of layer i) in a file of general.architecture `arch`. */
export function ggufTensorName(hfName: string, arch?: string): string | null {
  if (FIXED_NAMES[hfName]) return FIXED_NAMES[hfName];
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(hfName);
  if (!m) return null;
  const hit = layerNames(arch).find(([hf]) => hf === m[2]);
  return hit ? `blk.${m[1]}.${hit[1]}` : null;
}

/** The HF name of a GGUF tensor sift maps (the inverse of ggufTensorName), or null. */
export function hfTensorName(ggufName: string, arch?: string): string | null {
  const fixed = Object.entries(FIXED_NAMES).find(([, g]) => g === ggufName);
  if (fixed) return fixed[0];
  const m = /^blk\.(\d+)\.(.+)$/.exec(ggufName);
  if (!m) return null;
  const hit = layerNames(arch).find(([, g]) => g === m[2]);
  return hit ? `model.layers.${m[1]}.${hit[0]}` : null;
}

export interface GgufModelDescription {
  /** general.architecture. */
  arch: string;
  /** The HF config.json this file stands for. */
  config: Record<string, unknown>;
  /** q/k rows to permute from interleaved-pair to rotate_half order on load. */
  interleavedQk: boolean;
}

/** Reads the model keys of `g` into an HF config.json object. */
export function ggufModelDescription(g: GgufFile): GgufModelDescription {
  const arch = g.string('general.architecture');
  if (arch === undefined)
    throw new SiftError('CHECKPOINT_INVALID', `${g.path}: metadata key general.architecture missing`);
  const architecture = GGUF_ARCHITECTURES[arch];
  if (!architecture) {
    throw new SiftError(
      'CHECKPOINT_UNSUPPORTED',
      `${g.path}: general.architecture ${JSON.stringify(arch)} not supported; supported: ${Object.keys(GGUF_ARCHITECTURES).join(', ')}`,
    );
  }
  const k = (s: string) => `${arch}.${s}`;
  const hidden = g.count(k('embedding_length'));
  const heads = g.count(k('attention.head_count'));
  const kvHeads = g.count(k('attention.head_count_kv'), heads);
  const headDim = g.count(k('attention.key_length'), hidden % heads === 0 ? hidden / heads : undefined);
  const valueDim = g.count(k('attention.value_length'), headDim);
  if (valueDim !== headDim) {
    throw new SiftError(
      'CHECKPOINT_UNSUPPORTED',
      `${g.path}: ${k('attention.value_length')} (${valueDim}) differs from ${k('attention.key_length')} (${headDim}); sift needs equal key and value head sizes`,
    );
  }
  const ropeDims = g.count(k('rope.dimension_count'), headDim);
  if (ropeDims !== headDim) {
    throw new SiftError(
      'CHECKPOINT_UNSUPPORTED',
      `${g.path}: ${k('rope.dimension_count')} (${ropeDims}) is not the head size (${headDim}); partial rotary embeddings are not supported`,
    );
  }
  const embed = g.has('token_embd.weight') ? g.tensor('token_embd.weight') : null;
  if (!embed) throw new SiftError('CHECKPOINT_INVALID', `${g.path}: tensor token_embd.weight missing`);
  const tokens = g.metadata.get('tokenizer.ggml.tokens');
  const vocab = g.count(k('vocab_size'), embed.dims[1] ?? (Array.isArray(tokens) ? tokens.length : undefined));

  const config: Record<string, unknown> = {
    architectures: [architecture],
    model_type: MODEL_TYPE[architecture],
    hidden_size: hidden,
    intermediate_size: g.count(k('feed_forward_length')),
    num_hidden_layers: g.count(k('block_count')),
    num_attention_heads: heads,
    num_key_value_heads: kvHeads,
    head_dim: headDim,
    vocab_size: vocab,
    rms_norm_eps: g.number(k('attention.layer_norm_rms_epsilon')),
    rope_theta: g.number(k('rope.freq_base'), 10000),
    max_position_embeddings: g.count(k('context_length')),
    tie_word_embeddings: !g.has('output.weight'),
    attention_bias: g.has('blk.0.attn_q.bias'),
    rope_scaling: ropeScalingOf(g, arch),
  };
  const window = g.metadata.get(k('attention.sliding_window'));
  if (window !== undefined) {
    config.sliding_window = g.count(k('attention.sliding_window'));
    if (architecture === 'Qwen2ForCausalLM') config.use_sliding_window = true;
  }
  if (UNIT_OFFSET_NORMS.has(arch)) Object.assign(config, gemmaKeys(g, arch, config));
  const addBos = g.boolean('tokenizer.ggml.add_bos_token') ?? g.string('tokenizer.ggml.model') === 'llama';
  const bos = g.metadata.get('tokenizer.ggml.bos_token_id');
  config.bos_token_id = addBos && bos !== undefined ? g.number('tokenizer.ggml.bos_token_id') : null;
  config.eos_token_id = stopTokenIds(g);
  return { arch, config, interleavedQk: INTERLEAVED_QK.has(arch) };
}

/**
 * The Gemma config keys a GGUF file leaves implicit, as llama.cpp reads them: A.attn_logit_softcapping and
 * A.final_logit_softcapping (absent: none); query_pre_attn_scalar by model size (the 27B models, 46 layers for
 * Gemma 2 and 62 for Gemma 3, scale by hidden / heads, the others by the head size); Gemma 3's sliding layers five
 * of every six with RoPE base 10000 (llama.cpp fixes both).
 */
function gemmaKeys(g: GgufFile, arch: string, config: Record<string, unknown>): Record<string, unknown> {
  const k = (s: string) => `${arch}.${s}`;
  const cap = (key: string) => (g.metadata.has(k(key)) ? g.number(k(key)) : null);
  const layers = config.num_hidden_layers as number;
  const big = arch === 'gemma2' ? layers === 46 : layers === 62;
  const out: Record<string, unknown> = {
    hidden_activation: 'gelu_pytorch_tanh',
    query_pre_attn_scalar: big
      ? (config.hidden_size as number) / (config.num_attention_heads as number)
      : config.head_dim,
    attn_logit_softcapping: cap('attn_logit_softcapping'),
    final_logit_softcapping: cap('final_logit_softcapping'),
  };
  if (arch === 'gemma3') {
    out.rope_local_base_freq = 10000;
    out.sliding_window_pattern = 6;
  }
  return out;
}

/** tokenizer.ggml.eos_token_id, then the end-of-turn / end-of-message ids where present. */
export function stopTokenIds(g: GgufFile): number[] {
  const ids: number[] = [];
  for (const key of ['tokenizer.ggml.eos_token_id', 'tokenizer.ggml.eot_token_id', 'tokenizer.ggml.eom_token_id']) {
    if (!g.metadata.has(key)) continue;
    const id = g.number(key);
    if (!Number.isSafeInteger(id) || id < 0) {
      throw new SiftError('CHECKPOINT_INVALID', `${g.path}: metadata key ${key} (${id}) must be a token id`);
    }
    if (!ids.includes(id)) ids.push(id);
  }
  return ids;
}

function ropeScalingOf(g: GgufFile, arch: string): Record<string, unknown> | null {
  const k = (s: string) => `${arch}.${s}`;
  const ctx = g.count(k('context_length'));
  if (g.has('rope_freqs.weight')) {
    const t = g.tensor('rope_freqs.weight');
    if (g.typeOf('rope_freqs.weight') !== 'F32') {
      throw new SiftError(
        'CHECKPOINT_UNSUPPORTED',
        `${g.path}: tensor rope_freqs.weight must be F32 (is ${t.typeName})`,
      );
    }
    const bytes = g.read('rope_freqs.weight');
    const f = Array.from(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4));
    return {
      rope_type: 'longrope',
      short_factor: f,
      long_factor: f,
      attention_factor: 1,
      original_max_position_embeddings: ctx,
    };
  }
  const type = g.string(k('rope.scaling.type'));
  const linear = g.metadata.get(k('rope.scale_linear'));
  if ((type === undefined || type === 'none') && linear === undefined) return null;
  if (type === undefined || type === 'linear') {
    const factor = type === 'linear' ? g.number(k('rope.scaling.factor')) : g.number(k('rope.scale_linear'));
    return factor === 1 ? null : { rope_type: 'linear', factor };
  }
  if (type === 'yarn') {
    const out: Record<string, unknown> = {
      rope_type: 'yarn',
      factor: g.number(k('rope.scaling.factor')),
      original_max_position_embeddings: g.count(k('rope.scaling.original_context_length')),
    };
    for (const [key, hf] of [
      ['rope.scaling.yarn_beta_fast', 'beta_fast'],
      ['rope.scaling.yarn_beta_slow', 'beta_slow'],
    ]) {
      if (g.metadata.has(k(key))) out[hf] = g.number(k(key));
    }
    // llama.cpp multiplies YaRN's own attention factor (0.1 ln(factor) + 1) by rope.scaling.attn_factor.
    if (g.metadata.has(k('rope.scaling.attn_factor'))) {
      const f = out.factor as number;
      out.attention_factor = g.number(k('rope.scaling.attn_factor')) * (f <= 1 ? 1 : 0.1 * Math.log(f) + 1);
    }
    return out;
  }
  throw new SiftError(
    'CHECKPOINT_UNSUPPORTED',
    `${g.path}: metadata key ${k('rope.scaling.type')} is ${JSON.stringify(type)}; supported: none, linear, yarn`,
  );
}
