/**
 * Unified sparse attention of one step, layer by layer (LServe-style), for the forward pass.
 *
 * After the head permutation (model/head-permutation.ts) layer l has r_l retrieval KV heads [0, r_l) in the
 * main paged pool and s_l streaming KV heads [r_l, nKv) in the streaming pool's rings; query heads follow their KV
 * head (group g = nHeads / nKv). Per layer, given q/k/v of this step's T tokens after RoPE:
 *   streaming heads (s_l > 0): sink + local attention, in-chunk keys from the fresh k/v rows, older ones from the
 *     ring (decode rows [0, D): streaming_attention; prefill tokens [D, T): the tiled prefill attention's Lambda
 *     heads, PrefillAttention.encodeStreaming), THEN kv_write_streaming of the tokens that stay resident (a chunk
 *     longer than the ring would otherwise overwrite keys its own earlier tokens still need);
 *   retrieval heads (r_l > 0): their K/V are in the main pool already (the forward pass's rope_kv_write, which also
 *     recomputes the digests of the decode tokens' logical pages), then page digests of the logical pages the
 *     prefill tokens touched and (block-sparse prefill) the key-block digests of every block the step wrote, prefill
 *     tokens [D, T): tiled prefill attention (./prefill.ts), dense causal or block-sparse (MInference-style), decode
 *     rows [0, D): top-k page attention within each entry's token budget (dense when the context fits).
 * The batch's rows say which rows decode; decode rows come first with one token each (ForwardPass asserts it), so
 * decode rows are tokens [0, D).
 *
 * Per-step data goes into the forward pass's StepInputs (regions from `inputRegions`), uploaded with the rest of the
 * step. A decode-only step (`prepareDecode` + `encodeDecodeLayer`) reads every size that varies per step from those
 * inputs, so its dispatches are captured once per batch size and replayed (model/decode-graph.ts).
 */

import type { ModelConfig } from '../../checkpoint/config.js';
import { attentionSoftmaxScale, layerRopeConfig } from '../../checkpoint/rope.js';
import { SiftError } from '../../config/errors.js';
import type { AttentionVariant } from '../../shaders/attention.js';
import { type BlockSpan, blockDigestBytes } from '../../shaders/block_digest.js';
import { type BlockHierarchy, HeadMode, keptKeyBlocks } from '../../shaders/block_select.js';
import { KvWriteStreamingKernel } from '../../shaders/kv_write_streaming.js';
import { createSlabs, encodePoolCopy, planSlabs, type Slabs, unitRuns } from '../../shaders/lib/slabs.js';
import { digestBytes, digestEntries, PageDigestKernel } from '../../shaders/page_digest.js';
import type { Binding, Gpu, UniformArena } from '../../shaders/runtime.js';
import type { SparseDecodeVariant } from '../../shaders/sparse_decode.js';
import { freshStartRows, StreamingAttentionKernel, streamingKeysRead } from '../../shaders/streaming_attention.js';
import type { SeqId } from '../executor.js';
import type { BatchRow } from '../forward.js';
import type { KvStorage } from '../kv-storage.js';
import type { StepInputs } from '../step-inputs.js';
import { PrefillAttention, type PrefillPlan } from './prefill.js';
import { type LayerSelection, SparseDecodeAttention, type SparseDecodeRow } from './sparse-decode.js';

export interface LayerAttentionOptions {
  maxBatchTokens: number;
  maxSeqs: number;
  maxPagesPerSeq: number;
  /** Page digests and sparse decode (decode rows through page selection). */
  sparse?: { logicalPageSize: number; reuseInterval: number };
  /** Block-sparse prefill of retrieval heads; absent = dense prefill. */
  blockSparsePrefill?: { topBlocks: number; hierarchy?: BlockHierarchy };
  /** Streaming heads' window; required when any layer has streaming heads. */
  streaming?: { sinkTokens: number; localTokens: number; sinkPages: number; ringPages: number };
  /** Kernel variants (default per adapter: 'lanes' on CPU adapters, 'workgroup' on GPUs). */
  variant?: AttentionVariant & SparseDecodeVariant;
}

