/**
 * RoPE inverse frequencies and attention factor of a ModelConfig, as HF transformers' rope functions compute them
 * (modeling_rope_utils: default, linear, llama3, yarn, dynamic, longrope), in f64. The forward pass uploads them; the
 * rope kernel rotates pair (i, i + headDim/2) by position * invFreq[i].
 *
 * Two types depend on the sequence length in HF (dynamic recomputes its base as a sequence grows; longrope switches
 * from short to long factors once a sequence passes original_max_position_embeddings). A server with a paged KV
 * cache must rotate every key of a sequence the same way, so sift fixes them once for the served context length
 * (`contextLength`, the longest sequence the server admits), as llama.cpp does for longrope and vLLM for dynamic:
 * HF's numbers for a sequence of that length.
 *
 * `attentionFactor` multiplies cos and sin (yarn, longrope; 1 otherwise), so attention logits scale by its square.
 */
import { SiftError } from '../config/errors.js';
import type { ModelConfig } from './config.js';

export interface RopeFrequencies {
  /** (headDim / 2) radians per position. */
  invFreq: Float64Array;
  /** Scale of cos and sin. */
  attentionFactor: number;
}

export function ropeFrequencies(
  c: Pick<ModelConfig, 'headDim' | 'ropeTheta' | 'ropeScaling' | 'maxPositionEmbeddings'>,
  contextLength: number,
): RopeFrequencies {
  const d = c.headDim;
  const half = d / 2;
  if (!Number.isInteger(half) || half < 1) throw new SiftError('INTERNAL', `rope: head size ${d} is not even`);
  if (!(contextLength > 0)) throw new SiftError('INTERNAL', `rope: context length ${contextLength}`);
  const s = c.ropeScaling;
  let base = c.ropeTheta;
  if (s.type === 'dynamic') {
    const len = Math.max(contextLength, c.maxPositionEmbeddings);
    base *= ((s.factor * len) / c.maxPositionEmbeddings - (s.factor - 1)) ** (d / (d - 2));
  }
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / base ** ((2 * i) / d);
  let attentionFactor = 1;
  switch (s.type) {
    case 'none':
    case 'dynamic':
      break;
    case 'linear':
      for (let i = 0; i < half; i++) inv[i] /= s.factor;
      break;
    case 'llama3': {
      const orig = s.originalMaxPositionEmbeddings;
      for (let i = 0; i < half; i++) {
        const wavelen = (2 * Math.PI) / inv[i];
        if (wavelen > orig / s.lowFreqFactor) inv[i] /= s.factor;
        else if (wavelen >= orig / s.highFreqFactor) {
          const t = (orig / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
          inv[i] = ((1 - t) * inv[i]) / s.factor + t * inv[i];
        }
      }
      break;
    }
    case 'yarn': {
      // Dimension (of d) at which a frequency completes `rotations` turns over the original context.
      const corr = (rotations: number) =>
        (d * Math.log(s.originalMaxPositionEmbeddings / (rotations * 2 * Math.PI))) / (2 * Math.log(base));
      let low = corr(s.betaFast);
      let high = corr(s.betaSlow);
      if (s.truncate) {
        low = Math.floor(low);
        high = Math.ceil(high);
      }
      low = Math.max(low, 0);
      high = Math.min(high, d - 1);
      if (low === high) high += 0.001;
      for (let i = 0; i < half; i++) {
        const ramp = Math.min(1, Math.max(0, (i - low) / (high - low))); // 0: extrapolate (keep), 1: interpolate
        inv[i] = (inv[i] / s.factor) * ramp + inv[i] * (1 - ramp);
      }
      attentionFactor = s.attentionFactor;
      break;
    }
    case 'longrope': {
      const f = contextLength > s.originalMaxPositionEmbeddings ? s.longFactor : s.shortFactor;
      for (let i = 0; i < half; i++) inv[i] /= f[i];
      attentionFactor = s.attentionFactor;
      break;
    }
  }
  return { invFreq: inv, attentionFactor };
}

/**
 * The attention softmax scale: 1 / sqrt(headDim) (Gemma: 1 / sqrt(query_pre_attn_scalar)), times the square of the
 * RoPE attention factor (yarn, longrope), since HF scales both cos and sin of q and k by it (q·k grows by its
 * square). Pass layerRopeConfig(c, layer) for a model whose layers rotate differently (Gemma 3).
 */
export function attentionSoftmaxScale(
  c: Pick<ModelConfig, 'headDim' | 'ropeScaling'> & Partial<Pick<ModelConfig, 'queryPreAttnScalar'>>,
): number {
  const s = c.ropeScaling;
  const f = s.type === 'yarn' || s.type === 'longrope' ? s.attentionFactor : 1;
  return (f * f) / Math.sqrt(c.queryPreAttnScalar ?? c.headDim);
}

/**
 * The RoPE of layer `li`: Gemma 3's sliding-window layers rotate with rope_local_base_freq and no scaling (HF's
 * rotary_emb_local); every other layer (and every layer of other models) with ropeTheta and ropeScaling.
 */
export function layerRopeConfig<
  C extends Pick<ModelConfig, 'ropeTheta' | 'ropeScaling' | 'localRopeTheta' | 'layerWindows'>,
>(c: C, li: number): C {
  if (c.localRopeTheta === null || c.layerWindows[li] === 0) return c;
  return { ...c, ropeTheta: c.localRopeTheta, ropeScaling: { type: 'none' } };
}
