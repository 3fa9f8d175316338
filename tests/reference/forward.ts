/**
 * Plain-TS reference of the whole forward pass of a Llama / Mistral / Qwen2 decoder, from an opened checkpoint.
 * Weights are decoded to f32 once; activations and every sum are f64. Semantics follow HF transformers:
 *   x = embed[token]
 *   per layer: h = RMSNorm(x) * w_in;  q, k, v = h W^T (+ b);  RoPE(q, k) in rotate_half order (pairs (i, i + d/2));
 *              causal softmax(q k^T / sqrt(d)) v per head, query head j reading kv head floor(j / (heads/kvHeads));
 *              x += o_proj(attn);  h = RMSNorm(x) * w_post;  x += down(silu(gate(h)) * up(h))
 *   logits = lm_head(RMSNorm(x) * w_final)
 * Qwen3: q and k of each head pass through an RMSNorm of their own (q_norm / k_norm, (headDim)) before RoPE.
 * Sliding window (Mistral, Phi-3, Qwen2/3 layers past max_window_layers; config.layerWindows): a layer with window
 * w > 0 masks keys s <= t - w, so a query attends to at most w keys counting its own.
 * Three code paths share the small helpers:
 * `referenceForward` runs a whole sequence layer by layer with an explicit causal mask; `ReferenceModel` runs token
 * by token against its own KV cache; `PagedReferenceModel` runs batches of several sequences over a shared paged KV
 * cache through block tables (the CPU executor of the engine-core tests, tests/helpers/cpu-executor.ts). Tests hold
 * them equal.
 * Option `kvF16`: keys (after RoPE) and values are rounded to f16 (nearest even) before attention reads them, as
 * sift's f16 KV cache stores them; the rest stays f64. Tests of the GPU forward pass and the CPU executor use it.
 */
import type { Checkpoint } from '../../checkpoint/checkpoint.js';
import { layerTensorNames } from '../../checkpoint/checkpoint.js';
import type { ModelConfig } from '../../checkpoint/config.js';
import { f16ToF32, f32ToF16 } from '../../util/dtype.js';

export interface ReferenceOptions {
  /**
   * The served context length that fixes dynamic and longrope scaling (as the GPU forward pass fixes them for its
   * block table's reach); default the model's max_position_embeddings.
   */
  contextLength?: number;
  /** Round K (after RoPE) and V to f16 as the GPU's KV cache stores them. Default false (f64 K/V). */
  kvF16?: boolean;
  /**
   * Streaming heads (DuoAttention / StreamingLLM): per layer the KV head ids (original order) that attend only to
   * keys s < sink or t - local < s <= t. Applies to referenceForward.
   */
  streaming?: { heads: readonly (readonly number[])[]; sink: number; local: number };
  /**
   * Called by referenceForward with each query row's attention probabilities: layer, query head, query position t,
   * and p (T; zero where masked). For checks of attention statistics (calibration's outside-window mass).
   */
  onAttention?: (layer: number, head: number, t: number, p: Float64Array) => void;
}

/** Rounds every element to the nearest f16 value, in place. */
function roundToF16(x: Float64Array): void {
  for (let i = 0; i < x.length; i++) x[i] = f16ToF32(f32ToF16(x[i]));
}

