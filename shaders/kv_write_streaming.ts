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

import { requireRows } from './lib/attention.js';
import { kvHeadRange, requireBytes, requireInts, requireU32 } from './lib/checks.js';
import { grid2d } from './lib/grid.js';
import { requireCache } from './lib/paged.js';
import { defineParams } from './lib/params.js';
import { type PoolBinding, slabDefines } from './lib/slabs.js';
import type { Binding, Gpu, UniformArena } from './runtime.js';

const WG = 256;

/** struct Params of kv_write_streaming.wgsl. */
const PARAMS = defineParams('kv_write_streaming', {
  tokens: 'u32',
  rowWords: 'u32',
  numSlots: 'u32',
  srcRowWords: 'u32',
  srcWordOffset: 'u32',
});

/** slots[t] value that skips token t. */
export const SKIP_SLOT = 0xffffffff;

export interface KvWriteStreamingArgs {
  k: Binding; // (T, kvRowHeads, headDim) f32, after RoPE
  v: Binding; // (T, kvRowHeads, headDim) f32
  kCache: PoolBinding; // (numStreamingPages, pageSize, numKvHeads, headDim / 2) u32 packed f16 pairs, one layer
  vCache: PoolBinding; // (numStreamingPages, pageSize, numKvHeads, headDim / 2) u32 packed f16 pairs, one layer
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
  constructor(
    private readonly gpu: Gpu,
    private readonly opts: { maxWorkgroupsPerDim?: number } = {},
  ) {}

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: KvWriteStreamingArgs): void {
    const K = 'kv_write_streaming';
    requireInts(K, { T: a.T });
    const numPages = requireCache(K, a, a.kCache, a.vCache);
    const src = kvHeadRange(K, a.numKvHeads, a.headDim, a.kvHeadOffset, a.kvRowHeads);
    const rowWords = (a.numKvHeads * a.headDim) / 2;
    requireU32(K, 'k/v pairs', a.T * src.rowPairs);
    requireRows(K, 'k', a.k, a.T, src.kvRowHeads, a.headDim);
    requireRows(K, 'v', a.v, a.T, src.kvRowHeads, a.headDim);
    requireBytes(K, 'slots', a.slots, a.T * 4, `(${a.T}) u32`);
    const u = arena.params(PARAMS, {
      tokens: a.T,
      rowWords,
      numSlots: numPages * a.pageSize,
      srcRowWords: src.rowPairs,
      srcWordOffset: src.firstPair,
    });
    const [x, y] = grid2d(this.gpu, a.T * rowWords, WG, this.opts.maxWorkgroupsPerDim);
    const pipeline = this.gpu.pipeline(
      'kv_write_streaming',
      slabDefines({ kCache: a.kCache, vCache: a.vCache }),
      { WG },
      PARAMS,
    );
    this.gpu.dispatch(pass, pipeline, [a.k, a.v, a.kCache, a.vCache, a.slots, u], x, y);
  }
}