/** What the forward pass hands over per step besides the shared buffers (ForwardBatch's fields). */
export interface AttentionStepInput {
  tokenSeq: Uint32Array;
  positions: Uint32Array;
  blockTable: Uint32Array;
  maxPagesPerSeq: number;
  rows: readonly BatchRow[];
  streaming?: { table: Uint32Array; slots: Uint32Array };
}

/** The step's shared buffers, as the forward pass owns them. */
export interface AttentionBuffers {
  q: Binding; // (T, nHeads, headDim) f32 after RoPE
  k: Binding | null; // (T, nKv, headDim) f32 after RoPE (streaming heads); null otherwise
  v: Binding | null; // (T, nKv, headDim) f32
  out: Binding; // (T, nHeads, headDim) f32
  table: Binding; // (numSeqs, maxPagesPerSeq) u32
  seq: Binding; // (T) u32
  pos: Binding; // (T) u32
}

interface StepPlan {
  T: number;
  D: number;
  numDigestEntries: number;
  numBlockDigestEntries: number;
  prefillPlan: PrefillPlan | null;
}

interface SparseLayer {
  digests: Slabs; // (numPages, pageSize / logicalPageSize, nKv, 2, headDim) f16 (min, max) in u32 pairs, slabs of pages
  selection: LayerSelection;
}

/**
 * What a step's attention read, as its kernels read it (for usage and metrics):
 * per decode row, the mean KV tokens per (layer, KV head), streaming heads included; per prefill row, the causal key
 * blocks of its block-sparse retrieval heads' query blocks and how many of them the block lists kept (0 and 0 for
 * dense prefill).
 */
export interface StepAttentionReport {
  decodeTokens: number[];
  prefillKeyBlocks: { kept: number; total: number }[];
}

export class LayerAttention {
  readonly sparse: SparseDecodeAttention | null = null;
  private readonly digest: PageDigestKernel | null = null;
  private readonly sparseLayers: SparseLayer[] = [];
  /** Prefill tokens of every layer: tiled attention; block selection and block digests when block-sparse. */
  private readonly prefill: PrefillAttention;
  private readonly blockSparse: boolean;
  /** Per layer: (numPages * bpp, nKv, headDim) f32 key-block digests (block-sparse prefill only). */
  private readonly blockDigests: Slabs[] = [];
  private readonly stream: StreamingAttentionKernel | null = null;
  private readonly streamWrite: KvWriteStreamingKernel | null = null;
  private readonly bufs: Record<string, GPUBuffer> = {};
  private plan: StepPlan | null = null;
  /** What the last prepared step's attention reads (see StepAttentionReport). */
  lastReport: StepAttentionReport = { decodeTokens: [], prefillKeyBlocks: [] };
  readonly hasStreamingHeads: boolean;
  /**
   * Per layer, what its attention kernels take beside the shapes: the softmax scale (1/sqrt(headDim), Gemma's
   * query_pre_attn_scalar, times yarn's / longrope's attention factor squared), the sliding window (0: none) and
   * Gemma 2's score soft-cap (0: none).
   */
  private readonly mods: { scale: number; window: number; softcap: number }[];
  /** Entries per row of the streaming table (sink pages + ring pages); 0 without streaming heads. */
  readonly streamingRowLength: number;

  /** The StepInputs regions this class writes (the forward pass lays them out with its own). */
  static inputRegions(c: ModelConfig, kv: KvStorage, opts: LayerAttentionOptions): [string, number][] {
    const out: [string, number][] = [];
    if (opts.sparse) {
      out.push(...SparseDecodeAttention.inputRegions(opts.maxSeqs, c.numKvHeads, opts.maxPagesPerSeq));
    }
    // block-sparse prefill: the key block each decode row writes, (maxSeqs, 3) u32 (row, block, valid tokens)
    if (opts.blockSparsePrefill) out.push(['dBlockEntries', 3 * opts.maxSeqs]);
    if (kv.layers.some((l) => l.numStreamingHeads > 0) && opts.streaming) {
      const rowLen = opts.streaming.sinkPages + opts.streaming.ringPages;
      out.push(['streamTable', opts.maxSeqs * rowLen], ['streamSlots', opts.maxBatchTokens]);
    }
    return out;
  }

