/**
 * Reference block selection for block-sparse prefill (MInference-style), plain TS in f64: for every (sequence,
 * query block b) among the chunk's tokens and every KV head in sparse mode (1), the mean of the chunk's queries in
 * block b over the KV head's G query heads; for every causal key block c < b, the mean of its keys, fetched one
 * token at a time through the block table; score = pooled q . pooled k. Kept: block 0 (sink), block b (diagonal), blocks
 * b - localBlocks .. b - 1, and the topBlocks best-scoring other blocks (ties: lower block first), ascending.
 */
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
    const r: QueryBlockRef = { seq, block: b, scores: [], lists: [], candEnd };
    for (let kvh = 0; kvh < numKvHeads; kvh++) {
      if (a.headModes[kvh] !== 1) {
        r.scores.push(new Float64Array(0));
        r.lists.push([]);
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
      for (let c = 0; c < b; c++) {
        const kp = new Float64Array(HD);
        for (let j = c * BS; j < c * BS + BS; j++) {
          const o = keyAt(seq, j, kvh);
          for (let d = 0; d < HD; d++) kp[d] += a.kF[o + d];
        }
        let s = 0;
        for (let d = 0; d < HD; d++) s += qp[d] * (kp[d] / BS);
        scores[c] = s;
      }
      const cands = Array.from({ length: candEnd - 1 }, (_, i) => i + 1);
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
