/**
 * Reference hierarchical page selection: Quest's bound per logical page and query head from the digests, the
 * group's bounds combined (sum or max), a page's score = max over its logical pages holding tokens < len, then
 * page 0 and the newest page plus the best others up to the row's K pages (given, as the kernel gets it: the budget
 * rule of model/attention/budget.ts; K >= P keeps every page), ties to the lower index. Walks the block table page
 * by page; math in f64.
 * A layer with a sliding window w: the candidates are the pages holding the window's tokens (from page
 * firstWindowPage), scored over their logical pages that hold window tokens; the newest page is forced, the sink
 * page only while the window holds token 0.
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

/** First page holding a token of the window of a query at `position` (0 without a window). */
export function firstWindowPage(position: number, pageSize: number, window = 0): number {
  return window > 0 ? Math.floor(Math.max(0, position + 1 - window) / pageSize) : 0;
}

/** Scores of pages 0..P-1 of row r (query row index r of q) for KV head kvh (-Infinity before the window). */
export function pageScoresRef(
  q: Float32Array,
  digests: Float32Array,
  blockTable: Uint32Array,
  s: SelectShape,
  r: number,
  row: SelectRow,
  kvh: number,
  combine: 'sum' | 'max' = 'sum',
  window = 0,
): Float64Array {
  const len = row.position + 1;
  const winStart = window > 0 ? Math.max(0, len - window) : 0;
  const P = Math.ceil(len / s.pageSize);
  const group = s.numHeads / s.numKvHeads;
  const lpp = s.pageSize / s.logicalPageSize;
  const scores = new Float64Array(P);
  for (let i = 0; i < P; i++) {
    const phys = blockTable[row.blockRow * s.maxPagesPerSeq + i];
    let best = Number.NEGATIVE_INFINITY;
    for (let l = 0; l < lpp && i * s.pageSize + l * s.logicalPageSize < len; l++) {
      if (i * s.pageSize + (l + 1) * s.logicalPageSize <= winStart) continue; // wholly before the window
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

/** Pages selected for a row: its K, at most its P pages (the window's, with one) and the selection row length. */
export function keptCount(s: SelectShape, row: SelectRow, window = 0): number {
  const P = Math.ceil((row.position + 1) / s.pageSize);
  return Math.min(row.pagesKept, P - firstWindowPage(row.position, s.pageSize, window), s.maxSelected);
}

/**
 * The selection for given page scores of pages first..P-1 (first: firstWindowPage, 0 without a window): forced
 * the newest page P-1 and, while the window holds token 0 (`sink`; always without a window), the sink page 0; then
 * by score (ties: lower index).
 */
export function topPagesRef(scores: ArrayLike<number>, K: number, first = 0, sink = true): number[] {
  const P = scores.length;
  const all = Array.from({ length: P - first }, (_, i) => first + i);
  if (K >= all.length) return all;
  const forced = new Set(sink ? [0, P - 1] : [P - 1]);
  const rest = all.filter((i) => !forced.has(i));
  rest.sort((a, b) => (scores[b] !== scores[a] ? scores[b] - scores[a] : a - b));
  return [...forced, ...rest.slice(0, K - forced.size)].sort((a, b) => a - b);
}
