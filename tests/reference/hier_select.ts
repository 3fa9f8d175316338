/**
 * Reference of the digest hierarchy (shaders/digest_levels.wgsl) and of hierarchical page selection
 * (shaders/hier_select.ts): coarse digests as per-channel min / max over the children holding tokens < len, and the
 * descent level by level (top blocks, their children, pages), each level keeping the best K + margin blocks by
 * Quest's bound (sink and newest blocks forced; ties to the lower block), the page level the row's K. Walks the
 * block table page by page; math in f64. `certifiedRef` says when the descent must equal exhaustive scoring.
 * A layer with a sliding window w: the candidates are the pages from f = floor(max(0, len - w) / pageSize) on
 * (blocks wholly before page f are never candidates), K is clamped to P - f, the sink is forced only while the
 * window holds token 0; the page scores passed in are the window's (pageScoresRef with the window).
 */
import { type DigestShape, digestOffset } from './page_digest.js';
import { keptCount, type SelectRow, type SelectShape } from './page_select.js';

export interface HierarchyRef {
  fan1: number; // pages per level-1 block
  fan2: number; // level-1 blocks per level-2 block
  margin: number; // candidates kept beyond K on the coarse levels
}

/** Coarse digests of one sequence: level1[b] / level2[b] each (numKvHeads, 2, headDim) f32 (min, max). */
export interface SeqLevels {
  level1: Float32Array[];
  level2: Float32Array[];
}

/** The coarse digests of a sequence of `len` tokens in row `blockRow` of the block table. */
export function seqLevelsRef(
  digests: Float32Array,
  s: DigestShape,
  blockTable: Uint32Array,
  maxPagesPerSeq: number,
  blockRow: number,
  len: number,
  h: HierarchyRef,
): SeqLevels {
  const { numKvHeads, headDim, pageSize, logicalPageSize } = s;
  const lpp = pageSize / logicalPageSize;
  const P = Math.ceil(len / pageSize);
  const n1 = Math.ceil(P / h.fan1);
  const n2 = Math.ceil(n1 / h.fan2);
  const combine = (sources: { arr: Float32Array; off: (kvh: number) => number }[]): Float32Array => {
    const out = new Float32Array(numKvHeads * 2 * headDim);
    for (let kvh = 0; kvh < numKvHeads; kvh++) {
      for (let d = 0; d < headDim; d++) {
        let mn = Number.POSITIVE_INFINITY;
        let mx = Number.NEGATIVE_INFINITY;
        for (const src of sources) {
          const o = src.off(kvh);
          mn = Math.min(mn, src.arr[o + d]);
          mx = Math.max(mx, src.arr[o + headDim + d]);
        }
        out[kvh * 2 * headDim + d] = mn;
        out[kvh * 2 * headDim + headDim + d] = mx;
      }
    }
    return out;
  };
  const level1: Float32Array[] = [];
  for (let b = 0; b < n1; b++) {
    const sources: { arr: Float32Array; off: (kvh: number) => number }[] = [];
    for (let i = b * h.fan1; i < Math.min(P, (b + 1) * h.fan1); i++) {
      const phys = blockTable[blockRow * maxPagesPerSeq + i];
      for (let l = 0; l < lpp && i * pageSize + l * logicalPageSize < len; l++) {
        sources.push({ arr: digests, off: (kvh) => digestOffset(s, phys, l, kvh) });
      }
    }
    level1.push(combine(sources));
  }
  const level2: Float32Array[] = [];
  for (let b = 0; b < n2; b++) {
    const sources = level1
      .slice(b * h.fan2, (b + 1) * h.fan2)
      .map((arr) => ({ arr, off: (kvh: number) => kvh * 2 * headDim }));
    level2.push(combine(sources));
  }
  return { level1, level2 };
}

/** Quest's bound of query row r's group (KV head kvh) on the digest at `off` of `arr`, combined by sum or max. */
export function boundRef(
  q: Float32Array,
  arr: Float32Array,
  off: number,
  s: SelectShape,
  r: number,
  kvh: number,
  combine: 'sum' | 'max',
): number {
  const group = s.numHeads / s.numKvHeads;
  let sc = combine === 'sum' ? 0 : Number.NEGATIVE_INFINITY;
  for (let g = 0; g < group; g++) {
    const qb = (r * s.numHeads + kvh * group + g) * s.headDim;
    let b = 0;
    for (let d = 0; d < s.headDim; d++) {
      const qd = q[qb + d];
      b += Math.max(qd * arr[off + d], qd * arr[off + s.headDim + d]);
    }
    sc = combine === 'sum' ? sc + b : Math.max(sc, b);
  }
  return sc;
}

