/**
 * Hierarchical page selection wrapper (Quest bounds descending the digest hierarchy, top-k on the GPU). For each
 * reselecting decode row r (selectRows) and KV head h, with K = rows[r].w pages to keep (the budget rule of
 * model/attention/budget.ts; K >= P keeps every page: dense), three levels from the top:
 *   1. score every level-2 block (fan1 * fan2 pages) from its coarse digest, keep the best K + margin (the blocks
 *      holding the sink page and the newest page always);
 *   2. score the level-1 children (fan2 each) of those, keep the best K + margin;
 *   3. score the pages (fan1 each) of those from their logical-page digests (a page = max of its logical pages, as
 *      page_select.ts), keep page 0, the newest page and the best others up to K, ascending in selected[slot, h].
 * A sliding-window layer (`window`) selects among the window's pages only, as page_select.ts does.
 * Each level is one dispatch of hier_select.wgsl: one workgroup per (row, head) scores the level's items (a few
 * hundred: the hierarchy keeps the work flat in the context) into the scratch and radix-selects over them, so a
 * reselection costs three dispatches per layer. Quest's bound on a coarse digest bounds
 * every key below it, so a block is dropped only when K + margin other blocks of its level bound higher; when no
 * dropped block bounds above the K-th page kept, the result is the exhaustive selection's (tests/reference).
 * Reads per (row, head): ceil(P / (fan1 fan2)) + min(K + margin, n2) fan2 coarse digests + min(K + margin, n1) fan1
 * pages of lpp logical digests (`selectionDigests`), against P lpp for exhaustive scoring.
 *
 * No cap on pages per sequence: keys and ids live in a scratch of `itemStride` per (row, head), not in workgroup
 * memory. Coarse digests: shaders/digest_levels.ts (per selection slot, rows[r].z).
 */
import { SiftError } from '../config/errors.js';
import { hierarchyRows } from './digest_levels.js';
import { headRange, requireBytes, requireInts } from './lib/checks.js';
import { defineParams } from './lib/params.js';
import { type PoolBinding, slabDefines } from './lib/slabs.js';
import { type GqaCombine, requireSelectShape } from './page_select.js';
import type { Binding, Gpu, UniformArena } from './runtime.js';

const WG = 64;

/** struct Params of hier_select.wgsl. */
const PARAMS = defineParams('hier_select', {
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
  blocksPerSlot: 'u32',
  levelRow: 'u32',
  blockPages: 'u32',
  fan: 'u32',
  itemStride: 'u32',
  candStride: 'u32',
  margin: 'u32',
  window: 'u32',
});

/** The hierarchy's geometry: pages per level-1 block, level-1 blocks per level-2 block, candidates beyond K. */
export interface HierarchyConfig {
  fan1: number;
  fan2: number;
  margin: number;
}

export const DEFAULT_HIERARCHY: HierarchyConfig = { fan1: 4, fan2: 16, margin: 16 };

/** Scratch strides of a selection over block tables of maxPagesPerSeq columns keeping at most maxSelected pages. */
export function hierStrides(
  h: HierarchyConfig,
  maxPagesPerSeq: number,
  maxSelected: number,
): { itemStride: number; candStride: number } {
  const { n1, n2 } = hierarchyRows(maxPagesPerSeq, h.fan1, h.fan2);
  const beam = maxSelected + h.margin;
  const itemStride = Math.max(n2, Math.min(beam, n2) * h.fan2, Math.min(beam, n1) * h.fan1);
  return { itemStride, candStride: 1 + Math.min(beam, n1) };
}

/** Items each level scores for a row of P pages keeping K (upper bounds: sizes the grids). */
export function levelItems(h: HierarchyConfig, P: number, K: number): [top: number, mid: number, pages: number] {
  const n1 = Math.ceil(P / h.fan1);
  const n2 = Math.ceil(n1 / h.fan2);
  const beam = K + h.margin;
  return [n2, Math.min(beam, n2) * h.fan2, Math.min(beam, n1) * h.fan1];
}

/**
 * Digests one (row, head) reads to reselect at P pages keeping K: coarse ones (levels 2 and 1) and logical-page
 * ones (level 0); 0 for a dense row. The exhaustive scoring it replaces reads P * lpp logical-page digests.
 */
export function selectionDigests(h: HierarchyConfig, P: number, K: number, lpp: number): number {
  if (K >= P) return 0;
  const [top, mid, pages] = levelItems(h, P, K);
  return top + Math.min(mid, Math.ceil(P / h.fan1)) + Math.min(pages, P) * lpp;
}

/** Scratch bytes: keys and ids (numSelect, numKvHeads, itemStride) u32, two candidate lists (numSelect, nKv, candStride). */
export function hierScratchBytes(
  numSelect: number,
  numKvHeads: number,
  s: { itemStride: number; candStride: number },
): { keys: number; cand: number } {
  const n = Math.max(1, numSelect) * numKvHeads;
  return { keys: n * s.itemStride * 4, cand: n * s.candStride * 4 };
}