  /** Regions of the prefill path only (after the decode step's regions in the layout). */
  static prefillInputRegions(kv: KvStorage, opts: LayerAttentionOptions): [string, number][] {
    const T = opts.maxBatchTokens;
    const out: [string, number][] = [];
    // every new token touches at most one logical page; each sequence adds at most one partial page at each end
    if (opts.sparse) out.push(['digestEntries', 3 * (T + 2 * opts.maxSeqs)]);
    // every new token touches one key block; each sequence adds at most one partial block at each end
    if (opts.blockSparsePrefill) out.push(['blockDigestEntries', 3 * (T + 2 * opts.maxSeqs)]);
    if (kv.layers.some((l) => l.numStreamingHeads > 0)) out.push(['freshStart', T]);
    return out;
  }

  constructor(
    private readonly gpu: Gpu,
    private readonly c: ModelConfig,
    private readonly kv: KvStorage,
    private readonly opts: LayerAttentionOptions,
    private readonly inputs: StepInputs,
  ) {
    this.hasStreamingHeads = kv.layers.some((l) => l.numStreamingHeads > 0);
    this.mods = c.layerWindows.map((window, li) => ({
      scale: attentionSoftmaxScale(layerRopeConfig(c, li)),
      window,
      softcap: c.attnLogitSoftcap ?? 0,
    }));
    this.streamingRowLength =
      this.hasStreamingHeads && opts.streaming ? opts.streaming.sinkPages + opts.streaming.ringPages : 0;
    if (this.hasStreamingHeads) {
      if (!opts.streaming) throw new SiftError('INTERNAL', 'LayerAttention: streaming heads need the streaming window');
      this.stream = new StreamingAttentionKernel(gpu);
      this.streamWrite = new KvWriteStreamingKernel(gpu);
    }
    if (opts.sparse) {
      const L = opts.sparse.logicalPageSize;
      this.sparse = new SparseDecodeAttention(
        gpu,
        {
          numHeads: c.numHeads,
          numKvHeads: c.numKvHeads,
          headDim: c.headDim,
          pageSize: kv.pageSize,
          logicalPageSize: L,
          maxPagesPerSeq: opts.maxPagesPerSeq,
          maxRows: opts.maxSeqs,
          numSlots: opts.maxSeqs,
          reselectInterval: opts.sparse.reuseInterval,
          variant: opts.variant,
          maxSlabBytes: kv.maxSlabBytes,
        },
        inputs,
      );
      this.digest = new PageDigestKernel(gpu);
      // one page's digests of every KV head; a layer of r_l heads uses a prefix (digests are addressed by element)
      const plan = planSlabs(digestBytes(1, kv.pageSize, L, c.numKvHeads, c.headDim), kv.numPages, kv.maxSlabBytes);
      for (let i = 0; i < c.numLayers; i++) {
        this.sparseLayers.push({
          digests: createSlabs(gpu, `digests.${i}`, plan),
          selection: this.sparse.createLayerSelection(),
        });
      }
    }
    this.blockSparse = opts.blockSparsePrefill !== undefined;
    this.prefill = new PrefillAttention(gpu, {
      topBlocks: opts.blockSparsePrefill?.topBlocks,
      hierarchy: opts.blockSparsePrefill?.hierarchy,
      variant: opts.variant,
    });
    if (this.blockSparse) {
      // one page's block digests of every KV head, in slabs of whole pages (a layer of r_l heads uses a prefix)
      const page = blockDigestBytes(1, kv.pageSize, this.prefill.blockSize, c.numKvHeads, c.headDim);
      const plan = planSlabs(page, kv.numPages, kv.maxSlabBytes);
      for (let i = 0; i < c.numLayers; i++) this.blockDigests.push(createSlabs(gpu, `blockDigests.${i}`, plan));
    }
  }