/** The best `C` of `items` (ascending block ids) by score, forced ones first; ascending. */
function keepBest(items: number[], score: (b: number) => number, forced: (b: number) => boolean, C: number): number[] {
  const keyed = items.map((b, i) => ({ b, i, s: forced(b) ? Number.POSITIVE_INFINITY : score(b) }));
  keyed.sort((x, y) => (y.s !== x.s ? y.s - x.s : x.i - y.i));
  return keyed
    .slice(0, C)
    .map((x) => x.b)
    .sort((a, b) => a - b);
}

export interface DescentRef {
  pages: number[]; // selected pages, ascending
  /** Blocks dropped at each coarse level with their bounds (for certifiedRef). */
  dropped: { level: 1 | 2; block: number; bound: number }[];
}

/**
 * Hierarchical selection of row r (query row r of q) for KV head kvh. `pageScore(i)` is page i's score (max over
 * its logical pages, pageScoresRef; with a window, over those holding window tokens).
 */
export function hierSelectRef(
  q: Float32Array,
  lv: SeqLevels,
  pageScores: ArrayLike<number>,
  s: SelectShape,
  r: number,
  row: SelectRow,
  kvh: number,
  combine: 'sum' | 'max',
  h: HierarchyRef,
  window = 0,
): DescentRef {
  const len = row.position + 1;
  const P = Math.ceil(len / s.pageSize);
  const winStart = window > 0 ? Math.max(0, len - window) : 0;
  const f = Math.floor(winStart / s.pageSize); // first candidate page
  const sink = winStart === 0;
  const K = Math.min(keptCount(s, row), P - f);
  if (K >= P - f) return { pages: Array.from({ length: P - f }, (_, i) => f + i), dropped: [] };
  const n1 = Math.ceil(P / h.fan1);
  const n2 = Math.ceil(n1 / h.fan2);
  const coarse = (arr: Float32Array) => boundRef(q, arr, kvh * 2 * s.headDim, s, r, kvh, combine);
  const inWindow = (b: number, blockPages: number) => (b + 1) * blockPages > f;
  const dropped: DescentRef['dropped'] = [];
  const top = Array.from({ length: n2 }, (_, b) => b).filter((b) => inWindow(b, h.fan1 * h.fan2));
  const newest2 = Math.floor((P - 1) / (h.fan1 * h.fan2));
  const keep2 = keepBest(
    top,
    (b) => coarse(lv.level2[b]),
    (b) => (b === 0 && sink) || b === newest2,
    K + h.margin,
  );
  for (const b of top) if (!keep2.includes(b)) dropped.push({ level: 2, block: b, bound: coarse(lv.level2[b]) });
  const mid = keep2
    .flatMap((c) => Array.from({ length: h.fan2 }, (_, j) => c * h.fan2 + j))
    .filter((b) => b < n1 && inWindow(b, h.fan1));
  const newest1 = Math.floor((P - 1) / h.fan1);
  const keep1 = keepBest(
    mid,
    (b) => coarse(lv.level1[b]),
    (b) => (b === 0 && sink) || b === newest1,
    K + h.margin,
  );
  for (const b of mid) if (!keep1.includes(b)) dropped.push({ level: 1, block: b, bound: coarse(lv.level1[b]) });
  const pages = keep1
    .flatMap((c) => Array.from({ length: h.fan1 }, (_, j) => c * h.fan1 + j))
    .filter((i) => i < P && i >= f);
  const sel = keepBest(
    pages,
    (i) => pageScores[i],
    (i) => (i === 0 && sink) || i === P - 1,
    K,
  );
  return { pages: sel, dropped };
}

/**
 * Whether the descent is certified to equal exhaustive selection `exhaustive` (pages, ascending, from topPagesRef):
 * every dropped block bounds strictly below the weakest non-forced page exhaustive selection keeps, so no page
 * below a dropped block can be among them (a coarse digest bounds its pages' scores).
 */
export function certifiedRef(
  d: DescentRef,
  exhaustive: number[],
  pageScores: ArrayLike<number>,
  P: number,
  sink = true,
): boolean {
  const kept = exhaustive.filter((i) => !(i === 0 && sink) && i !== P - 1).map((i) => pageScores[i]);
  if (kept.length === 0) return true;
  const weakest = Math.min(...kept);
  return d.dropped.every((x) => x.bound < weakest);
}

/** Packs a sequence's coarse digests into the layout of one slot of the levels buffer (n1, n2 rows per slot). */
export function slotLevelValues(lv: SeqLevels, n1Rows: number, n2Rows: number, perBlock: number): Float32Array {
  const out = new Float32Array((n1Rows + n2Rows) * perBlock);
  lv.level1.forEach((a, b) => {
    out.set(a, b * perBlock);
  });
  lv.level2.forEach((a, b) => {
    out.set(a, (n1Rows + b) * perBlock);
  });
  return out;
}
