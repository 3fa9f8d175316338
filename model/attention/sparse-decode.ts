/**
 * Sparse decode attention of one layer for a batch of decode rows (Quest / LServe decode), the stateful part above
 * the kernels: which rows reselect their pages this step (SelectionSchedule: after every prefill, then every
 * `reselectInterval` decode steps), how many pages each row keeps (the one budget rule, ./budget.ts), the per-step
 * rows, reselecting rows and grids (indirect dispatch arguments) written to the step's inputs; then per layer
 * the digest hierarchy's update for the blocks the step wrote (shaders/digest_levels.ts), hierarchical page selection
 * (shaders/hier_select.ts) for the reselecting rows and top-k attention (shaders/sparse_decode.ts) for all of them. Every size that varies with the context (pages scored, splits) is read by the kernels from those
 * arguments, so a decode step's dispatches can be captured once and replayed (model/decode-graph.ts).
 */
import { SiftError } from '../../config/errors.js';
import {
  DigestLevelsKernel,
  hierarchyRows,
  type LevelSpan,
  levelEntries,
  levelGrid,
  levelsBytes,
  maxLevelEntries,
} from '../../shaders/digest_levels.js';
import {
  DEFAULT_HIERARCHY,
  type HierarchyConfig,
  HierSelectKernel,
  hierScratchBytes,
  hierStrides,
  selectionDigests,
} from '../../shaders/hier_select.js';
import { check, requireInts } from '../../shaders/lib/checks.js';
import { createSlabs, type PoolBinding, planSlabs, type Slabs } from '../../shaders/lib/slabs.js';
import type { GqaCombine } from '../../shaders/page_select.js';
import type { Binding, Gpu, UniformArena } from '../../shaders/runtime.js';
import { partialsBytes, SparseDecodeKernel, type SparseDecodeVariant } from '../../shaders/sparse_decode.js';
import { StepInputs } from '../step-inputs.js';
import { pagesKept } from './budget.js';
import { SelectionSchedule } from './selection-schedule.js';

/**
 * Words of dispatch arguments per retrieval-head count r (3 each): digest_levels, hier_select (one grid for its
 * three levels), sparse_decode.
 */
const ARG_WORDS = 9;
const A_LEVELS = 0;
const A_SELECT = 3;
const A_DECODE = 6;

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
  /** Selection row length: the most pages a row keeps; default maxPagesPerSeq (dense always fits). */
  maxSelected?: number;
  /** Digest hierarchy: pages per level-1 block, level-1 blocks per level-2 block, candidates beyond K. */
  hierarchy?: HierarchyConfig;
  /** Decode steps a selection is reused for; default 4. */
  reselectInterval?: number;
  /**
   * Bytes one slab of the digest hierarchy may take (whole sequence slots per slab, shaders/lib/slabs.ts); default
   * the adapter's maxStorageBufferBindingSize. Tests force small slabs.
   */
  maxSlabBytes?: number;
  variant?: SparseDecodeVariant;
  combine?: GqaCombine;
  splitTokens?: number;
}

/** One layer's selections, kept across decode steps (reused between reselections); row `slot` per sequence. */
export interface LayerSelection {
  selected: GPUBuffer; // (numSlots, numKvHeads, maxSelected) u32
  counts: GPUBuffer; // (numSlots, numKvHeads) u32
  levels: Slabs; // (numSlots, blocksPerSlot, numKvHeads, 2, headDim) f16 pairs: the digest hierarchy, slabs of slots
}

