/**
 * Gemma 2 and Gemma 3 (text) as HF transformers defines them (models/gemma2, models/gemma3), the parts of the
 * family that differ from Llama:
 *   - embeddings multiplied by sqrt(hidden_size), the scale first rounded to the embedding's dtype (HF casts it:
 *     sqrt(3072) = 55.4256 becomes 55.5 in bf16);
 *   - RMSNorm scaled by (1 + w), in f32;
 *   - four norms per layer: input_layernorm before attention, post_attention_layernorm on the attention output
 *     before the residual add, pre_feedforward_layernorm before the MLP, post_feedforward_layernorm on its output;
 *   - GeGLU: down(gelu_tanh(gate(x)) * up(x));
 *   - scores scaled by query_pre_attn_scalar^-1/2; Gemma 2 soft-caps them (attn_logit_softcapping) and the logits
 *     (final_logit_softcapping): c * tanh(x / c);
 *   - sliding-window layers: Gemma 2 every other layer from layer 0, Gemma 3 five of every six
 *     (sliding_window_pattern), layer_types when the config lists them;
 *   - Gemma 3: q/k RMSNorm per head (1 + w) before RoPE; the sliding layers rotate with rope_local_base_freq and no
 *     scaling, the full ones with rope_theta and rope_scaling;
 *   - tied embeddings by default.
 * A multimodal Gemma 3 checkpoint (Gemma3ForConditionalGeneration, gemma-3-4b/12b/27b) is read as its text model:
 * the config's text_config, the weights under language_model. (the vision tower is ignored).
 */
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../util/dtype.js';
import type { StoredDType } from './checkpoint.js';
import type { TensorSource } from './fused.js';
import type { SafetensorsDir } from './safetensors.js';

type Json = Record<string, unknown>;

/** HF's Gemma2Config defaults (configuration_gemma2.py). */
const GEMMA2_DEFAULTS: Json = {
  vocab_size: 256000,
  hidden_size: 2304,
  intermediate_size: 9216,
  num_hidden_layers: 26,
  num_attention_heads: 8,
  num_key_value_heads: 4,
  head_dim: 256,
  hidden_activation: 'gelu_pytorch_tanh',
  max_position_embeddings: 8192,
  rms_norm_eps: 1e-6,
  eos_token_id: 1,
  bos_token_id: 2,
  tie_word_embeddings: true,
  rope_theta: 10000,
  attention_bias: false,
  query_pre_attn_scalar: 256,
  sliding_window: 4096,
  final_logit_softcapping: 30.0,
  attn_logit_softcapping: 50.0,
};

/** HF's Gemma3TextConfig defaults (configuration_gemma3.py). */
const GEMMA3_DEFAULTS: Json = {
  vocab_size: 262208,
  hidden_size: 2304,
  intermediate_size: 9216,
  num_hidden_layers: 26,
  num_attention_heads: 8,
  num_key_value_heads: 4,
  head_dim: 256,
  hidden_activation: 'gelu_pytorch_tanh',
  max_position_embeddings: 131072,
  rms_norm_eps: 1e-6,
  eos_token_id: 1,
  bos_token_id: 2,
  tie_word_embeddings: true,
  rope_theta: 1_000_000,
  attention_bias: false,
  query_pre_attn_scalar: 256,
  sliding_window: 4096,
  final_logit_softcapping: null,
  attn_logit_softcapping: null,
  rope_local_base_freq: 10000,
  sliding_window_pattern: 6,
};

/** The multimodal Gemma 3 architecture whose text model sift serves. */
export const GEMMA3_MULTIMODAL = 'Gemma3ForConditionalGeneration';

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * A Gemma config with HF's defaults filled in for the keys it omits (explicit nulls stay, as in HF), or the config
 * unchanged for other families. A Gemma3ForConditionalGeneration config becomes its text_config as a
 * Gemma3ForCausalLM config (bos / eos from the outer config when the text config lacks them).
 */
export function withGemmaDefaults(cfg: Json): Json {
  const archs = Array.isArray(cfg.architectures) ? cfg.architectures : [];
  if (archs.includes(GEMMA3_MULTIMODAL) || cfg.model_type === 'gemma3') {
    const text = isObject(cfg.text_config) ? cfg.text_config : {};
    const outer: Json = {};
    for (const k of ['bos_token_id', 'eos_token_id', 'tie_word_embeddings']) if (k in cfg) outer[k] = cfg[k];
    return { ...GEMMA3_DEFAULTS, ...outer, ...text, architectures: ['Gemma3ForCausalLM'], model_type: 'gemma3_text' };
  }
  if (archs.includes('Gemma2ForCausalLM') || (!archs.length && cfg.model_type === 'gemma2')) {
    return { ...GEMMA2_DEFAULTS, ...cfg };
  }
  if (archs.includes('Gemma3ForCausalLM') || (!archs.length && cfg.model_type === 'gemma3_text')) {
    return { ...GEMMA3_DEFAULTS, ...cfg };
  }
  return cfg;
}

/**
 * Sliding window per layer when the config has no layer_types: Gemma 2 slides layers 0, 2, 4, ...; Gemma 3 every
 * layer but each `pattern`-th (sliding_window_pattern, default 6: layers 5, 11, ... are global).
 */
export function gemmaDefaultWindows(gemma3: boolean, numLayers: number, size: number, pattern: number): number[] {
  return Array.from({ length: numLayers }, (_, i) => {
    const sliding = gemma3 ? (i + 1) % pattern !== 0 : i % 2 === 0;
    return sliding ? size : 0;
  });
}

/**
 * The embedding scale sqrt(hiddenSize) as HF applies it: a tensor of the embedding's dtype (bf16 / f16 rounding);
 * f32 for f32 embeddings and for quantized ones (as llama.cpp computes it).
 */
export function embeddingScale(hiddenSize: number, dtype: StoredDType): number {
  const s = Math.sqrt(hiddenSize);
  if (dtype === 'bf16') return bf16ToF32(f32ToBf16(s));
  if (dtype === 'f16') return f16ToF32(f32ToF16(s));
  return Math.fround(s);
}

/** Where a multimodal Gemma 3 checkpoint stores its text model's tensors (older and newer transformers layouts). */
const TEXT_PREFIXES: readonly { model: string; lmHead: string }[] = [
  { model: 'language_model.model.', lmHead: 'language_model.lm_head.weight' },
  { model: 'model.language_model.', lmHead: 'lm_head.weight' },
];

/**
 * The text model of a multimodal Gemma 3 checkpoint under the names of a Gemma3ForCausalLM one (`model.X` is read
 * from `language_model.model.X` or `model.language_model.X`; the vision tower and projector are left out), or null
 * when `files` already uses the plain names.
 */
export function textModelTensors(files: SafetensorsDir): TensorSource | null {
  const p = TEXT_PREFIXES.find((x) => files.has(`${x.model}embed_tokens.weight`));
  if (!p) return null;
  const stored = new Map<string, string>(); // HF text-model name -> stored name
  for (const name of files.tensorNames) {
    if (name.startsWith(p.model)) stored.set(`model.${name.slice(p.model.length)}`, name);
    else if (name === p.lmHead) stored.set('lm_head.weight', name);
  }
  const of = (name: string) => stored.get(name) ?? name;
  return {
    source: files.source,
    tensorNames: [...stored.keys()],
    has: (name) => stored.has(name),
    storedName: of,
    fileOf: (name) => files.fileOf(of(name)),
    info: (name) => files.info(of(name)),
    read: (name) => files.read(of(name)),
  };
}
