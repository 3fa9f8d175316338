/**
 * The pieces of the reference forward pass (tests/reference/forward.ts): every weight decoded to f32, RoPE as HF
 * computes it, and one position's layer math in f64, for the Llama family (Llama, Mistral, Qwen2/3, Phi-3) and
 * Gemma 2/3 (checkpoint/gemma.ts: (1 + w) norms, sqrt(hidden)-scaled embeddings, sandwich norms, GeGLU,
 * query_pre_attn_scalar, soft-capping, per-layer RoPE).
 */
import type { Checkpoint } from '../../checkpoint/checkpoint.js';
import { layerTensorNames } from '../../checkpoint/checkpoint.js';
import type { ModelConfig } from '../../checkpoint/config.js';
import { embeddingScale } from '../../checkpoint/gemma.js';
import { f16ToF32, f32ToF16 } from '../../util/dtype.js';
import { softcapRef } from './attention.js';

/** Rounds every element to the nearest f16 value, in place. */
export function roundToF16(x: Float64Array): void {
  for (let i = 0; i < x.length; i++) x[i] = f16ToF32(f32ToF16(x[i]));
}

export interface LayerWeights {
  inputNorm: Float32Array; // (hidden)
  q: Float32Array; // (heads*headDim, hidden)
  k: Float32Array; // (kvHeads*headDim, hidden)
  v: Float32Array; // (kvHeads*headDim, hidden)
  qBias: Float32Array | null; // (heads*headDim)
  kBias: Float32Array | null; // (kvHeads*headDim)
  vBias: Float32Array | null; // (kvHeads*headDim)
  qNorm: Float32Array | null; // (headDim) Qwen3, Gemma 3
  kNorm: Float32Array | null; // (headDim) Qwen3, Gemma 3
  o: Float32Array; // (hidden, heads*headDim)
  postNorm: Float32Array; // (hidden) post_attention_layernorm: the MLP's input norm, or (Gemma) the attention output's
  preFfnNorm: Float32Array | null; // (hidden) Gemma: pre_feedforward_layernorm, the MLP's input norm
  postFfnNorm: Float32Array | null; // (hidden) Gemma: post_feedforward_layernorm, on the MLP's output
  gate: Float32Array; // (inter, hidden)
  up: Float32Array; // (inter, hidden)
  down: Float32Array; // (hidden, inter)
}

/** Every weight of a model decoded to f32, plus the RoPE inverse frequencies. */
export interface ReferenceWeights {
  config: ModelConfig;
  embed: Float32Array; // (vocab, hidden)
  layers: LayerWeights[];
  finalNorm: Float32Array; // (hidden)
  lmHead: Float32Array; // (vocab, hidden)
  invFreq: Float64Array; // (headDim/2)
  /** cos/sin scale of RoPE (ropeCosSinScale). */
  ropeScale: number;
  /** Per layer: its RoPE frequencies and cos/sin scale (Gemma 3's sliding layers have their own). */
  layerRope: { invFreq: Float64Array; scale: number }[];
  /** Multiplies every embedding row: 1, or Gemma's sqrt(hidden) rounded to the embedding's dtype. */
  embedScale: number;
  /** Attention score scale before any soft-cap: queryPreAttnScalar^-1/2. */
  scoreScale: number;
}

/**
 * RoPE inverse frequencies (headDim/2) as HF transformers computes them:
 *   base: inv[i] = theta^(-2i/d);  linear: inv[i] / factor;
 *   llama3: wavelength w = 2π / inv[i]; w > orig/low: inv/factor; w < orig/high: inv; between: a ramp
 *   s = (orig/w - low) / (high - low), (1 - s) inv/factor + s inv;
 *   dynamic: theta' = theta ((factor L / maxPos) - (factor - 1))^(d / (d - 2)), L = max(contextLength, maxPos);
 *   yarn: correction dims lo/hi where a frequency turns beta_fast / beta_slow times over the original context
 *   (floored / ceiled when truncating, clamped to [0, d-1]); ramp r_i = clamp((i - lo) / (hi - lo), 0, 1);
 *   inv[i] = r_i inv[i] / factor + (1 - r_i) inv[i];
 *   longrope: inv[i] / long_factor[i] when contextLength > original, else / short_factor[i].
 * `contextLength` is the served context (sift fixes the sequence-length-dependent types for it).
 */