  /** The step's sparse decode rows: decode row i is token i (ForwardPass checked). */
  private decodeRows(s: AttentionStepInput): SparseDecodeRow[] {
    const decode: SparseDecodeRow[] = [];
    for (const [i, r] of s.rows.entries()) {
      if (r.kind !== 'decode') break;
      decode.push({ seqId: r.seqId, blockRow: i, position: s.positions[i], tokenBudget: r.tokenBudget });
    }
    if (decode.length > 0 && !this.sparse) {
      throw new SiftError('INTERNAL', 'forward: decode rows given but sparse attention is not enabled');
    }
    return decode;
  }

  /** Streaming tables and the tokens' ring slots into the step's inputs (models with streaming heads). */
  private prepareStreaming(s: AttentionStepInput): void {
    if (!this.hasStreamingHeads) return;
    if (!s.streaming) {
      throw new SiftError('INTERNAL', 'forward: the model has streaming heads but the batch has no streaming table');
    }
    this.inputs.words('streamTable', s.streaming.table.length).set(s.streaming.table);
    this.inputs.words('streamSlots', s.streaming.slots.length).set(s.streaming.slots);
  }

  /**
   * Writes a decode-only step's attention inputs (sparse rows, page-selection schedule, grids, streaming tables);
   * returns whether any row reselects its pages (the captured step with page selection runs then).
   */
  prepareDecode(s: AttentionStepInput): { reselect: boolean } {
    const decode = this.decodeRows(s);
    if (decode.length !== s.tokenSeq.length) throw new SiftError('INTERNAL', 'forward: not a decode-only step');
    this.prepareStreaming(s);
    if (this.blockSparse) {
      const e = this.inputs.words('dBlockEntries', 3 * decode.length);
      const bs = this.prefill.blockSize;
      decode.forEach((r, i) => {
        const c = Math.floor(r.position / bs);
        e.set([r.blockRow, c, r.position - c * bs + 1], 3 * i);
      });
    }
    this.plan = null;
    const reselect = this.sparse ? this.sparse.prepareStep(decode).some((x) => x) : false;
    this.lastReport = this.report(s, decode.length);
    return { reselect };
  }

  /**
   * Writes any step's attention inputs for the prefill path: sparse rows of its decode rows, digest entries of the
   * prefill tokens' logical pages, block plans, streaming tables.
   */
  prepare(s: AttentionStepInput): void {
    const T = s.tokenSeq.length;
    const decode = this.decodeRows(s);
    const D = decode.length;
    let numDigestEntries = 0;
    if (this.sparse) {
      for (const x of spans(s, D)) this.sparse.onPrefillTokens(s.rows[x.row].seqId, x.start);
      if (D > 0) this.sparse.prepareStep(decode);
      const entries = digestEntries(spans(s, D), this.kv.pageSize, this.sparse.logicalPageSize);
      numDigestEntries = entries.length / 3;
      this.inputs.words('digestEntries', entries.length).set(entries);
    }
    let numBlockDigestEntries = 0;
    if (this.blockSparse) {
      // every position the step writes, prefill and decode rows (a block filled by decode tokens may later be read
      // through the prefix cache)
      const entries = this.prefill.digestEntries(blockSpans(s));
      numBlockDigestEntries = entries.length / 3;
      this.inputs.words('blockDigestEntries', entries.length).set(entries);
    }
    let prefillPlan: PrefillPlan | null = null;
    if (D < T) {
      // plan the prefill tokens [D, T) only; their q/out rows start at D
      prefillPlan = this.prefill.plan(s.tokenSeq, s.positions, this.c.numHeads / this.c.numKvHeads, D);
      const { qBlocks } = prefillPlan.blocks;
      const { tiles } = prefillPlan.tiles;
      this.ensure('qBlocks', qBlocks.byteLength);
      this.ensure('tiles', tiles.byteLength);
      this.gpu.write(this.bufs.qBlocks, qBlocks);
      this.gpu.write(this.bufs.tiles, tiles);
      const r = Math.max(...this.kv.layers.map((l) => l.numRetrievalHeads));
      this.ensure('blockList', this.prefill.blockListBytes(prefillPlan, r));
    }
    this.prepareStreaming(s);
    if (this.hasStreamingHeads) this.inputs.words('freshStart', T).set(freshStartRows(s.tokenSeq, s.positions));
    this.plan = { T, D, numDigestEntries, numBlockDigestEntries, prefillPlan };
    this.lastReport = this.report(s, D);
  }

