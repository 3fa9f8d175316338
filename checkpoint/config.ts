/**
 * An HF config.json (plus generation_config.json) normalized into one frozen ModelConfig.
 * Only the fields sift uses are read; the rest of an HF config is ignored. Every error names the file and field.
 */
import fs from 'node:fs';
import path from 'node:path';
import { SiftError } from '../config/errors.js';

export const SUPPORTED_ARCHITECTURES = ['LlamaForCausalLM', 'MistralForCausalLM', 'Qwen2ForCausalLM'] as const;
export type Architecture = (typeof SUPPORTED_ARCHITECTURES)[number];

/** HF `model_type` of each architecture (used when `architectures` is absent, and by writers). */
export const MODEL_TYPE: Readonly<Record<Architecture, string>> = {
  LlamaForCausalLM: 'llama',
  MistralForCausalLM: 'mistral',
  Qwen2ForCausalLM: 'qwen2',
};

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
  /** Mistral/Qwen2 sliding-window size, recorded only (sift attends with its own sparsity). */
  readonly slidingWindow: number | null;
}

/** HF's defaults for max_position_embeddings when a config omits it. */
const DEFAULT_MAX_POSITIONS: Readonly<Record<Architecture, number>> = {
  LlamaForCausalLM: 2048,
  MistralForCausalLM: 4096 * 32,
  Qwen2ForCausalLM: 32768,
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

function ropeScalingOf(file: string, raw: unknown): RopeScaling {
  if (raw === undefined || raw === null) return { type: 'none' };
  if (!isObject(raw)) throw invalid(file, `rope_scaling (${JSON.stringify(raw)}) must be an object or null`);
  const kind = raw.rope_type ?? raw.type;
  if (kind === undefined || kind === null || kind === 'default' || kind === 'none') return { type: 'none' };
  if (kind === 'linear') return { type: 'linear', factor: posNumber(file, raw.factor, 'rope_scaling.factor') };
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
  throw new SiftError(
    'CHECKPOINT_UNSUPPORTED',
    `${file}: rope_scaling type ${JSON.stringify(kind)} not supported; supported: default, linear, llama3`,
  );
}

/**
 * Normalizes a parsed config.json. `file` names it in errors; `generation` is a parsed generation_config.json,
 * whose eos_token_id (number or list) is merged after config.json's.
 */
export function parseModelConfig(json: unknown, file = 'config.json', generation?: unknown): ModelConfig {
  if (!isObject(json)) throw invalid(file, 'not a JSON object');
  const cfg = json;
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
  const ropeScaling = ropeScalingOf(file, cfg.rope_scaling);
  const maxPositionEmbeddings = posInt(file, cfg, 'max_position_embeddings', DEFAULT_MAX_POSITIONS[architecture]);

  const tie = cfg.tie_word_embeddings ?? false;
  if (typeof tie !== 'boolean') throw invalid(file, `tie_word_embeddings (${JSON.stringify(tie)}) must be a boolean`);
  const bias = cfg.attention_bias ?? false;
  if (typeof bias !== 'boolean') throw invalid(file, `attention_bias (${JSON.stringify(bias)}) must be a boolean`);
  const attentionBias = architecture === 'Qwen2ForCausalLM' || bias;

  const bos = tokenIds(file, cfg.bos_token_id, 'bos_token_id');
  if (bos.length > 1) throw invalid(file, `bos_token_id (${JSON.stringify(cfg.bos_token_id)}) must be one token id`);
  const eos = tokenIds(file, cfg.eos_token_id, 'eos_token_id');
  if (generation !== undefined) {
    const genFile = path.join(path.dirname(file), 'generation_config.json');
    if (!isObject(generation)) throw invalid(genFile, 'not a JSON object');
    for (const id of tokenIds(genFile, generation.eos_token_id, 'eos_token_id')) if (!eos.includes(id)) eos.push(id);
  }

  let slidingWindow: number | null = null;
  const useWindow =
    architecture === 'MistralForCausalLM' || (architecture === 'Qwen2ForCausalLM' && cfg.use_sliding_window === true);
  if (useWindow && cfg.sliding_window !== undefined && cfg.sliding_window !== null) {
    slidingWindow = posInt(file, cfg, 'sliding_window');
  }

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
    slidingWindow,
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
