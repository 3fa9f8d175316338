/**
 * Block-sparse prefill attention: q (T, numHeads, headDim) f32 -> out (T, numHeads, headDim) f32 over one layer's
 * packed-f16 paged cache (numPages, pageSize, numKvHeads, headDim / 2) u32, the step's own tokens already written.
 * Each KV head has a mode (HeadMode): 0 dense causal, 1 block-sparse over the key blocks block_select listed for
 * the token's query block (token-exact causal mask in the diagonal block), 2 Lambda (sink tokens [0, sink) plus
 * the local window (pos - local, pos], DuoAttention / StreamingLLM streaming heads). One dispatch serves a layer
 * with mixed head kinds; softmax is the numerically stable online form in f32 (f16 K/V unpacked to f32).
 *
 * Variant: the 'lanes' layout of attention_lanes.wgsl (8 invocations per (token, head), private softmax per lane,
 * merged once), the faster one on lavapipe. A GPU-tuned tiled variant is not written yet.
 *
 * `BlockSparsePrefill` runs selection + attention for a prefill step of one or more sequences (see encodeLayer).
 */
import { SiftError } from '../config/errors.js';
import {
  BlockSelectKernel,
  blockListStride,
  HeadMode,
  modeWords,
  type PrefillBlockPlan,
  QBLOCK_WORDS,
} from './block_select.js';
import { type AttentionShape, PAGED_HEADS, pagedHeads, requireAttention, requireRows } from './lib/attention.js';
import { MAX_KV_HEADS, requireBytes, requireInts, requireU32 } from './lib/checks.js';
import { grid2d } from './lib/grid.js';
import { defineParams } from './lib/params.js';
import type { Binding, Gpu, UniformArena } from './runtime.js';

export { HeadMode, type PrefillBlockPlan, planPrefillBlocks } from './block_select.js';

const LANES = 8;

/** struct Params of block_sparse_attention.wgsl. */
const PARAMS = defineParams('block_sparse_attention', {
  ...PAGED_HEADS,
  blockSize: 'u32',
  numQBlocks: 'u32',
  listStride: 'u32',
  sink: 'u32',
  local: 'u32',
  scale: 'f32',
  qRowHeads: 'u32',
  modes: 'array<vec4<u32>, 16>',
});

export interface BlockSparseAttentionArgs extends AttentionShape {
  /** Query heads per q/out row when the heads used are a prefix of the row (default numHeads). */
  qRowHeads?: number;
  q: Binding; // (T, numHeads, headDim) f32, after RoPE
  kCache: Binding; // (numPages, pageSize, numKvHeads, headDim / 2) u32 packed f16 pairs, step's tokens written
  vCache: Binding; // (numPages, pageSize, numKvHeads, headDim / 2) u32 packed f16 pairs
  blockTable: Binding; // (numSeqs, maxPagesPerSeq) u32 physical page of each logical page
  qBlocks: Binding; // (numQBlocks, 5) u32 = plan.qBlocks
  blockList: Binding; // (numQBlocks, numHeads, listStride) u32 from block_select (read for sparse heads only)
  out: Binding; // (T, numHeads, headDim) f32, must not alias q
  plan: PrefillBlockPlan;
  // numKvHeads <= MAX_KV_HEADS (64): the mode table is a uniform array
  headModes: readonly number[]; // (numKvHeads) HeadMode per KV head
  listStride: number; // blockListStride(plan, topBlocks, localBlocks); any value >= 1 when no head is sparse
  sink: number; // Lambda: sink tokens
  local: number; // Lambda: local window in tokens, >= 1
}

export class BlockSparseAttentionKernel {
  constructor(
    private readonly gpu: Gpu,
    /** `maxWorkgroupsPerDim` (tests only) caps the grid's x dimension to exercise the 2-D layout. */
    private readonly opts: { maxWorkgroupsPerDim?: number } = {},
  ) {}

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: BlockSparseAttentionArgs): void {
    const K = 'block_sparse_attention';
    const { plan } = a;
    requireInts(
      K,
      { maxPagesPerSeq: a.maxPagesPerSeq, listStride: a.listStride, sink: a.sink, local: a.local },
      { listStride: 1, local: 1 },
    );
    requireAttention(K, a, a.kCache, a.vCache, MAX_KV_HEADS);
    const qRowHeads = a.qRowHeads ?? a.numHeads;
    requireRows(K, 'q', a.q, plan.T, qRowHeads, a.headDim);
    requireRows(K, 'out', a.out, plan.T, qRowHeads, a.headDim);
    requireBytes(K, 'qBlocks', a.qBlocks, plan.numQBlocks * QBLOCK_WORDS * 4, `(${plan.numQBlocks}, 5) u32`);
    if (a.headModes.some((m) => m === HeadMode.sparse)) {
      requireBytes(
        K,
        'blockList',
        a.blockList,
        plan.numQBlocks * a.numHeads * a.listStride * 4,
        `(${plan.numQBlocks}, ${a.numHeads}, ${a.listStride}) u32`,
      );
    }
    const count = plan.numQBlocks * plan.blockSize * a.numHeads;
    requireU32(K, 'work items', count);
    const u = arena.params(PARAMS, {
      ...pagedHeads(a),
      blockSize: plan.blockSize,
      numQBlocks: plan.numQBlocks,
      listStride: a.listStride,
      sink: a.sink,
      local: a.local,
      scale: a.scale,
      qRowHeads,
      modes: modeWords(K, a.headModes, a.numKvHeads),
    });
    const [x, y] = grid2d(this.gpu, count, 1, this.opts.maxWorkgroupsPerDim);
    const pipe = this.gpu.pipeline('block_sparse_attention', { HD: a.headDim, LANES }, {}, PARAMS);
    this.gpu.dispatch(pass, pipe, [a.q, a.kCache, a.vCache, a.blockTable, a.qBlocks, a.blockList, a.out, u], x, y);
  }
}

