/**
 * Reference prefill attention with per-KV-head masks, plain TS in f64, walking the page table one token at a time:
 * query token t (row tokenSeq[t], position pos) of head h attends to keys j <= pos allowed by its KV head's mode:
 *   0 dense: all; 1 block-sparse: key block floor(j / BS) listed for (row, query block floor(pos / BS), h);
 *   2 Lambda: j < sink or j > pos - local;
 * and, with a sliding window w > 0, j > pos - w in every mode. Scores are soft-capped when softcap > 0.
 */
import { softcapRef } from './attention.js';

export interface PrefillAttentionRefArgs {
  q: Float32Array; // (T, numHeads, headDim)
  kF: Float32Array; // (numPages, pageSize, numKvHeads, headDim) decoded keys
  vF: Float32Array; // (numPages, pageSize, numKvHeads, headDim) decoded values
  blockTable: Uint32Array; // (numSeqs, maxPagesPerSeq)
  tokenSeq: Uint32Array; // (T)
  positions: Uint32Array; // (T)
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  pageSize: number;
  maxPagesPerSeq: number;
  scale: number;
  headModes: readonly number[]; // (numKvHeads)
  blockSize: number;
  /** Sparse heads: kept key blocks of (row, query block, head). */
  lists?: (seq: number, block: number, h: number) => readonly number[];
  sink: number;
  local: number;
  /** The layer's sliding window (0 / absent: none). */
  window?: number;
  /** Attention logit soft-cap (0 / absent: none). */
  softcap?: number;
}

/** Whether key j is visible to a query at `pos` under a mode (the block list for sparse heads). */
export function visible(
  mode: number,
  pos: number,
  j: number,
  a: { sink: number; local: number; blockSize: number; window?: number },
  list?: readonly number[],
): boolean {
  if (j > pos) return false;
  if (a.window && j <= pos - a.window) return false;
  if (mode === 2) return j < a.sink || j > pos - a.local;
  if (mode === 1) return list?.includes(Math.floor(j / a.blockSize)) ?? false;
  return true;
}

/** out (T, numHeads, headDim). */
export function prefillAttentionRef(a: PrefillAttentionRefArgs): Float32Array {
  const { numHeads, numKvHeads, headDim: HD } = a;
  const group = numHeads / numKvHeads;
  const T = a.tokenSeq.length;
  const out = new Float32Array(T * numHeads * HD);
  const at = (seq: number, j: number, kvh: number) => {
    const page = a.blockTable[seq * a.maxPagesPerSeq + Math.floor(j / a.pageSize)];
    return ((page * a.pageSize + (j % a.pageSize)) * numKvHeads + kvh) * HD;
  };
  for (let t = 0; t < T; t++) {
    const seq = a.tokenSeq[t];
    const pos = a.positions[t];
    for (let h = 0; h < numHeads; h++) {
      const kvh = Math.floor(h / group);
      const mode = a.headModes[kvh];
      const list = mode === 1 ? a.lists?.(seq, Math.floor(pos / a.blockSize), h) : undefined;
      const qo = (t * numHeads + h) * HD;
      const keys: number[] = [];
      const scores: number[] = [];
      for (let j = 0; j <= pos; j++) {
        if (!visible(mode, pos, j, a, list)) continue;
        const ko = at(seq, j, kvh);
        let dot = 0;
        for (let d = 0; d < HD; d++) dot += a.q[qo + d] * a.kF[ko + d];
        keys.push(j);
        scores.push(softcapRef(dot * a.scale, a.softcap));
      }
      const max = Math.max(...scores);
      let sum = 0;
      const w = scores.map((s) => {
        const e = Math.exp(s - max);
        sum += e;
        return e;
      });
      const acc = new Float64Array(HD);
      keys.forEach((j, i) => {
        const vo = at(seq, j, kvh);
        for (let d = 0; d < HD; d++) acc[d] += w[i] * a.vF[vo + d];
      });
      for (let d = 0; d < HD; d++) out[qo + d] = acc[d] / sum;
    }
  }
  return out;
}
