/**
 * Top-k decode attention (Quest / LServe decode), flash-decoding style.
 *
 * SparseDecodeKernel: one decode query per row, q (numRows, numHeads, headDim) f32 -> out (numRows, numHeads,
 * headDim) f32, attending only to the pages selected for the row's (selection slot, KV head) by page_select, plus
 * the newest page (position / pageSize) when a reused selection does not end with it, keys j <= position. The page
 * list is cut into splits of `pagesPerSplit` entries (more for a row whose list the grid's splits cannot hold at that,
 * sparse_decode_common.wgsl): one workgroup per (row, KV head, split) reads the split's keys and values once for the
 * G query heads of its KV head (GQA) and writes each head's partial softmax (max, sum, acc[headDim]) to `partials`,
 * and sparse_decode_reduce combines the splits into `out`.
 * With every page selected (the context fits the token budget) it is dense paged decode attention.
 * Head range (retrieval heads, model/kv-storage.ts): the kernel processes query heads [qHeadOffset, qHeadOffset +
 * numHeads) of q/out rows of qRowHeads heads (defaults 0 and numHeads) against a cache, selection and partials of
 * numKvHeads heads (local head h -> KV head h / (numHeads / numKvHeads)); heads outside the range are left untouched
 * in out. A layer's sliding window (`window`) masks keys older than position - window + 1 (page_select keeps the
 * window's pages); `softcap` caps the scores (Gemma 2).
 * Variants, same bindings and results: 'lanes' (CPU adapters: 8 invocations, each folding every 8th key slot for the
 * G heads into private softmaxes, no barrier in the key loop; default where gpu.caps.isCpu) and 'workgroup' (GPUs:
 * 64 threads unpack each tile of key slots into workgroup memory, consecutive threads reading consecutive words of
 * a key, then score it for the G heads and fold it, G x 64/G threads each holding a head's share of output pairs).
 * Which pages a row keeps and when it reselects is decided above the kernels (model/attention/sparse-decode.ts).
 */
import {
  type AttentionShape,
  PAGED_HEADS,
  pagedHeads,
  requireAttention,
  requireRows,
  SCORE_MODS,
  type ScoreMods,
  scoreMods,
} from './lib/attention.js';
import { check, defaultVariant, headRange, type LayoutVariant, requireBytes, requireInts } from './lib/checks.js';
import { grid2d } from './lib/grid.js';
import { defineParams } from './lib/params.js';
import { type PoolBinding, slabDefines } from './lib/slabs.js';
import type { Binding, Gpu, UniformArena } from './runtime.js';

export type SparseDecodeVariant = LayoutVariant;

const WG = 64;
const LANES = 8;
const REDUCE_WG = 64;

/** struct Params of sparse_decode_common.wgsl. */
const PARAMS = defineParams('sparse_decode', {
  numRows: 'u32',
  ...PAGED_HEADS,
  maxSelected: 'u32',
  numSplits: 'u32',
  pagesPerSplit: 'u32',
  scale: 'f32',
  qRowHeads: 'u32',
  qHeadOffset: 'u32',
  ...SCORE_MODS,
});

/** struct Params of sparse_decode_reduce.wgsl. */
const REDUCE_PARAMS = defineParams('sparse_decode_reduce', {
  count: 'u32',
  headDim: 'u32',
  numSplits: 'u32',
  nHeads: 'u32',
  qRowHeads: 'u32',
  qHeadOffset: 'u32',
  splitsWord: 'u32',
});

