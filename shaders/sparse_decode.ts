/**
 * Top-k decode attention (Quest / LServe decode), flash-decoding style.
 *
 * SparseDecodeKernel: one decode query per row, q (numRows, numHeads, headDim) f32 -> out (numRows, numHeads,
 * headDim) f32, attending only to the pages selected for the row's (selection slot, KV head) by page_select, plus
 * the newest page (position / pageSize) when a reused selection does not end with it, keys j <= position. The page
 * list is cut into splits of `pagesPerSplit` entries: one workgroup per (row, head, split) writes a partial
 * softmax (max, sum, acc[headDim]) to `partials`, and sparse_decode_reduce combines the splits into `out`.
 * With every page selected (tokenBudget >= context) it is dense paged decode attention.
 * Head range (retrieval heads, engine/kv-storage.ts): the kernel processes query heads [qHeadOffset, qHeadOffset +
 * numHeads) of q/out rows of qRowHeads heads (defaults 0 and numHeads) against a cache, selection and partials of
 * numKvHeads heads (local head h -> KV head h / (numHeads / numKvHeads)); heads outside the range are left untouched
 * in out.
 * Variants, same bindings and results: 'lanes' (CPU adapters: 8 invocations with private softmaxes, no barrier in
 * the key loop; default where gpu.caps.isCpu) and 'workgroup' (GPUs: 64 threads share each key tile).
 *
 * SparseDecodeAttention: [page selection when this step reselects] + sparse attention for one layer, for a batch
 * of decode rows; see its doc for the buffers the engine provides.
 */
import { SiftError } from '../config/errors.js';
import { headRange } from './attention.js';
import { grid2d } from './grid.js';
import { type GqaCombine, MAX_SELECT_PAGES, PageSelectKernel, selectScoresBytes } from './page_select.js';
import { type Binding, type Gpu, type UniformArena, uniforms } from './runtime.js';
import { SelectionSchedule } from './selection_schedule.js';
import { bindingBytes, check, requireBytes, requireInts } from './sparse_common.js';

export type SparseDecodeVariant = 'workgroup' | 'lanes';

const WG = 64;
const LANES = 8;
const REDUCE_WG = 64;
/** Largest head dim the kernels are specialised for. */
export const SPARSE_MAX_HEAD_DIM = 256;