/** Knobs of block-sparse prefill (design.md, "Unified sparse attention"). */
export interface BlockSparseConfig {
  /** Tokens per query / key block, aligned to absolute positions (MInference: 64). */
  blockSize?: number;
  /** Best-scoring key blocks kept per query block besides sink, diagonal and local ones. */
  topBlocks?: number;
  /** Alternative to topBlocks: tokens attended per query block; topBlocks = budget / blockSize - 2 - localBlocks. */
  tokenBudget?: number;
  /** Blocks just before the diagonal always kept (default 0). */
  localBlocks?: number;
  /** Lambda heads: sink tokens (default 128, LServe). */
  sink?: number;
  /** Lambda heads: local window in tokens (default 256, LServe). */
  local?: number;
}

export interface PrefillLayerArgs extends AttentionShape {
  /** Query heads per q/out row when the heads used are a prefix of the row (default numHeads). */
  qRowHeads?: number;
  q: Binding; // (T, numHeads, headDim) f32 after RoPE
  kCache: Binding; // (numPages, pageSize, numKvHeads, headDim / 2) u32 packed f16, this step's K already written
  vCache: Binding; // (numPages, pageSize, numKvHeads, headDim / 2) u32 packed f16, this step's V already written
  blockTable: Binding; // (numSeqs, maxPagesPerSeq) u32
  qBlocks: Binding; // (plan.numQBlocks, 5) u32: plan.qBlocks uploaded once per step
  kBlocks: Binding; // (plan.numKBlocks, 2) u32: plan.kBlocks uploaded once per step
  kPool: Binding; // scratch, scratchBytes().kPool bytes (reusable across layers)
  blockList: Binding; // scratch, scratchBytes().blockList bytes (reusable across layers)
  out: Binding; // (T, numHeads, headDim) f32
  plan: PrefillBlockPlan; // planPrefillBlocks(tokenSeq, positions, blockSize)
  headModes: readonly number[]; // (numKvHeads) HeadMode of this layer's KV heads
}

/**
 * Selection + attention for one layer of a prefill step (one or more sequences; each sequence's chunk tokens must
 * be adjacent in the step, see planPrefillBlocks). The engine provides, per step:
 *   plan = planPrefillBlocks(tokenSeq, positions, blockSize) and its qBlocks / kBlocks uploaded as u32 buffers;
 *   kPool and blockList scratch of scratchBytes(plan, shape) (the same buffers serve every layer in order).
 */
export class BlockSparsePrefill {
  readonly blockSize: number;
  readonly topBlocks: number;
  readonly localBlocks: number;
  readonly sink: number;
  readonly local: number;
  private readonly select: BlockSelectKernel;
  private readonly attention: BlockSparseAttentionKernel;

  constructor(gpu: Gpu, cfg: BlockSparseConfig = {}) {
    this.blockSize = cfg.blockSize ?? 64;
    this.localBlocks = cfg.localBlocks ?? 0;
    this.topBlocks =
      cfg.topBlocks ??
      (cfg.tokenBudget !== undefined
        ? Math.max(0, Math.floor(cfg.tokenBudget / this.blockSize) - 2 - this.localBlocks)
        : 8);
    this.sink = cfg.sink ?? 128;
    this.local = cfg.local ?? 256;
    const ints = [this.blockSize, this.topBlocks, this.localBlocks, this.sink, this.local];
    if (!ints.every((x) => Number.isInteger(x) && x >= 0) || this.blockSize < 1 || this.local < 1) {
      throw new SiftError('INTERNAL', `BlockSparsePrefill: bad config ${JSON.stringify(cfg)}`);
    }
    this.select = new BlockSelectKernel(gpu);
    this.attention = new BlockSparseAttentionKernel(gpu);
  }
  /** Compiles every pipeline a prefill of up to `maxContext` tokens can use (warm-up; see BlockSelectKernel). */
  compileFor(maxContext: number, headDim: number): void {
    this.select.compileFor(maxContext, headDim, this.blockSize);
  }

  /** u32 words per (query block, head) block list for this plan. */
  listStride(plan: PrefillBlockPlan): number {
    return blockListStride(plan, this.topBlocks, this.localBlocks);
  }

  /** Scratch the engine allocates per step (or once for the largest step): bytes of kPool and blockList. */
  scratchBytes(plan: PrefillBlockPlan, s: { numHeads: number; numKvHeads: number; headDim: number }) {
    return {
      kPool: Math.max(16, plan.numKBlocks * s.numKvHeads * s.headDim * 4),
      blockList: Math.max(16, plan.numQBlocks * s.numHeads * this.listStride(plan) * 4),
    };
  }

  encodeLayer(pass: GPUComputePassEncoder, arena: UniformArena, a: PrefillLayerArgs): void {
    if (a.plan.blockSize !== this.blockSize) {
      throw new SiftError('INTERNAL', `BlockSparsePrefill: plan block size ${a.plan.blockSize} != ${this.blockSize}`);
    }
    this.select.encode(pass, arena, { ...a, topBlocks: this.topBlocks, localBlocks: this.localBlocks });
    this.attention.encode(pass, arena, {
      ...a,
      listStride: this.listStride(a.plan),
      sink: this.sink,
      local: this.local,
    });
  }
}