export interface SparseLayerArgs {
  q: Binding; // (numRows, numHeads, headDim) f32 this step's decode queries, after RoPE
  kCache: PoolBinding; // (numPages, pageSize, numKvHeads, headDim / 2) u32 f16 pairs, this step's K/V written
  vCache: PoolBinding; // (numPages, pageSize, numKvHeads, headDim / 2) u32 f16 pairs
  blockTable: Binding; // (numSeqs, maxPagesPerSeq) u32
  digests: PoolBinding; // (numPages, pageSize / logicalPageSize, numKvHeads, 2, headDim) f16 of this layer, current
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
  readonly select: HierSelectKernel;
  readonly levels: DigestLevelsKernel;
  readonly hierarchy: HierarchyConfig;
  /** Digest reads of the last prepared step's reselections, summed over rows and KV heads of one layer. */
  lastSelectionDigests = 0;
  readonly maxSelected: number;
  readonly logicalPageSize: number;
  readonly maxSplits: number;
  readonly pagesPerSplit: number;
  /** The step's rows (maxRows, 4), reselecting rows (maxRows) and grids: shared with the forward pass or own. */
  private readonly inputs: StepInputs;
  private readonly ownsInputs: boolean;
  private readonly partials: GPUBuffer; // (maxRows, numHeads, maxSplits, 2 + headDim) f32
  private readonly scratch: { keys: GPUBuffer; ids: GPUBuffer; candA: GPUBuffer; candB: GPUBuffer };
  private readonly slots = new Map<string | number, number>();
  /** Per sequence, the pages its current selection holds and the newest page when it was made. */
  private readonly selections = new Map<string | number, { count: number; newestPage: number }>();
  /**
   * Per row of the last prepared step, the KV tokens each retrieval head reads: the selection's pages (whole, but
   * the newest page up to the query) plus the newest page when a reused selection does not hold it, as the kernel's
   * page list has them (sparse_decode_common.wgsl pageList).
   */
  lastTokensRead: number[] = [];
  /** Tokens [0, covered) of each sequence whose coarse digests are current in its slot. */
  private readonly covered = new Map<string | number, number>();
  private readonly freeSlots: number[] = [];
  private plan: StepPlan | null = null;

  /** The step-input regions this class writes: sparseRows, selectRows, sparseArgs, levelEntries1 / 2. */
  static inputRegions(
    maxRows: number,
    numKvHeads: number,
    maxPagesPerSeq = 1,
    hierarchy: HierarchyConfig = DEFAULT_HIERARCHY,
  ): [string, number][] {
    const entries = 4 + 4 * maxLevelEntries(maxRows, maxPagesPerSeq, hierarchy.fan1, hierarchy.fan2);
    return [
      ['sparseRows', maxRows * 4],
      ['selectRows', maxRows],
      ['sparseArgs', numKvHeads * ARG_WORDS],
      ['levelEntries', entries],
    ];
  }