export interface SparseDecodeArgs {
  q: Binding; // (numRows, qRowHeads, headDim) f32, after RoPE
  kCache: Binding; // (numPages, pageSize, numKvHeads, headDim / 2) u32 packed f16 pairs, one layer
  vCache: Binding; // (numPages, pageSize, numKvHeads, headDim / 2) u32 packed f16 pairs, one layer
  blockTable: Binding; // (numSeqs, maxPagesPerSeq) u32 physical page of each page column
  rows: Binding; // (numRows, 4) u32 (blockRow, position of the query token, selection slot, tokenBudget)
  selected: Binding; // (numSlots, numKvHeads, maxSelected) u32 ascending page columns (page_select)
  counts: Binding; // (numSlots, numKvHeads) u32 entries of `selected` in use
  partials: Binding; // scratch (numRows, numHeads, numSplits, 2 + headDim) f32: partialsBytes()
  out: Binding; // (numRows, qRowHeads, headDim) f32, must not alias q; heads outside the range untouched
  numRows: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number; // even, <= 256
  pageSize: number;
  maxPagesPerSeq: number;
  maxSelected: number;
  numSplits: number; // splitPlan()
  pagesPerSplit: number;
  scale: number; // softmax scale, usually 1 / sqrt(headDim)
  /** First query head of the q/out rows processed. Default 0. */
  qHeadOffset?: number;
  /** Query heads per q/out row (>= qHeadOffset + numHeads). Default numHeads. */
  qRowHeads?: number;
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
    this.variant = opts.variant ?? (gpu.caps.isCpu ? 'lanes' : 'workgroup');
    this.splitTokens = opts.splitTokens ?? (gpu.caps.isCpu ? 512 : 128);
    requireInts('sparse_decode', { splitTokens: this.splitTokens }, { splitTokens: 1 });
  }

  /** Splits for page lists of at most `maxListLen` entries: whole pages, about `splitTokens` key slots each. */
  splitPlan(maxListLen: number, pageSize: number): { numSplits: number; pagesPerSplit: number } {
    const pagesPerSplit = Math.max(1, Math.floor(this.splitTokens / pageSize));
    return { numSplits: Math.max(1, Math.ceil(maxListLen / pagesPerSplit)), pagesPerSplit };
  }

  private pipeline(headDim: number): GPUComputePipeline {
    const HW = headDim / 2;
    if (this.variant === 'lanes') return this.gpu.pipeline('sparse_decode_lanes', { HW, LANES });
    return this.gpu.pipeline('sparse_decode', { HW, DPW: Math.ceil(HW / WG) }, { WG });
  }

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: SparseDecodeArgs): void {
    const K = 'sparse_decode';
    requireInts(
      K,
      {
        numRows: a.numRows,
        numHeads: a.numHeads,
        numKvHeads: a.numKvHeads,
        headDim: a.headDim,
        pageSize: a.pageSize,
        maxPagesPerSeq: a.maxPagesPerSeq,
        maxSelected: a.maxSelected,
        numSplits: a.numSplits,
        pagesPerSplit: a.pagesPerSplit,
      },
      {
        numHeads: 1,
        numKvHeads: 1,
        headDim: 2,
        pageSize: 1,
        maxPagesPerSeq: 1,
        maxSelected: 1,
        numSplits: 1,
        pagesPerSplit: 1,
      },
    );
    check(K, a.numHeads % a.numKvHeads === 0, `numHeads ${a.numHeads} not a multiple of numKvHeads ${a.numKvHeads}`);
    check(
      K,
      a.headDim % 2 === 0 && a.headDim <= SPARSE_MAX_HEAD_DIM,
      `headDim ${a.headDim} must be even and <= ${SPARSE_MAX_HEAD_DIM}`,
    );
    check(K, Number.isFinite(a.scale), `scale ${a.scale}`);
    const pageBytes = a.pageSize * a.numKvHeads * a.headDim * 2;
    const numPages = Math.floor(bindingBytes(a.kCache) / pageBytes);
    check(K, numPages >= 1 && numPages * pageBytes < 2 ** 32, `kCache holds ${numPages} pages`);
    check(K, Math.floor(bindingBytes(a.vCache) / pageBytes) === numPages, 'kCache and vCache differ in pages');
    const hd = a.headDim;
    const hr = headRange(K, a.numHeads, a.qHeadOffset, a.qRowHeads ?? (a.qHeadOffset ?? 0) + a.numHeads);
    const qBytes = a.numRows * hr.qRowHeads * hd * 4;
    requireBytes(K, 'q', a.q, qBytes, `(${a.numRows}, ${hr.qRowHeads}, ${hd}) f32`);
    requireBytes(K, 'out', a.out, qBytes, `(${a.numRows}, ${hr.qRowHeads}, ${hd}) f32`);
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
    if (a.numRows === 0) return;
    const rh = a.numRows * a.numHeads;
    const maxDim = this.gpu.caps.maxComputeWorkgroupsPerDimension;
    if (rh > maxDim || a.numSplits > maxDim) {
      throw new SiftError('INTERNAL', `sparse_decode: grid ${rh}x${a.numSplits} exceeds ${maxDim} per dimension`);
    }
    const u = arena.alloc(
      uniforms([
        ['u32', a.numRows],
        ['u32', a.numHeads],
        ['u32', a.numKvHeads],
        ['u32', a.numHeads / a.numKvHeads],
        ['u32', a.pageSize],
        ['u32', a.maxPagesPerSeq],
        ['u32', a.maxSelected],
        ['u32', a.numSplits],
        ['u32', a.pagesPerSplit],
        ['f32', a.scale],
        ['u32', hr.qRowHeads],
        ['u32', hr.qHeadOffset],
      ]),
    );
    this.gpu.dispatch(
      pass,
      this.pipeline(hd),
      [a.q, a.kCache, a.vCache, a.blockTable, a.rows, a.selected, a.counts, a.partials, u],
      rh,
      a.numSplits,
    );
    const ur = arena.alloc(
      uniforms([
        ['u32', rh * hd],
        ['u32', hd],
        ['u32', a.numSplits],
        ['u32', a.numHeads],
        ['u32', hr.qRowHeads],
        ['u32', hr.qHeadOffset],
        ['u32', 0],
        ['u32', 0],
      ]),
    );
    const [x, y] = grid2d(this.gpu, rh * hd, REDUCE_WG);
    this.gpu.dispatch(
      pass,
      this.gpu.pipeline('sparse_decode_reduce', {}, { WG: REDUCE_WG }),
      [a.partials, a.out, ur],
      x,
      y,
    );
  }
}

