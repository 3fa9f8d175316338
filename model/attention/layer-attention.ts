/**
 * Unified sparse attention of one step, layer by layer (LServe-style), for the forward pass.
 *
 * After the head permutation (model/head-permutation.ts) layer l has r_l retrieval KV heads [0, r_l) in the
 * main paged pool and s_l streaming KV heads [r_l, nKv) in the streaming pool's rings; query heads follow their KV
 * head (group g = nHeads / nKv). Per layer, given q/k/v of this step's T tokens after RoPE:
 *   streaming heads (s_l > 0): streaming attention (sink + local, in-chunk keys from the fresh k/v rows, older ones
 *     from the ring), THEN kv_write_streaming of the tokens that stay resident (a chunk longer than the ring would
 *     otherwise overwrite keys its own earlier tokens still need);
 *   retrieval heads (r_l > 0): kv_write into the main pool, page digests of the touched logical pages, then
 *     prefill tokens [D, T): dense causal attention or block-sparse (MInference-style) attention,
 *     decode rows [0, D): top-k page attention within each entry's token budget (dense when the context fits).
 * The batch's rows say which rows decode; decode rows come first with one token each (ForwardPass asserts it), so
 * decode rows are tokens [0, D).
 */

import type { ModelConfig } from '../../checkpoint/config.js';
import { attentionSoftmaxScale } from '../../checkpoint/rope.js';
import { SiftError } from '../../config/errors.js';
import { KvWriteKernel } from '../../shaders/attention.js';
import { type BlockSpan, blockDigestBytes } from '../../shaders/block_digest.js';
import { HeadMode, keptKeyBlocks } from '../../shaders/block_select.js';
import { KvWriteStreamingKernel } from '../../shaders/kv_write_streaming.js';
import { digestBytes, digestEntries, PageDigestKernel } from '../../shaders/page_digest.js';
import type { Gpu, UniformArena } from '../../shaders/runtime.js';
import { freshStartRows, StreamingAttentionKernel, streamingKeysRead } from '../../shaders/streaming_attention.js';
import type { SeqId } from '../executor.js';
import type { BatchRow } from '../forward.js';
import type { KvStorage } from '../kv-storage.js';
import { PrefillAttention, type PrefillPlan } from './prefill.js';
import { type LayerSelection, SparseDecodeAttention, type SparseDecodeRow } from './sparse-decode.js';

export interface LayerAttentionOptions {
  maxBatchTokens: number;
  maxSeqs: number;
  maxPagesPerSeq: number;
  /** Page digests and sparse decode (decode rows through page selection). */
  sparse?: { logicalPageSize: number; reuseInterval: number };
  /** Block-sparse prefill of retrieval heads; absent = dense prefill. */
  blockSparsePrefill?: { topBlocks: number };
  /** Streaming heads' window; required when any layer has streaming heads. */
  streaming?: { sinkTokens: number; localTokens: number; sinkPages: number; ringPages: number };
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
  q: GPUBuffer; // (T, nHeads, headDim) f32 after RoPE
  k: GPUBuffer; // (T, nKv, headDim) f32 after RoPE
  v: GPUBuffer; // (T, nKv, headDim) f32
  out: GPUBuffer; // (T, nHeads, headDim) f32
  table: GPUBuffer; // (numSeqs, maxPagesPerSeq) u32
  seq: GPUBuffer; // (T) u32
  pos: GPUBuffer; // (T) u32
}

interface StepPlan {
  T: number;
  D: number;
  numDigestEntries: number;
  numBlockDigestEntries: number;
  prefillPlan: PrefillPlan | null;
}

interface SparseLayer {
  digests: GPUBuffer; // (numPages, pageSize / logicalPageSize, nKv, 2, headDim) f16 (min, max) in u32 pairs
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
  private readonly kvWrite: KvWriteKernel;
  private readonly digest: PageDigestKernel | null = null;
  private readonly sparseLayers: SparseLayer[] = [];
  /** Prefill tokens of every layer: tiled attention; block selection and block digests when block-sparse. */
  private readonly prefill: PrefillAttention;
  private readonly blockSparse: boolean;
  /** Per layer: (numPages * bpp, nKv, headDim) f32 key-block digests (block-sparse prefill only). */
  private readonly blockDigests: GPUBuffer[] = [];
  private readonly stream: StreamingAttentionKernel | null = null;
  private readonly streamWrite: KvWriteStreamingKernel | null = null;
  private readonly bufs: Record<string, GPUBuffer> = {};
  private plan: StepPlan | null = null;
  /** What the last prepared step's attention reads (see StepAttentionReport). */
  lastReport: StepAttentionReport = { decodeTokens: [], prefillKeyBlocks: [] };
  readonly hasStreamingHeads: boolean;
  /** Entries per row of the streaming table (sink pages + ring pages); 0 without streaming heads. */
  readonly streamingRowLength: number;

