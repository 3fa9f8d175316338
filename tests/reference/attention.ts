/**
 * Reference paged KV write and paged causal attention, vLLM style: every key and value is fetched one token at a
 * time through the block table; math in f64.
 * Cache layout: (numPages, pageSize, numKvHeads, headDim) f16 bits in a Uint16Array, which is byte for byte the
 * GPU's (numPages, pageSize, numKvHeads, headDim / 2) u32 words of packed pairs (little-endian: element 2j is the
 * low half). The write rounds to f16 (nearest even) as the GPU does, so GPU and reference read the same keys and
 * values and differ only in arithmetic. Block table (numSeqs, maxPagesPerSeq).
 */
import { f16ToF32, f32ToF16 } from '../../util/dtype.js';

export interface PagedShape {
  T: number;
  numKvHeads: number;
  headDim: number;
  pageSize: number;
  maxPagesPerSeq: number;
}

/** Index of element 0 of (position j of block-table row seq, KV head kvh) in a cache. */
export function cacheIndex(blockTable: Uint32Array, s: PagedShape, seq: number, j: number, kvh: number): number {
  const page = blockTable[seq * s.maxPagesPerSeq + Math.floor(j / s.pageSize)];
  return ((page * s.pageSize + (j % s.pageSize)) * s.numKvHeads + kvh) * s.headDim;
}

/** Returns copies of kCache / vCache (f16 bits) with the T new tokens' k, v (T, numKvHeads, headDim) f32 written in. */
export function kvWriteRef(
  k: Float32Array,
  v: Float32Array,
  kCache: Uint16Array,
  vCache: Uint16Array,
  blockTable: Uint32Array,
  tokenSeq: Uint32Array,
  positions: Uint32Array,
  s: PagedShape,
): { kCache: Uint16Array; vCache: Uint16Array } {
  const kc = kCache.slice();
  const vc = vCache.slice();
  for (let t = 0; t < s.T; t++) {
    for (let h = 0; h < s.numKvHeads; h++) {
      const dst = cacheIndex(blockTable, s, tokenSeq[t], positions[t], h);
      const src = (t * s.numKvHeads + h) * s.headDim;
      for (let d = 0; d < s.headDim; d++) {
        kc[dst + d] = f32ToF16(k[src + d]);
        vc[dst + d] = f32ToF16(v[src + d]);
      }
    }
  }
  return { kCache: kc, vCache: vc };
}

export interface AttentionRefArgs extends PagedShape {
  q: Float32Array; // (T, numHeads, headDim)
  kCache: Uint16Array; // f16 bits
  vCache: Uint16Array; // f16 bits
  blockTable: Uint32Array;
  tokenSeq: Uint32Array;
  positions: Uint32Array;
  numHeads: number;
  scale: number;
  /** Sliding window: keys positions[t] - window < j only (0 / absent: none). */
  window?: number;
  /** Logit soft-cap of the scaled scores (0 / absent: none). */
  softcap?: number;
}

/** Gemma 2's attention logit soft-cap: cap * tanh(s / cap); cap 0 leaves s. */
export function softcapRef(s: number, cap = 0): number {
  return cap > 0 ? cap * Math.tanh(s / cap) : s;
}

/** First key a query at `pos` attends to under a sliding window (0 = none). */
export function windowStartRef(pos: number, window = 0): number {
  return window > 0 ? Math.max(0, pos - window + 1) : 0;
}

/**
 * out (T, numHeads, headDim): softmax(softcap(scale * q . k_j)) over j = windowStart..positions[t] of the token's
 * sequence.
 */
export function attentionRef(a: AttentionRefArgs): Float32Array {
  const { T, numHeads, numKvHeads, headDim } = a;
  const group = numHeads / numKvHeads;
  const out = new Float32Array(T * numHeads * headDim);
  for (let t = 0; t < T; t++) {
    const seq = a.tokenSeq[t];
    const n = a.positions[t] + 1;
    const j0 = windowStartRef(a.positions[t], a.window);
    for (let h = 0; h < numHeads; h++) {
      const kvh = Math.floor(h / group);
      const qo = (t * numHeads + h) * headDim;
      const scores = new Float64Array(n);
      let max = Number.NEGATIVE_INFINITY;
      for (let j = j0; j < n; j++) {
        const ko = cacheIndex(a.blockTable, a, seq, j, kvh);
        let dot = 0;
        for (let d = 0; d < headDim; d++) dot += a.q[qo + d] * f16ToF32(a.kCache[ko + d]);
        scores[j] = softcapRef(dot * a.scale, a.softcap);
        if (scores[j] > max) max = scores[j];
      }
      let sum = 0;
      for (let j = j0; j < n; j++) sum += scores[j] = Math.exp(scores[j] - max);
      const acc = new Float64Array(headDim);
      for (let j = j0; j < n; j++) {
        const vo = cacheIndex(a.blockTable, a, seq, j, kvh);
        for (let d = 0; d < headDim; d++) acc[d] += scores[j] * f16ToF32(a.vCache[vo + d]);
      }
      for (let d = 0; d < headDim; d++) out[qo + d] = acc[d] / sum;
    }
  }
  return out;
}