interface LayerWeights {
  inputNorm: Float32Array; // (hidden)
  q: Float32Array; // (heads*headDim, hidden)
  k: Float32Array; // (kvHeads*headDim, hidden)
  v: Float32Array; // (kvHeads*headDim, hidden)
  qBias: Float32Array | null; // (heads*headDim)
  kBias: Float32Array | null; // (kvHeads*headDim)
  vBias: Float32Array | null; // (kvHeads*headDim)
  qNorm: Float32Array | null; // (headDim) Qwen3
  kNorm: Float32Array | null; // (headDim) Qwen3
  o: Float32Array; // (hidden, heads*headDim)
  postNorm: Float32Array; // (hidden)
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
      gate: ckpt.readF32(n.gate),
      up: ckpt.readF32(n.up),
      down: ckpt.readF32(n.down),
    });
  }
  const embed = ckpt.readF32(ckpt.embeddingName);
  const lmHead = ckpt.lmHeadName === ckpt.embeddingName ? embed : ckpt.readF32(ckpt.lmHeadName);
  return {
    config: c,
    embed,
    layers,
    finalNorm: ckpt.readF32('model.norm.weight'),
    lmHead,
    invFreq: ropeInvFreq(c, contextLength),
    ropeScale: ropeCosSinScale(c),
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

/** x (n) * rsqrt(mean(x²) + eps) * w -> (n). */
function rmsnorm(x: Float64Array, w: Float32Array, eps: number): Float64Array {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] * x[i];
  const inv = 1 / Math.sqrt(s / x.length + eps);
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = x[i] * inv * w[i];
  return out;
}

/** Every head of x (heads*headDim) RMS-normalized on its own with the shared weight w (headDim), in place. */
function headNorm(x: Float64Array, headDim: number, w: Float32Array, eps: number): void {
  for (let o = 0; o < x.length; o += headDim) x.set(rmsnorm(x.subarray(o, o + headDim), w, eps), o);
}

/** First key position a query at `pos` attends to in a layer of sliding window `window` (0 = full). */
export function windowStart(pos: number, window: number): number {
  return window > 0 ? Math.max(0, pos - window + 1) : 0;
}

function embedRow(w: ReferenceWeights, token: number): Float64Array {
  const { hiddenSize: h, vocabSize } = w.config;
  if (!Number.isInteger(token) || token < 0 || token >= vocabSize) {
    throw new RangeError(`token id ${token} outside vocab (${vocabSize})`);
  }
  return Float64Array.from(w.embed.subarray(token * h, (token + 1) * h));
}

/** q, k (roped) and v of one position: q (heads*headDim), k, v (kvHeads*headDim). */
function qkv(w: ReferenceWeights, l: LayerWeights, x: Float64Array, pos: number, kvF16 = false) {
  const c = w.config;
  const h = rmsnorm(x, l.inputNorm, c.rmsNormEps);
  const qDim = c.numHeads * c.headDim;
  const kvDim = c.numKvHeads * c.headDim;
  const q = matvec(l.q, h, qDim, c.hiddenSize, l.qBias);
  const k = matvec(l.k, h, kvDim, c.hiddenSize, l.kBias);
  const v = matvec(l.v, h, kvDim, c.hiddenSize, l.vBias);
  if (l.qNorm && l.kNorm) {
    headNorm(q, c.headDim, l.qNorm, c.rmsNormEps);
    headNorm(k, c.headDim, l.kNorm, c.rmsNormEps);
  }
  for (let j = 0; j < c.numHeads; j++) applyRope(q, j * c.headDim, c.headDim, pos, w.invFreq, w.ropeScale);
  // K is rotated without the attention factor, rounded (kvF16) as sift's cache stores it, then scaled: the same
  // value as HF's scaled rotation, with the storage rounding of sift's unscaled keys.
  for (let j = 0; j < c.numKvHeads; j++) applyRope(k, j * c.headDim, c.headDim, pos, w.invFreq);
  if (kvF16) {
    roundToF16(k);
    roundToF16(v);
  }
  if (w.ropeScale !== 1) for (let i = 0; i < k.length; i++) k[i] *= w.ropeScale;
  return { q, k, v };
}