export interface HierSelectArgs {
  q: Binding; // (numRows, qRowHeads, headDim) f32 decode queries
  digests: PoolBinding; // (numPages, pageSize / logicalPageSize, numKvHeads, 2, headDim) f16 pairs (page_digest)
  levels: PoolBinding; // (numSlots, blocksPerSlot, numKvHeads, 2, headDim) f16 pairs (digest_levels), current
  blockTable: Binding; // (numSeqs, maxPagesPerSeq) u32
  rows: Binding; // (numRows, 4) u32 (blockRow, position, slot, pages kept K)
  selectRows: Binding; // (numSelect) u32 rows that reselect
  selected: Binding; // (numSlots, numKvHeads, maxSelected) u32 page indices, ascending
  counts: Binding; // (numSlots, numKvHeads) u32
  keys: Binding; // scratch (numSelect, numKvHeads, itemStride) u32
  ids: Binding; // scratch (numSelect, numKvHeads, itemStride) u32
  candA: Binding; // scratch (numSelect, numKvHeads, candStride) u32
  candB: Binding; // scratch (numSelect, numKvHeads, candStride) u32
  numSelect: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  pageSize: number;
  logicalPageSize: number;
  maxPagesPerSeq: number;
  maxSelected: number;
  qHeadOffset?: number;
  qRowHeads?: number;
  /** The grid (numSelect, numKvHeads, 1) from byte `select` of `buffer` (a captured step). */
  indirect?: { buffer: GPUBuffer; select: number };
  /**
   * The layer's sliding window in tokens (0 / absent: none): as page_select.ts, only the pages holding the window's
   * tokens are candidates (K clamped to their number), the newest page forced, the sink page only while the window
   * holds token 0.
   */
  window?: number;
}

export interface HierSelectOptions {
  combine?: GqaCombine;
  hierarchy?: HierarchyConfig;
}

export class HierSelectKernel {
  readonly combine: GqaCombine;
  readonly hierarchy: HierarchyConfig;
  constructor(
    private readonly gpu: Gpu,
    opts: HierSelectOptions = {},
  ) {
    this.combine = opts.combine ?? 'sum';
    this.hierarchy = opts.hierarchy ?? DEFAULT_HIERARCHY;
    const h = this.hierarchy;
    requireInts('hier_select', { ...h }, { fan1: 1, fan2: 1, margin: 0 });
  }

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: HierSelectArgs): void {
    const K = 'hier_select';
    const h = this.hierarchy;
    requireSelectShape(K, a);
    const window = a.window ?? 0;
    requireInts(K, { window });
    if (a.numSelect === 0 && !a.indirect) return;
    const maxDim = this.gpu.caps.maxComputeWorkgroupsPerDimension;
    if (a.numSelect * a.numKvHeads > maxDim) {
      throw new SiftError('INTERNAL', `${K}: ${a.numSelect}x${a.numKvHeads} (row, head) pairs exceed the grid limit`);
    }
    const strides = hierStrides(h, a.maxPagesPerSeq, a.maxSelected);
    const sb = hierScratchBytes(a.numSelect, a.numKvHeads, strides);
    const shape = `(${a.numSelect}, ${a.numKvHeads}, ${strides.itemStride}) u32`;
    requireBytes(K, 'keys', a.keys, sb.keys, shape);
    requireBytes(K, 'ids', a.ids, sb.keys, shape);
    requireBytes(K, 'candA', a.candA, sb.cand, `(${a.numSelect}, ${a.numKvHeads}, ${strides.candStride}) u32`);
    requireBytes(K, 'candB', a.candB, sb.cand, `(${a.numSelect}, ${a.numKvHeads}, ${strides.candStride}) u32`);
    requireBytes(
      K,
      'selected',
      a.selected,
      a.numKvHeads * a.maxSelected * 4,
      `(numSlots, ${a.numKvHeads}, ${a.maxSelected}) u32`,
    );
    requireBytes(K, 'counts', a.counts, a.numKvHeads * 4, `(numSlots, ${a.numKvHeads}) u32`);
    requireBytes(K, 'selectRows', a.selectRows, a.numSelect * 4, `(${a.numSelect}) u32`);
    const r = headRange(K, a.numHeads, a.qHeadOffset, a.qRowHeads ?? (a.qHeadOffset ?? 0) + a.numHeads);
    requireBytes(K, 'q', a.q, r.qRowHeads * a.headDim * 4, `(numRows, ${r.qRowHeads}, ${a.headDim}) f32`);
    const { blocksPerSlot, n1 } = hierarchyRows(a.maxPagesPerSeq, h.fan1, h.fan2);
    const lpp = a.pageSize / a.logicalPageSize;
    const HW = a.headDim / 2;
    // top (level 2, coarse) -> level 1 (coarse) -> pages (logical-page digests); each reads the level above's list
    const levels = [
      { blockPages: h.fan1 * h.fan2, levelRow: n1, fan: 0, src: a.levels, pages: false, candIn: a.candB, out: a.candA },
      { blockPages: h.fan1, levelRow: 0, fan: h.fan2, src: a.levels, pages: false, candIn: a.candA, out: a.candB },
      { blockPages: 1, levelRow: 0, fan: h.fan1, src: a.digests, pages: true, candIn: a.candB, out: a.selected },
    ];
    for (const l of levels) {
      const u = arena.params(PARAMS, {
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
        blocksPerSlot,
        levelRow: l.levelRow,
        blockPages: l.blockPages,
        fan: l.fan,
        itemStride: strides.itemStride,
        candStride: strides.candStride,
        margin: h.margin,
        window,
      });
      const final = l.pages;
      const pipe = this.gpu.pipeline(
        'hier_select',
        {
          HW,
          V4: HW % 4 === 0,
          COMBINE_MAX: this.combine === 'max',
          PAGES: l.pages,
          FINAL: final,
          ...slabDefines({ digests: l.src }),
        },
        { WG },
        PARAMS,
      );
      const bind = [
        a.q,
        l.src,
        l.pages ? a.blockTable : null,
        a.rows,
        a.selectRows,
        l.candIn,
        a.keys,
        a.ids,
        l.out,
        final ? a.counts : null,
        u,
      ];
      if (a.indirect) this.gpu.dispatchIndirect(pass, pipe, bind, a.indirect.buffer, a.indirect.select);
      else this.gpu.dispatch(pass, pipe, bind, a.numSelect, a.numKvHeads);
    }
  }
}