  /** What the step's kernels read: retrieval heads as the page lists have it, streaming heads by their mask. */
  private report(s: AttentionStepInput, D: number): StepAttentionReport {
    const layers = this.kv.layers;
    const R = layers.reduce((n, l) => n + l.numRetrievalHeads, 0);
    const S = layers.reduce((n, l) => n + l.numStreamingHeads, 0);
    const w = this.opts.streaming;
    const decodeTokens = Array.from({ length: D }, (_, i) => {
      const pos = s.positions[i];
      const ret = this.sparse?.lastTokensRead[i] ?? pos + 1;
      let sum = 0;
      layers.forEach((l, li) => {
        // a sliding-window layer reads at most its window
        const win = this.mods[li].window;
        sum += l.numRetrievalHeads * (win > 0 ? Math.min(ret, win) : ret);
        if (l.numStreamingHeads > 0 && w) {
          sum += l.numStreamingHeads * streamingKeysRead(pos, w.sinkTokens, w.localTokens, win);
        }
      });
      return sum / (R + S);
    });
    // prefill rows follow the decode rows, one block-table row each; tokens [D, T) are theirs
    const lo = new Map<number, number>();
    const hi = new Map<number, number>();
    for (let t = D; t < s.tokenSeq.length; t++) {
      const r = s.tokenSeq[t];
      lo.set(r, Math.min(lo.get(r) ?? s.positions[t], s.positions[t]));
      hi.set(r, Math.max(hi.get(r) ?? s.positions[t], s.positions[t]));
    }
    const prefillKeyBlocks = s.rows.slice(D).map((_, j) => {
      const row = D + j;
      const p = this.prefill;
      if (!this.blockSparse || R === 0 || !lo.has(row)) return { kept: 0, total: 0 };
      let kept = 0;
      let total = 0;
      const bs = p.blockSize;
      for (let b = Math.floor((lo.get(row) ?? 0) / bs); b <= Math.floor((hi.get(row) ?? 0) / bs); b++) {
        total += b + 1;
        kept += keptKeyBlocks(b, p.topBlocks, p.localBlocks);
      }
      return { kept, total };
    });
    return { decodeTokens, prefillKeyBlocks };
  }

  /** Streaming heads of layer `li` for T tokens: attention over sink + ring + fresh keys, then the ring write. */
  private encodeStreaming(
    pass: GPUComputePassEncoder,
    a: UniformArena,
    li: number,
    b: AttentionBuffers,
    T: number,
    freshStart: Binding,
    attendRows = T,
  ): void {
    const c = this.c;
    const kv = this.kv.layers[li];
    const r = kv.numRetrievalHeads;
    const s = kv.numStreamingHeads;
    if (s === 0) return;
    if (!b.k || !b.v) throw new SiftError('INTERNAL', 'LayerAttention: streaming heads need the fresh k/v rows');
    const g = c.numHeads / c.numKvHeads;
    const w = this.opts.streaming!;
    const pageSize = this.kv.pageSize;
    const streamTable = this.inputs.binding('streamTable');
    this.stream!.encode(pass, a, {
      q: b.q,
      kFresh: b.k,
      vFresh: b.v,
      kCache: kv.sk,
      vCache: kv.sv,
      streamTable,
      tokenSeq: b.seq,
      positions: b.pos,
      freshStart,
      out: b.out,
      T: attendRows,
      numHeads: s * g,
      numKvHeads: s,
      headDim: c.headDim,
      pageSize,
      sinkTokens: w.sinkTokens,
      localTokens: w.localTokens,
      sinkPages: w.sinkPages,
      ringPages: w.ringPages,
      ...this.mods[li],
      qHeadOffset: r * g,
      qRowHeads: c.numHeads,
      kvHeadOffset: r,
      kvRowHeads: c.numKvHeads,
    });
    this.streamWrite!.encode(pass, a, {
      k: b.k,
      v: b.v,
      kCache: kv.sk,
      vCache: kv.sv,
      slots: this.inputs.binding('streamSlots'),
      T,
      numKvHeads: s,
      headDim: c.headDim,
      pageSize,
      kvHeadOffset: r,
      kvRowHeads: c.numKvHeads,
    });
  }

