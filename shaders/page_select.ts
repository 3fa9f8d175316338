/**
 * Hierarchical page selection wrapper (Quest scores on LServe's logical pages, top-k on the GPU).
 * For each reselecting decode row r (selectRows) and KV head h: score every page of the row's sequence from the
 * digests and the row's query heads, keep the row's K pages (rows[r].w, from the budget rule in
 * model/attention/budget.ts; page 0 and the newest page always, the rest by score, ties to the lower index; K >= P
 * keeps all: dense; a sliding-window layer selects among the window's pages only), and write the kept page indices (block-table columns, ascending) to selected[slot, h, 0..K) and K to counts[slot, h].
 *
 * Two passes: page_score (one thread per (row, KV head, page) over many workgroups: Quest bounds from the f16
 * digests, written as order-preserving u32 keys to the `scores` scratch) and page_select (one workgroup per (row,
 * KV head): radix top-k over the keys only). Splitting them spreads the expensive part, reading every digest of
 * the context, over all cores instead of one workgroup per (row, head).
 *
 * GQA combine: a logical page's score for a KV head is the SUM over the group's query heads of Quest's bound
 * (default; 'max' is the alternative). Measured on planted needles (see the test and the report) both find the
 * needle; the sum ranks pages by the group's total attention, which is what the shared selection serves. With the
 * sum the group folds into one pass over the digest: sum_g max(q_g k_min, q_g k_max) summed over channels equals
 * sum_d (Qp[d] k_max[d] + Qn[d] k_min[d]) with Qp / Qn the sums of the group's positive / negative query parts.
 *
 * Head range (retrieval heads, model/kv-storage.ts): numKvHeads is the KV heads of this layer's cache and
 * digests (r_l) and of the selection layout; the query heads processed are [qHeadOffset, qHeadOffset + numHeads) of
 * q rows of qRowHeads heads (defaults 0 and numHeads).
 *
 * Limits: one workgroup keeps all of a row's page keys in workgroup memory: at most MAX_SELECT_PAGES (4096)
 * pages per sequence = 262144 tokens at pageSize 64 (asserted by model/attention/sparse-decode.ts from host positions; the
 * kernels clamp P to it).
 */
import { SiftError } from '../config/errors.js';
import { check, headRange, requireBytes, requireInts } from './lib/checks.js';
import { defineParams } from './lib/params.js';
import { type PoolBinding, slabDefines } from './lib/slabs.js';
import type { Binding, Gpu, UniformArena } from './runtime.js';

/** Most pages per sequence the one-workgroup top-k holds (u32 keys in 16 KiB of workgroup memory). */
export const MAX_SELECT_PAGES = 4096;
const WG = 64;

/** struct Params of page_score.wgsl. */
const SCORE_PARAMS = defineParams('page_score', {
  numSelect: 'u32',
  qRowHeads: 'u32',
  qHeadOffset: 'u32',
  nKvHeads: 'u32',
  group: 'u32',
  pageSize: 'u32',
  logicalPageSize: 'u32',
  lpp: 'u32',
  maxPagesPerSeq: 'u32',
  maxSelected: 'u32',
  keyStride: 'u32',
  window: 'u32',
});

/** struct Params of page_select.wgsl. */
const SELECT_PARAMS = defineParams('page_select', {
  numSelect: 'u32',
  nKvHeads: 'u32',
  pageSize: 'u32',
  maxSelected: 'u32',
  keyStride: 'u32',
  window: 'u32',
});

export type GqaCombine = 'sum' | 'max';

/** Pages per (select index, KV head) of the scores scratch for a block table of maxPagesPerSeq columns. */
export function selectKeyStride(maxPagesPerSeq: number): number {
  return Math.min(maxPagesPerSeq, MAX_SELECT_PAGES);
}

/** Bytes of the page-score scratch: (numSelect, numKvHeads, selectKeyStride(maxPagesPerSeq)) u32. */
export function selectScoresBytes(numSelect: number, numKvHeads: number, maxPagesPerSeq: number): number {
  return Math.max(1, numSelect) * numKvHeads * selectKeyStride(maxPagesPerSeq) * 4;
}

