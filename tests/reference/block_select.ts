/**
 * Reference block selection for block-sparse prefill (MInference-style), plain TS in f64: for every (sequence,
 * query block b) among the chunk's tokens and every KV head in sparse mode (1), the mean of the chunk's queries in
 * block b over the KV head's G query heads; for every causal key block c < b, the mean of its keys, fetched one
 * token at a time through the block table; score = pooled q . pooled k. Kept: block 0 (sink), block b (diagonal), blocks
 * b - localBlocks .. b - 1, and the topBlocks best-scoring other blocks (ties: lower block first), ascending.
 * Hierarchical (groupBlocks G > 0): when there are more than beam = topBlocks + margin full groups of G blocks below
 * candEnd, each is bounded by Quest's bound over the per-channel min / max of its block means (widened by 2^-10 of
 * their magnitude and rounded to f16, as block_group.wgsl stores them) and only the blocks of the beam best groups
 * (ties: lower group first) and of blocks from nG * G on compete for the topBlocks.
 */
import { f16ToF32, f32ToF16 } from '../../util/dtype.js';

export interface BlockSelectRefArgs {
  q: Float32Array; // (T, numHeads, headDim)
  kF: Float32Array; // (numPages, pageSize, numKvHeads, headDim) decoded keys
  blockTable: Uint32Array; // (numSeqs, maxPagesPerSeq)
  tokenSeq: Uint32Array; // (T)
  positions: Uint32Array; // (T)
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  pageSize: number;
  maxPagesPerSeq: number;
  blockSize: number;
  headModes: readonly number[]; // (numKvHeads)
  topBlocks: number;
  localBlocks: number;
  /** Blocks per coarse group (0 / absent: flat) and groups kept beyond topBlocks. */
  groupBlocks?: number;
  margin?: number;
}

export interface QueryBlockRef {
  seq: number;
  block: number; // b
  /** (numKvHeads) pooled scores of key blocks 0..b-1 (empty for non-sparse heads). */
  scores: Float64Array[];
  /** (numKvHeads) kept key blocks ascending (empty for non-sparse heads). */
  lists: number[][];
  /** First non-forced candidate block index past the end: candidates are 1 .. candEnd-1. */
  candEnd: number;
  /** (numKvHeads) hierarchical: the candidate blocks that were scored (null: every candidate). */
  scored: (Set<number> | null)[];
  /** (numKvHeads) hierarchical: each full group's bound and the beam-th largest bound (null when none ranked). */
  groups: ({ bounds: Float64Array; cut: number } | null)[];
}

/** Key `${seq}:${block}` -> the selection of that query block. */
export function blockSelectRef(a: BlockSelectRefArgs): Map<string, QueryBlockRef> {
  const { numHeads, numKvHeads, headDim: HD, blockSize: BS } = a;
  const group = numHeads / numKvHeads;
  const keyAt = (seq: number, j: number, kvh: number) => {
    const page = a.blockTable[seq * a.maxPagesPerSeq + Math.floor(j / a.pageSize)];
    return ((page * a.pageSize + (j % a.pageSize)) * numKvHeads + kvh) * HD;
  };
  const tokensOf = new Map<string, number[]>();
  for (let t = 0; t < a.tokenSeq.length; t++) {
    const key = `${a.tokenSeq[t]}:${Math.floor(a.positions[t] / BS)}`;
    if (!tokensOf.has(key)) tokensOf.set(key, []);
    tokensOf.get(key)?.push(t);
  }
  const out = new Map<string, QueryBlockRef>();
  for (const [key, toks] of tokensOf) {
    const [seq, b] = key.split(':').map(Number);
    const candEnd = b > a.localBlocks + 1 ? b - a.localBlocks : 1;
    const r: QueryBlockRef = { seq, block: b, scores: [], lists: [], candEnd, scored: [], groups: [] };
    const G = a.groupBlocks ?? 0;
    const beam = a.topBlocks + (a.margin ?? 0);
    const nG = G > 0 ? Math.floor(candEnd / G) : 0;
    const ranked = G > 0 && candEnd - 1 > a.topBlocks && nG > beam;
    for (let kvh = 0; kvh < numKvHeads; kvh++) {
      if (a.headModes[kvh] !== 1) {
        r.scores.push(new Float64Array(0));
        r.lists.push([]);
        r.scored.push(null);
        r.groups.push(null);
        continue;
      }
      const qp = new Float64Array(HD);
      for (const t of toks) {
        for (let h = kvh * group; h < (kvh + 1) * group; h++) {
          for (let d = 0; d < HD; d++) qp[d] += a.q[(t * numHeads + h) * HD + d];
        }
      }
      for (let d = 0; d < HD; d++) qp[d] /= toks.length * group;
      const scores = new Float64Array(b);
      const means: Float64Array[] = [];
      for (let c = 0; c < b; c++) {
        const kp = new Float64Array(HD);
        for (let j = c * BS; j < c * BS + BS; j++) {
          const o = keyAt(seq, j, kvh);
          for (let d = 0; d < HD; d++) kp[d] += a.kF[o + d];
        }
        let s = 0;
        for (let d = 0; d < HD; d++) s += qp[d] * (kp[d] / BS);
        scores[c] = s;
        means.push(kp.map((x) => x / BS));
      }
      let cands = Array.from({ length: candEnd - 1 }, (_, i) => i + 1);
      if (ranked) {
        const f16 = (x: number) => f16ToF32(f32ToF16(x));
        const bounds = new Float64Array(nG);
        for (let g = 0; g < nG; g++) {
          for (let d = 0; d < HD; d++) {
            let mn = Number.POSITIVE_INFINITY;
            let mx = Number.NEGATIVE_INFINITY;
            for (let c = g * G; c < g * G + G; c++) {
              mn = Math.min(mn, means[c][d]);
              mx = Math.max(mx, means[c][d]);
            }
            bounds[g] +=
              Math.max(qp[d], 0) * f16(mx + Math.abs(mx) / 1024) + Math.min(qp[d], 0) * f16(mn - Math.abs(mn) / 1024);
          }
        }
        const order = Array.from({ length: nG }, (_, g) => g).sort((x, y) => bounds[y] - bounds[x] || x - y);
        const kept = new Set(order.slice(0, beam));
        cands = cands.filter((c) => c >= nG * G || kept.has(Math.floor(c / G)));
        r.scored.push(new Set(cands));
        r.groups.push({ bounds, cut: bounds[order[beam - 1]] });
      } else {
        r.scored.push(null);
        r.groups.push(null);
      }
      cands.sort((x, y) => scores[y] - scores[x] || x - y);
      const kept = new Set(cands.slice(0, a.topBlocks));
      kept.add(0);
      for (let c = candEnd; c <= b; c++) kept.add(c);
      r.scores.push(scores);
      r.lists.push([...kept].sort((x, y) => x - y));
    }
    out.set(key, r);
  }
  return out;
}
