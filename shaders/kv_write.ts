/**
 * Paged KV write wrapper: rounds the new tokens' k and v (T, nKvHeads, headDim) f32 to f16 and stores them into one
 * layer's kCache and vCache (numPages, pageSize, nKvHeads, headDim / 2) u32 words of packed f16 pairs (element 2j in
 * the low half, 2j+1 in the high half) at page blockTable[tokenSeq[t], positions[t] / pageSize], slot
 * positions[t] % pageSize. Runs before attention in the same step, so prefill tokens see each other.
 *
 * Head range (two pools, engine/kv-storage.ts): with `kvHeadOffset` / `kvRowHeads` the k/v rows hold kvRowHeads heads
 * and the cache receives heads [kvHeadOffset, kvHeadOffset + numKvHeads) of them. Defaults: offset 0, all heads.
 *
 * The KV cache is f16 packed in u32 words on every adapter (the H100 through Dawn has no shader-f16): one format,
 * one tested code path. headDim must be even.
 */
import { SiftError } from '../config/errors.js';
import { grid2d } from './grid.js';
import { type Binding, type BufferRange, type Gpu, type UniformArena, uniforms } from './runtime.js';

const WG = 256;

export interface KvWriteArgs {
  k: Binding; // (T, kvRowHeads, headDim) f32, after RoPE
  v: Binding; // (T, kvRowHeads, headDim) f32
  kCache: Binding; // (numPages, pageSize, numKvHeads, headDim / 2) u32 packed f16 pairs, one layer
  vCache: Binding; // (numPages, pageSize, numKvHeads, headDim / 2) u32 packed f16 pairs, one layer
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

/** Checks a source head range of k/v rows; returns [srcRowWords, srcWordOffset] in f32 pairs. */
export function kvSourceRange(
  kernel: string,
  numKvHeads: number,
  headDim: number,
  kvHeadOffset = 0,
  kvRowHeads = kvHeadOffset + numKvHeads,
): [srcRowWords: number, srcWordOffset: number] {
  if (
    !Number.isInteger(kvHeadOffset) ||
    kvHeadOffset < 0 ||
    !Number.isInteger(kvRowHeads) ||
    kvHeadOffset + numKvHeads > kvRowHeads
  ) {
    throw new SiftError(
      'INTERNAL',
      `${kernel}: KV head range [${kvHeadOffset}, ${kvHeadOffset + numKvHeads}) does not fit rows of ${kvRowHeads} heads`,
    );
  }
  return [(kvRowHeads * headDim) / 2, (kvHeadOffset * headDim) / 2];
}

/** Bytes a binding covers. */
export function bindingBytes(b: Binding): number {
  if ('mapState' in b) return b.size;
  return b.size ?? b.buffer.size - ((b as BufferRange).offset ?? 0);
}

/** Bytes of one KV cache element: f16. */
export const KV_BYTES_PER_ELEMENT = 2;

/** Bytes one page of one layer's K (or V) cache takes: (pageSize, numKvHeads, headDim) f16. */
export function cachePageBytes(pageSize: number, numKvHeads: number, headDim: number): number {
  return KV_BYTES_PER_ELEMENT * pageSize * numKvHeads * headDim;
}

/** Whole pages held by a cache binding of this layout (a buffer may be padded to 16 bytes). */
export function cachePages(cache: Binding, pageSize: number, numKvHeads: number, headDim: number): number {
  return Math.floor(bindingBytes(cache) / cachePageBytes(pageSize, numKvHeads, headDim));
}

/** Shape checks shared by kv_write and attention. */
export function checkPagedShape(
  kernel: string,
  a: { T: number; numKvHeads: number; headDim: number; pageSize: number; maxPagesPerSeq: number },
): void {
  const ints = [a.T, a.numKvHeads, a.headDim, a.pageSize, a.maxPagesPerSeq];
  if (
    !ints.every((x) => Number.isInteger(x) && x >= 0) ||
    a.numKvHeads < 1 ||
    a.headDim < 2 ||
    a.headDim % 2 !== 0 ||
    a.pageSize < 1
  ) {
    throw new SiftError(
      'INTERNAL',
      `${kernel}: bad shape (headDim must be even: the cache packs f16 pairs) T=${a.T} numKvHeads=${a.numKvHeads} headDim=${a.headDim} pageSize=${a.pageSize} ` +
        `maxPagesPerSeq=${a.maxPagesPerSeq}`,
    );
  }
}

export class KvWriteKernel {
  private readonly pipeline: GPUComputePipeline;
  /** `maxWorkgroupsPerDim` (tests only) caps the grid's x dimension to exercise the 2-D layout. */
  constructor(
    private readonly gpu: Gpu,
    private readonly opts: { maxWorkgroupsPerDim?: number } = {},
  ) {
    this.pipeline = gpu.pipeline('kv_write', {}, { WG });
  }

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: KvWriteArgs): void {
    checkPagedShape('kv_write', a);
    const rowWords = (a.numKvHeads * a.headDim) / 2; // u32 words per token row
    const numPages = cachePages(a.kCache, a.pageSize, a.numKvHeads, a.headDim);
    if (numPages < 1 || cachePages(a.vCache, a.pageSize, a.numKvHeads, a.headDim) !== numPages) {
      throw new SiftError(
        'INTERNAL',
        `kv_write: caches of ${bindingBytes(a.kCache)} / ${bindingBytes(a.vCache)} bytes do not hold the same whole pages of ` +
          `(${a.pageSize}, ${a.numKvHeads}, ${a.headDim}) f16`,
      );
    }
    const [srcRowWords, srcWordOffset] = kvSourceRange(
      'kv_write',
      a.numKvHeads,
      a.headDim,
      a.kvHeadOffset,
      a.kvRowHeads,
    );
    if (a.T * srcRowWords >= 2 ** 32 || numPages * a.pageSize * rowWords >= 2 ** 32) {
      throw new SiftError('INTERNAL', 'kv_write: shapes exceed u32 indexing');
    }
    const u = arena.alloc(
      uniforms([
        ['u32', a.T],
        ['u32', rowWords],
        ['u32', a.pageSize],
        ['u32', a.maxPagesPerSeq],
        ['u32', numPages],
        ['u32', srcRowWords],
        ['u32', srcWordOffset],
      ]),
    );
    const [x, y] = grid2d(this.gpu, a.T * rowWords, WG, this.opts.maxWorkgroupsPerDim);
    this.gpu.dispatch(
      pass,
      this.pipeline,
      [a.k, a.v, a.kCache, a.vCache, a.blockTable, a.tokenSeq, a.positions, u],
      x,
      y,
    );
  }
}
