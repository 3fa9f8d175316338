/**
 * An HF config.json (plus generation_config.json) normalized into one frozen ModelConfig.
 * Only the fields sift uses are read; the rest of an HF config is ignored. Every error names the file and field.
 */
import fs from 'node:fs';
import path from 'node:path';
import { SiftError } from '../config/errors.js';
import { gemmaDefaultWindows, withGemmaDefaults } from './gemma.js';

export const SUPPORTED_ARCHITECTURES = [
  'LlamaForCausalLM',
  'MistralForCausalLM',
  'Qwen2ForCausalLM',
  'Qwen3ForCausalLM',
  'Phi3ForCausalLM',
  'Gemma2ForCausalLM',
  'Gemma3ForCausalLM',
] as const;
export type Architecture = (typeof SUPPORTED_ARCHITECTURES)[number];

/** HF `model_type` of each architecture (used when `architectures` is absent, and by writers). */
export const MODEL_TYPE: Readonly<Record<Architecture, string>> = {
  LlamaForCausalLM: 'llama',
  MistralForCausalLM: 'mistral',
  Qwen2ForCausalLM: 'qwen2',
  Qwen3ForCausalLM: 'qwen3',
  Phi3ForCausalLM: 'phi3',
  Gemma2ForCausalLM: 'gemma2',
  Gemma3ForCausalLM: 'gemma3_text',
};

/** Gemma 2 and 3: (1 + w) norms, GeGLU, scaled embeddings, norms around attention and MLP (checkpoint/gemma.ts). */
export function isGemma(a: Architecture): boolean {
  return a === 'Gemma2ForCausalLM' || a === 'Gemma3ForCausalLM';
}

/** RoPE frequency scaling, as HF transformers' rope_scaling (rope_type 'default' is 'none'). */
export type RopeScaling =
  | { readonly type: 'none' }
  /** Positions divided by `factor` (equivalently every inverse frequency). */
  | { readonly type: 'linear'; readonly factor: number }
  /** Llama 3.1: low frequencies divided by `factor`, high kept, a smooth ramp between. */
  | {
      readonly type: 'llama3';
      readonly factor: number;
      readonly lowFreqFactor: number;
      readonly highFreqFactor: number;
      readonly originalMaxPositionEmbeddings: number;
    }
  /**
   * YaRN (Qwen2.5 long-context, ...): inverse frequencies interpolated by `factor` below the correction range set by
   * betaFast / betaSlow rotations over `originalMaxPositionEmbeddings`, kept above it, a linear ramp between; cos and
   * sin scaled by `attentionFactor` (HF's default 0.1 ln(factor) + 1, or mscale / mscale_all_dim, resolved here).
   */
  | {
      readonly type: 'yarn';
      readonly factor: number;
      readonly originalMaxPositionEmbeddings: number;
      readonly betaFast: number;
      readonly betaSlow: number;
      readonly attentionFactor: number;
      /** Round the correction range outward to whole dimensions (HF's default). */
      readonly truncate: boolean;
    }
  /** Dynamic NTK: the RoPE base grows with the sequence length past maxPositionEmbeddings. */
  | { readonly type: 'dynamic'; readonly factor: number }
  /**
   * LongRoPE (Phi-3/3.5 long context): each inverse frequency divided by its own factor, the long factors when the
   * served context exceeds originalMaxPositionEmbeddings, else the short ones; cos and sin scaled by
   * `attentionFactor` (resolved here: given, else sqrt(1 + ln(s) / ln(original)) with s = max / original).
   */
  | {
      readonly type: 'longrope';
      readonly shortFactor: readonly number[];
      readonly longFactor: readonly number[];
      readonly originalMaxPositionEmbeddings: number;
      readonly attentionFactor: number;
    };

