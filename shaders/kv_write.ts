/**
 * Paged KV write wrapper: copies the new tokens' k and v (T, nKvHeads, headDim) f32 into one layer's kCache and
 * vCache (numPages, pageSize, nKvHeads, headDim) f32 at page blockTable[tokenSeq[t], positions[t] / pageSize],
 * slot positions[t] % pageSize. Runs before attention in the same step, so prefill tokens see each other.
 */
import { SiftError } from '../config/errors.js';
import { grid2d } from './grid.js';
import { type Binding, type BufferRange, type Gpu, type UniformArena, uniforms } from './runtime.js';

const WG = 256;

export interface KvWriteArgs {
  k: Binding; // (T, numKvHeads, headDim) f32, after RoPE
  v: Binding; // (T, numKvHeads, headDim) f32
  kCache: Binding; // (numPages, pageSize, numKvHeads, headDim) f32, one layer
  vCache: Binding; // (numPages, pageSize, numKvHeads, headDim) f32, one layer
  blockTable: Binding; // (numSeqs, maxPagesPerSeq) u32 physical page of each logical page
  tokenSeq: Binding; // (T) u32 block-table row of each token
  positions: Binding; // (T) u32 absolute position of each token
  T: number;
  numKvHeads: number;
  headDim: number;
  pageSize: number;
  maxPagesPerSeq: number;
}

/** Bytes a binding covers. */
function bindingBytes(b: Binding): number {
  if ('mapState' in b) return b.size;
  return b.size ?? b.buffer.size - ((b as BufferRange).offset ?? 0);
}

/** Whole pages held by a cache binding of this layout (a buffer may be padded to 16 bytes). */
export function cachePages(cache: Binding, pageSize: number, numKvHeads: number, headDim: number): number {
  return Math.floor(bindingBytes(cache) / (4 * pageSize * numKvHeads * headDim));
}

/** Shape checks shared by kv_write and attention. */
export function checkPagedShape(
  kernel: string,
  a: { T: number; numKvHeads: number; headDim: number; pageSize: number; maxPagesPerSeq: number },
): void {
  const ints = [a.T, a.numKvHeads, a.headDim, a.pageSize, a.maxPagesPerSeq];
  if (!ints.every((x) => Number.isInteger(x) && x >= 0) || a.numKvHeads < 1 || a.headDim < 1 || a.pageSize < 1) {
    throw new SiftError(
      'INTERNAL',
      `${kernel}: bad shape T=${a.T} numKvHeads=${a.numKvHeads} headDim=${a.headDim} pageSize=${a.pageSize} ` +
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
    const rowLen = a.numKvHeads * a.headDim;
    const numPages = cachePages(a.kCache, a.pageSize, a.numKvHeads, a.headDim);
    if (numPages < 1 || cachePages(a.vCache, a.pageSize, a.numKvHeads, a.headDim) !== numPages) {
      throw new SiftError(
        'INTERNAL',
        `kv_write: caches of ${bindingBytes(a.kCache)} / ${bindingBytes(a.vCache)} bytes do not hold the same whole pages of ` +
          `(${a.pageSize}, ${a.numKvHeads}, ${a.headDim}) f32`,
      );
    }
    if (a.T * rowLen >= 2 ** 32 || numPages * a.pageSize * rowLen >= 2 ** 32) {
      throw new SiftError('INTERNAL', 'kv_write: shapes exceed u32 indexing');
    }
    const u = arena.alloc(
      uniforms([
        ['u32', a.T],
        ['u32', rowLen],
        ['u32', a.pageSize],
        ['u32', a.maxPagesPerSeq],
        ['u32', numPages],
      ]),
    );
    const [x, y] = grid2d(this.gpu, a.T * rowLen, WG, this.opts.maxWorkgroupsPerDim);
    this.gpu.dispatch(
      pass,
      this.pipeline,
      [a.k, a.v, a.kCache, a.vCache, a.blockTable, a.tokenSeq, a.positions, u],
      x,
      y,
    );
  }
}
