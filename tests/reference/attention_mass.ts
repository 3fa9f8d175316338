/**
 * Reference attention mass outside the streaming window: dense causal softmax over the paged f16 cache, walking the
 * block table token by token, f64. mass (T, numHeads): sum of p_j over j in [sink, pos + 1 - local), p the softmax
 * the layer computes (only keys in its sliding window, scores soft-capped).
 */
import { f16ToF32 } from '../../util/dtype.js';
import { cacheIndex, type PagedShape, softcapRef, windowStartRef } from './attention.js';

export function attentionMassRef(
  a: PagedShape & {
    q: Float32Array; // (T, numHeads, headDim)
    kCache: Uint16Array;
    blockTable: Uint32Array;
    tokenSeq: Uint32Array;
    positions: Uint32Array;
    numHeads: number;
    scale: number;
    sinkTokens: number;
    localTokens: number;
    window?: number;
    softcap?: number;
  },
): Float32Array {
  const group = a.numHeads / a.numKvHeads;
  const out = new Float32Array(a.T * a.numHeads);
  for (let t = 0; t < a.T; t++) {
    const pos = a.positions[t];
    for (let h = 0; h < a.numHeads; h++) {
      const qo = (t * a.numHeads + h) * a.headDim;
      const s = new Float64Array(pos + 1);
      let max = Number.NEGATIVE_INFINITY;
      const j0 = windowStartRef(pos, a.window);
      for (let j = j0; j <= pos; j++) {
        const ko = cacheIndex(a.blockTable, a, a.tokenSeq[t], j, Math.floor(h / group));
        let dot = 0;
        for (let d = 0; d < a.headDim; d++) dot += a.q[qo + d] * f16ToF32(a.kCache[ko + d]);
        s[j] = softcapRef(dot * a.scale, a.softcap);
        max = Math.max(max, s[j]);
      }
      let total = 0;
      let outside = 0;
      for (let j = j0; j <= pos; j++) {
        const e = Math.exp(s[j] - max);
        total += e;
        if (j >= a.sinkTokens && j + a.localTokens <= pos) outside += e;
      }
      out[t * a.numHeads + h] = outside / total;
    }
  }
  return out;
}