export interface ModelConfig {
  readonly architecture: Architecture;
  /** Residual stream width. */
  readonly hiddenSize: number;
  /** MLP inner width (gate/up rows). */
  readonly intermediateSize: number;
  readonly numLayers: number;
  /** Query heads. */
  readonly numHeads: number;
  /** Key/value heads (GQA); divides numHeads. */
  readonly numKvHeads: number;
  /** Per-head width: config head_dim if given, else hiddenSize / numHeads. Even (RoPE pairs). */
  readonly headDim: number;
  readonly vocabSize: number;
  readonly rmsNormEps: number;
  /** RoPE base. */
  readonly ropeTheta: number;
  readonly ropeScaling: RopeScaling;
  /** Longest context the model was configured for. */
  readonly maxPositionEmbeddings: number;
  /** lm_head shares the embedding matrix. */
  readonly tieWordEmbeddings: boolean;
  /** q/k/v projections carry biases (always for Qwen2). */
  readonly attentionBias: boolean;
  readonly bosTokenId: number | null;
  /** Every id that ends generation (config.json's, then generation_config.json's, deduplicated). */
  readonly eosTokenIds: readonly number[];
  /** Qwen3: q and k pass through an RMSNorm per head (weights q_norm / k_norm, (headDim)) before RoPE. */
  readonly qkNorm: boolean;
  /** The configured sliding-window size (Mistral, Phi-3, Qwen2/3 with use_sliding_window), or null. */
  readonly slidingWindow: number | null;
  /**
   * (numLayers) each layer's attention window: a query at position t attends to keys s with t - w < s <= t (HF's
   * sliding_attention, w keys counting its own); 0 = full causal attention. Mistral and Phi-3 slide every layer;
   * Qwen2/3 the layers from max_window_layers on; Gemma 2 every other layer from layer 0, Gemma 3 five of every six
   * (sliding_window_pattern); a config's layer_types overrides them all.
   */
  readonly layerWindows: readonly number[];
  /** MLP activation of the gate: SiLU (SwiGLU; the Llama family) or GELU's tanh form (GeGLU; Gemma). */
  readonly hiddenActivation: 'silu' | 'gelu_tanh';
  /** Every RMSNorm scales by (1 + w) instead of w (Gemma). */
  readonly normUnitOffset: boolean;
  /** Token embeddings are multiplied by sqrt(hiddenSize), rounded to the embedding's dtype as HF does (Gemma). */
  readonly scaleEmbeddings: boolean;
  /**
   * Gemma 2/3's four norms per layer: post_attention_layernorm normalizes the attention output before the residual
   * add, pre_feedforward_layernorm feeds the MLP and post_feedforward_layernorm normalizes its output. (Otherwise
   * post_attention_layernorm is the MLP's input norm, as in Llama.)
   */
  readonly sandwichNorms: boolean;
  /** Attention scores are scaled by queryPreAttnScalar^-1/2: headDim, or Gemma's query_pre_attn_scalar. */
  readonly queryPreAttnScalar: number;
  /** Gemma 2: attention scores become c * tanh(s / c) after scaling, before the mask; null = none. */
  readonly attnLogitSoftcap: number | null;
  /** Gemma 2: logits become c * tanh(logits / c); null = none. */
  readonly finalLogitSoftcap: number | null;
  /**
   * Gemma 3: the RoPE base of the sliding-window layers, which rotate with it and no scaling (rope_local_base_freq);
   * the full-attention layers use ropeTheta and ropeScaling. Null: every layer uses ropeTheta and ropeScaling.
   */
  readonly localRopeTheta: number | null;
}

/** HF's defaults for max_position_embeddings when a config omits it. */
const DEFAULT_MAX_POSITIONS: Readonly<Record<Architecture, number>> = {
  LlamaForCausalLM: 2048,
  MistralForCausalLM: 4096 * 32,
  Qwen2ForCausalLM: 32768,
  Qwen3ForCausalLM: 32768,
  Phi3ForCausalLM: 4096,
  Gemma2ForCausalLM: 8192,
  Gemma3ForCausalLM: 131072,
};

type Json = Record<string, unknown>;

function invalid(file: string, message: string): SiftError {
  return new SiftError('CHECKPOINT_INVALID', `${file}: ${message}`);
}

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function posInt(file: string, cfg: Json, key: string, fallback?: number): number {
  const v = cfg[key] ?? fallback;
  if (v === undefined) throw invalid(file, `${key} missing`);
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) {
    throw invalid(file, `${key} (${JSON.stringify(v)}) must be a positive integer`);
  }
  return v;
}

