/**
 * Sparse decode attention of one layer for a batch of decode rows (Quest / LServe decode), the stateful part above
 * the kernels: which rows reselect their pages this step (SelectionSchedule: after every prefill, then every
 * `reselectInterval` decode steps), how many pages each row keeps (the one budget rule, ./budget.ts), the per-step
 * rows, reselecting rows and grids (indirect dispatch arguments) written to the step's inputs; then per layer
 * page_select (shaders/page_select.ts) for the reselecting rows and top-k attention (shaders/sparse_decode.ts) for
 * all of them. Every size that varies with the context (pages scored, splits) is read by the kernels from those
 * arguments, so a decode step's dispatches can be captured once and replayed (model/decode-graph.ts).
 */
import { SiftError } from '../../config/errors.js';
import { check, requireInts } from '../../shaders/lib/checks.js';
import {
  type GqaCombine,
  MAX_SELECT_PAGES,
  PageSelectKernel,
  scoreTiles,
  selectScoresBytes,
} from '../../shaders/page_select.js';
import type { Binding, Gpu, UniformArena } from '../../shaders/runtime.js';
import { partialsBytes, SparseDecodeKernel, type SparseDecodeVariant } from '../../shaders/sparse_decode.js';
import { StepInputs } from '../step-inputs.js';
import { pagesKept } from './budget.js';
import { SelectionSchedule } from './selection-schedule.js';

/** Words of dispatch arguments per retrieval-head count r: page_score, page_select, sparse_decode (3 each). */
const ARG_WORDS = 9;

/** One decode row of a step. */
export interface SparseDecodeRow {
  /** Stable sequence id: the selection schedule's key. */
  seqId: string | number;
  /** Row of this sequence in the step's block table. */
  blockRow: number;
  /** Position of the query token (the sequence holds position + 1 tokens, this one's K/V already written). */
  position: number;
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
  /** Selection slots: the most sequences that hold a selection at once (decoding and not yet released). */
  numSlots: number;
  /** Selection row length: the most pages a row keeps; default min(maxPagesPerSeq, 4096) (dense always fits). */
  maxSelected?: number;
  /** Decode steps a selection is reused for; default 4. */
  reselectInterval?: number;
  variant?: SparseDecodeVariant;
  combine?: GqaCombine;
  splitTokens?: number;
}

/** One layer's selections, kept across decode steps (reused between reselections); row `slot` per sequence. */
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
  /**
   * The layer's sliding window (0 / absent: none): page selection keeps only pages holding window tokens and the
   * attention masks keys older than it; `softcap` caps the scores (Gemma 2).
   */
  window?: number;
  softcap?: number;
}

interface StepPlan {
  numRows: number;
  numSelect: number;
  numSplits: number;
  maxSelectPages: number; // most pages of a reselecting row (sizes the score grid)
}

/**
 * Sparse decode attention of a decode batch, layer by layer. Per step: `prepareStep(rows)` once (gives each
 * sequence its selection slot, decides which rows reselect through `schedule`, computes each row's pages kept by the
 * budget rule, writes the rows, the reselecting rows and the grids of every retrieval-head count into the step's
 * inputs), then `encodeLayer` for every layer, in one or more passes submitted after prepareStep. The inputs are
 * the forward pass's shared StepInputs (regions from `inputRegions`, uploaded with the rest of the step) or, when
 * none is given, this object's own (uploaded by prepareStep).
 *
 * The caller provides, per layer: `digests` (numPages, pageSize / logicalPageSize, numKvHeads, 2, headDim) f16
 * (digestBytes) kept current by PageDigestKernel after each kv_write (prefill and decode); a `LayerSelection` from
 * `createLayerSelection()` kept across steps; q/out (numRows, numHeads, headDim) f32. This class owns the partials
 * scratch (maxRows, numHeads, maxSplits, 2 + headDim) f32 and the page-score scratch, shared by all layers
 * (dispatches in a pass run in order), and the per-sequence state:
 * the selection slot and the reselection schedule. Call `onPrefill(seqId)` after every prefill chunk of a sequence
 * and `release(seqId)` when it ends or is preempted; a slot handed to a new sequence is reselected on its first
 * decode step because that follows its prefill.
 */
