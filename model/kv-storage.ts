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
 * 2j+1 in the high half), so headDim must be even.
 *
 * Slabs (shaders/lib/slabs.ts): a layer's K (or V) pool that outgrows one binding (maxStorageBufferBindingSize: 128
 * MiB on lavapipe, 2 GiB on an H100) is split into slabs of whole pages, each its own buffer within the limit, and
 * the kernels bind every slab. What bounds the cache is then memory and the bindings a kernel has room for: the
 * kernels that read K and V in one dispatch bind KV_KERNEL_OTHER_BINDINGS other storage buffers, so a pool may span
 * maxSlabsPerPool = (maxStorageBuffersPerShaderStage - 6) / 2 slabs (5 of 128 MiB on lavapipe, 5 of 2 GiB on an
 * H100: stories15M reaches 1.1M tokens on lavapipe, Llama-3-8B 5M per layer pool, past any GPU's memory).
 */

import type { ModelConfig } from '../checkpoint/config.js';
import { SiftError } from '../config/errors.js';
import { cachePageBytes, KV_BYTES_PER_ELEMENT } from '../shaders/kv_write.js';
import { createSlabs, encodePoolCopy, planSlabs, type SlabPlan, Slabs, unitRuns } from '../shaders/lib/slabs.js';
import type { Gpu } from '../shaders/runtime.js';
import { checkHeadPlan, type HeadPlan } from './head-plan.js';

/**
 * Storage buffers besides K and V that a kernel reading both in one dispatch binds at most (sparse_decode: q, block
 * table, rows, selected, counts, partials); what is left of the adapter's per-stage storage bindings holds the slabs.
 */
export const KV_KERNEL_OTHER_BINDINGS = 6;

/** Most slabs one layer's K (or V) pool may span with this many storage buffers per shader stage. */
export function maxSlabsPerPool(maxStorageBuffersPerShaderStage: number): number {
  return Math.max(1, Math.floor((maxStorageBuffersPerShaderStage - KV_KERNEL_OTHER_BINDINGS) / 2));
}

/**
 * Storage buffers besides the streaming pool's K and V that a kernel reading both binds at most
 * (streaming_attention: q, fresh k and v, stream table, token rows, positions, fresh starts, out).
 */
export const STREAMING_KERNEL_OTHER_BINDINGS = 8;

/** Most slabs one layer's streaming K (or V) pool may span with this many storage buffers per shader stage. */
export function maxSlabsPerStreamingPool(maxStorageBuffersPerShaderStage: number): number {
  return Math.max(1, Math.floor((maxStorageBuffersPerShaderStage - STREAMING_KERNEL_OTHER_BINDINGS) / 2));
}

export interface KvLayer {
  k: Slabs; // main pool (numPages, pageSize, numRetrievalHeads, headDim / 2) u32 words of packed f16 pairs, in slabs
  v: Slabs; // main pool (numPages, pageSize, numRetrievalHeads, headDim / 2) u32 words of packed f16 pairs, in slabs
  sk: Slabs; // streaming pool (numStreamingPages, pageSize, numStreamingHeads, headDim / 2) u32 packed f16 pairs
  sv: Slabs; // streaming pool (numStreamingPages, pageSize, numStreamingHeads, headDim / 2) u32 packed f16 pairs
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
  /**
   * Bytes one slab of a pool may take (whole pages per slab); default the adapter's maxStorageBufferBindingSize.
   * Tests force a few pages per slab so the split paths run on small shapes; the digests and the digest hierarchy
   * (model/attention) split by the same limit.
   */
  maxSlabBytes?: number;
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
  /** Bytes one slab of a pool may take (the adapter's binding limit unless a test forces less). */
  readonly maxSlabBytes: number;
  /** How the widest layer's K (or V) pool splits into slabs of whole pages (null: no retrieval head anywhere). */
  readonly mainPlan: SlabPlan | null;

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
    this.maxSlabBytes = KvStorage.slabLimit(gpu, opts);
    const maxR = Math.max(...counts.retrieval);
    this.mainPlan =
      maxR > 0 ? planSlabs(cachePageBytes(pageSize, maxR, config.headDim), numPages, this.maxSlabBytes) : null;
    const maxSlabs = KvStorage.maxSlabsPerPool(gpu);
    if (this.mainPlan && this.mainPlan.numSlabs > maxSlabs) {
      const fitPages = maxSlabs * this.mainPlan.unitsPerSlab;
      throw new SiftError(
        'GPU_LIMIT',
        `KV cache of ${numPages} pages x ${pageSize} tokens spans ${this.mainPlan.numSlabs} slabs of ` +
          `${this.mainPlan.slabBytes} bytes per layer K/V pool; the kernels bind at most ${maxSlabs} ` +
          `(maxStorageBuffersPerShaderStage ${gpu.caps.maxStorageBuffersPerShaderStage}, binding limit ` +
          `${this.maxSlabBytes}): at most ${fitPages} pages (${fitPages * pageSize} tokens) fit; lower --kv-cache-mib`,
      );
    }
    const maxS = Math.max(...counts.streaming);
    if (maxS > 0) {
      const sp = planSlabs(cachePageBytes(pageSize, maxS, config.headDim), this.numStreamingPages, this.maxSlabBytes);
      const maxSS = maxSlabsPerStreamingPool(gpu.caps.maxStorageBuffersPerShaderStage);
      if (sp.numSlabs > maxSS) {
        throw new SiftError(
          'GPU_LIMIT',
          `streaming pool of ${this.numStreamingPages} pages spans ${sp.numSlabs} slabs of ${sp.slabBytes} bytes per ` +
            `layer K/V pool; the streaming kernels bind at most ${maxSS} (maxStorageBuffersPerShaderStage ` +
            `${gpu.caps.maxStorageBuffersPerShaderStage}): at most ${maxSS * sp.unitsPerSlab} streaming pages fit; ` +
            'lower --max-seqs',
        );
      }
    }
    const empty = (label: string) => Slabs.of(gpu.createBuffer(label, EMPTY_BYTES));
    const pool = (label: string, heads: number, pages: number) =>
      heads > 0 && pages > 0
        ? createSlabs(gpu, label, planSlabs(cachePageBytes(pageSize, heads, config.headDim), pages, this.maxSlabBytes))
        : empty(label);
    for (let i = 0; i < config.numLayers; i++) {
      const r = counts.retrieval[i];
      const s = counts.streaming[i];
      this.layers.push({
        k: pool(`kv.k.${i}`, r, numPages),
        v: pool(`kv.v.${i}`, r, numPages),
        sk: pool(`kv.sk.${i}`, s, this.numStreamingPages),
        sv: pool(`kv.sv.${i}`, s, this.numStreamingPages),
        numRetrievalHeads: r,
        numStreamingHeads: s,
      });
    }
  }

  /** Bytes one slab may take: opts.maxSlabBytes or the adapter's binding limit. */
  static slabLimit(gpu: Gpu, opts: KvStorageOptions = {}): number {
    const limit = gpu.caps.maxStorageBufferBindingSize;
    const want = opts.maxSlabBytes ?? limit;
    if (!Number.isInteger(want) || want < 4 || want > limit) {
      throw new SiftError('INTERNAL', `KV cache: maxSlabBytes ${want} not in [4, ${limit}]`);
    }
    return want;
  }

  /** Most slabs one layer's K (or V) pool may span: what the kernels reading both have room to bind. */
  static maxSlabsPerPool(gpu: Gpu): number {
    return maxSlabsPerPool(gpu.caps.maxStorageBuffersPerShaderStage);
  }

  /** Main-pool K and V bytes of one token over all layers, f16 (retrieval heads only with a plan). */
  static bytesPerTokenOf(config: ModelConfig, plan?: HeadPlan): number {
    const r = headCountsOf(config, plan).retrieval.reduce((a, b) => a + b, 0);
    return 2 * r * config.headDim * KV_BYTES_PER_ELEMENT;
  }

  /**
   * Main-pool pages that fit in `mib` MiB for this model and page size after `numStreamingPages` streaming pages,
   * capped at what the kernels can bind: maxSlabsPerPool slabs of whole pages per layer K/V pool
   * (`pagesWhenAllStreaming` when no head is a retrieval head).
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
    const pagesPerSlab =
      maxR > 0 ? Math.floor(KvStorage.slabLimit(gpu, opts) / cachePageBytes(pageSize, maxR, config.headDim)) : 1;
    const bySlabs = maxR > 0 ? KvStorage.maxSlabsPerPool(gpu) * pagesPerSlab : 1;
    return Math.max(1, Math.min(byBudget, bySlabs));
  }

  /**
   * Encodes copies of main-pool pages, K and V of every layer: page dst[i] gets page src[i]'s tokens (benchmarks fill
   * a long context from a short prefill this way; the engine never copies pages). Digests are the caller's. Copies
   * within one slab go through `scratch`.
   */
  encodeCopyPages(enc: GPUCommandEncoder, src: readonly number[], dst: readonly number[], scratch: GPUBuffer): void {
    const ok =
      src.length === dst.length && [...src, ...dst].every((p) => Number.isInteger(p) && p >= 0 && p < this.numPages);
    if (!ok) throw new SiftError('INTERNAL', `KV page copy: bad pages (${this.numPages} in the cache)`);
    for (const l of this.layers) {
      if (l.numRetrievalHeads === 0) continue;
      const pb = l.k.bytes / this.numPages;
      for (const [s, d, n] of unitRuns(src, dst)) {
        encodePoolCopy(enc, l.k, s * pb, d * pb, n * pb, scratch);
        encodePoolCopy(enc, l.v, s * pb, d * pb, n * pb, scratch);
      }
    }
  }

  destroy(): void {
    for (const l of this.layers) {
      for (const p of [l.k, l.v, l.sk, l.sv]) p.destroy();
    }
  }
}