/** x += o_proj(attn);  x += down(silu(gate(h)) * up(h)) with h = RMSNorm(x). Updates x in place. */
function attnOutAndMlp(w: ReferenceWeights, l: LayerWeights, x: Float64Array, attn: Float64Array): void {
  const c = w.config;
  const o = matvec(l.o, attn, c.hiddenSize, c.numHeads * c.headDim);
  for (let i = 0; i < x.length; i++) x[i] += o[i];
  const h = rmsnorm(x, l.postNorm, c.rmsNormEps);
  const g = matvec(l.gate, h, c.intermediateSize, c.hiddenSize);
  const u = matvec(l.up, h, c.intermediateSize, c.hiddenSize);
  for (let i = 0; i < g.length; i++) g[i] = (g[i] / (1 + Math.exp(-g[i]))) * u[i];
  const d = matvec(l.down, g, c.hiddenSize, c.intermediateSize);
  for (let i = 0; i < x.length; i++) x[i] += d[i];
}

function logitsInto(w: ReferenceWeights, x: Float64Array, out: Float32Array, row: number): void {
  const c = w.config;
  const h = rmsnorm(x, w.finalNorm, c.rmsNormEps);
  const lg = matvec(w.lmHead, h, c.vocabSize, c.hiddenSize);
  out.set(lg, row * c.vocabSize);
}

// ---- whole sequence ------------------------------------------------------------------------------------------

/** Logits (T, vocab) of `tokenIds` at positions 0..T-1, layer by layer over the whole sequence, causal mask. */
export function referenceForward(
  ckpt: Checkpoint | ReferenceWeights,
  tokenIds: readonly number[],
  opts: ReferenceOptions = {},
): Float32Array {
  const w = 'layers' in ckpt ? ckpt : loadReferenceWeights(ckpt, opts.contextLength);
  const c = w.config;
  const T = tokenIds.length;
  const d = c.headDim;
  const group = c.numHeads / c.numKvHeads;
  const scale = 1 / Math.sqrt(d);
  const xs = tokenIds.map((t) => embedRow(w, t)); // T x (hidden)
  for (const [li, l] of w.layers.entries()) {
    const streamingHeads = new Set(opts.streaming?.heads[li] ?? []);
    const window = c.layerWindows[li];
    const proj = xs.map((x, t) => qkv(w, l, x, t, opts.kvF16)); // T x {q, k, v}
    const attn = xs.map(() => new Float64Array(c.numHeads * d)); // T x (heads*headDim)
    const scores = new Float64Array(T); // (T) one query row
    for (let j = 0; j < c.numHeads; j++) {
      const kvh = Math.floor(j / group);
      const streams = streamingHeads.has(kvh);
      const sink = opts.streaming?.sink ?? 0;
      const local = opts.streaming?.local ?? 0;
      for (let t = 0; t < T; t++) {
        let max = Number.NEGATIVE_INFINITY;
        for (let s = 0; s < T; s++) {
          if (s > t || s < windowStart(t, window) || (streams && s >= sink && s <= t - local)) {
            // causal mask, the layer's sliding window, and the sink + local window of streaming heads
            scores[s] = Number.NEGATIVE_INFINITY;
            continue;
          }
          let dot = 0;
          for (let i = 0; i < d; i++) dot += proj[t].q[j * d + i] * proj[s].k[kvh * d + i];
          scores[s] = dot * scale;
          if (scores[s] > max) max = scores[s];
        }
        let sum = 0;
        for (let s = 0; s < T; s++) {
          scores[s] = Math.exp(scores[s] - max); // exp(-inf) = 0
          sum += scores[s];
        }
        const out = attn[t];
        if (opts.onAttention)
          opts.onAttention(
            li,
            j,
            t,
            scores.map((e) => e / sum),
          );
        for (let s = 0; s < T; s++) {
          const p = scores[s] / sum;
          if (p === 0) continue;
          for (let i = 0; i < d; i++) out[j * d + i] += p * proj[s].v[kvh * d + i];
        }
      }
    }
    for (let t = 0; t < T; t++) attnOutAndMlp(w, l, xs[t], attn[t]);
  }
  const logits = new Float32Array(T * c.vocabSize);
  for (let t = 0; t < T; t++) logitsInto(w, xs[t], logits, t);
  return logits;
}