/** One decode row of a step. */
export interface SparseDecodeRow {
  /** Stable sequence id: the selection schedule's key. */
  seqId: string | number;
  /** Row of this sequence in the step's block table. */
  blockRow: number;
  /** Position of the query token (the sequence holds position + 1 tokens, this one's K/V already written). */
  position: number;
  /** Selection slot of the sequence, stable across its decode steps, < numSlots. */
  slot: number;
  /** Token budget; >= the context (e.g. Infinity) means dense. */
  tokenBudget: number;
}

export interface SparseDecodeConfig {
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  pageSize: number;
  /** Tokens per logical page (digest granularity); default 16. */
  logicalPageSize?: number;
  maxPagesPerSeq: number;
  /** Most decode rows in one step. */
  maxRows: number;
  /** Selection slots: at least the number of concurrently decoding sequences. */
  numSlots: number;
  /** Selection row length: the most pages a row keeps; default min(maxPagesPerSeq, 4096) (dense always fits). */
  maxSelected?: number;
  /** Decode steps a selection is reused for; default 4. */
  reselectInterval?: number;
  variant?: SparseDecodeVariant;
  combine?: GqaCombine;
  splitTokens?: number;
}

/** Per-layer selection state the engine keeps across decode steps (reused between reselections). */
export interface LayerSelection {
  selected: GPUBuffer; // (numSlots, numKvHeads, maxSelected) u32
  counts: GPUBuffer; // (numSlots, numKvHeads) u32
}

export interface SparseLayerArgs {
  q: Binding; // (numRows, numHeads, headDim) f32 this step's decode queries, after RoPE
  kCache: Binding; // (numPages, pageSize, numKvHeads, headDim / 2) u32 f16 pairs, this step's K/V written
  vCache: Binding; // (numPages, pageSize, numKvHeads, headDim / 2) u32 f16 pairs
  blockTable: Binding; // (numSeqs, maxPagesPerSeq) u32
  digests: Binding; // (numPages, pageSize / logicalPageSize, numKvHeads, 2, headDim) f16 of this layer, up to date
  selection: LayerSelection; // this layer's
  out: Binding; // (numRows, numHeads, headDim) f32; heads past the layer's range untouched
  scale: number;
  /**
   * r_l: KV heads of this layer's main pool (kCache / vCache / digests), its retrieval heads [0, r_l) after the head
   * permutation; the layer's query heads [0, r_l * group) are processed, the rest of out is untouched. Default
   * cfg.numKvHeads (all heads). 0 encodes nothing. The digests and the selection use the r_l-head layout, a prefix
   * of the buffers sized for cfg.numKvHeads.
   */
  numKvHeads?: number;
}

interface StepPlan {
  numRows: number;
  numSelect: number;
  numSplits: number;
  pagesPerSplit: number;
  maxSelectPages: number; // most pages of a reselecting row (sizes the score grid)
}

/**
 * Sparse decode attention for one layer of a decode batch. Per step: `prepareStep(rows)` once (decides which
 * rows reselect through `schedule`, uploads the rows and selectRows buffers, sizes the splits), then
 * `encodeLayer` for every layer, in one or more passes submitted after prepareStep.
 *
 * The engine provides, per layer: `digests` (numPages, pageSize / 16, numKvHeads, 2, headDim) f16 (digestBytes) kept current by
 * PageDigestKernel after each kv_write (prefill and decode); a `LayerSelection` from `createLayerSelection()`
 * kept across steps; q/out (numRows, numHeads, headDim) f32. The wrapper owns the per-step `rows` (maxRows, 4) u32
 * and `selectRows` (maxRows) u32 buffers and the partials scratch (maxRows, numHeads, maxSplits, 2 + headDim) f32,
 * shared by all layers (dispatches in a pass run in order). Call `schedule.onPrefill(seqId)` after every prefill
 * chunk of a sequence and `schedule.forget(seqId)` when it ends; a slot handed to a new sequence is reselected on
 * its first decode step because that follows its prefill.
 */