  /** The sparse decode attention of layer `li`'s retrieval heads for `D` decode rows. */
  private encodeSparse(
    pass: GPUComputePassEncoder,
    a: UniformArena,
    li: number,
    b: AttentionBuffers,
    D: number,
    reselect: boolean,
  ): void {
    const kv = this.kv.layers[li];
    this.sparse!.encodeFor(
      pass,
      a,
      {
        numKvHeads: kv.numRetrievalHeads,
        q: b.q,
        kCache: kv.k,
        vCache: kv.v,
        blockTable: b.table,
        digests: this.sparseLayers[li].digests,
        selection: this.sparseLayers[li].selection,
        out: b.out,
        ...this.mods[li],
      },
      D,
      reselect,
    );
  }

  /**
   * Layer `li`'s attention in a decode-only step of D rows (their K/V and digests written by rope_kv_write): every
   * binding is fixed and every varying size comes from the step's inputs, so the encoding can be captured once.
   * `freshStart` is the identity (each decode row starts its own sequence's new tokens).
   */
  encodeDecodeLayer(
    pass: GPUComputePassEncoder,
    a: UniformArena,
    li: number,
    b: AttentionBuffers,
    D: number,
    reselect: boolean,
    identity: Binding,
  ): void {
    this.encodeStreaming(pass, a, li, b, D, identity);
    if (this.kv.layers[li].numRetrievalHeads === 0) return;
    if (this.blockSparse) this.encodeBlockDigests(pass, a, li, b, this.inputs.binding('dBlockEntries'), D);
    this.encodeSparse(pass, a, li, b, D, reselect);
  }

  /** Key-block digests of layer `li` for `numEntries` entries (row, block, valid tokens), after the KV write. */
  private encodeBlockDigests(
    pass: GPUComputePassEncoder,
    a: UniformArena,
    li: number,
    b: AttentionBuffers,
    entries: Binding,
    numEntries: number,
  ): void {
    const kv = this.kv.layers[li];
    this.prefill.encodeDigests(pass, a, {
      kCache: kv.k,
      blockTable: b.table,
      entries,
      digests: this.blockDigests[li],
      numEntries,
      numKvHeads: kv.numRetrievalHeads,
      headDim: this.c.headDim,
      pageSize: this.kv.pageSize,
      maxPagesPerSeq: this.opts.maxPagesPerSeq,
    });
  }

  /**
   * Compiles the pipelines whose variant depends on the context rather than on a step's shape (warm-up): block-sparse
   * prefill's key-block selection up to the longest sequence.
   */
  compileContextPipelines(): void {
    if (this.blockSparse) {
      this.prefill.compileFor(this.opts.maxPagesPerSeq * this.kv.pageSize, this.c.headDim, this.blockDigests);
    }
  }

  /** The layer's key-block digests (block-sparse prefill), or null. */
  blockDigestsOf(li: number): Slabs | null {
    return this.blockDigests[li] ?? null;
  }

  /** The layer's digests pool (rope_kv_write recomputes the decode tokens' logical pages in it), or null. */
  digests(li: number): Slabs | null {
    return this.sparseLayers[li]?.digests ?? null;
  }