  constructor(
    private readonly gpu: Gpu,
    private readonly c: ModelConfig,
    private readonly kv: KvStorage,
    private readonly opts: LayerAttentionOptions,
  ) {
    this.kvWrite = new KvWriteKernel(gpu);
    const T = opts.maxBatchTokens;
    this.hasStreamingHeads = kv.layers.some((l) => l.numStreamingHeads > 0);
    this.streamingRowLength =
      this.hasStreamingHeads && opts.streaming ? opts.streaming.sinkPages + opts.streaming.ringPages : 0;
    if (this.hasStreamingHeads) {
      if (!opts.streaming) throw new SiftError('INTERNAL', 'LayerAttention: streaming heads need the streaming window');
      this.stream = new StreamingAttentionKernel(gpu);
      this.streamWrite = new KvWriteStreamingKernel(gpu);
      const rowLen = opts.streaming.sinkPages + opts.streaming.ringPages;
      this.bufs.streamTable = gpu.createBuffer('stream.table', opts.maxSeqs * rowLen * 4); // (numSeqs, sink+ring) u32
      this.bufs.streamSlots = gpu.createBuffer('stream.slots', T * 4); // (T) u32
      this.bufs.freshStart = gpu.createBuffer('stream.freshStart', T * 4); // (T) u32
    }
    if (opts.sparse) {
      const L = opts.sparse.logicalPageSize;
      this.sparse = new SparseDecodeAttention(gpu, {
        numHeads: c.numHeads,
        numKvHeads: c.numKvHeads,
        headDim: c.headDim,
        pageSize: kv.pageSize,
        logicalPageSize: L,
        maxPagesPerSeq: opts.maxPagesPerSeq,
        maxRows: opts.maxSeqs,
        numSlots: opts.maxSeqs,
        reselectInterval: opts.sparse.reuseInterval,
      });
      this.digest = new PageDigestKernel(gpu);
      const dBytes = digestBytes(kv.numPages, kv.pageSize, L, c.numKvHeads, c.headDim);
      for (let i = 0; i < c.numLayers; i++) {
        this.sparseLayers.push({
          digests: gpu.createBuffer(`digests.${i}`, dBytes),
          selection: this.sparse.createLayerSelection(),
        });
      }
      // every new token touches at most one logical page; each sequence adds at most one partial page at each end
      this.bufs.digestEntries = gpu.createBuffer('digest.entries', 3 * (T + 2 * opts.maxSeqs) * 4); // (E, 3) u32
    }
    this.blockSparse = opts.blockSparsePrefill !== undefined;
    this.prefill = new PrefillAttention(gpu, { topBlocks: opts.blockSparsePrefill?.topBlocks });
    if (this.blockSparse) {
      const bytes = blockDigestBytes(kv.numPages, kv.pageSize, this.prefill.blockSize, c.numKvHeads, c.headDim);
      for (let i = 0; i < c.numLayers; i++) this.blockDigests.push(gpu.createBuffer(`blockDigests.${i}`, bytes));
      // every new token touches one key block; each sequence adds at most one partial block at each end
      this.bufs.blockDigestEntries = gpu.createBuffer('blockDigest.entries', 3 * (T + 2 * opts.maxSeqs) * 4);
    }
  }