function posNumber(file: string, v: unknown, key: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
    throw invalid(file, `${key} (${JSON.stringify(v)}) must be a positive number`);
  }
  return v;
}

function tokenIds(file: string, v: unknown, key: string): number[] {
  if (v === undefined || v === null) return [];
  const xs = Array.isArray(v) ? v : [v];
  for (const x of xs) {
    if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0) {
      throw invalid(file, `${key} (${JSON.stringify(v)}) must be a token id or a list of token ids`);
    }
  }
  return xs as number[];
}

function architectureOf(file: string, cfg: Json): Architecture {
  const archs = cfg.architectures;
  const supported = SUPPORTED_ARCHITECTURES.join(', ');
  if (Array.isArray(archs) && archs.length > 0) {
    const found = archs.find((a): a is Architecture => (SUPPORTED_ARCHITECTURES as readonly unknown[]).includes(a));
    if (found) return found;
    throw new SiftError(
      'CHECKPOINT_UNSUPPORTED',
      `${file}: architectures ${JSON.stringify(archs)} not supported; supported: ${supported}`,
    );
  }
  const byType = Object.entries(MODEL_TYPE).find(([, t]) => t === cfg.model_type);
  if (byType) return byType[0] as Architecture;
  throw new SiftError(
    'CHECKPOINT_UNSUPPORTED',
    `${file}: no supported architecture (architectures ${JSON.stringify(archs)}, model_type ${JSON.stringify(cfg.model_type)}); supported: ${supported}`,
  );
}

function optNumber(file: string, raw: Json, key: string, fallback: number): number {
  const v = raw[key];
  return v === undefined || v === null ? fallback : posNumber(file, v, `rope_scaling.${key}`);
}

function factorList(file: string, raw: Json, key: string, half: number): number[] {
  const v = raw[key];
  if (!Array.isArray(v) || v.length !== half || !v.every((x) => typeof x === 'number' && Number.isFinite(x) && x > 0)) {
    throw invalid(file, `rope_scaling.${key} must be a list of ${half} positive numbers (head_dim / 2)`);
  }
  return [...v] as number[];
}

/** HF's YaRN mscale: 1 for s <= 1, else 0.1 * m * ln(s) + 1. */
function yarnMscale(s: number, m = 1): number {
  return s <= 1 ? 1 : 0.1 * m * Math.log(s) + 1;
}