export class SparseDecodeAttention {
  readonly schedule: SelectionSchedule<string | number>;
  readonly attention: SparseDecodeKernel;
  readonly select: PageSelectKernel;
  readonly maxSelected: number;
  readonly logicalPageSize: number;
  readonly maxSplits: number;
  readonly pagesPerSplit: number;
  /** The step's rows (maxRows, 4), reselecting rows (maxRows) and grids: shared with the forward pass or own. */
  private readonly inputs: StepInputs;
  private readonly ownsInputs: boolean;
  private readonly partials: GPUBuffer; // (maxRows, numHeads, maxSplits, 2 + headDim) f32
  private readonly scores: GPUBuffer; // (maxRows, numKvHeads, selectKeyStride(maxPagesPerSeq)) u32 page keys
  private readonly slots = new Map<string | number, number>();
  /** Per sequence, the pages its current selection holds and the newest page when it was made. */
  private readonly selections = new Map<string | number, { count: number; newestPage: number }>();
  /**
   * Per row of the last prepared step, the KV tokens each retrieval head reads: the selection's pages (whole, but
   * the newest page up to the query) plus the newest page when a reused selection does not hold it, as the kernel's
   * page list has them (sparse_decode_common.wgsl pageList).
   */
  lastTokensRead: number[] = [];
  private readonly freeSlots: number[] = [];
  private plan: StepPlan | null = null;

  /** The step-input regions this class writes: sparseRows, selectRows, sparseArgs. */
  static inputRegions(maxRows: number, numKvHeads: number): [string, number][] {
    return [
      ['sparseRows', maxRows * 4],
      ['selectRows', maxRows],
      ['sparseArgs', numKvHeads * ARG_WORDS],
    ];
  }

  constructor(
    private readonly gpu: Gpu,
    readonly cfg: SparseDecodeConfig,
    inputs?: StepInputs,
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
    // The partials scratch is bound whole: at most as many splits as fit maxStorageBufferBindingSize (e.g. 64 rows
    // of 32 heads at 128k context would want 1025 splits, 1.09 GB). A row whose page list is longer than the splits
    // hold at pagesPerSplit takes more pages per split: the kernel derives that from the row's list and the split
    // count (sparse_decode_common.wgsl), so a step's inputs say all and nothing is rebuilt per step.
    const perSplit = partialsBytes(cfg.maxRows, cfg.numHeads, 1, cfg.headDim);
    const fitSplits = Math.floor(gpu.caps.maxStorageBufferBindingSize / perSplit);
    if (fitSplits < 1) {
      throw new SiftError(
        'GPU_LIMIT',
        `sparse decode partials for ${cfg.maxRows} rows x ${cfg.numHeads} heads need ${perSplit} bytes per split; ` +
          `the adapter binds at most ${gpu.caps.maxStorageBufferBindingSize} (maxStorageBufferBindingSize): lower --max-seqs`,
      );
    }
    const split = this.attention.splitPlan(this.maxSelected + 1, cfg.pageSize);
    this.maxSplits = Math.min(split.numSplits, fitSplits);
    this.pagesPerSplit = split.pagesPerSplit;
    this.ownsInputs = !inputs;
    this.inputs = inputs ?? new StepInputs(gpu, SparseDecodeAttention.inputRegions(cfg.maxRows, cfg.numKvHeads));
    this.partials = gpu.createBuffer(
      'sparse-partials',
      partialsBytes(cfg.maxRows, cfg.numHeads, this.maxSplits, cfg.headDim),
    );
    this.scores = gpu.createBuffer(
      'sparse-page-scores',
      selectScoresBytes(cfg.maxRows, cfg.numKvHeads, cfg.maxPagesPerSeq),
    );
    for (let i = cfg.numSlots - 1; i >= 0; i--) this.freeSlots.push(i);
  }

