/**
 * The GPU side of the KV cache: per layer a main pool (retrieval heads, paged through the block table) and a
 * streaming pool (streaming heads, sink pages + a ring per sequence; kvcache/streaming.ts), each one K and one V
 * buffer of pages. kvcache/ owns the bookkeeping (which page belongs to whom); this owns the memory the pages live in.
 *
 * Heads: with a head plan (model/head-plan.ts) the weights are permuted so layer l's r_l retrieval heads are KV heads
 * [0, r_l) and its s_l streaming heads [r_l, nKv) (model/head-permutation.ts). The main pool of layer l holds
 * r_l heads per token, the streaming pool s_l. Without a plan every head is a retrieval head and the streaming pool
 * is empty. A pool with 0 heads in a layer gets a minimal 16-byte buffer that no kernel may bind.
 *
 * Format (shaders/kv_write.ts): f16 on every adapter, packed in pairs into u32 words (element 2j in the low half,
 * 2j+1 in the high half), so headDim must be even. Each K and each V buffer is its own binding, so the cache is split
 * across buffers and one of them must fit the adapter's maxStorageBufferBindingSize.
 */

import type { ModelConfig } from '../checkpoint/config.js';
import { SiftError } from '../config/errors.js';
import { cachePageBytes, KV_BYTES_PER_ELEMENT } from '../shaders/kv_write.js';
import type { Gpu } from '../shaders/runtime.js';
import { checkHeadPlan, type HeadPlan } from './head-plan.js';

export interface KvLayer {
  k: GPUBuffer; // main pool (numPages, pageSize, numRetrievalHeads, headDim / 2) u32 words of packed f16 pairs
  v: GPUBuffer; // main pool (numPages, pageSize, numRetrievalHeads, headDim / 2) u32 words of packed f16 pairs
  sk: GPUBuffer; // streaming pool (numStreamingPages, pageSize, numStreamingHeads, headDim / 2) u32 packed f16 pairs
  sv: GPUBuffer; // streaming pool (numStreamingPages, pageSize, numStreamingHeads, headDim / 2) u32 packed f16 pairs
  /** r_l: KV heads [0, r_l) of the (permuted) layer, in the main pool. */
  numRetrievalHeads: number;
  /** s_l: KV heads [r_l, nKv) of the (permuted) layer, in the streaming pool. */
  numStreamingHeads: number;
}

export interface KvStorageOptions {
  /** Retrieval / streaming heads per layer; default every head a retrieval head. */
  headPlan?: HeadPlan;
  /** Pages of the streaming pool (kvcache StreamingPoolConfig.numPages); required >= 1 when any head streams. */
  numStreamingPages?: number;
  /**
   * Main-pool pages when every head streams (pagesFor): the pool then stores nothing, but the block tables still
   * number their pages, so it needs as many as the running sequences can hold (maxSeqs x pages per sequence).
   */
  pagesWhenAllStreaming?: number;
}

/** Size of the placeholder buffer of a pool with no heads in a layer. */
const EMPTY_BYTES = 16;

function checkHeadDim(config: ModelConfig): void {
  if (!Number.isInteger(config.headDim) || config.headDim < 2 || config.headDim % 2 !== 0) {
    throw new SiftError(
      'CHECKPOINT_UNSUPPORTED',
      `KV cache: headDim ${config.headDim} must be even (the cache packs f16 pairs into u32 words)`,
    );
  }
}

/** r_l and s_l per layer for a plan (or all retrieval). */
function headCountsOf(config: ModelConfig, plan?: HeadPlan): { retrieval: number[]; streaming: number[] } {
  if (!plan) {
    return {
      retrieval: new Array<number>(config.numLayers).fill(config.numKvHeads),
      streaming: new Array<number>(config.numLayers).fill(0),
    };
  }
  checkHeadPlan(plan, config);
  return { retrieval: plan.retrieval.map((r) => r.length), streaming: plan.streaming.map((s) => s.length) };
}

export class KvStorage {
  readonly layers: KvLayer[] = [];
  /** bytesPerToken * pageSize: main-pool bytes of one page over all layers. */
  readonly bytesPerPage: number;
  /**
   * Main-pool K and V bytes of one token over all layers (retrieval heads only; agrees with kvcache/bytes.ts
   * kvBytesPerToken at 2 bytes/element and the plan's streaming fraction).
   */
  readonly bytesPerToken: number;
  /** Streaming-pool K and V bytes of one page over all layers (kvcache/bytes.ts streamingBytesPerPage). */
  readonly streamingBytesPerPage: number;
  /** Pages of the streaming pool (0 when no head streams). */
  readonly numStreamingPages: number;

