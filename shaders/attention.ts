/**
 * Paged causal attention wrapper: q (T, numHeads, headDim) f32 -> out (T, numHeads, headDim) f32, keys and values
 * read from one layer's kCache / vCache (numPages, pageSize, numKvHeads, headDim / 2) u32 words of packed f16 pairs
 * (shaders/kv_write.ts) through the block table, unpacked to f32; all arithmetic is f32.
 * Query token t belongs to block-table row tokenSeq[t] and sits at positions[t]; it attends to positions
 * 0..positions[t] of that row (the step's own tokens included: kv_write runs first), so prefill chunks of several
 * sequences and decode tokens of many sequences share one dispatch. GQA: query head h reads KV head
 * h / (numHeads / numKvHeads). Softmax is the numerically stable online form, in f32.
 *
 * Head range (retrieval heads after the head permutation, engine/model/head-permutation.ts): with `qHeadOffset` and
 * `qRowHeads` the kernel processes query heads [qHeadOffset, qHeadOffset + numHeads) of q/out rows of qRowHeads
 * heads against a cache of numKvHeads heads (local head h -> cache head h / (numHeads / numKvHeads)). Defaults
 * (offset 0, qRowHeads = numHeads) are the plain all-heads case. Heads outside the range are left untouched in out.
 *
 * Two variants, same bindings and results:
 * - 'workgroup' (GPUs): a workgroup of 64 threads per (token, head) splits each tile of 64 keys across threads,
 *   then every thread accumulates its own output dims over the tile.
 * - 'lanes' (CPU adapters such as lavapipe): 8 invocations per (token, head), each with its own keys and a private
 *   running softmax over full head dims, merged once at the end: no barriers in the key loop. Measured faster on
 *   lavapipe (see the kernel report), so it is the default where gpu.caps.isCpu.
 */
import { SiftError } from '../config/errors.js';
import { grid2d } from './grid.js';
import { cachePages, checkPagedShape } from './kv_write.js';
import { type Binding, type Gpu, type UniformArena, uniforms } from './runtime.js';

export { type KvWriteArgs, KvWriteKernel } from './kv_write.js';

export type AttentionVariant = 'workgroup' | 'lanes';

const WG = 64;
const LANES = 8;
/** Largest head dim the kernels are specialised for (private / workgroup arrays of HD / 2 f32 pairs). */
export const MAX_HEAD_DIM = 256;

export interface AttentionArgs {
  q: Binding; // (T, qRowHeads, headDim) f32, after RoPE
  kCache: Binding; // (numPages, pageSize, numKvHeads, headDim / 2) u32 f16 pairs, one layer, this step's tokens written
  vCache: Binding; // (numPages, pageSize, numKvHeads, headDim / 2) u32 f16 pairs
  blockTable: Binding; // (numSeqs, maxPagesPerSeq) u32 physical page of each logical page
  tokenSeq: Binding; // (T) u32 block-table row of each query token
  positions: Binding; // (T) u32 absolute position of each query token
  out: Binding; // (T, qRowHeads, headDim) f32, must not alias q
  T: number;
  numHeads: number; // query heads processed
  numKvHeads: number; // KV heads in the cache; divides numHeads
  headDim: number; // even, 2..256
  pageSize: number;
  maxPagesPerSeq: number;
  scale: number; // softmax scale, usually 1 / sqrt(headDim)
  /** First query head of the q/out rows processed. Default 0. */
  qHeadOffset?: number;
  /** Query heads per q/out row (>= qHeadOffset + numHeads). Default numHeads. */
  qRowHeads?: number;
  /** Query tokens before this one are not processed and their `out` rows left alone (default 0). */
  firstToken?: number;
}

/** Checks and resolves a query head range [qHeadOffset, qHeadOffset + numHeads) of rows of qRowHeads heads. */
export function headRange(
  kernel: string,
  numHeads: number,
  qHeadOffset = 0,
  qRowHeads = numHeads + qHeadOffset,
): { qHeadOffset: number; qRowHeads: number } {
  if (
    !Number.isInteger(qHeadOffset) ||
    qHeadOffset < 0 ||
    !Number.isInteger(qRowHeads) ||
    qHeadOffset + numHeads > qRowHeads
  ) {
    throw new SiftError(
      'INTERNAL',
      `${kernel}: head range [${qHeadOffset}, ${qHeadOffset + numHeads}) does not fit rows of ${qRowHeads} heads`,
    );
  }
  return { qHeadOffset, qRowHeads };
}

export interface AttentionOptions {
  /** Force a variant; default 'lanes' on CPU adapters (gpu.caps.isCpu), else 'workgroup'. */
  variant?: AttentionVariant;
  /** Tests only: caps the grid's x dimension to exercise the 2-D workgroup layout. */
  maxWorkgroupsPerDim?: number;
}

export class AttentionKernel {
  readonly variant: AttentionVariant;
  constructor(
    private readonly gpu: Gpu,
    private readonly opts: AttentionOptions = {},
  ) {
    this.variant = opts.variant ?? (gpu.caps.isCpu ? 'lanes' : 'workgroup');
  }

  private pipeline(headDim: number): GPUComputePipeline {
    if (this.variant === 'lanes') return this.gpu.pipeline('attention_lanes', { HD: headDim, LANES });
    return this.gpu.pipeline('attention', { HD: headDim, DPW: Math.ceil(headDim / 2 / WG) }, { WG });
  }

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: AttentionArgs): void {
    checkPagedShape('attention', a);
    if (
      !Number.isInteger(a.numHeads) ||
      a.numHeads < 1 ||
      a.numHeads % a.numKvHeads !== 0 ||
      a.headDim > MAX_HEAD_DIM ||
      !Number.isFinite(a.scale)
    ) {
      throw new SiftError(
        'INTERNAL',
        `attention: bad shape numHeads=${a.numHeads} numKvHeads=${a.numKvHeads} headDim=${a.headDim} ` +
          `(max ${MAX_HEAD_DIM}) scale=${a.scale}`,
      );
    }
    const pages = cachePages(a.kCache, a.pageSize, a.numKvHeads, a.headDim);
    if (pages < 1 || (pages * a.pageSize * a.numKvHeads * a.headDim) / 2 >= 2 ** 32) {
      throw new SiftError('INTERNAL', `attention: cache holds ${pages} pages; need 1 to u32-indexable`);
    }
    const first = a.firstToken ?? 0;
    if (!Number.isInteger(first) || first < 0 || first > a.T) {
      throw new SiftError('INTERNAL', `attention: firstToken ${first} outside [0, ${a.T}]`);
    }
    const r = headRange('attention', a.numHeads, a.qHeadOffset, a.qRowHeads ?? (a.qHeadOffset ?? 0) + a.numHeads);
    const u = arena.alloc(
      uniforms([
        ['u32', a.T - first],
        ['u32', a.numHeads],
        ['u32', a.numKvHeads],
        ['u32', a.numHeads / a.numKvHeads],
        ['u32', a.pageSize],
        ['u32', a.maxPagesPerSeq],
        ['f32', a.scale],
        ['u32', r.qHeadOffset],
        ['u32', r.qRowHeads],
        ['u32', first],
        ['u32', 0],
        ['u32', 0],
      ]),
    );
    const [x, y] = grid2d(this.gpu, (a.T - first) * a.numHeads, 1, this.opts.maxWorkgroupsPerDim);
    this.gpu.dispatch(
      pass,
      this.pipeline(a.headDim),
      [a.q, a.kCache, a.vCache, a.blockTable, a.tokenSeq, a.positions, a.out, u],
      x,
      y,
    );
  }
}