function ropeScalingOf(file: string, raw: unknown, cfg: Json, headDim: number, maxPositions: number): RopeScaling {
  if (raw === undefined || raw === null) return { type: 'none' };
  if (!isObject(raw)) throw invalid(file, `rope_scaling (${JSON.stringify(raw)}) must be an object or null`);
  const kind = raw.rope_type ?? raw.type;
  if (kind === undefined || kind === null || kind === 'default' || kind === 'none') return { type: 'none' };
  if (kind === 'linear') return { type: 'linear', factor: posNumber(file, raw.factor, 'rope_scaling.factor') };
  if (kind === 'dynamic') return { type: 'dynamic', factor: posNumber(file, raw.factor, 'rope_scaling.factor') };
  if (kind === 'llama3') {
    const s = {
      type: 'llama3' as const,
      factor: posNumber(file, raw.factor, 'rope_scaling.factor'),
      lowFreqFactor: posNumber(file, raw.low_freq_factor, 'rope_scaling.low_freq_factor'),
      highFreqFactor: posNumber(file, raw.high_freq_factor, 'rope_scaling.high_freq_factor'),
      originalMaxPositionEmbeddings: posInt(file, raw, 'original_max_position_embeddings'),
    };
    if (s.highFreqFactor <= s.lowFreqFactor) {
      throw invalid(
        file,
        `rope_scaling.high_freq_factor (${s.highFreqFactor}) must exceed low_freq_factor (${s.lowFreqFactor})`,
      );
    }
    return s;
  }
  if (kind === 'yarn') {
    const factor = posNumber(file, raw.factor, 'rope_scaling.factor');
    const original = posInt(file, raw, 'original_max_position_embeddings', maxPositions);
    const betaFast = optNumber(file, raw, 'beta_fast', 32);
    const betaSlow = optNumber(file, raw, 'beta_slow', 1);
    if (betaFast < betaSlow) {
      throw invalid(file, `rope_scaling.beta_fast (${betaFast}) must be at least beta_slow (${betaSlow})`);
    }
    let attentionFactor: number;
    if (raw.attention_factor !== undefined && raw.attention_factor !== null) {
      attentionFactor = posNumber(file, raw.attention_factor, 'rope_scaling.attention_factor');
    } else if (raw.mscale && raw.mscale_all_dim) {
      const m = posNumber(file, raw.mscale, 'rope_scaling.mscale');
      const all = posNumber(file, raw.mscale_all_dim, 'rope_scaling.mscale_all_dim');
      attentionFactor = yarnMscale(factor, m) / yarnMscale(factor, all);
    } else attentionFactor = yarnMscale(factor);
    const truncate = raw.truncate ?? true;
    if (typeof truncate !== 'boolean') throw invalid(file, 'rope_scaling.truncate must be a boolean');
    return {
      type: 'yarn',
      factor,
      originalMaxPositionEmbeddings: original,
      betaFast,
      betaSlow,
      attentionFactor,
      truncate,
    };
  }
  // Phi-3's first long-context configs called longrope "su" (HF reads both).
  if (kind === 'longrope' || kind === 'su') {
    const half = headDim / 2;
    // Phi-3 keeps original_max_position_embeddings beside rope_scaling; others put it inside.
    const original =
      raw.original_max_position_embeddings !== undefined
        ? posInt(file, raw, 'original_max_position_embeddings')
        : posInt(file, cfg, 'original_max_position_embeddings', maxPositions);
    let attentionFactor: number;
    if (raw.attention_factor !== undefined && raw.attention_factor !== null) {
      attentionFactor = posNumber(file, raw.attention_factor, 'rope_scaling.attention_factor');
    } else {
      const s =
        cfg.original_max_position_embeddings !== undefined || raw.factor === undefined
          ? maxPositions / original
          : posNumber(file, raw.factor, 'rope_scaling.factor');
      attentionFactor = s <= 1 ? 1 : Math.sqrt(1 + Math.log(s) / Math.log(original));
    }
    return {
      type: 'longrope',
      shortFactor: Object.freeze(factorList(file, raw, 'short_factor', half)),
      longFactor: Object.freeze(factorList(file, raw, 'long_factor', half)),
      originalMaxPositionEmbeddings: original,
      attentionFactor,
    };
  }
  throw new SiftError(
    'CHECKPOINT_UNSUPPORTED',
    `${file}: rope_scaling type ${JSON.stringify(kind)} not supported; supported: default, linear, llama3, yarn, dynamic, longrope`,
  );
}

/**
 * The sliding window as HF transformers applies it: `layer_types` when the config lists them; else Mistral and Phi-3
 * slide every layer when sliding_window is set, Qwen2/3 the layers i >= max_window_layers (default 28) when
 * use_sliding_window is true, Gemma 2 layers 0, 2, 4, ..., Gemma 3 all but every sliding_window_pattern-th; Llama
 * never.
 */