export class SparseDecodeAttention {
  readonly schedule: SelectionSchedule<string | number>;
  readonly attention: SparseDecodeKernel;
  readonly select: PageSelectKernel;
  readonly maxSelected: number;
  readonly logicalPageSize: number;
  readonly maxSplits: number;
  private readonly rowsBuf: GPUBuffer; // (maxRows, 4) u32
  private readonly selectRowsBuf: GPUBuffer; // (maxRows) u32
  private readonly partials: GPUBuffer; // (maxRows, numHeads, maxSplits, 2 + headDim) f32
  private readonly scores: GPUBuffer; // (maxRows, numKvHeads, selectKeyStride(maxPagesPerSeq)) u32 page keys
  private plan: StepPlan | null = null;

  constructor(
    private readonly gpu: Gpu,
    readonly cfg: SparseDecodeConfig,
  ) {
    const K = 'SparseDecodeAttention';
    this.logicalPageSize = cfg.logicalPageSize ?? 16;
    this.maxSelected = cfg.maxSelected ?? Math.min(cfg.maxPagesPerSeq, MAX_SELECT_PAGES);
    requireInts(
      K,
      {
        numHeads: cfg.numHeads,
        numKvHeads: cfg.numKvHeads,
        headDim: cfg.headDim,
        pageSize: cfg.pageSize,
        logicalPageSize: this.logicalPageSize,
        maxPagesPerSeq: cfg.maxPagesPerSeq,
        maxRows: cfg.maxRows,
        numSlots: cfg.numSlots,
      },
      {
        numHeads: 1,
        numKvHeads: 1,
        headDim: 2,
        pageSize: 1,
        logicalPageSize: 1,
        maxPagesPerSeq: 1,
        maxRows: 1,
        numSlots: 1,
      },
    );
    check(
      K,
      this.maxSelected >= 2 && this.maxSelected <= MAX_SELECT_PAGES,
      `maxSelected ${this.maxSelected} not in 2..${MAX_SELECT_PAGES}`,
    );
    check(K, cfg.pageSize % this.logicalPageSize === 0, `logicalPageSize ${this.logicalPageSize} must divide pageSize`);
    check(K, cfg.numHeads % cfg.numKvHeads === 0, `numHeads ${cfg.numHeads} not a multiple of ${cfg.numKvHeads}`);
    this.schedule = new SelectionSchedule(cfg.reselectInterval);
    this.attention = new SparseDecodeKernel(gpu, { variant: cfg.variant, splitTokens: cfg.splitTokens });
    this.select = new PageSelectKernel(gpu, { combine: cfg.combine });
    this.maxSplits = this.attention.splitPlan(this.maxSelected + 1, cfg.pageSize).numSplits;
    this.rowsBuf = gpu.createBuffer('sparse-rows', cfg.maxRows * 16);
    this.selectRowsBuf = gpu.createBuffer('sparse-select-rows', cfg.maxRows * 4);
    this.partials = gpu.createBuffer(
      'sparse-partials',
      partialsBytes(cfg.maxRows, cfg.numHeads, this.maxSplits, cfg.headDim),
    );
    this.scores = gpu.createBuffer(
      'sparse-page-scores',
      selectScoresBytes(cfg.maxRows, cfg.numKvHeads, cfg.maxPagesPerSeq),
    );
  }

  /** A layer's selection buffers (zeroed: count 0 means only the newest page until the first reselection). */
  createLayerSelection(): LayerSelection {
    const { numSlots, numKvHeads } = this.cfg;
    return {
      selected: this.gpu.createBuffer('sparse-selected', numSlots * numKvHeads * this.maxSelected * 4),
      counts: this.gpu.createBuffer('sparse-counts', numSlots * numKvHeads * 4),
    };
  }

