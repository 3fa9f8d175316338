/**
 * Plain-TS reference of the whole forward pass of a Llama / Mistral / Qwen2/3 / Phi-3 / Gemma 2/3 decoder, from an
 * opened checkpoint (layer math, weights and RoPE in tests/reference/forward-layer.ts).
 * Weights are decoded to f32 once; activations and every sum are f64. Semantics follow HF transformers:
 *   x = embed[token]
 *   per layer: h = RMSNorm(x) * w_in;  q, k, v = h W^T (+ b);  RoPE(q, k) in rotate_half order (pairs (i, i + d/2));
 *              causal softmax(q k^T / sqrt(d)) v per head, query head j reading kv head floor(j / (heads/kvHeads));
 *              x += o_proj(attn);  h = RMSNorm(x) * w_post;  x += down(silu(gate(h)) * up(h))
 *   logits = lm_head(RMSNorm(x) * w_final)
 * Qwen3: q and k of each head pass through an RMSNorm of their own (q_norm / k_norm, (headDim)) before RoPE.
 * Gemma 2/3 (checkpoint/gemma.ts): x = embed[token] * sqrt(hidden); norms scale by (1 + w); per layer
 *   x += postNorm(o_proj(attn)); x += postFfnNorm(down(gelu_tanh(gate(h)) * up(h))), h = preFfnNorm(x);
 *   scores q k^T / sqrt(query_pre_attn_scalar), soft-capped c tanh(s / c) (Gemma 2) before the mask; logits
 *   soft-capped likewise; Gemma 3: q/k norms, sliding layers rotate with rope_local_base_freq.
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
import type { ModelConfig } from '../../checkpoint/config.js';
import {
  attnOutAndMlp,
  attnScore,
  embedRow,
  type LinearInputHook,
  loadReferenceWeights,
  logitsInto,
  qkv,
  type ReferenceWeights,
  windowStart,
} from './forward-layer.js';

export {
  applyRope,
  geluTanh,
  layerRopeConfig,
  loadReferenceWeights,
  type ReferenceWeights,
  ropeCosSinScale,
  ropeInvFreq,
  windowStart,
} from './forward-layer.js';

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
  /** Called by referenceForward with every linear layer's input x of every token (the importance matrix's checks). */
  onLinearInput?: LinearInputHook;
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
  const xs = tokenIds.map((t) => embedRow(w, t)); // T x (hidden)
  for (let li = 0; li < c.numLayers; li++) {
    const streamingHeads = new Set(opts.streaming?.heads[li] ?? []);
    const window = c.layerWindows[li];
    const proj = xs.map((x, t) => qkv(w, li, x, t, opts.kvF16, opts.onLinearInput)); // T x {q, k, v}
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
          scores[s] = attnScore(w, dot);
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
    for (let t = 0; t < T; t++) attnOutAndMlp(w, li, xs[t], attn[t], opts.onLinearInput);
  }
  const logits = new Float32Array(T * c.vocabSize);
  for (let t = 0; t < T; t++) logitsInto(w, xs[t], logits, t, opts.onLinearInput);
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
    const logits = new Float32Array(tokens.length * c.vocabSize);
    tokens.forEach((token, n) => {
      const pos = this.position;
      const x = embedRow(w, token);
      w.layers.forEach((_, li) => {
        const { q, k, v } = qkv(w, li, x, pos, this.opts.kvF16);
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
            p[s] = attnScore(w, dot);
            max = Math.max(max, p[s]);
          }
          let sum = 0;
          for (let s = s0; s < keys.length; s++) sum += p[s] = Math.exp(p[s] - max);
          for (let s = s0; s < keys.length; s++) {
            const ps = p[s] / sum;
            for (let i = 0; i < d; i++) attn[j * d + i] += ps * values[s][kvh * d + i];
          }
        }
        attnOutAndMlp(w, li, x, attn);
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
      w.layers.forEach((_, li) => {
        const { q, k, v } = qkv(w, li, x, pos, this.opts.kvF16);
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
            p[s] = attnScore(w, dot);
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
        attnOutAndMlp(w, li, x, attn);
      });
      const row = want.get(t);
      if (row !== undefined) logitsInto(w, x, logits, row);
    }
    return logits;
  }
}