export interface PageSelectArgs {
  q: Binding; // (numRows, qRowHeads, headDim) f32 decode queries (after RoPE; scale does not change the ranking)
  digests: PoolBinding; // (numPages, pageSize / logicalPageSize, numKvHeads, 2, headDim) f16 pairs (page_digest)
  blockTable: Binding; // (numSeqs, maxPagesPerSeq) u32 physical page of each page column
  rows: Binding; // (numRows, 4) u32 (blockRow, position of the query token, selection slot, pages kept K >= 1)
  selectRows: Binding; // (numSelect) u32 indices of the rows that reselect this step
  selected: Binding; // (numSlots, numKvHeads, maxSelected) u32 page indices, written for the reselecting rows' slots
  counts: Binding; // (numSlots, numKvHeads) u32 pages kept
  scores: Binding; // scratch (numSelect, numKvHeads, selectKeyStride(maxPagesPerSeq)) u32: selectScoresBytes()
  numSelect: number;
  numHeads: number; // query heads processed: numKvHeads * group
  numKvHeads: number; // KV heads of the cache / digests / selection layout (r_l)
  headDim: number;
  pageSize: number;
  logicalPageSize: number;
  maxPagesPerSeq: number;
  maxSelected: number; // >= 2, >= the largest K of the reselecting rows
  /** At least the pages P of every reselecting row; sizes the score grid. Default selectKeyStride(maxPagesPerSeq). */
  maxPages?: number;
  /** First query head of the q rows processed. Default 0. */
  qHeadOffset?: number;
  /** Query heads per q row (>= qHeadOffset + numHeads). Default numHeads. */
  qRowHeads?: number;
  /**
   * The grids from the step's buffer (a captured step): page_score's (numSelect * numKvHeads, page tiles of 64, 1)
   * at byte `score` of `buffer`, page_select's (numSelect, numKvHeads, 1) at byte `select`. numSelect and maxPages
   * are then only bounds (the scratch must hold the largest step).
   */
  indirect?: { buffer: GPUBuffer; score: number; select: number };
  /**
   * The layer's sliding window in tokens (0 / absent: none): only the pages holding the window's tokens are
   * candidates; K is clamped to their number (all of them when K reaches it); the newest page is forced, the sink
   * page only while the window holds token 0.
   */
  window?: number;
}

/** Page tiles of page_score's grid for `pages` pages (its y dimension). */
export function scoreTiles(pages: number): number {
  return Math.ceil(pages / WG);
}

export interface PageSelectOptions {
  /** How a KV head combines its query heads' page bounds; default 'sum'. */
  combine?: GqaCombine;
}