function slidingWindowsOf(
  file: string,
  cfg: Json,
  architecture: Architecture,
  numLayers: number,
): { slidingWindow: number | null; layerWindows: number[] } {
  const qwen = architecture === 'Qwen2ForCausalLM' || architecture === 'Qwen3ForCausalLM';
  const gemma = isGemma(architecture);
  const enabled =
    architecture === 'MistralForCausalLM' ||
    architecture === 'Phi3ForCausalLM' ||
    gemma ||
    (qwen && cfg.use_sliding_window === true);
  const hasSize = cfg.sliding_window !== undefined && cfg.sliding_window !== null;
  const size = hasSize ? posInt(file, cfg, 'sliding_window') : null;
  if (Array.isArray(cfg.layer_types)) {
    const types = cfg.layer_types;
    if (types.length !== numLayers) {
      throw invalid(file, `layer_types lists ${types.length} layers; num_hidden_layers is ${numLayers}`);
    }
    const windows = types.map((t, i) => {
      if (t === 'full_attention') return 0;
      if (t !== 'sliding_attention') {
        throw new SiftError(
          'CHECKPOINT_UNSUPPORTED',
          `${file}: layer_types[${i}] ${JSON.stringify(t)} not supported; supported: full_attention, sliding_attention`,
        );
      }
      if (size === null) throw invalid(file, `layer_types[${i}] is sliding_attention but sliding_window is not set`);
      return size;
    });
    return { slidingWindow: windows.some((w) => w > 0) ? size : null, layerWindows: windows };
  }
  if (!enabled || size === null) return { slidingWindow: null, layerWindows: new Array(numLayers).fill(0) };
  if (gemma) {
    const gemma3 = architecture === 'Gemma3ForCausalLM';
    const pattern = gemma3 ? posInt(file, cfg, 'sliding_window_pattern', 6) : 2;
    const layerWindows = gemmaDefaultWindows(gemma3, numLayers, size, pattern);
    return { slidingWindow: layerWindows.some((w) => w > 0) ? size : null, layerWindows };
  }
  if (!qwen) return { slidingWindow: size, layerWindows: new Array(numLayers).fill(size) };
  const from = cfg.max_window_layers === undefined ? 28 : nonNegInt(file, cfg, 'max_window_layers');
  const layerWindows = Array.from({ length: numLayers }, (_, i) => (i >= from ? size : 0));
  return { slidingWindow: layerWindows.some((w) => w > 0) ? size : null, layerWindows };
}

/** Gemma's MLP activation: hidden_activation (else hidden_act); GELU's tanh form is what the family uses. */
function gemmaActivation(file: string, cfg: Json): 'gelu_tanh' {
  const act = cfg.hidden_activation ?? cfg.hidden_act ?? 'gelu_pytorch_tanh';
  // gelu_new and gelu_fast are the same tanh approximation as gelu_pytorch_tanh
  if (act === 'gelu_pytorch_tanh' || act === 'gelu_new' || act === 'gelu_fast') return 'gelu_tanh';
  throw new SiftError(
    'CHECKPOINT_UNSUPPORTED',
    `${file}: hidden_activation ${JSON.stringify(act)} not supported for Gemma; supported: gelu_pytorch_tanh`,
  );
}

function nonNegInt(file: string, cfg: Json, key: string): number {
  const v = cfg[key];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw invalid(file, `${key} (${JSON.stringify(v)}) must be a non-negative integer`);
  }
  return v;
}

/**
 * Normalizes a parsed config.json. `file` names it in errors; `generation` is a parsed generation_config.json,
 * whose eos_token_id (number or list) is merged after config.json's.
 */
