/**
 * Paged causal attention wrapper: q (T, numHeads, headDim) f32 -> out (T, numHeads, headDim) f32, keys and values
 * read from one layer's kCache / vCache (numPages, pageSize, numKvHeads, headDim / 2) u32 words of packed f16 pairs
 * (shaders/kv_write.ts) through the block table, unpacked to f32; all arithmetic is f32.
 * Query token t belongs to block-table row tokenSeq[t] and sits at positions[t]; it attends to positions
 * 0..positions[t] of that row (the step's own tokens included: kv_write runs first), so prefill chunks of several
 * sequences and decode tokens of many sequences share one dispatch. GQA: query head h reads KV head
 * h / (numHeads / numKvHeads). Softmax is the numerically stable online form, in f32. A sliding window (`window`)
 * keeps keys positions[t] - window < j <= positions[t]; `softcap` caps the scaled scores (Gemma 2).
 *
 * Head range (retrieval heads after the head permutation, model/head-permutation.ts): with `qHeadOffset` and
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
import {
  type AttentionShape,
  PAGED_HEADS,
  pagedHeads,
  requireAttention,
  requireRows,
  SCORE_MODS,
  type ScoreMods,
  scoreMods,
} from './lib/attention.js';
import { check, defaultVariant, headRange, type LayoutVariant, requireBytes, requireInts } from './lib/checks.js';
import { grid2d } from './lib/grid.js';
import { defineParams } from './lib/params.js';
import { type PoolBinding, slabDefines } from './lib/slabs.js';
import type { Binding, Gpu, UniformArena } from './runtime.js';

export { type KvWriteArgs, KvWriteKernel } from './kv_write.js';

export type AttentionVariant = LayoutVariant;

const WG = 64;
const LANES = 8;

/** struct Params of attention_common.wgsl. */
const PARAMS = defineParams('attention', {
  tokens: 'u32',
  ...PAGED_HEADS,
  scale: 'f32',
  qHeadOffset: 'u32',
  qRowHeads: 'u32',
  firstToken: 'u32',
  ...SCORE_MODS,
});

export interface AttentionArgs extends AttentionShape, ScoreMods {
  q: Binding; // (T, qRowHeads, headDim) f32, after RoPE
  kCache: PoolBinding; // (numPages, pageSize, numKvHeads, headDim / 2) u32 f16 pairs, one layer, this step's tokens written
  vCache: PoolBinding; // (numPages, pageSize, numKvHeads, headDim / 2) u32 f16 pairs
  blockTable: Binding; // (numSeqs, maxPagesPerSeq) u32 physical page of each logical page
  tokenSeq: Binding; // (T) u32 block-table row of each query token
  positions: Binding; // (T) u32 absolute position of each query token
  out: Binding; // (T, qRowHeads, headDim) f32, must not alias q
  T: number;
  /** First query head of the q/out rows processed. Default 0. */
  qHeadOffset?: number;
  /** Query heads per q/out row (>= qHeadOffset + numHeads). Default numHeads. */
  qRowHeads?: number;
  /** Query tokens before this one are not processed and their `out` rows left alone (default 0). */
  firstToken?: number;
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
    this.variant = defaultVariant(gpu.caps, opts.variant);
  }

  private pipeline(headDim: number, pools: { kCache: PoolBinding; vCache: PoolBinding }): GPUComputePipeline {
    const slabs = slabDefines(pools);
    if (this.variant === 'lanes') {
      return this.gpu.pipeline('attention_lanes', { HD: headDim, LANES, ...slabs }, {}, PARAMS);
    }
    return this.gpu.pipeline('attention', { HD: headDim, DPW: Math.ceil(headDim / 2 / WG), ...slabs }, { WG }, PARAMS);
  }

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: AttentionArgs): void {
    const K = 'attention';
    requireInts(K, { T: a.T, maxPagesPerSeq: a.maxPagesPerSeq });
    requireAttention(K, a, a.kCache, a.vCache);
    const first = a.firstToken ?? 0;
    check(K, Number.isInteger(first) && first >= 0 && first <= a.T, `firstToken ${first} outside [0, ${a.T}]`);
    const r = headRange(K, a.numHeads, a.qHeadOffset, a.qRowHeads);
    requireRows(K, 'q', a.q, a.T, r.qRowHeads, a.headDim);
    requireRows(K, 'out', a.out, a.T, r.qRowHeads, a.headDim);
    requireBytes(K, 'tokenSeq', a.tokenSeq, a.T * 4, `(${a.T}) u32`);
    requireBytes(K, 'positions', a.positions, a.T * 4, `(${a.T}) u32`);
    const u = arena.params(PARAMS, {
      tokens: a.T - first,
      ...pagedHeads(a),
      scale: a.scale,
      qHeadOffset: r.qHeadOffset,
      qRowHeads: r.qRowHeads,
      firstToken: first,
      ...scoreMods(K, a),
    });
    const [x, y] = grid2d(this.gpu, (a.T - first) * a.numHeads, 1, this.opts.maxWorkgroupsPerDim);
    this.gpu.dispatch(
      pass,
      this.pipeline(a.headDim, a),
      [a.q, a.kCache, a.vCache, a.blockTable, a.tokenSeq, a.positions, a.out, u],
      x,
      y,
    );
  }
}