export function ropeInvFreq(
  config: Pick<ModelConfig, 'headDim' | 'ropeTheta' | 'ropeScaling' | 'maxPositionEmbeddings'>,
  contextLength = config.maxPositionEmbeddings,
): Float64Array {
  const d = config.headDim;
  const half = d / 2;
  const rs = config.ropeScaling;
  let theta = config.ropeTheta;
  if (rs.type === 'dynamic') {
    const L = Math.max(contextLength, config.maxPositionEmbeddings);
    theta = theta * ((rs.factor * L) / config.maxPositionEmbeddings - (rs.factor - 1)) ** (d / (d - 2));
  }
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / theta ** ((2 * i) / d);
  if (rs.type === 'linear') {
    for (let i = 0; i < half; i++) inv[i] /= rs.factor;
  } else if (rs.type === 'llama3') {
    const lowWavelen = rs.originalMaxPositionEmbeddings / rs.lowFreqFactor;
    const highWavelen = rs.originalMaxPositionEmbeddings / rs.highFreqFactor;
    for (let i = 0; i < half; i++) {
      const wavelen = (2 * Math.PI) / inv[i];
      if (wavelen > lowWavelen) inv[i] /= rs.factor;
      else if (wavelen >= highWavelen) {
        const s =
          (rs.originalMaxPositionEmbeddings / wavelen - rs.lowFreqFactor) / (rs.highFreqFactor - rs.lowFreqFactor);
        inv[i] = ((1 - s) * inv[i]) / rs.factor + s * inv[i];
      }
    }
  } else if (rs.type === 'yarn') {
    const dimFor = (turns: number) =>
      (d * Math.log(rs.originalMaxPositionEmbeddings / (turns * 2 * Math.PI))) / (2 * Math.log(theta));
    let lo = dimFor(rs.betaFast);
    let hi = dimFor(rs.betaSlow);
    if (rs.truncate) [lo, hi] = [Math.floor(lo), Math.ceil(hi)];
    lo = Math.max(lo, 0);
    hi = Math.min(hi, d - 1);
    if (hi === lo) hi += 0.001;
    for (let i = 0; i < half; i++) {
      const r = Math.min(1, Math.max(0, (i - lo) / (hi - lo)));
      const extrapolated = inv[i];
      const interpolated = inv[i] / rs.factor;
      inv[i] = interpolated * r + extrapolated * (1 - r);
    }
  } else if (rs.type === 'longrope') {
    const f = contextLength > rs.originalMaxPositionEmbeddings ? rs.longFactor : rs.shortFactor;
    for (let i = 0; i < half; i++) inv[i] = 1 / (f[i] * theta ** ((2 * i) / d));
  }
  return inv;
}

/** HF's post-processing scale of cos and sin: yarn's and longrope's attention factor, else 1. */
export function ropeCosSinScale(config: Pick<ModelConfig, 'ropeScaling'>): number {
  const rs = config.ropeScaling;
  return rs.type === 'yarn' || rs.type === 'longrope' ? rs.attentionFactor : 1;
}

/**
 * Rotates one head vector x (headDim) in place at `pos`, rotate_half order: pair (i, i + d/2); cos and sin scaled by
 * `scale` (HF's attention factor; 1 for most scalings).
 */
export function applyRope(
  x: Float64Array,
  offset: number,
  headDim: number,
  pos: number,
  invFreq: Float64Array,
  scale = 1,
): void {
  const half = headDim / 2;
  for (let i = 0; i < half; i++) {
    const a = pos * invFreq[i];
    const c = Math.cos(a) * scale;
    const s = Math.sin(a) * scale;
    const x0 = x[offset + i];
    const x1 = x[offset + i + half];
    x[offset + i] = x0 * c - x1 * s;
    x[offset + i + half] = x1 * c + x0 * s;
  }
}

/**
 * The RoPE of layer `li`: Gemma 3's sliding-window layers rotate with rope_local_base_freq and no scaling (HF's
 * rotary_emb_local), every other layer with rope_theta and rope_scaling.
 */
export function layerRopeConfig<
  C extends Pick<ModelConfig, 'ropeTheta' | 'ropeScaling' | 'localRopeTheta' | 'layerWindows'>,
>(c: C, li: number): C {
  if (c.localRopeTheta === null || c.layerWindows[li] === 0) return c;
  return { ...c, ropeTheta: c.localRopeTheta, ropeScaling: { type: 'none' } };
}