// ---- incremental (decode) ------------------------------------------------------------------------------------

/**
 * A reference model with its own KV cache: each `forward` call appends its tokens after everything seen so far
 * and returns their logits (n, vocab), one token at a time.
 */
export class ReferenceModel {
  readonly weights: ReferenceWeights;
  /** Per layer, per position: k and v (kvHeads*headDim), already roped. */
  private kCache: Float64Array[][];
  private vCache: Float64Array[][];

  constructor(
    source: Checkpoint | ReferenceWeights,
    private readonly opts: ReferenceOptions = {},
  ) {
    this.weights = 'layers' in source ? source : loadReferenceWeights(source, opts.contextLength);
    this.kCache = this.weights.layers.map(() => []);
    this.vCache = this.weights.layers.map(() => []);
  }

  get config(): ModelConfig {
    return this.weights.config;
  }

  /** Tokens in the KV cache (the position the next token takes). */
  get position(): number {
    return this.kCache[0]?.length ?? 0;
  }

  reset(): void {
    this.kCache = this.weights.layers.map(() => []);
    this.vCache = this.weights.layers.map(() => []);
  }

  forward(tokens: readonly number[]): Float32Array {
    const w = this.weights;
    const c = w.config;
    const d = c.headDim;
    const group = c.numHeads / c.numKvHeads;
    const scale = 1 / Math.sqrt(d);
    const logits = new Float32Array(tokens.length * c.vocabSize);
    tokens.forEach((token, n) => {
      const pos = this.position;
      const x = embedRow(w, token);
      w.layers.forEach((l, li) => {
        const { q, k, v } = qkv(w, l, x, pos, this.opts.kvF16);
        const keys = this.kCache[li];
        const values = this.vCache[li];
        keys.push(k);
        values.push(v);
        const attn = new Float64Array(c.numHeads * d); // (heads*headDim)
        const p = new Float64Array(keys.length); // (pos+1)
        const s0 = windowStart(pos, c.layerWindows[li]);
        for (let j = 0; j < c.numHeads; j++) {
          const kvh = Math.floor(j / group);
          let max = Number.NEGATIVE_INFINITY;
          for (let s = s0; s < keys.length; s++) {
            let dot = 0;
            for (let i = 0; i < d; i++) dot += q[j * d + i] * keys[s][kvh * d + i];
            p[s] = dot * scale;
            max = Math.max(max, p[s]);
          }
          let sum = 0;
          for (let s = s0; s < keys.length; s++) sum += p[s] = Math.exp(p[s] - max);
          for (let s = s0; s < keys.length; s++) {
            const ps = p[s] / sum;
            for (let i = 0; i < d; i++) attn[j * d + i] += ps * values[s][kvh * d + i];
          }
        }
        attnOutAndMlp(w, l, x, attn);
      });
      logitsInto(w, x, logits, n);
    });
    return logits;
  }
}

// ---- paged (a batch of sequences over a shared page pool) ---------------------------------------------------

/**
 * A reference model over a paged KV cache, as the engine sees one: K/V live in `numPages` physical pages of
 * `pageSize` slots shared by every sequence, and each call runs a batch of new tokens of several sequences, each
 * token reading and writing its sequence's positions through that sequence's block table. Tokens run one at a time
 * in batch order, each written before it attends (positions 0..pos), so a sequence's new tokens see its earlier
 * ones. Reading a slot no token has written throws: a block table that points at the wrong page, or a prefix hit on
 * a page nobody filled, fails loudly instead of attending to garbage. The arithmetic is ReferenceModel's, in the
 * same order, so one sequence run here equals it bit for bit.
 */
export class PagedReferenceModel {
  readonly weights: ReferenceWeights;
  /** Per layer, per flat slot (page * pageSize + offset): k and v (kvHeads*headDim), already roped. */
  private readonly kCache: (Float64Array | undefined)[][];
  private readonly vCache: (Float64Array | undefined)[][];