  /** The selection slot of `seqId`, stable from its first decode step until release (allocated on first use). */
  slotOf(seqId: string | number): number {
    let s = this.slots.get(seqId);
    if (s === undefined) {
      s = this.freeSlots.pop();
      if (s === undefined) {
        throw new SiftError('INTERNAL', `more than ${this.cfg.numSlots} sequences hold a sparse selection slot`);
      }
      this.slots.set(seqId, s);
    }
    return s;
  }

  /** A prefill chunk of `seqId` ran: the digests and the context changed, so its next decode step reselects. */
  onPrefill(seqId: string | number): void {
    this.schedule.onPrefill(seqId);
  }

  /** Forgets a finished (or preempted) sequence: its slot goes back to the free list, its schedule is dropped. */
  release(seqId: string | number): void {
    this.schedule.forget(seqId);
    this.selections.delete(seqId);
    const s = this.slots.get(seqId);
    if (s === undefined) return;
    this.slots.delete(seqId);
    this.freeSlots.push(s);
  }

  /** A layer's selection buffers (zeroed: count 0 means only the newest page until the first reselection). */
  createLayerSelection(): LayerSelection {
    const { numSlots, numKvHeads } = this.cfg;
    return {
      selected: this.gpu.createBuffer('sparse-selected', numSlots * numKvHeads * this.maxSelected * 4),
      counts: this.gpu.createBuffer('sparse-counts', numSlots * numKvHeads * 4),
    };
  }

  /**
   * Plans one decode step and writes its rows, reselecting rows and grids into the step's inputs (uploading them
   * when this object owns them); returns which rows reselect. Call once per step, before encoding its layers.
   */
  prepareStep(rows: SparseDecodeRow[]): boolean[] {
    const K = 'SparseDecodeAttention.prepareStep';
    const { pageSize, maxRows, maxPagesPerSeq, numKvHeads } = this.cfg;
    check(K, rows.length <= maxRows, `${rows.length} rows > maxRows ${maxRows}`);
    const data = this.inputs.words('sparseRows', rows.length * 4);
    const sel: number[] = [];
    const reselect: boolean[] = [];
    const read: number[] = [];
    let maxList = 1;
    let maxSelectPages = 1;
    rows.forEach((r, i) => {
      requireInts(K, { blockRow: r.blockRow, position: r.position });
      const P = Math.floor(r.position / pageSize) + 1;
      check(
        K,
        P <= maxPagesPerSeq && P <= MAX_SELECT_PAGES,
        `row ${i}: ${P} pages > ${Math.min(maxPagesPerSeq, MAX_SELECT_PAGES)}`,
      );
      check(K, r.tokenBudget >= 0, `row ${i}: tokenBudget ${r.tokenBudget}`);
      const keep = pagesKept(r.position + 1, r.tokenBudget, pageSize);
      check(K, keep <= this.maxSelected, `row ${i}: keeps ${keep} pages > maxSelected ${this.maxSelected}`);
      data[4 * i] = r.blockRow;
      data[4 * i + 1] = r.position;
      data[4 * i + 2] = this.slotOf(r.seqId);
      data[4 * i + 3] = keep;
      const again = this.schedule.step(r.seqId);
      reselect.push(again);
      if (again) {
        sel.push(i);
        maxSelectPages = Math.max(maxSelectPages, P);
        this.selections.set(r.seqId, { count: Math.min(keep, P), newestPage: P - 1 }); // page_select keeps min(K, P)
      }
      // the kernel's page list: the selection, plus the newest page when the selection predates it
      const s = this.selections.get(r.seqId) ?? { count: 0, newestPage: -1 };
      const newestTokens = r.position + 1 - (P - 1) * pageSize;
      read.push(
        s.count > 0 && s.newestPage >= P - 1
          ? (s.count - 1) * pageSize + newestTokens
          : s.count * pageSize + newestTokens,
      );
      maxList = Math.max(maxList, Math.min(P, keep + 1));
    });
    this.inputs.words('selectRows', sel.length).set(sel);
    // at most maxSplits: rows with longer lists then take more pages per split (in the kernel)
    const { numSplits } = this.attention.splitPlan(maxList, pageSize, this.maxSplits);
    // the grids of every retrieval-head count r: page_score, page_select, sparse_decode (one workgroup per row, KV head)
    const args = this.inputs.words('sparseArgs', numKvHeads * ARG_WORDS);
    const tiles = scoreTiles(maxSelectPages);
    for (let r = 1; r <= numKvHeads; r++) {
      args.set([sel.length * r, tiles, 1, sel.length, r, 1, rows.length * r, numSplits, 1], (r - 1) * ARG_WORDS);
    }
    if (this.ownsInputs) this.inputs.flush();
    this.plan = { numRows: rows.length, numSelect: sel.length, numSplits, maxSelectPages };
    this.lastTokensRead = read;
    return reselect;
  }

