/**
 * Streaming-pool KV write wrapper: rounds the new tokens' k and v to f16 and stores heads
 * [kvHeadOffset, kvHeadOffset + numKvHeads) of each (T, kvRowHeads, headDim) f32 row into one layer's streaming
 * kCache / vCache (numStreamingPages, pageSize, numKvHeads, headDim / 2) u32 words of packed f16 pairs, at the flat
 * slot slots[t] = page * pageSize + offset that kvcache's StreamingPool.slotFor gives after the chunk is reserved;
 * SKIP_SLOT (0xFFFFFFFF) skips a token whose position the ring has already recycled.
 *
 * Order in a step (shaders/streaming_attention.ts): streaming attention first (it reads this chunk's keys from the
 * activations), then this write, so a chunk longer than the ring never overwrites keys its own tokens still need.
 */
import { SiftError } from '../config/errors.js';
import { grid2d } from './grid.js';
import { cachePages, checkPagedShape, kvSourceRange } from './kv_write.js';
import type { Binding, Gpu, UniformArena } from './runtime.js';
import { uniforms } from './runtime.js';

const WG = 256;

/** slots[t] value that skips token t. */
export const SKIP_SLOT = 0xffffffff;

export interface KvWriteStreamingArgs {
  k: Binding; // (T, kvRowHeads, headDim) f32, after RoPE
  v: Binding; // (T, kvRowHeads, headDim) f32
  kCache: Binding; // (numStreamingPages, pageSize, numKvHeads, headDim / 2) u32 packed f16 pairs, one layer
  vCache: Binding; // (numStreamingPages, pageSize, numKvHeads, headDim / 2) u32 packed f16 pairs, one layer
  slots: Binding; // (T) u32 flat slot page * pageSize + offset, or SKIP_SLOT
  T: number;
  numKvHeads: number; // streaming KV heads in the cache
  headDim: number;
  pageSize: number;
  /** First head of the k/v rows written. Default 0. */
  kvHeadOffset?: number;
  /** Heads per k/v activation row. Default kvHeadOffset + numKvHeads. */
  kvRowHeads?: number;
}

export class KvWriteStreamingKernel {
  private readonly pipeline: GPUComputePipeline;
  constructor(
    private readonly gpu: Gpu,
    private readonly opts: { maxWorkgroupsPerDim?: number } = {},
  ) {
    this.pipeline = gpu.pipeline('kv_write_streaming', {}, { WG });
  }

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: KvWriteStreamingArgs): void {
    checkPagedShape('kv_write_streaming', { ...a, maxPagesPerSeq: 0 });
    const rowWords = (a.numKvHeads * a.headDim) / 2;
    const numPages = cachePages(a.kCache, a.pageSize, a.numKvHeads, a.headDim);
    if (numPages < 1 || cachePages(a.vCache, a.pageSize, a.numKvHeads, a.headDim) !== numPages) {
      throw new SiftError('INTERNAL', 'kv_write_streaming: K and V caches must hold the same whole pages (at least 1)');
    }
    const [srcRowWords, srcWordOffset] = kvSourceRange(
      'kv_write_streaming',
      a.numKvHeads,
      a.headDim,
      a.kvHeadOffset,
      a.kvRowHeads,
    );
    if (a.T * srcRowWords >= 2 ** 32 || numPages * a.pageSize * rowWords >= 2 ** 32) {
      throw new SiftError('INTERNAL', 'kv_write_streaming: shapes exceed u32 indexing');
    }
    const u = arena.alloc(
      uniforms([
        ['u32', a.T],
        ['u32', rowWords],
        ['u32', numPages * a.pageSize],
        ['u32', srcRowWords],
        ['u32', srcWordOffset],
      ]),
    );
    const [x, y] = grid2d(this.gpu, a.T * rowWords, WG, this.opts.maxWorkgroupsPerDim);
    this.gpu.dispatch(pass, this.pipeline, [a.k, a.v, a.kCache, a.vCache, a.slots, u], x, y);
  }
}
