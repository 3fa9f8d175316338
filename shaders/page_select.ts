/**
 * Hierarchical page selection wrapper (Quest scores on LServe's logical pages, top-k on the GPU).
 * For each reselecting decode row r (selectRows) and KV head h: score every page of the row's sequence from the
 * digests and the row's query heads, keep K = min(P, clamp(tokenBudget / pageSize, 2, maxSelected)) pages (K = P when len <= tokenBudget) (page 0
 * and the newest page always, the rest by score, ties to the lower index; K >= P keeps all: dense), and write the
 * kept page indices (block-table columns, ascending) to selected[slot, h, 0..K) and K to counts[slot, h].
 *
 * GQA combine: a logical page's score for a KV head is the SUM over the group's query heads of Quest's bound
 * (default; 'max' is the alternative). Measured on planted needles (see the test and the report) both find the
 * needle; the sum ranks pages by the group's total attention, which is what the shared selection serves.
 *
 * Limits: one workgroup keeps all of a row's page scores in workgroup memory: at most MAX_SELECT_PAGES (4096)
 * pages per sequence = 262144 tokens at pageSize 64 (asserted by SparseDecodeAttention from host positions; the
 * kernel itself clamps P to it).
 */
import { SiftError } from '../config/errors.js';
import { type Binding, type Gpu, type UniformArena, uniforms } from './runtime.js';
import { check, requireBytes, requireInts } from './sparse_common.js';

export { DEFAULT_RESELECT_INTERVAL, SelectionSchedule } from './selection_schedule.js';

/** Most pages per sequence the one-workgroup top-k holds (u32 keys in 16 KiB of workgroup memory). */
export const MAX_SELECT_PAGES = 4096;
const WG = 64;

export type GqaCombine = 'sum' | 'max';

export interface PageSelectArgs {
  q: Binding; // (numRows, numHeads, headDim) f32 decode queries (after RoPE; scale does not change the ranking)
  digests: Binding; // (numPages, pageSize / logicalPageSize, numKvHeads, 2, headDim) f32, one layer
  blockTable: Binding; // (numSeqs, maxPagesPerSeq) u32 physical page of each page column
  rows: Binding; // (numRows, 4) u32 (blockRow, position of the query token, selection slot, tokenBudget)
  selectRows: Binding; // (numSelect) u32 indices of the rows that reselect this step
  selected: Binding; // (numSlots, numKvHeads, maxSelected) u32 page indices, written for the reselecting rows' slots
  counts: Binding; // (numSlots, numKvHeads) u32 pages kept
  numSelect: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  pageSize: number;
  logicalPageSize: number;
  maxPagesPerSeq: number;
  maxSelected: number; // >= 2, >= the largest tokenBudget / pageSize of the rows
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
      { numHeads: 1, numKvHeads: 1, headDim: 1, pageSize: 1, logicalPageSize: 1, maxPagesPerSeq: 1, maxSelected: 2 },
    );
    check(K, a.numHeads % a.numKvHeads === 0, `numHeads ${a.numHeads} not a multiple of numKvHeads ${a.numKvHeads}`);
    check(
      K,
      a.pageSize % a.logicalPageSize === 0,
      `logicalPageSize ${a.logicalPageSize} must divide pageSize ${a.pageSize}`,
    );
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
    if (a.numSelect === 0) return;
    if (a.numSelect > this.gpu.caps.maxComputeWorkgroupsPerDimension) {
      throw new SiftError('INTERNAL', `page_select: ${a.numSelect} rows exceed the grid limit`);
    }
    const lpp = a.pageSize / a.logicalPageSize;
    const u = arena.alloc(
      uniforms([
        ['u32', a.numSelect],
        ['u32', a.numHeads],
        ['u32', a.numKvHeads],
        ['u32', a.numHeads / a.numKvHeads],
        ['u32', a.pageSize],
        ['u32', a.logicalPageSize],
        ['u32', lpp],
        ['u32', a.maxPagesPerSeq],
        ['u32', a.maxSelected],
      ]),
    );
    const pipe = this.gpu.pipeline(
      'page_select',
      { HD: a.headDim, MAX_PAGES: MAX_SELECT_PAGES, COMBINE_MAX: this.combine === 'max' },
      { WG },
    );
    this.gpu.dispatch(
      pass,
      pipe,
      [a.q, a.digests, a.blockTable, a.rows, a.selectRows, a.selected, a.counts, u],
      a.numSelect,
      a.numKvHeads,
    );
  }
}