export class PageSelectKernel {
  readonly combine: GqaCombine;
  constructor(
    private readonly gpu: Gpu,
    opts: PageSelectOptions = {},
  ) {
    this.combine = opts.combine ?? 'sum';
  }

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: PageSelectArgs): void {
    const K = 'page_select';
    requireSelectShape(K, a);
    check(K, a.maxSelected <= MAX_SELECT_PAGES, `maxSelected ${a.maxSelected} > ${MAX_SELECT_PAGES}`);
    requireBytes(K, 'selectRows', a.selectRows, a.numSelect * 4, `(${a.numSelect}) u32`);
    requireBytes(K, 'rows', a.rows, 16, '(numRows, 4) u32');
    requireBytes(
      K,
      'selected',
      a.selected,
      a.numKvHeads * a.maxSelected * 4,
      `(numSlots, ${a.numKvHeads}, ${a.maxSelected}) u32`,
    );
    requireBytes(K, 'counts', a.counts, a.numKvHeads * 4, `(numSlots, ${a.numKvHeads}) u32`);
    if (a.numSelect === 0 && !a.indirect) return;
    if (a.numSelect > this.gpu.caps.maxComputeWorkgroupsPerDimension) {
      throw new SiftError('INTERNAL', `page_select: ${a.numSelect} rows exceed the grid limit`);
    }
    const lpp = a.pageSize / a.logicalPageSize;
    const r = headRange(K, a.numHeads, a.qHeadOffset, a.qRowHeads ?? (a.qHeadOffset ?? 0) + a.numHeads);
    requireBytes(K, 'q', a.q, r.qRowHeads * a.headDim * 4, `(numRows, ${r.qRowHeads}, ${a.headDim}) f32`);
    const keyStride = selectKeyStride(a.maxPagesPerSeq);
    requireBytes(
      K,
      'scores',
      a.scores,
      selectScoresBytes(a.numSelect, a.numKvHeads, a.maxPagesPerSeq),
      `(${a.numSelect}, ${a.numKvHeads}, ${keyStride}) u32`,
    );
    const maxPages = Math.min(a.maxPages ?? keyStride, keyStride);
    requireInts(K, { maxPages }, { maxPages: 1 });
    const HW = a.headDim / 2;
    const window = a.window ?? 0;
    requireInts(K, { window });
    const us = arena.params(SCORE_PARAMS, {
      numSelect: a.numSelect,
      qRowHeads: r.qRowHeads,
      qHeadOffset: r.qHeadOffset,
      nKvHeads: a.numKvHeads,
      group: a.numHeads / a.numKvHeads,
      pageSize: a.pageSize,
      logicalPageSize: a.logicalPageSize,
      lpp,
      maxPagesPerSeq: a.maxPagesPerSeq,
      maxSelected: a.maxSelected,
      keyStride,
      window,
    });
    const tiles = Math.ceil(maxPages / WG);
    const maxDim = this.gpu.caps.maxComputeWorkgroupsPerDimension;
    if (a.numSelect * a.numKvHeads > maxDim) {
      throw new SiftError(
        'INTERNAL',
        `page_select: ${a.numSelect}x${a.numKvHeads} (row, head) pairs exceed the grid limit`,
      );
    }
    const ind = a.indirect;
    const score = this.gpu.pipeline(
      'page_score',
      { HW, V4: HW % 4 === 0, COMBINE_MAX: this.combine === 'max', ...slabDefines({ digests: a.digests }) },
      { WG },
      SCORE_PARAMS,
    );
    const scoreBindings = [a.q, a.digests, a.blockTable, a.rows, a.selectRows, a.scores, us];
    if (ind) this.gpu.dispatchIndirect(pass, score, scoreBindings, ind.buffer, ind.score);
    else this.gpu.dispatch(pass, score, scoreBindings, a.numSelect * a.numKvHeads, tiles);
    const u = arena.params(SELECT_PARAMS, {
      numSelect: a.numSelect,
      nKvHeads: a.numKvHeads,
      pageSize: a.pageSize,
      maxSelected: a.maxSelected,
      keyStride,
      window,
    });
    const select = this.gpu.pipeline('page_select', { MAX_PAGES: MAX_SELECT_PAGES }, { WG }, SELECT_PARAMS);
    const selectBindings = [a.scores, a.rows, a.selectRows, a.selected, a.counts, u];
    if (ind) this.gpu.dispatchIndirect(pass, select, selectBindings, ind.buffer, ind.select);
    else this.gpu.dispatch(pass, select, selectBindings, a.numSelect, a.numKvHeads);
  }
}

/**
 * The shape page_select and hier_select both take: integer sizes, an even headDim (f16 digest pairs), q heads a
 * multiple of the KV heads, and a logical page size dividing the physical one.
 */
export function requireSelectShape(
  K: string,
  a: Pick<
    PageSelectArgs,
    | 'numSelect'
    | 'numHeads'
    | 'numKvHeads'
    | 'headDim'
    | 'pageSize'
    | 'logicalPageSize'
    | 'maxPagesPerSeq'
    | 'maxSelected'
  >,
): void {
  requireInts(
    K,
    {
      numSelect: a.numSelect,
      numHeads: a.numHeads,
      numKvHeads: a.numKvHeads,
      headDim: a.headDim,
      pageSize: a.pageSize,
      logicalPageSize: a.logicalPageSize,
      maxPagesPerSeq: a.maxPagesPerSeq,
      maxSelected: a.maxSelected,
    },
    { numHeads: 1, numKvHeads: 1, headDim: 2, pageSize: 1, logicalPageSize: 1, maxPagesPerSeq: 1, maxSelected: 2 },
  );
  check(K, a.headDim % 2 === 0, `headDim ${a.headDim} must be even (f16 digest pairs)`);
  check(K, a.numHeads % a.numKvHeads === 0, `numHeads ${a.numHeads} not a multiple of numKvHeads ${a.numKvHeads}`);
  check(
    K,
    a.pageSize % a.logicalPageSize === 0,
    `logicalPageSize ${a.logicalPageSize} must divide pageSize ${a.pageSize}`,
  );
}