  constructor(
    private readonly gpu: Gpu,
    readonly cfg: SparseDecodeConfig,
    inputs?: StepInputs,
  ) {
    const K = 'SparseDecodeAttention';
    this.logicalPageSize = cfg.logicalPageSize ?? 16;
    this.maxSelected = cfg.maxSelected ?? cfg.maxPagesPerSeq;
    this.hierarchy = cfg.hierarchy ?? DEFAULT_HIERARCHY;
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
      this.maxSelected >= 2 && this.maxSelected <= Math.max(2, cfg.maxPagesPerSeq),
      `maxSelected ${this.maxSelected} not in 2..${cfg.maxPagesPerSeq}`,
    );
    check(K, cfg.pageSize % this.logicalPageSize === 0, `logicalPageSize ${this.logicalPageSize} must divide pageSize`);
    check(K, cfg.numHeads % cfg.numKvHeads === 0, `numHeads ${cfg.numHeads} not a multiple of ${cfg.numKvHeads}`);
    this.schedule = new SelectionSchedule(cfg.reselectInterval);
    this.attention = new SparseDecodeKernel(gpu, { variant: cfg.variant, splitTokens: cfg.splitTokens });
    this.select = new HierSelectKernel(gpu, { combine: cfg.combine, hierarchy: this.hierarchy });
    this.levels = new DigestLevelsKernel(gpu);
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
    this.inputs =
      inputs ??
      new StepInputs(
        gpu,
        SparseDecodeAttention.inputRegions(cfg.maxRows, cfg.numKvHeads, cfg.maxPagesPerSeq, this.hierarchy),
      );
    this.partials = gpu.createBuffer(
      'sparse-partials',
      partialsBytes(cfg.maxRows, cfg.numHeads, this.maxSplits, cfg.headDim),
    );
    const sb = hierScratchBytes(
      cfg.maxRows,
      cfg.numKvHeads,
      hierStrides(this.hierarchy, cfg.maxPagesPerSeq, this.maxSelected),
    );
    this.scratch = {
      keys: gpu.createBuffer('sparse-select-keys', sb.keys),
      ids: gpu.createBuffer('sparse-select-ids', sb.keys),
      candA: gpu.createBuffer('sparse-select-cand-a', sb.cand),
      candB: gpu.createBuffer('sparse-select-cand-b', sb.cand),
    };
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
    this.covered.delete(seqId);
    const s = this.slots.get(seqId);
    if (s === undefined) return;
    this.slots.delete(seqId);
    this.freeSlots.push(s);
  }

  /**
   * A layer's selection buffers (zeroed: count 0 means only the newest page until the first reselection) and its
   * digest hierarchy: (numSlots, blocksPerSlot, numKvHeads, 2, headDim) f16, in slabs of whole sequence slots within
   * the binding limit (maxSlabBytes).
   */
  createLayerSelection(): LayerSelection {
    const { numSlots, numKvHeads } = this.cfg;
    return {
      selected: this.gpu.createBuffer('sparse-selected', numSlots * numKvHeads * this.maxSelected * 4),
      counts: this.gpu.createBuffer('sparse-counts', numSlots * numKvHeads * 4),
      levels: createSlabs(this.gpu, 'sparse-levels', this.levelsPlan()),
    };
  }

  /** How one layer's digest hierarchy splits: units of one sequence slot's coarse digests. */
  levelsPlan(): ReturnType<typeof planSlabs> {
    const { numSlots, numKvHeads, maxPagesPerSeq, headDim } = this.cfg;
    const rows = hierarchyRows(maxPagesPerSeq, this.hierarchy.fan1, this.hierarchy.fan2);
    const limit = this.cfg.maxSlabBytes ?? this.gpu.caps.maxStorageBufferBindingSize;
    return planSlabs(levelsBytes(1, rows.blocksPerSlot, numKvHeads, headDim), numSlots, limit);
  }

  /** Bytes of one layer's digest hierarchy (the buffer createLayerSelection makes). */
  levelsBytes(): number {
    const { numSlots, numKvHeads, maxPagesPerSeq, headDim } = this.cfg;
    const rows = hierarchyRows(maxPagesPerSeq, this.hierarchy.fan1, this.hierarchy.fan2);
    return levelsBytes(numSlots, rows.blocksPerSlot, numKvHeads, headDim);
  }

  /**
   * The level span of a decode row writing [start, end): from its sequence's first token not yet covered in its slot
   * (its first decode step covers its whole context, its prefill chunks included).
   */
  private levelSpan(seqId: string | number, blockRow: number, start: number, end: number): LevelSpan {
    const slot = this.slotOf(seqId);
    const from = Math.min(start, this.covered.get(seqId) ?? 0);
    this.covered.set(seqId, Math.max(end, this.covered.get(seqId) ?? 0));
    return { blockRow, slot, start: from, end };
  }

  /** Writes the level entry lists and the levels' grids of every retrieval-head count. */
  private writeLevels(spans: LevelSpan[]): void {
    const K = 'SparseDecodeAttention';
    const h = this.hierarchy;
    const e = levelEntries(spans, this.cfg.pageSize, h.fan1, h.fan2);
    const cap = this.inputs.capacity('levelEntries');
    check(K, e.length <= cap, `${e[0]} level entries exceed ${(cap - 4) / 4}`);
    this.inputs.words('levelEntries', e.length).set(e);
    const args = this.inputs.words('sparseArgs', this.cfg.numKvHeads * ARG_WORDS);
    for (let r = 1; r <= this.cfg.numKvHeads; r++) {
      const b = (r - 1) * ARG_WORDS;
      args.set([levelGrid(e[0], r, this.cfg.headDim), 1, 1], b + A_LEVELS);
    }
  }

  /**
   * Tokens from `start` on of `seqId` were (re)written by a prefill chunk: its coarse digests from there are
   * recomputed on its next decode step (prefill steps do not touch the hierarchy, so a sequence holds a slot only
   * while it decodes).
   */
  onPrefillTokens(seqId: string | number, start: number): void {
    const c = this.covered.get(seqId);
    if (c !== undefined) this.covered.set(seqId, Math.min(c, start));
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
    const spans: LevelSpan[] = [];
    let digestsRead = 0;
    const lpp = pageSize / this.logicalPageSize;
    rows.forEach((r, i) => {
      requireInts(K, { blockRow: r.blockRow, position: r.position });
      const P = Math.floor(r.position / pageSize) + 1;
      check(K, P <= maxPagesPerSeq, `row ${i}: ${P} pages > ${maxPagesPerSeq}`);
      check(K, r.tokenBudget >= 0, `row ${i}: tokenBudget ${r.tokenBudget}`);
      const keep = pagesKept(r.position + 1, r.tokenBudget, pageSize);
      check(K, keep <= this.maxSelected, `row ${i}: keeps ${keep} pages > maxSelected ${this.maxSelected}`);
      data[4 * i] = r.blockRow;
      data[4 * i + 1] = r.position;
      data[4 * i + 2] = this.slotOf(r.seqId);
      data[4 * i + 3] = keep;
      const again = this.schedule.step(r.seqId);
      reselect.push(again);
      if (again && keep < P) spans.push(this.levelSpan(r.seqId, r.blockRow, r.position, r.position + 1));
      if (again) {
        sel.push(i);
        // hier_select keeps min(K, P) pages (fewer in a sliding-window layer: this count is then an upper bound)
        this.selections.set(r.seqId, { count: Math.min(keep, P), newestPage: P - 1 });
        digestsRead += selectionDigests(this.hierarchy, P, keep, lpp);
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
    this.writeLevels(spans);
    this.lastSelectionDigests = digestsRead;
    // at most maxSplits: rows with longer lists then take more pages per split (in the kernel)
    const { numSplits } = this.attention.splitPlan(maxList, pageSize, this.maxSplits);
    // the grids of every retrieval-head count r: hier_select (three levels), sparse_decode (one workgroup per row,
    // KV head and split; levels: writeLevels)
    const args = this.inputs.words('sparseArgs', numKvHeads * ARG_WORDS);
    for (let r = 1; r <= numKvHeads; r++) {
      const b = (r - 1) * ARG_WORDS;
      args.set([sel.length, r, 1], b + A_SELECT);
      args.set([rows.length * r, numSplits, 1], b + A_DECODE);
    }
    if (this.ownsInputs) this.inputs.flush();
    this.plan = { numRows: rows.length, numSelect: sel.length, numSplits };
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
      this.encodeLevels(pass, arena, a, numKvHeads);
      this.select.encode(pass, arena, {
        q: a.q,
        digests: a.digests,
        levels: a.selection.levels,
        blockTable: a.blockTable,
        rows,
        selectRows: inputs.binding('selectRows'),
        selected: a.selection.selected,
        counts: a.selection.counts,
        ...this.scratch,
        numSelect: numRows,
        logicalPageSize: this.logicalPageSize,
        indirect: { buffer: inputs.buffer, select: argBase + 4 * A_SELECT },
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
      indirect: { buffer: inputs.buffer, offset: argBase + 4 * A_DECODE },
      window: a.window,
      softcap: a.softcap,
      ...shape,
    });
  }

  /**
   * The digest hierarchy's update of one layer for the prepared step's level entries (after its page digests are
   * current): level 1 then level 2, grids from the step's inputs.
   */
  encodeLevels(
    pass: GPUComputePassEncoder,
    arena: UniformArena,
    a: Pick<SparseLayerArgs, 'digests' | 'blockTable' | 'selection' | 'numKvHeads'>,
    numKvHeads = a.numKvHeads ?? this.cfg.numKvHeads,
  ): void {
    if (numKvHeads === 0) return;
    const c = this.cfg;
    const argBase = this.inputs.byteOffset('sparseArgs', (numKvHeads - 1) * ARG_WORDS);
    this.levels.encode(pass, arena, {
      digests: a.digests,
      blockTable: a.blockTable,
      entries: this.inputs.binding('levelEntries'),
      levels: a.selection.levels,
      numKvHeads,
      headDim: c.headDim,
      pageSize: c.pageSize,
      logicalPageSize: this.logicalPageSize,
      maxPagesPerSeq: c.maxPagesPerSeq,
      fan1: this.hierarchy.fan1,
      fan2: this.hierarchy.fan2,
      grid: { buffer: this.inputs.buffer, offset: argBase + 4 * A_LEVELS },
    });
  }

  destroy(): void {
    if (this.ownsInputs) this.inputs.destroy();
    this.partials.destroy();
    for (const b of Object.values(this.scratch)) b.destroy();
  }
}