  /** Uploads the step's attention inputs (sparse rows, digest entries, block plans, streaming tables). */
  prepare(s: AttentionStepInput): void {
    const T = s.tokenSeq.length;
    const decode: SparseDecodeRow[] = [];
    for (const [i, r] of s.rows.entries()) {
      if (r.kind !== 'decode') break;
      // decode row i holds token i (ForwardPass checked)
      decode.push({ seqId: r.seqId, blockRow: i, position: s.positions[i], tokenBudget: r.tokenBudget });
    }
    const D = decode.length;
    if (D > 0 && !this.sparse)
      throw new SiftError('INTERNAL', 'forward: decode rows given but sparse attention is not enabled');
    let numDigestEntries = 0;
    if (this.sparse) {
      if (D > 0) this.sparse.prepareStep(decode);
      const entries = digestEntries(spans(s), this.kv.pageSize, this.sparse.logicalPageSize);
      numDigestEntries = entries.length / 3;
      if (numDigestEntries) this.gpu.write(this.bufs.digestEntries, entries);
    }
    let prefillPlan: PrefillPlan | null = null;
    let numBlockDigestEntries = 0;
    if (this.blockSparse) {
      const entries = this.prefill.digestEntries(blockSpans(s));
      numBlockDigestEntries = entries.length / 3;
      if (numBlockDigestEntries) this.gpu.write(this.bufs.blockDigestEntries, entries);
    }
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
    if (this.hasStreamingHeads) {
      if (!s.streaming)
        throw new SiftError('INTERNAL', 'forward: the model has streaming heads but the batch has no streaming table');
      this.gpu.write(this.bufs.streamTable, s.streaming.table);
      this.gpu.write(this.bufs.streamSlots, s.streaming.slots);
      this.gpu.write(this.bufs.freshStart, freshStartRows(s.tokenSeq, s.positions));
    }
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
      const ret = this.sparse?.lastTokensRead[i] ?? s.positions[i] + 1;
      const str = S > 0 && w ? streamingKeysRead(s.positions[i], w.sinkTokens, w.localTokens) : 0;
      return (R * ret + S * str) / (R + S);
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

  /** Encodes layer `li`'s attention: K/V written to the caches, out (T, nHeads, headDim) filled. */
  encodeLayer(pass: GPUComputePassEncoder, a: UniformArena, li: number, b: AttentionBuffers): void {
    const plan = this.plan;
    if (!plan) throw new SiftError('INTERNAL', 'LayerAttention.encodeLayer before prepare');
    const { T, D } = plan;
    const c = this.c;
    const kv = this.kv.layers[li];
    const r = kv.numRetrievalHeads;
    const s = kv.numStreamingHeads;
    const g = c.numHeads / c.numKvHeads;
    const scale = attentionSoftmaxScale(c); // 1/sqrt(headDim), times yarn's / longrope's attention factor squared
    const pageSize = this.kv.pageSize;
    if (s > 0) {
      const w = this.opts.streaming!;
      this.stream!.encode(pass, a, {
        q: b.q,
        kFresh: b.k,
        vFresh: b.v,
        kCache: kv.sk,
        vCache: kv.sv,
        streamTable: this.bufs.streamTable,
        tokenSeq: b.seq,
        positions: b.pos,
        freshStart: this.bufs.freshStart,
        out: b.out,
        T,
        numHeads: s * g,
        numKvHeads: s,
        headDim: c.headDim,
        pageSize,
        sinkTokens: w.sinkTokens,
        localTokens: w.localTokens,
        sinkPages: w.sinkPages,
        ringPages: w.ringPages,
        scale,
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
        slots: this.bufs.streamSlots,
        T,
        numKvHeads: s,
        headDim: c.headDim,
        pageSize,
        kvHeadOffset: r,
        kvRowHeads: c.numKvHeads,
      });
    }
    if (r === 0) return;
    const M = this.opts.maxPagesPerSeq;
    this.kvWrite.encode(pass, a, {
      k: b.k,
      v: b.v,
      kCache: kv.k,
      vCache: kv.v,
      blockTable: b.table,
      tokenSeq: b.seq,
      positions: b.pos,
      T,
      numKvHeads: r,
      headDim: c.headDim,
      pageSize,
      maxPagesPerSeq: M,
      kvRowHeads: c.numKvHeads,
    });
    if (plan.numDigestEntries) {
      this.digest!.encode(pass, a, {
        kCache: kv.k,
        entries: this.bufs.digestEntries,
        digests: this.sparseLayers[li].digests,
        numEntries: plan.numDigestEntries,
        numKvHeads: r,
        headDim: c.headDim,
        pageSize,
        logicalPageSize: this.sparse!.logicalPageSize,
      });
    }
    if (plan.numBlockDigestEntries) {
      this.prefill.encodeDigests(pass, a, {
        kCache: kv.k,
        blockTable: b.table,
        entries: this.bufs.blockDigestEntries,
        digests: this.blockDigests[li],
        numEntries: plan.numBlockDigestEntries,
        numKvHeads: r,
        headDim: c.headDim,
        pageSize,
        maxPagesPerSeq: M,
      });
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
        scale,
        headModes: new Array(r).fill(this.blockSparse ? HeadMode.sparse : HeadMode.dense),
      });
    }
    if (D > 0) {
      this.sparse!.encodeLayer(pass, a, {
        numKvHeads: r,
        q: b.q,
        kCache: kv.k,
        vCache: kv.v,
        blockTable: b.table,
        digests: this.sparseLayers[li].digests,
        selection: this.sparseLayers[li].selection,
        out: b.out,
        scale,
      });
    }
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

/** Per block-table row, the span of positions [start, end) this step writes, with the row's pages. */
function spans(s: AttentionStepInput): { pages: ArrayLike<number>; start: number; end: number }[] {
  const M = s.maxPagesPerSeq;
  const lo = new Map<number, number>();
  const hi = new Map<number, number>();
  for (let i = 0; i < s.tokenSeq.length; i++) {
    const r = s.tokenSeq[i];
    const p = s.positions[i];
    lo.set(r, Math.min(lo.get(r) ?? p, p));
    hi.set(r, Math.max(hi.get(r) ?? p, p + 1));
  }
  return [...lo.keys()].map((r) => ({
    pages: s.blockTable.subarray(r * M, (r + 1) * M),
    start: lo.get(r)!,
    end: hi.get(r)!,
  }));
}
