/**
 * Reference hierarchical page selection: Quest's bound per logical page and query head from the digests, the
 * group's bounds combined (sum or max), a page's score = max over its logical pages holding tokens < len, then
 * page 0 and the newest page plus the best others up to the row's K pages (given, as the kernel gets it: the budget
 * rule of model/attention/budget.ts; K >= P keeps every page), ties to the lower index. Walks the block table page
 * by page; math in f64.
 */
import { type DigestShape, digestOffset } from './page_digest.js';

export interface SelectShape extends DigestShape {
  numHeads: number;
  maxPagesPerSeq: number;
  maxSelected: number;
}

export interface SelectRow {
  blockRow: number;
  position: number;
  /** Pages the row keeps (the budget rule's K). */
  pagesKept: number;
}

/** Scores of pages 0..P-1 of row r (query row index r of q) for KV head kvh. */
export function pageScoresRef(
  q: Float32Array,
  digests: Float32Array,
  blockTable: Uint32Array,
  s: SelectShape,
  r: number,
  row: SelectRow,
  kvh: number,
  combine: 'sum' | 'max' = 'sum',
): Float64Array {
  const len = row.position + 1;
  const P = Math.ceil(len / s.pageSize);
  const group = s.numHeads / s.numKvHeads;
  const lpp = s.pageSize / s.logicalPageSize;
  const scores = new Float64Array(P);
  for (let i = 0; i < P; i++) {
    const phys = blockTable[row.blockRow * s.maxPagesPerSeq + i];
    let best = Number.NEGATIVE_INFINITY;
    for (let l = 0; l < lpp && i * s.pageSize + l * s.logicalPageSize < len; l++) {
      const o = digestOffset(s, phys, l, kvh);
      let sc = combine === 'sum' ? 0 : Number.NEGATIVE_INFINITY;
      for (let g = 0; g < group; g++) {
        const qb = (r * s.numHeads + kvh * group + g) * s.headDim;
        let b = 0;
        for (let d = 0; d < s.headDim; d++) {
          const qd = q[qb + d];
          b += Math.max(qd * digests[o + d], qd * digests[o + s.headDim + d]);
        }
        sc = combine === 'sum' ? sc + b : Math.max(sc, b);
      }
      best = Math.max(best, sc);
    }
    scores[i] = best;
  }
  return scores;
}

/** Pages selected for a row: its K, at most its P pages and the selection row length. */
export function keptCount(s: SelectShape, row: SelectRow): number {
  return Math.min(row.pagesKept, Math.ceil((row.position + 1) / s.pageSize), s.maxSelected);
}

/** The selection for given page scores: forced pages 0 and P-1, then by score (ties: lower index). */
export function topPagesRef(scores: ArrayLike<number>, K: number): number[] {
  const P = scores.length;
  if (K >= P) return Array.from({ length: P }, (_, i) => i);
  const forced = new Set([0, P - 1]);
  const rest = Array.from({ length: P }, (_, i) => i).filter((i) => !forced.has(i));
  rest.sort((a, b) => (scores[b] !== scores[a] ? scores[b] - scores[a] : a - b));
  return [...forced, ...rest.slice(0, K - forced.size)].sort((a, b) => a - b);
}