  constructor(
    gpu: Gpu,
    config: ModelConfig,
    readonly numPages: number,
    readonly pageSize: number,
    opts: KvStorageOptions = {},
  ) {
    checkHeadDim(config);
    if (!Number.isInteger(numPages) || numPages < 1 || !Number.isInteger(pageSize) || pageSize < 1) {
      throw new SiftError('INTERNAL', `KV cache: bad numPages ${numPages} / pageSize ${pageSize}`);
    }
    const counts = headCountsOf(config, opts.headPlan);
    const anyStreaming = counts.streaming.some((s) => s > 0);
    this.numStreamingPages = anyStreaming ? (opts.numStreamingPages ?? 0) : 0;
    if (anyStreaming && (!Number.isInteger(this.numStreamingPages) || this.numStreamingPages < 1)) {
      throw new SiftError(
        'INTERNAL',
        `KV cache: streaming heads need numStreamingPages >= 1, got ${opts.numStreamingPages}`,
      );
    }
    this.bytesPerToken = KvStorage.bytesPerTokenOf(config, opts.headPlan);
    this.bytesPerPage = this.bytesPerToken * pageSize;
    this.streamingBytesPerPage =
      2 *
      cachePageBytes(
        pageSize,
        counts.streaming.reduce((a, b) => a + b, 0),
        config.headDim,
      );
    const limit = gpu.caps.maxStorageBufferBindingSize;
    const maxR = Math.max(...counts.retrieval);
    const maxS = Math.max(...counts.streaming);
    const mainBytes = numPages * cachePageBytes(pageSize, maxR, config.headDim);
    if (mainBytes > limit) {
      const fitPages = Math.floor(limit / cachePageBytes(pageSize, maxR, config.headDim));
      throw new SiftError(
        'GPU_LIMIT',
        `KV cache of ${numPages} pages x ${pageSize} tokens needs ${mainBytes} bytes per layer K/V buffer, over the ` +
          `adapter's binding limit ${limit}: at most ${fitPages} pages (${fitPages * pageSize} tokens) fit; ` +
          'lower --kv-cache-mib',
      );
    }
    const streamBytes = this.numStreamingPages * cachePageBytes(pageSize, maxS, config.headDim);
    if (streamBytes > limit) {
      throw new SiftError(
        'GPU_LIMIT',
        `KV streaming pool of ${this.numStreamingPages} pages needs ${streamBytes} bytes per layer buffer, over the binding limit ${limit}`,
      );
    }
    const buf = (label: string, bytes: number) => gpu.createBuffer(label, Math.max(EMPTY_BYTES, bytes));
    for (let i = 0; i < config.numLayers; i++) {
      const r = counts.retrieval[i];
      const s = counts.streaming[i];
      const mb = r > 0 ? numPages * cachePageBytes(pageSize, r, config.headDim) : 0;
      const sb = s > 0 ? this.numStreamingPages * cachePageBytes(pageSize, s, config.headDim) : 0;
      this.layers.push({
        k: buf(`kv.k.${i}`, mb),
        v: buf(`kv.v.${i}`, mb),
        sk: buf(`kv.sk.${i}`, sb),
        sv: buf(`kv.sv.${i}`, sb),
        numRetrievalHeads: r,
        numStreamingHeads: s,
      });
    }
  }

  /** Main-pool K and V bytes of one token over all layers, f16 (retrieval heads only with a plan). */
  static bytesPerTokenOf(config: ModelConfig, plan?: HeadPlan): number {
    const r = headCountsOf(config, plan).retrieval.reduce((a, b) => a + b, 0);
    return 2 * r * config.headDim * KV_BYTES_PER_ELEMENT;
  }

  /**
   * Main-pool pages that fit in `mib` MiB for this model and page size after `numStreamingPages` streaming pages,
   * capped so one layer buffer fits a binding (`pagesWhenAllStreaming` when no head is a retrieval head).
   */
  static pagesFor(gpu: Gpu, config: ModelConfig, pageSize: number, mib: number, opts: KvStorageOptions = {}): number {
    checkHeadDim(config);
    const counts = headCountsOf(config, opts.headPlan);
    const perPage = KvStorage.bytesPerTokenOf(config, opts.headPlan) * pageSize;
    const sPerPage =
      2 *
      cachePageBytes(
        pageSize,
        counts.streaming.reduce((a, b) => a + b, 0),
        config.headDim,
      );
    const budget = mib * 1024 * 1024 - (opts.numStreamingPages ?? 0) * sPerPage;
    const maxR = Math.max(...counts.retrieval);
    // every head streams (StreamingLLM): main-pool pages cost nothing, they only number the block tables' entries
    if (maxR === 0) return Math.max(1, opts.pagesWhenAllStreaming ?? 1);
    const byBudget = perPage > 0 ? Math.floor(budget / perPage) : Number.POSITIVE_INFINITY;
    const byBinding =
      maxR > 0 ? Math.floor(gpu.caps.maxStorageBufferBindingSize / cachePageBytes(pageSize, maxR, config.headDim)) : 1;
    return Math.max(1, Math.min(byBudget, byBinding));
  }

  destroy(): void {
    for (const l of this.layers) {
      for (const b of [l.k, l.v, l.sk, l.sv]) b.destroy();
    }
  }
}