  /**
   * Encodes copies of the page digests and key-block digests of main-pool pages (each layer's r_l-head layout): page
   * dst[i] gets page src[i]'s, to go with KvStorage.encodeCopyPages.
   */
  encodeCopyDigests(enc: GPUCommandEncoder, src: readonly number[], dst: readonly number[], scratch: GPUBuffer): void {
    const runs = unitRuns(src, dst);
    for (let li = 0; li < this.c.numLayers; li++) {
      const r = this.kv.layers[li].numRetrievalHeads;
      if (r === 0) continue;
      const copy = (pool: Slabs, pb: number) => {
        for (const [s, d, n] of runs) encodePoolCopy(enc, pool, s * pb, d * pb, n * pb, scratch);
      };
      if (this.sparse) {
        copy(
          this.sparseLayers[li].digests,
          digestBytes(1, this.kv.pageSize, this.sparse.logicalPageSize, r, this.c.headDim),
        );
      }
      const blocks = this.blockDigests[li];
      if (blocks) copy(blocks, blockDigestBytes(1, this.kv.pageSize, this.prefill.blockSize, r, this.c.headDim));
    }
  }

  /** Encodes layer `li`'s attention for the prepared step: out (T, nHeads, headDim) filled. */
  encodeLayer(pass: GPUComputePassEncoder, a: UniformArena, li: number, b: AttentionBuffers): void {
    const plan = this.plan;
    if (!plan) throw new SiftError('INTERNAL', 'LayerAttention.encodeLayer before prepare');
    const { T, D } = plan;
    const c = this.c;
    const kv = this.kv.layers[li];
    const r = kv.numRetrievalHeads;
    const g = c.numHeads / c.numKvHeads;
    const mods = this.mods[li];
    const pageSize = this.kv.pageSize;
    if (this.hasStreamingHeads) {
      if (plan.prefillPlan) this.encodeStreamingPrefill(pass, a, li, b, plan.prefillPlan);
      // the per-(token, head) streaming kernel attends the decode rows [0, D) only; the ring write takes every row
      this.encodeStreaming(pass, a, li, b, T, this.inputs.binding('freshStart'), D);
    }
    if (r === 0) return;
    const M = this.opts.maxPagesPerSeq;
    if (plan.numDigestEntries) {
      this.digest!.encode(pass, a, {
        kCache: kv.k,
        entries: this.inputs.binding('digestEntries'),
        digests: this.sparseLayers[li].digests,
        numEntries: plan.numDigestEntries,
        numKvHeads: r,
        headDim: c.headDim,
        pageSize,
        logicalPageSize: this.sparse!.logicalPageSize,
      });
    }
    if (plan.numBlockDigestEntries) {
      this.encodeBlockDigests(pass, a, li, b, this.inputs.binding('blockDigestEntries'), plan.numBlockDigestEntries);
    }
    if (plan.prefillPlan) {
      this.prefill.encodeLayer(pass, a, {
        q: b.q,
        kCache: kv.k,
        vCache: kv.v,
        blockTable: b.table,
        qBlocks: this.bufs.qBlocks,
        tiles: this.bufs.tiles,
        digests: this.blockDigests[li] ?? this.bufs.qBlocks,
        blockList: this.bufs.blockList,
        out: b.out,
        plan: plan.prefillPlan,
        numHeads: r * g,
        numKvHeads: r,
        qRowHeads: c.numHeads,
        headDim: c.headDim,
        pageSize,
        maxPagesPerSeq: M,
        ...mods,
        // a sliding-window layer is sparse already: its retrieval heads prefill dense within the window
        headModes: new Array(r).fill(this.blockSparse && !mods.window ? HeadMode.sparse : HeadMode.dense),
      });
    }
    if (D > 0) this.encodeSparse(pass, a, li, b, D, this.sparse!.step.reselect);
  }