  /** Plans one decode step; returns which rows reselect. Call once per step, before encoding its layers. */
  prepareStep(rows: SparseDecodeRow[]): boolean[] {
    const K = 'SparseDecodeAttention.prepareStep';
    const { pageSize, maxRows, numSlots, maxPagesPerSeq } = this.cfg;
    check(K, rows.length <= maxRows, `${rows.length} rows > maxRows ${maxRows}`);
    const data = new Uint32Array(rows.length * 4);
    const sel: number[] = [];
    const reselect: boolean[] = [];
    let maxList = 1;
    let maxSelectPages = 1;
    rows.forEach((r, i) => {
      requireInts(K, { blockRow: r.blockRow, position: r.position, slot: r.slot });
      const P = Math.floor(r.position / pageSize) + 1;
      check(
        K,
        P <= maxPagesPerSeq && P <= MAX_SELECT_PAGES,
        `row ${i}: ${P} pages > ${Math.min(maxPagesPerSeq, MAX_SELECT_PAGES)}`,
      );
      check(K, r.slot < numSlots, `row ${i}: slot ${r.slot} >= numSlots ${numSlots}`);
      check(K, r.tokenBudget >= 0, `row ${i}: tokenBudget ${r.tokenBudget}`);
      const len = r.position + 1;
      const keep = len <= r.tokenBudget ? P : Math.min(P, Math.max(2, Math.floor(r.tokenBudget / pageSize)));
      check(K, keep <= this.maxSelected, `row ${i}: keeps ${keep} pages > maxSelected ${this.maxSelected}`);
      data.set([r.blockRow, r.position, r.slot, Math.min(r.tokenBudget, 0xffffffff)], 4 * i);
      const again = this.schedule.step(r.seqId);
      reselect.push(again);
      if (again) {
        sel.push(i);
        maxSelectPages = Math.max(maxSelectPages, P);
      }
      maxList = Math.max(maxList, Math.min(P, keep + 1));
    });
    if (rows.length) this.gpu.write(this.rowsBuf, data);
    if (sel.length) this.gpu.write(this.selectRowsBuf, Uint32Array.from(sel));
    const { numSplits, pagesPerSplit } = this.attention.splitPlan(maxList, pageSize);
    this.plan = { numRows: rows.length, numSelect: sel.length, numSplits, pagesPerSplit, maxSelectPages };
    return reselect;
  }

  /** [page selection for the reselecting rows] + sparse attention of one layer, for the prepared step. */
  encodeLayer(pass: GPUComputePassEncoder, arena: UniformArena, a: SparseLayerArgs): void {
    const plan = this.plan;
    if (!plan) throw new SiftError('INTERNAL', 'SparseDecodeAttention.encodeLayer before prepareStep');
    const c = this.cfg;
    const numKvHeads = a.numKvHeads ?? c.numKvHeads;
    requireInts('SparseDecodeAttention.encodeLayer', { numKvHeads });
    check(
      'SparseDecodeAttention.encodeLayer',
      numKvHeads <= c.numKvHeads,
      `numKvHeads ${numKvHeads} > ${c.numKvHeads}`,
    );
    if (numKvHeads === 0 || plan.numRows === 0) return; // no retrieval heads in this layer
    const shape = {
      numHeads: numKvHeads * (c.numHeads / c.numKvHeads),
      numKvHeads,
      qHeadOffset: 0,
      qRowHeads: c.numHeads,
      headDim: c.headDim,
      pageSize: c.pageSize,
      maxPagesPerSeq: c.maxPagesPerSeq,
      maxSelected: this.maxSelected,
    };
    this.select.encode(pass, arena, {
      q: a.q,
      digests: a.digests,
      blockTable: a.blockTable,
      rows: this.rowsBuf,
      selectRows: this.selectRowsBuf,
      selected: a.selection.selected,
      counts: a.selection.counts,
      scores: this.scores,
      numSelect: plan.numSelect,
      maxPages: plan.maxSelectPages,
      logicalPageSize: this.logicalPageSize,
      ...shape,
    });
    this.attention.encode(pass, arena, {
      q: a.q,
      kCache: a.kCache,
      vCache: a.vCache,
      blockTable: a.blockTable,
      rows: this.rowsBuf,
      selected: a.selection.selected,
      counts: a.selection.counts,
      partials: this.partials,
      out: a.out,
      numRows: plan.numRows,
      numSplits: plan.numSplits,
      pagesPerSplit: plan.pagesPerSplit,
      scale: a.scale,
      ...shape,
    });
  }

  destroy(): void {
    this.rowsBuf.destroy();
    this.selectRowsBuf.destroy();
    this.partials.destroy();
    this.scores.destroy();
  }
}
