/**
 * Synthetic checkpoints whose logits HF transformers computed (tests/fixtures/hf-architectures.json, made by
 * tests/fixtures/hf-golden.py from the checkpoints `node scripts/hf-golden.mjs DIR` writes): each architecture
 * feature of the reference forward pass against the implementation that defines it.
 */
import type { SyntheticOptions } from '../../checkpoint/synthetic.js';

const base = {
  dtype: 'f32',
  sharded: false,
  tie: 'untied',
  hidden: 64,
  layers: 3,
  heads: 4,
  kvHeads: 2,
  intermediate: 96,
  vocab: 128,
  seed: 9,
} as const;

/** Token ids every case runs (14 positions: past each case's window). */
export const HF_TOKENS: readonly number[] = Array.from({ length: 14 }, (_, i) => (i * 37 + 11) % 128);

export interface HfCase {
  options: SyntheticOptions;
  /** The served context the reference fixes longrope's factors for (HF picks them by the sequence length). */
  contextLength?: number;
}

export const HF_CASES: Readonly<Record<string, HfCase>> = {
  qwen3: { options: { ...base, architecture: 'Qwen3ForCausalLM', headDim: 32, tie: 'tied-embed', ropeTheta: 1e6 } },
  qwen3win: {
    options: { ...base, architecture: 'Qwen3ForCausalLM', headDim: 16, slidingWindow: 5, windowFromLayer: 1 },
  },
  phi3: { options: { ...base, architecture: 'Phi3ForCausalLM', heads: 8, kvHeads: 2 } },
  phi3win: { options: { ...base, architecture: 'Phi3ForCausalLM', slidingWindow: 4 } },
  phi3long: {
    options: {
      ...base,
      architecture: 'Phi3ForCausalLM',
      maxPositions: 512,
      ropeScaling: {
        type: 'longrope',
        shortFactor: [1, 1.05, 1.1, 1.2, 1.4, 1.7, 2, 2.4],
        longFactor: [1, 1.3, 2, 3, 4.5, 7, 10, 14],
        originalMaxPositionEmbeddings: 64,
        attentionFactor: 1.19,
      },
    },
    contextLength: 64,
  },
  mistralwin: { options: { ...base, architecture: 'MistralForCausalLM', slidingWindow: 6 } },
  qwen2win: { options: { ...base, architecture: 'Qwen2ForCausalLM', slidingWindow: 3, windowFromLayer: 1 } },
  // Gemma 2: every other layer slides, both soft-caps, query_pre_attn_scalar unlike head_dim, tied embeddings
  gemma2: {
    options: {
      ...base,
      architecture: 'Gemma2ForCausalLM',
      tie: 'tied-embed',
      headDim: 16,
      slidingWindow: 5,
      queryPreAttnScalar: 24,
      attnLogitSoftcap: 1.5,
      finalLogitSoftcap: 2.5,
    },
  },
  // Gemma 3: q/k norms, layers 0-1 local (window 4, rope_local_base_freq) and layer 2 global (rope_theta, linear
  // scaling), one KV head
  gemma3: {
    options: {
      ...base,
      architecture: 'Gemma3ForCausalLM',
      tie: 'tied-embed',
      kvHeads: 1,
      headDim: 16,
      slidingWindow: 4,
      slidingWindowPattern: 3,
      ropeTheta: 1e6,
      ropeLocalTheta: 1e4,
      ropeScaling: { type: 'linear', factor: 2 },
    },
  },
};