/** Decodes every tensor the forward pass needs (reads each once). */
export function loadReferenceWeights(ckpt: Checkpoint, contextLength?: number): ReferenceWeights {
  const c = ckpt.config;
  const layers: LayerWeights[] = [];
  for (let i = 0; i < c.numLayers; i++) {
    const n = layerTensorNames(i);
    layers.push({
      inputNorm: ckpt.readF32(n.inputNorm),
      q: ckpt.readF32(n.q),
      k: ckpt.readF32(n.k),
      v: ckpt.readF32(n.v),
      qBias: c.attentionBias ? ckpt.readF32(n.qBias) : null,
      kBias: c.attentionBias ? ckpt.readF32(n.kBias) : null,
      vBias: c.attentionBias ? ckpt.readF32(n.vBias) : null,
      qNorm: c.qkNorm ? ckpt.readF32(n.qNorm) : null,
      kNorm: c.qkNorm ? ckpt.readF32(n.kNorm) : null,
      o: ckpt.readF32(n.o),
      postNorm: ckpt.readF32(n.postNorm),
      preFfnNorm: c.sandwichNorms ? ckpt.readF32(n.preFfnNorm) : null,
      postFfnNorm: c.sandwichNorms ? ckpt.readF32(n.postFfnNorm) : null,
      gate: ckpt.readF32(n.gate),
      up: ckpt.readF32(n.up),
      down: ckpt.readF32(n.down),
    });
  }
  const embed = ckpt.readF32(ckpt.embeddingName);
  const lmHead = ckpt.lmHeadName === ckpt.embeddingName ? embed : ckpt.readF32(ckpt.lmHeadName);
  const layerRope = Array.from({ length: c.numLayers }, (_, li) => {
    const lc = layerRopeConfig(c, li);
    return { invFreq: ropeInvFreq(lc, contextLength), scale: ropeCosSinScale(lc) };
  });
  return {
    config: c,
    embed,
    layers,
    finalNorm: ckpt.readF32('model.norm.weight'),
    lmHead,
    invFreq: ropeInvFreq(c, contextLength),
    ropeScale: ropeCosSinScale(c),
    layerRope,
    embedScale: c.scaleEmbeddings ? embeddingScale(c.hiddenSize, ckpt.info(ckpt.embeddingName).dtype) : 1,
    scoreScale: 1 / Math.sqrt(c.queryPreAttnScalar),
  };
}

// ---- small pure helpers ---------------------------------------------------------------------------------------

/** W (rows, cols) @ x (cols,) [+ b] -> out (rows,), f64 sums. */
function matvec(
  w: Float32Array,
  x: Float64Array,
  rows: number,
  cols: number,
  bias: Float32Array | null = null,
): Float64Array {
  const out = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    const base = r * cols;
    for (let i = 0; i < cols; i++) s += w[base + i] * x[i];
    out[r] = bias ? s + bias[r] : s;
  }
  return out;
}

/** x (n) * rsqrt(mean(x²) + eps) * (offset + w) -> (n); offset 1 for Gemma's (1 + w) norms, else 0. */
function rmsnorm(x: Float64Array, w: Float32Array, eps: number, offset = 0): Float64Array {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] * x[i];
  const inv = 1 / Math.sqrt(s / x.length + eps);
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = x[i] * inv * (offset + w[i]);
  return out;
}

/** A norm of the model: rmsnorm with its eps and (1 + w) offset. */
function norm(c: ModelConfig, x: Float64Array, w: Float32Array): Float64Array {
  return rmsnorm(x, w, c.rmsNormEps, c.normUnitOffset ? 1 : 0);
}

/** Every head of x (heads*headDim) RMS-normalized on its own with the shared weight w (headDim), in place. */
function headNorm(c: ModelConfig, x: Float64Array, w: Float32Array): void {
  for (let o = 0; o < x.length; o += c.headDim) x.set(norm(c, x.subarray(o, o + c.headDim), w), o);
}

/** GELU, tanh form (HF's gelu_pytorch_tanh): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
export function geluTanh(x: number): number {
  return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));
}

/** First key position a query at `pos` attends to in a layer of sliding window `window` (0 = full). */
export function windowStart(pos: number, window: number): number {
  return window > 0 ? Math.max(0, pos - window + 1) : 0;
}

/** The scaled attention score of q . k in layer terms: dot * scoreScale, soft-capped (Gemma 2). */
export function attnScore(w: ReferenceWeights, dot: number): number {
  return softcapRef(dot * w.scoreScale, w.config.attnLogitSoftcap ?? 0);
}

/** The embedding of `token` (hidden), times the embedding scale. */
export function embedRow(w: ReferenceWeights, token: number): Float64Array {
  const { hiddenSize: h, vocabSize } = w.config;
  if (!Number.isInteger(token) || token < 0 || token >= vocabSize) {
    throw new RangeError(`token id ${token} outside vocab (${vocabSize})`);
  }
  const x = Float64Array.from(w.embed.subarray(token * h, (token + 1) * h));
  if (w.embedScale !== 1) for (let i = 0; i < h; i++) x[i] *= w.embedScale;
  return x;
}