  /** Streaming heads of layer `li`'s prefill tokens [D, T): tiled Lambda over the ring and the fresh k/v rows. */
  private encodeStreamingPrefill(
    pass: GPUComputePassEncoder,
    a: UniformArena,
    li: number,
    b: AttentionBuffers,
    plan: PrefillPlan,
  ): void {
    const c = this.c;
    const kv = this.kv.layers[li];
    const r = kv.numRetrievalHeads;
    const s = kv.numStreamingHeads;
    if (s === 0) return;
    if (!b.k || !b.v) throw new SiftError('INTERNAL', 'LayerAttention: streaming heads need the fresh k/v rows');
    const g = c.numHeads / c.numKvHeads;
    const w = this.opts.streaming!;
    this.prefill.encodeStreaming(pass, a, {
      q: b.q,
      kCache: kv.sk,
      vCache: kv.sv,
      streamTable: this.inputs.binding('streamTable'),
      tiles: this.bufs.tiles,
      out: b.out,
      plan,
      numHeads: s * g,
      numKvHeads: s,
      qHeadOffset: r * g,
      qRowHeads: c.numHeads,
      headDim: c.headDim,
      pageSize: this.kv.pageSize,
      ...this.mods[li],
      sinkTokens: w.sinkTokens,
      localTokens: w.localTokens,
      fresh: {
        kFresh: b.k,
        vFresh: b.v,
        sinkPages: w.sinkPages,
        ringPages: w.ringPages,
        kvHeadOffset: r,
        kvRowHeads: c.numKvHeads,
      },
    });
  }

  /** After the step was encoded: sequences that prefilled reselect pages on their next decode step. */
  finishStep(rows: readonly BatchRow[]): void {
    for (const r of rows) if (r.kind === 'prefill') this.sparse?.onPrefill(r.seqId);
    this.plan = null;
  }

  /** Forgets a finished (or preempted) sequence's selection state. */
  release(seqId: SeqId): void {
    this.sparse?.release(seqId);
  }

  /** Grows a per-step scratch buffer to at least `bytes`. */
  private ensure(name: string, bytes: number): void {
    const cur = this.bufs[name];
    if (cur && cur.size >= bytes) return;
    cur?.destroy();
    this.bufs[name] = this.gpu.createBuffer(`attn.${name}`, Math.max(16, Math.ceil(bytes * 1.25)));
  }

  destroy(): void {
    for (const buf of Object.values(this.bufs)) buf.destroy();
    for (const d of this.blockDigests) d.destroy();
    this.prefill.destroy();
    for (const l of this.sparseLayers) {
      l.digests.destroy();
      l.selection.selected.destroy();
      l.selection.counts.destroy();
      l.selection.levels.destroy();
    }
    this.sparse?.destroy();
  }
}

/** Per block-table row, the span of positions [start, end) this step writes. */
function blockSpans(s: AttentionStepInput): BlockSpan[] {
  const lo = new Map<number, number>();
  const hi = new Map<number, number>();
  for (let i = 0; i < s.tokenSeq.length; i++) {
    const r = s.tokenSeq[i];
    const p = s.positions[i];
    lo.set(r, Math.min(lo.get(r) ?? p, p));
    hi.set(r, Math.max(hi.get(r) ?? p, p + 1));
  }
  return [...lo.keys()].map((row) => ({ row, start: lo.get(row)!, end: hi.get(row)! }));
}

/** Per block-table row, the span of positions [start, end) this step writes from token `from` on, with its pages. */
function spans(
  s: AttentionStepInput,
  from: number,
): { row: number; pages: ArrayLike<number>; start: number; end: number }[] {
  const M = s.maxPagesPerSeq;
  const lo = new Map<number, number>();
  const hi = new Map<number, number>();
  for (let i = from; i < s.tokenSeq.length; i++) {
    const r = s.tokenSeq[i];
    const p = s.positions[i];
    lo.set(r, Math.min(lo.get(r) ?? p, p));
    hi.set(r, Math.max(hi.get(r) ?? p, p + 1));
  }
  return [...lo.keys()].map((r) => ({
    row: r,
    pages: s.blockTable.subarray(r * M, (r + 1) * M),
    start: lo.get(r)!,
    end: hi.get(r)!,
  }));
}