export interface SparseDecodeArgs extends AttentionShape, ScoreMods {
  q: Binding; // (numRows, qRowHeads, headDim) f32, after RoPE
  kCache: PoolBinding; // (numPages, pageSize, numKvHeads, headDim / 2) u32 packed f16 pairs, one layer
  vCache: PoolBinding; // (numPages, pageSize, numKvHeads, headDim / 2) u32 packed f16 pairs, one layer
  blockTable: Binding; // (numSeqs, maxPagesPerSeq) u32 physical page of each page column
  rows: Binding; // (numRows, 4) u32 (blockRow, position of the query token, selection slot, pages kept)
  selected: Binding; // (numSlots, numKvHeads, maxSelected) u32 ascending page columns (page_select)
  counts: Binding; // (numSlots, numKvHeads) u32 entries of `selected` in use
  partials: Binding; // scratch (numRows, numHeads, numSplits, 2 + headDim) f32: partialsBytes()
  out: Binding; // (numRows, qRowHeads, headDim) f32, must not alias q; heads outside the range untouched
  numRows: number;
  maxSelected: number;
  numSplits: number; // splitPlan(); with `indirect` the partials' stride (the most splits a step may use)
  pagesPerSplit: number;
  /** First query head of the q/out rows processed. Default 0. */
  qHeadOffset?: number;
  /** Query heads per q/out row (>= qHeadOffset + numHeads). Default numHeads. */
  qRowHeads?: number;
  /**
   * The grid from the step's buffer (a captured step): dispatch arguments (numRows * numKvHeads, splits, 1) u32 at
   * byte `offset` of `buffer`, which the reduce also reads (word `offset / 4 + 1`) for the split count.
   */
  indirect?: { buffer: GPUBuffer; offset: number };
}

export interface SparseDecodeOptions {
  /** Force a variant; default 'lanes' on CPU adapters (gpu.caps.isCpu), else 'workgroup'. */
  variant?: SparseDecodeVariant;
  /** Key slots per split (rounded to whole pages); default 512 on CPU adapters, 128 on GPUs. */
  splitTokens?: number;
}

/** Bytes of the partials scratch for (numRows, numHeads, numSplits, 2 + headDim) f32. */
export function partialsBytes(numRows: number, numHeads: number, numSplits: number, headDim: number): number {
  return numRows * numHeads * numSplits * (2 + headDim) * 4;
}

export class SparseDecodeKernel {
  readonly variant: SparseDecodeVariant;
  readonly splitTokens: number;
  constructor(
    private readonly gpu: Gpu,
    opts: SparseDecodeOptions = {},
  ) {
    this.variant = defaultVariant(gpu.caps, opts.variant);
    this.splitTokens = opts.splitTokens ?? (gpu.caps.isCpu ? 512 : 128);
    requireInts('sparse_decode', { splitTokens: this.splitTokens }, { splitTokens: 1 });
  }

  /**
   * Splits of a page list of `maxListLen` pages: `splitTokens` keys per split, or more when `maxSplits` (what the
   * partials scratch holds) would be exceeded.
   */
  splitPlan(maxListLen: number, pageSize: number, maxSplits = Infinity): { numSplits: number; pagesPerSplit: number } {
    let pagesPerSplit = Math.max(1, Math.floor(this.splitTokens / pageSize));
    if (Math.ceil(maxListLen / pagesPerSplit) > maxSplits) pagesPerSplit = Math.ceil(maxListLen / maxSplits);
    return { numSplits: Math.max(1, Math.ceil(maxListLen / pagesPerSplit)), pagesPerSplit };
  }

  /**
   * Key slots per tile of the 'workgroup' variant: up to 32 (a power of two), fewer where the group's queries and a
   * tile's f32 keys and values would not fit the device's workgroup memory.
   */
  tileSlots(headDim: number, group: number): number {
    const HW = headDim / 2;
    const bytes = (bk: number) => (group * HW + bk * (HW + 1) + bk * HW) * 8 + bk * 4 + group * bk * 4;
    let bk = 32;
    while (bk > 1 && bytes(bk) > this.gpu.caps.maxComputeWorkgroupStorageSize) bk /= 2;
    return bk;
  }

