/**
 * Reference top-k decode attention: for decode row r and query head h, softmax(scale * q . k_j) v_j over the
 * tokens j <= position of the listed pages (block-table columns) of KV head h / group, fetched one token at a time
 * through the block table; math in f64. With every page listed it is dense decode attention. With a sliding window
 * only keys position - window < j count; scores are soft-capped when softcap > 0.
 */
import { softcapRef, windowStartRef } from './attention.js';

export interface SparseRefShape {
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  pageSize: number;
  maxPagesPerSeq: number;
}

export interface SparseRefRow {
  blockRow: number;
  position: number;
}

/**
 * out (numRows, numHeads, headDim). pages(r, kvh) gives the page columns row r attends to with KV head kvh
 * (the newest page must be among them if the row should see its own token).
 */
export function sparseDecodeRef(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  blockTable: Uint32Array,
  rows: SparseRefRow[],
  pages: (r: number, kvh: number) => number[],
  s: SparseRefShape,
  scale: number,
  mods: { window?: number; softcap?: number } = {},
): Float32Array {
  const { numHeads, numKvHeads, headDim, pageSize } = s;
  const group = numHeads / numKvHeads;
  const out = new Float32Array(rows.length * numHeads * headDim);
  rows.forEach((row, r) => {
    for (let h = 0; h < numHeads; h++) {
      const kvh = Math.floor(h / group);
      const qo = (r * numHeads + h) * headDim;
      const offs: number[] = [];
      const j0 = windowStartRef(row.position, mods.window);
      for (const lp of pages(r, kvh)) {
        const phys = blockTable[row.blockRow * s.maxPagesPerSeq + lp];
        for (let o = 0; o < pageSize && lp * pageSize + o <= row.position; o++) {
          if (lp * pageSize + o < j0) continue;
          offs.push(((phys * pageSize + o) * numKvHeads + kvh) * headDim);
        }
      }
      const sc = offs.map((b) => {
        let dot = 0;
        for (let d = 0; d < headDim; d++) dot += q[qo + d] * k[b + d];
        return softcapRef(dot * scale, mods.softcap);
      });
      const mx = Math.max(...sc);
      const w = sc.map((x) => Math.exp(x - mx));
      const sum = w.reduce((a, b) => a + b, 0);
      for (let d = 0; d < headDim; d++) {
        let acc = 0;
        offs.forEach((b, i) => {
          acc += w[i] * v[b + d];
        });
        out[qo + d] = acc / sum;
      }
    }
  });
  return out;
}
