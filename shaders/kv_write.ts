/**
 * Paged KV write wrapper: rounds the new tokens' k and v (T, nKvHeads, headDim) f32 to f16 and stores them into one
 * layer's kCache and vCache (numPages, pageSize, nKvHeads, headDim / 2) u32 words of packed f16 pairs (element 2j in
 * the low half, 2j+1 in the high half) at page blockTable[tokenSeq[t], positions[t] / pageSize], slot
 * positions[t] % pageSize. Runs before attention in the same step, so prefill tokens see each other.
 *
 * Head range (two pools, model/kv-storage.ts): with `kvHeadOffset` / `kvRowHeads` the k/v rows hold kvRowHeads heads
 * and the cache receives heads [kvHeadOffset, kvHeadOffset + numKvHeads) of them. Defaults: offset 0, all heads.
 *
 * The KV cache is f16 packed in u32 words on every adapter (the H100 through Dawn has no shader-f16): one format,
 * one tested code path. headDim must be even.
 */

import { requireRows } from './lib/attention.js';
import { kvHeadRange, requireBytes, requireInts, requireU32 } from './lib/checks.js';
import { grid2d } from './lib/grid.js';
import { requireCache } from './lib/paged.js';
import { defineParams } from './lib/params.js';
import { type PoolBinding, slabDefines } from './lib/slabs.js';
import type { Binding, Gpu, UniformArena } from './runtime.js';

export { cachePageBytes, cachePages, KV_BYTES_PER_ELEMENT } from './lib/paged.js';

const WG = 256;

/** struct Params of kv_write.wgsl. */
const PARAMS = defineParams('kv_write', {
  tokens: 'u32',
  rowWords: 'u32',
  pageSize: 'u32',
  maxPagesPerSeq: 'u32',
  numPages: 'u32',
  srcRowWords: 'u32',
  srcWordOffset: 'u32',
});

export interface KvWriteArgs {
  k: Binding; // (T, kvRowHeads, headDim) f32, after RoPE
  v: Binding; // (T, kvRowHeads, headDim) f32
  kCache: PoolBinding; // (numPages, pageSize, numKvHeads, headDim / 2) u32 packed f16 pairs, one layer
  vCache: PoolBinding; // (numPages, pageSize, numKvHeads, headDim / 2) u32 packed f16 pairs, one layer
  blockTable: Binding; // (numSeqs, maxPagesPerSeq) u32 physical page of each logical page
  tokenSeq: Binding; // (T) u32 block-table row of each token
  positions: Binding; // (T) u32 absolute position of each token
  T: number;
  numKvHeads: number; // KV heads in the cache (and written per token)
  headDim: number;
  pageSize: number;
  maxPagesPerSeq: number;
  /** First head of the k/v rows written. Default 0. */
  kvHeadOffset?: number;
  /** Heads per k/v activation row (>= kvHeadOffset + numKvHeads). Default kvHeadOffset + numKvHeads. */
  kvRowHeads?: number;
}

export class KvWriteKernel {
  /** `maxWorkgroupsPerDim` (tests only) caps the grid's x dimension to exercise the 2-D layout. */
  constructor(
    private readonly gpu: Gpu,
    private readonly opts: { maxWorkgroupsPerDim?: number } = {},
  ) {}

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: KvWriteArgs): void {
    const K = 'kv_write';
    requireInts(K, { T: a.T, maxPagesPerSeq: a.maxPagesPerSeq });
    const numPages = requireCache(K, a, a.kCache, a.vCache);
    const src = kvHeadRange(K, a.numKvHeads, a.headDim, a.kvHeadOffset, a.kvRowHeads);
    const rowWords = (a.numKvHeads * a.headDim) / 2; // u32 words per token row
    requireU32(K, 'k/v pairs', a.T * src.rowPairs);
    requireRows(K, 'k', a.k, a.T, src.kvRowHeads, a.headDim);
    requireRows(K, 'v', a.v, a.T, src.kvRowHeads, a.headDim);
    requireBytes(K, 'tokenSeq', a.tokenSeq, a.T * 4, `(${a.T}) u32`);
    requireBytes(K, 'positions', a.positions, a.T * 4, `(${a.T}) u32`);
    const u = arena.params(PARAMS, {
      tokens: a.T,
      rowWords,
      pageSize: a.pageSize,
      maxPagesPerSeq: a.maxPagesPerSeq,
      numPages,
      srcRowWords: src.rowPairs,
      srcWordOffset: src.firstPair,
    });
    const [x, y] = grid2d(this.gpu, a.T * rowWords, WG, this.opts.maxWorkgroupsPerDim);
    const pipeline = this.gpu.pipeline('kv_write', slabDefines({ kCache: a.kCache, vCache: a.vCache }), { WG }, PARAMS);
    this.gpu.dispatch(pass, pipeline, [a.k, a.v, a.kCache, a.vCache, a.blockTable, a.tokenSeq, a.positions, u], x, y);
  }
}