  private pipeline(
    headDim: number,
    group: number,
    pools: { kCache: PoolBinding; vCache: PoolBinding },
  ): GPUComputePipeline {
    const HW = headDim / 2;
    const slabs = slabDefines(pools);
    if (this.variant === 'lanes') {
      return this.gpu.pipeline('sparse_decode_lanes', { HW, LANES, G: group, GQA: group > 1, ...slabs }, {}, PARAMS);
    }
    const TPH = Math.floor(WG / group);
    const defines = { HW, G: group, BKD: this.tileSlots(headDim, group), TPH, DPT: Math.ceil(HW / TPH), ...slabs };
    return this.gpu.pipeline('sparse_decode', defines, { WG }, PARAMS);
  }

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: SparseDecodeArgs): void {
    const K = 'sparse_decode';
    requireInts(
      K,
      {
        numRows: a.numRows,
        maxPagesPerSeq: a.maxPagesPerSeq,
        maxSelected: a.maxSelected,
        numSplits: a.numSplits,
        pagesPerSplit: a.pagesPerSplit,
      },
      { maxPagesPerSeq: 1, maxSelected: 1, numSplits: 1, pagesPerSplit: 1 },
    );
    requireAttention(K, a, a.kCache, a.vCache);
    const hd = a.headDim;
    const hr = headRange(K, a.numHeads, a.qHeadOffset, a.qRowHeads);
    requireRows(K, 'q', a.q, a.numRows, hr.qRowHeads, hd);
    requireRows(K, 'out', a.out, a.numRows, hr.qRowHeads, hd);
    requireBytes(K, 'rows', a.rows, a.numRows * 16, `(${a.numRows}, 4) u32`);
    requireBytes(
      K,
      'partials',
      a.partials,
      partialsBytes(a.numRows, a.numHeads, a.numSplits, hd),
      `(${a.numRows}, ${a.numHeads}, ${a.numSplits}, ${2 + hd}) f32`,
    );
    requireBytes(
      K,
      'selected',
      a.selected,
      a.numKvHeads * a.maxSelected * 4,
      `(numSlots, ${a.numKvHeads}, ${a.maxSelected}) u32`,
    );
    const group = a.numHeads / a.numKvHeads;
    check(K, group <= WG, `${group} query heads per KV head exceed a workgroup of ${WG}`);
    if (a.numRows === 0) return;
    const rh = a.numRows * a.numHeads;
    const rk = a.numRows * a.numKvHeads; // one workgroup per (row, KV head, split)
    const maxDim = this.gpu.caps.maxComputeWorkgroupsPerDimension;
    check(K, rk <= maxDim && a.numSplits <= maxDim, `grid ${rk}x${a.numSplits} exceeds ${maxDim} per dimension`);
    const ind = a.indirect;
    check(
      K,
      !ind || (ind.offset % 4 === 0 && ind.offset + 12 <= ind.buffer.size),
      `indirect arguments at byte ${ind?.offset} of ${ind?.buffer.size}`,
    );
    const u = arena.params(PARAMS, {
      numRows: a.numRows,
      ...pagedHeads(a),
      maxSelected: a.maxSelected,
      numSplits: a.numSplits,
      pagesPerSplit: a.pagesPerSplit,
      scale: a.scale,
      qRowHeads: hr.qRowHeads,
      qHeadOffset: hr.qHeadOffset,
      ...scoreMods(K, a),
    });
    const bindings = [a.q, a.kCache, a.vCache, a.blockTable, a.rows, a.selected, a.counts, a.partials, u];
    // indirect: the grid (numRows * numKvHeads, splits, 1) comes from the step's inputs
    const pipeline = this.pipeline(hd, group, a);
    if (ind) this.gpu.dispatchIndirect(pass, pipeline, bindings, ind.buffer, ind.offset);
    else this.gpu.dispatch(pass, pipeline, bindings, rk, a.numSplits);
    const ur = arena.params(REDUCE_PARAMS, {
      count: rh * hd,
      headDim: hd,
      numSplits: a.numSplits,
      nHeads: a.numHeads,
      qRowHeads: hr.qRowHeads,
      qHeadOffset: hr.qHeadOffset,
      splitsWord: ind ? ind.offset / 4 + 1 : 0,
    });
    const [x, y] = grid2d(this.gpu, rh * hd, REDUCE_WG);
    const reduce = this.gpu.pipeline('sparse_decode_reduce', { SPLITS_ARG: !!ind }, { WG: REDUCE_WG }, REDUCE_PARAMS);
    this.gpu.dispatch(pass, reduce, ind ? [a.partials, a.out, ur, ind.buffer] : [a.partials, a.out, ur], x, y);
  }
}