  /** The prepared step's shape: decode rows, and whether any reselects (page selection runs this step). */
  get step(): { numRows: number; reselect: boolean } {
    const plan = this.plan;
    if (!plan) throw new SiftError('INTERNAL', 'SparseDecodeAttention: no step prepared');
    return { numRows: plan.numRows, reselect: plan.numSelect > 0 };
  }

  /** [page selection for the reselecting rows] + sparse attention of one layer, for the prepared step. */
  encodeLayer(pass: GPUComputePassEncoder, arena: UniformArena, a: SparseLayerArgs): void {
    const { numRows, reselect } = this.step;
    this.encodeFor(pass, arena, a, numRows, reselect);
  }

  /**
   * [page selection] + sparse attention of one layer for `numRows` decode rows, every size that varies per step read
   * from the step's inputs (so a capture replays for any step of that many rows, reselecting or not as given).
   */
  encodeFor(
    pass: GPUComputePassEncoder,
    arena: UniformArena,
    a: SparseLayerArgs,
    numRows: number,
    reselect: boolean,
  ): void {
    const c = this.cfg;
    const numKvHeads = a.numKvHeads ?? c.numKvHeads;
    requireInts('SparseDecodeAttention.encodeLayer', { numKvHeads, numRows });
    check(
      'SparseDecodeAttention.encodeLayer',
      numKvHeads <= c.numKvHeads && numRows <= c.maxRows,
      `numKvHeads ${numKvHeads} > ${c.numKvHeads} or ${numRows} rows > ${c.maxRows}`,
    );
    if (numKvHeads === 0 || numRows === 0) return; // no retrieval heads in this layer
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
    const inputs = this.inputs;
    const argBase = inputs.byteOffset('sparseArgs', (numKvHeads - 1) * ARG_WORDS);
    const rows = inputs.binding('sparseRows');
    if (reselect) {
      this.select.encode(pass, arena, {
        q: a.q,
        digests: a.digests,
        blockTable: a.blockTable,
        rows,
        selectRows: inputs.binding('selectRows'),
        selected: a.selection.selected,
        counts: a.selection.counts,
        scores: this.scores,
        numSelect: numRows,
        logicalPageSize: this.logicalPageSize,
        indirect: { buffer: inputs.buffer, score: argBase, select: argBase + 12 },
        window: a.window,
        ...shape,
      });
    }
    this.attention.encode(pass, arena, {
      q: a.q,
      kCache: a.kCache,
      vCache: a.vCache,
      blockTable: a.blockTable,
      rows,
      selected: a.selection.selected,
      counts: a.selection.counts,
      partials: this.partials,
      out: a.out,
      numRows,
      numSplits: this.maxSplits,
      pagesPerSplit: this.pagesPerSplit,
      scale: a.scale,
      indirect: { buffer: inputs.buffer, offset: argBase + 24 },
      window: a.window,
      softcap: a.softcap,
      ...shape,
    });
  }

  destroy(): void {
    if (this.ownsInputs) this.inputs.destroy();
    this.partials.destroy();
    this.scores.destroy();
  }
}