  constructor(
    source: Checkpoint | ReferenceWeights,
    readonly numPages: number,
    readonly pageSize: number,
    private readonly opts: ReferenceOptions = {},
  ) {
    this.weights = 'layers' in source ? source : loadReferenceWeights(source, opts.contextLength);
    const slots = numPages * pageSize;
    this.kCache = this.weights.layers.map(() => new Array<Float64Array | undefined>(slots));
    this.vCache = this.weights.layers.map(() => new Array<Float64Array | undefined>(slots));
  }

  get config(): ModelConfig {
    return this.weights.config;
  }

  /**
   * Runs `tokens` (T) at `positions` (T) of the sequences whose block tables are `tables[tokenSeq[t]]`; returns the
   * logits (R, vocab) of the tokens listed in `logitRows`, in order.
   */
  forward(
    tokens: ArrayLike<number>,
    positions: ArrayLike<number>,
    tokenSeq: ArrayLike<number>,
    tables: readonly ArrayLike<number>[],
    logitRows: ArrayLike<number>,
  ): Float32Array {
    const w = this.weights;
    const c = w.config;
    const d = c.headDim;
    const ps = this.pageSize;
    const group = c.numHeads / c.numKvHeads;
    const scale = 1 / Math.sqrt(d);
    const want = new Map<number, number>();
    for (let i = 0; i < logitRows.length; i++) want.set(logitRows[i], i);
    const logits = new Float32Array(logitRows.length * c.vocabSize);
    const slotOf = (table: ArrayLike<number>, pos: number): number => {
      const lp = Math.floor(pos / ps);
      if (lp >= table.length) throw new RangeError(`position ${pos} is past the block table (${table.length} pages)`);
      const page = table[lp];
      if (!Number.isInteger(page) || page < 0 || page >= this.numPages) throw new RangeError(`page ${page}`);
      return page * ps + (pos % ps);
    };
    for (let t = 0; t < tokens.length; t++) {
      const table = tables[tokenSeq[t]];
      const pos = positions[t];
      const x = embedRow(w, tokens[t]);
      w.layers.forEach((l, li) => {
        const { q, k, v } = qkv(w, l, x, pos, this.opts.kvF16);
        const keys = this.kCache[li];
        const values = this.vCache[li];
        const own = slotOf(table, pos);
        keys[own] = k;
        values[own] = v;
        const s0 = windowStart(pos, c.layerWindows[li]);
        const slots = Array.from({ length: pos + 1 }, (_, s) => (s < s0 ? -1 : slotOf(table, s)));
        for (let s = s0; s <= pos; s++) {
          if (!keys[slots[s]]) throw new RangeError(`token ${t} (position ${pos}) reads position ${s}, never written`);
        }
        const attn = new Float64Array(c.numHeads * d); // (heads*headDim)
        const p = new Float64Array(pos + 1); // (pos+1)
        for (let j = 0; j < c.numHeads; j++) {
          const kvh = Math.floor(j / group);
          let max = Number.NEGATIVE_INFINITY;
          for (let s = s0; s <= pos; s++) {
            const key = keys[slots[s]] as Float64Array;
            let dot = 0;
            for (let i = 0; i < d; i++) dot += q[j * d + i] * key[kvh * d + i];
            p[s] = dot * scale;
            max = Math.max(max, p[s]);
          }
          let sum = 0;
          for (let s = s0; s <= pos; s++) sum += p[s] = Math.exp(p[s] - max);
          for (let s = s0; s <= pos; s++) {
            const value = values[slots[s]] as Float64Array;
            const prob = p[s] / sum;
            for (let i = 0; i < d; i++) attn[j * d + i] += prob * value[kvh * d + i];
          }
        }
        attnOutAndMlp(w, l, x, attn);
      });
      const row = want.get(t);
      if (row !== undefined) logitsInto(w, x, logits, row);
    }
    return logits;
  }
}
