/**
 * The GPU side of the paged KV cache: per layer one K and one V buffer of pages.
 * kvcache/ owns the bookkeeping (which page belongs to whom); this owns the memory the pages live in.
 *
 * Format (shaders/kv_write.ts): f16 on every adapter, packed in pairs into u32 words (element 2j in the low half,
 * 2j+1 in the high half), so headDim must be even. Each K and each V buffer is its own binding, so the cache is split
 * across 2 x numLayers buffers and one of them must fit the adapter's maxStorageBufferBindingSize.
 */
import { SiftError } from '../config/errors.js';
import { kvBytesPerToken } from '../kvcache/bytes.js';
import { cachePageBytes, KV_BYTES_PER_ELEMENT } from '../shaders/kv_write.js';
import type { Gpu } from '../shaders/runtime.js';
import type { ModelConfig } from './model/config.js';

export interface KvLayer {
  k: GPUBuffer; // (numPages, pageSize, kvHeads, headDim / 2) u32 words of packed f16 pairs
  v: GPUBuffer; // (numPages, pageSize, kvHeads, headDim / 2) u32 words of packed f16 pairs
}

/** One page copy: physical page `src` -> `dst` (kvcache's PageCopy). */
export interface KvPageCopy {
  src: number;
  dst: number;
}

/** Pages staged per round of copyPages (the staging buffer holds this many pages of one layer's K or V). */
const STAGING_PAGES = 64;

function checkHeadDim(config: ModelConfig): void {
  if (!Number.isInteger(config.headDim) || config.headDim < 2 || config.headDim % 2 !== 0) {
    throw new SiftError(
      'CHECKPOINT_UNSUPPORTED',
      `KV cache: headDim ${config.headDim} must be even (the cache packs f16 pairs into u32 words)`,
    );
  }
}

export class KvStorage {
  readonly layers: KvLayer[] = [];
  /** bytesPerToken * pageSize. */
  readonly bytesPerPage: number;
  /** K and V bytes of one token over all layers (agrees with kvcache/bytes.ts kvBytesPerToken, 2 bytes/element). */
  readonly bytesPerToken: number;
  /** Bytes of one page in one layer's K (or V) buffer. */
  readonly layerPageBytes: number;
  private staging: GPUBuffer | null = null;

  constructor(
    private readonly gpu: Gpu,
    config: ModelConfig,
    readonly numPages: number,
    readonly pageSize: number,
  ) {
    checkHeadDim(config);
    if (!Number.isInteger(numPages) || numPages < 1 || !Number.isInteger(pageSize) || pageSize < 1) {
      throw new SiftError('INTERNAL', `KV cache: bad numPages ${numPages} / pageSize ${pageSize}`);
    }
    this.bytesPerToken = KvStorage.bytesPerTokenOf(config);
    this.bytesPerPage = this.bytesPerToken * pageSize;
    this.layerPageBytes = cachePageBytes(pageSize, config.numKvHeads, config.headDim);
    const bufBytes = numPages * this.layerPageBytes;
    const limit = gpu.caps.maxStorageBufferBindingSize;
    if (bufBytes > limit) {
      const fitPages = Math.floor(limit / this.layerPageBytes);
      throw new SiftError(
        'GPU_LIMIT',
        `KV cache of ${numPages} pages x ${pageSize} tokens needs ${bufBytes} bytes per layer K/V buffer, over the ` +
          `adapter's binding limit ${limit}: at most ${fitPages} pages (${fitPages * pageSize} tokens) fit; ` +
          'lower --kv-cache-mib',
      );
    }
    for (let i = 0; i < config.numLayers; i++) {
      this.layers.push({ k: gpu.createBuffer(`kv.k.${i}`, bufBytes), v: gpu.createBuffer(`kv.v.${i}`, bufBytes) });
    }
  }

  /** K and V bytes of one token over all layers, f16. */
  static bytesPerTokenOf(config: ModelConfig): number {
    return kvBytesPerToken({
      numLayers: config.numLayers,
      numKvHeads: config.numKvHeads,
      headDim: config.headDim,
      bytesPerElement: KV_BYTES_PER_ELEMENT,
    });
  }

  /** Pages that fit in `mib` MiB for this model and page size, capped so one layer buffer fits a binding. */
  static pagesFor(gpu: Gpu, config: ModelConfig, pageSize: number, mib: number): number {
    checkHeadDim(config);
    const perPage = KvStorage.bytesPerTokenOf(config) * pageSize;
    const byBudget = Math.floor((mib * 1024 * 1024) / perPage);
    const byBinding = Math.floor(
      gpu.caps.maxStorageBufferBindingSize / cachePageBytes(pageSize, config.numKvHeads, config.headDim),
    );
    return Math.max(1, Math.min(byBudget, byBinding));
  }

  /**
   * Encodes copies of whole pages (K and V of every layer) for copy-on-write and fork: physical page `src` -> `dst`.
   * A buffer cannot be copied onto itself, so each round stages up to STAGING_PAGES source pages in a scratch
   * buffer and then writes them to their destinations. Destinations must be distinct and no destination may be a
   * source in the same call (the manager's copies always go to freshly allocated pages).
   */
  copyPages(encoder: GPUCommandEncoder, copies: readonly KvPageCopy[]): void {
    if (copies.length === 0) return;
    const dsts = new Set<number>();
    for (const c of copies) {
      for (const p of [c.src, c.dst]) {
        if (!Number.isInteger(p) || p < 0 || p >= this.numPages) {
          throw new SiftError('INTERNAL', `copyPages: page ${p} outside [0, ${this.numPages})`);
        }
      }
      if (dsts.has(c.dst)) throw new SiftError('INTERNAL', `copyPages: page ${c.dst} is the destination twice`);
      dsts.add(c.dst);
    }
    for (const c of copies) {
      if (dsts.has(c.src))
        throw new SiftError('INTERNAL', `copyPages: page ${c.src} is both a source and a destination`);
    }
    const pb = this.layerPageBytes;
    // the staging buffer holds perRound whole pages; longer lists take several rounds
    const perRound = Math.min(STAGING_PAGES, this.numPages);
    this.staging ??= this.gpu.createBuffer('kv.copy-staging', perRound * pb);
    const staging = this.staging;
    for (let r0 = 0; r0 < copies.length; r0 += perRound) {
      const round = copies.slice(r0, r0 + perRound);
      for (const layer of this.layers) {
        for (const buf of [layer.k, layer.v]) {
          for (let i = 0; i < round.length; i++)
            encoder.copyBufferToBuffer(buf, round[i].src * pb, staging, i * pb, pb);
          for (let i = 0; i < round.length; i++)
            encoder.copyBufferToBuffer(staging, i * pb, buf, round[i].dst * pb, pb);
        }
      }
    }
  }

  destroy(): void {
    for (const l of this.layers) {
      l.k.destroy();
      l.v.destroy();
    }
    this.staging?.destroy();
    this.staging = null;
  }
}