/**
 * Sees the input x of a linear layer (an importance matrix's statistic, model/imatrix.ts): 'qkv' the attention norm's
 * output, 'o' the attention output, 'gate-up' the MLP norm's output, 'down' the gated activation, 'lm-head' the final
 * norm's output (layer = numLayers).
 */
export type LinearInputHook = (
  point: 'qkv' | 'o' | 'gate-up' | 'down' | 'lm-head',
  layer: number,
  x: Float64Array,
) => void;

/** q, k (roped) and v of one position of layer li: q (heads*headDim), k, v (kvHeads*headDim). */
export function qkv(
  w: ReferenceWeights,
  li: number,
  x: Float64Array,
  pos: number,
  kvF16 = false,
  onInput?: LinearInputHook,
) {
  const c = w.config;
  const l = w.layers[li];
  const rope = w.layerRope[li];
  const h = norm(c, x, l.inputNorm);
  onInput?.('qkv', li, h);
  const qDim = c.numHeads * c.headDim;
  const kvDim = c.numKvHeads * c.headDim;
  const q = matvec(l.q, h, qDim, c.hiddenSize, l.qBias);
  const k = matvec(l.k, h, kvDim, c.hiddenSize, l.kBias);
  const v = matvec(l.v, h, kvDim, c.hiddenSize, l.vBias);
  if (l.qNorm && l.kNorm) {
    headNorm(c, q, l.qNorm);
    headNorm(c, k, l.kNorm);
  }
  for (let j = 0; j < c.numHeads; j++) applyRope(q, j * c.headDim, c.headDim, pos, rope.invFreq, rope.scale);
  // K is rotated without the attention factor, rounded (kvF16) as sift's cache stores it, then scaled: the same
  // value as HF's scaled rotation, with the storage rounding of sift's unscaled keys.
  for (let j = 0; j < c.numKvHeads; j++) applyRope(k, j * c.headDim, c.headDim, pos, rope.invFreq);
  if (kvF16) {
    roundToF16(k);
    roundToF16(v);
  }
  if (rope.scale !== 1) for (let i = 0; i < k.length; i++) k[i] *= rope.scale;
  return { q, k, v };
}

/**
 * The rest of layer li after attention, x updated in place. Llama family: x += o_proj(attn);
 * x += down(silu(gate(h)) * up(h)) with h = RMSNorm(x) * w_post. Gemma (sandwich norms):
 * x += postNorm(o_proj(attn)); x += postFfnNorm(down(gelu_tanh(gate(h)) * up(h))) with h = preFfnNorm(x).
 */
export function attnOutAndMlp(
  w: ReferenceWeights,
  li: number,
  x: Float64Array,
  attn: Float64Array,
  onInput?: LinearInputHook,
): void {
  const c = w.config;
  const l = w.layers[li];
  onInput?.('o', li, attn);
  let o = matvec(l.o, attn, c.hiddenSize, c.numHeads * c.headDim);
  if (c.sandwichNorms) o = norm(c, o, l.postNorm);
  for (let i = 0; i < x.length; i++) x[i] += o[i];
  const h = norm(c, x, c.sandwichNorms ? (l.preFfnNorm as Float32Array) : l.postNorm);
  onInput?.('gate-up', li, h);
  const g = matvec(l.gate, h, c.intermediateSize, c.hiddenSize);
  const u = matvec(l.up, h, c.intermediateSize, c.hiddenSize);
  const gelu = c.hiddenActivation === 'gelu_tanh';
  for (let i = 0; i < g.length; i++) g[i] = (gelu ? geluTanh(g[i]) : g[i] / (1 + Math.exp(-g[i]))) * u[i];
  onInput?.('down', li, g);
  let d = matvec(l.down, g, c.hiddenSize, c.intermediateSize);
  if (c.sandwichNorms) d = norm(c, d, l.postFfnNorm as Float32Array);
  for (let i = 0; i < x.length; i++) x[i] += d[i];
}

/** Row `row` of out (R, vocab): lm_head(finalNorm(x)), soft-capped (Gemma 2). */
export function logitsInto(
  w: ReferenceWeights,
  x: Float64Array,
  out: Float32Array,
  row: number,
  onInput?: LinearInputHook,
): void {
  const c = w.config;
  const h = norm(c, x, w.finalNorm);
  onInput?.('lm-head', c.numLayers, h);
  const lg = matvec(w.lmHead, h, c.vocabSize, c.hiddenSize);
  const cap = c.finalLogitSoftcap ?? 0;
  if (cap > 0) for (let i = 0; i < lg.length; i++) lg[i] = softcapRef(lg[i], cap);
  out.set(lg, row * c.vocabSize);
}