export function parseModelConfig(json: unknown, file = 'config.json', generation?: unknown): ModelConfig {
  if (!isObject(json)) throw invalid(file, 'not a JSON object');
  const cfg = withGemmaDefaults(json); // HF's defaults of the Gemma configs; a multimodal Gemma 3 as its text model
  const architecture = architectureOf(file, cfg);
  const hiddenSize = posInt(file, cfg, 'hidden_size');
  const intermediateSize = posInt(file, cfg, 'intermediate_size');
  const numLayers = posInt(file, cfg, 'num_hidden_layers');
  const numHeads = posInt(file, cfg, 'num_attention_heads');
  const numKvHeads = posInt(file, cfg, 'num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0) {
    throw invalid(file, `num_attention_heads (${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`);
  }
  let headDim: number;
  if (cfg.head_dim !== undefined && cfg.head_dim !== null) {
    headDim = posInt(file, cfg, 'head_dim');
  } else {
    if (hiddenSize % numHeads !== 0) {
      throw invalid(
        file,
        `hidden_size (${hiddenSize}) must be a multiple of num_attention_heads (${numHeads}) when head_dim is absent`,
      );
    }
    headDim = hiddenSize / numHeads;
  }
  if (headDim % 2 !== 0) throw invalid(file, `head_dim (${headDim}) must be even for rotary embeddings`);
  const vocabSize = posInt(file, cfg, 'vocab_size');
  const rmsNormEps = posNumber(file, cfg.rms_norm_eps ?? 1e-6, 'rms_norm_eps');
  const ropeTheta = posNumber(file, cfg.rope_theta ?? 10000, 'rope_theta');
  const maxPositionEmbeddings = posInt(file, cfg, 'max_position_embeddings', DEFAULT_MAX_POSITIONS[architecture]);
  const ropeScaling = ropeScalingOf(file, cfg.rope_scaling, cfg, headDim, maxPositionEmbeddings);

  const tie = cfg.tie_word_embeddings ?? false;
  if (typeof tie !== 'boolean') throw invalid(file, `tie_word_embeddings (${JSON.stringify(tie)}) must be a boolean`);
  const bias = cfg.attention_bias ?? false;
  if (typeof bias !== 'boolean') throw invalid(file, `attention_bias (${JSON.stringify(bias)}) must be a boolean`);
  const attentionBias = architecture === 'Qwen2ForCausalLM' || bias;
  const partialRotary = cfg.partial_rotary_factor ?? 1;
  if (partialRotary !== 1) {
    throw new SiftError(
      'CHECKPOINT_UNSUPPORTED',
      `${file}: partial_rotary_factor ${JSON.stringify(partialRotary)}: partial rotary embeddings are not supported`,
    );
  }

  const bos = tokenIds(file, cfg.bos_token_id, 'bos_token_id');
  if (bos.length > 1) throw invalid(file, `bos_token_id (${JSON.stringify(cfg.bos_token_id)}) must be one token id`);
  const eos = tokenIds(file, cfg.eos_token_id, 'eos_token_id');
  if (generation !== undefined) {
    const genFile = path.join(path.dirname(file), 'generation_config.json');
    if (!isObject(generation)) throw invalid(genFile, 'not a JSON object');
    for (const id of tokenIds(genFile, generation.eos_token_id, 'eos_token_id')) if (!eos.includes(id)) eos.push(id);
  }

  const { slidingWindow, layerWindows } = slidingWindowsOf(file, cfg, architecture, numLayers);
  const gemma = isGemma(architecture);
  const optCap = (key: string) => {
    const v = cfg[key];
    return v === undefined || v === null ? null : posNumber(file, v, key);
  };
  const attnLogitSoftcap = gemma ? optCap('attn_logit_softcapping') : null;
  const finalLogitSoftcap = gemma ? optCap('final_logit_softcapping') : null;
  const queryPreAttnScalar = gemma ? posNumber(file, cfg.query_pre_attn_scalar, 'query_pre_attn_scalar') : headDim;
  const localRopeTheta =
    architecture === 'Gemma3ForCausalLM' ? posNumber(file, cfg.rope_local_base_freq, 'rope_local_base_freq') : null;

  return Object.freeze({
    architecture,
    hiddenSize,
    intermediateSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    vocabSize,
    rmsNormEps,
    ropeTheta,
    ropeScaling: Object.freeze(ropeScaling),
    maxPositionEmbeddings,
    tieWordEmbeddings: tie,
    attentionBias,
    bosTokenId: bos.length ? bos[0] : null,
    eosTokenIds: Object.freeze(eos),
    qkNorm: architecture === 'Qwen3ForCausalLM' || architecture === 'Gemma3ForCausalLM',
    slidingWindow,
    layerWindows: Object.freeze(layerWindows),
    hiddenActivation: gemma ? gemmaActivation(file, cfg) : 'silu',
    normUnitOffset: gemma,
    scaleEmbeddings: gemma,
    sandwichNorms: gemma,
    queryPreAttnScalar,
    attnLogitSoftcap,
    finalLogitSoftcap,
    localRopeTheta,
  });
}

function readJson(file: string): unknown {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw invalid(file, 'missing');
    throw invalid(file, `not valid JSON (${(e as Error).message})`);
  }
}

/** Reads `dir`/config.json and, when present, `dir`/generation_config.json. */
export function loadModelConfig(dir: string): ModelConfig {
  const file = path.join(dir, 'config.json');
  const json = readJson(file);
  const genFile = path.join(dir, 'generation_config.json');
  const gen = fs.existsSync(genFile) ? readJson(genFile) : undefined;
  return parseModelConfig(json, file, gen);
}
