/**
 * Prefill attention of one step, the named phase around three kernels (LServe / MInference style):
 *   block_digest      after kv_write: the mean key of every key block the step wrote (kept per layer, beside the
 *                     page digests), so selection never re-pools earlier blocks;
 *   block_select      block-sparse heads: per (query block, KV head) the kept key blocks (sink, diagonal, local,
 *                     top-k by pooled q . digest);
 *   prefill_attention FlashAttention-2-style tiles of queries x KV head over the paged cache: dense causal, the
 *                     block lists, or Lambda (sink + local window) per KV head; and the streaming heads' Lambda
 *                     over their own pool (sink pages + ring) and the step's fresh k/v rows (`encodeStreaming`).
 * `plan` (host, once per step) groups the step's prefill tokens into query blocks and query tiles; the engine
 * uploads them once (`upload`) and every layer encodes with them.
 */
import { SiftError } from '../../config/errors.js';
import { BlockDigestKernel, type BlockSpan, blockDigestEntries } from '../../shaders/block_digest.js';
import {
  type BlockHierarchy,
  BlockSelectKernel,
  blockListStride,
  DEFAULT_BLOCK_HIERARCHY,
  HeadMode,
  type HeadModeValue,
  type PrefillBlockPlan,
  planPrefillBlocks,
  QBLOCK_WORDS,
} from '../../shaders/block_select.js';
import type { ScoreMods } from '../../shaders/lib/attention.js';
import type { LayoutVariant } from '../../shaders/lib/checks.js';
import type { PoolBinding } from '../../shaders/lib/slabs.js';
import {
  PrefillAttentionKernel,
  type PrefillAttentionOptions,
  planQueryTiles,
  type QueryTilePlan,
  type StreamingSource,
} from '../../shaders/prefill_attention.js';
import type { Binding, Gpu, UniformArena } from '../../shaders/runtime.js';

export { HeadMode };

/** Knobs of prefill attention (design.md, "Unified sparse attention"). */
export interface PrefillConfig {
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
  /**
   * Block selection's coarse level (default DEFAULT_BLOCK_HIERARCHY: groups of 8 blocks bounded by their coarse
   * digests; FLAT_BLOCKS: every earlier block scored, the selection before the hierarchy).
   */
  hierarchy?: BlockHierarchy;
  /** Attention kernel variant; default per adapter ('lanes' on CPU adapters, else 'workgroup'). */
  variant?: LayoutVariant;
  /** More of the attention kernel's layout options (benchmarks and tests; default: per adapter and step). */
  kernel?: PrefillAttentionOptions;
}

/** A step's prefill plan: query blocks (selection) and query tiles (attention), uploaded once per step. */
export interface PrefillPlan {
  blocks: PrefillBlockPlan;
  tiles: QueryTilePlan;
}

/** A layer's sliding window and logit soft-cap (ScoreMods) pass through to the kernel. */
export interface PrefillLayerArgs extends ScoreMods {
  q: Binding; // (T, qRowHeads, headDim) f32 after RoPE
  kCache: PoolBinding; // (numPages, pageSize, numKvHeads, headDim / 2) u32 packed f16, this step's K already written
  vCache: PoolBinding; // (numPages, pageSize, numKvHeads, headDim / 2) u32 packed f16, this step's V already written
  blockTable: Binding; // (numSeqs, maxPagesPerSeq) u32
  qBlocks: Binding; // (numQBlocks, 4) u32: plan.blocks.qBlocks
  tiles: Binding; // (numTiles, 5) u32: plan.tiles.tiles
  digests: PoolBinding; // (numPages * bpp, numKvHeads, headDim) f32 block digests, this step's blocks written
  blockList: Binding; // scratch of blockListBytes(plan, numKvHeads)
  out: Binding; // (T, qRowHeads, headDim) f32
  plan: PrefillPlan;
  numHeads: number; // query heads processed (numKvHeads * group)
  numKvHeads: number;
  /** Query heads per q/out row (>= qHeadOffset + numHeads; default numHeads). */
  qRowHeads?: number;
  qHeadOffset?: number;
  headDim: number;
  pageSize: number;
  maxPagesPerSeq: number;
  scale: number;
  headModes: readonly HeadModeValue[]; // (numKvHeads)
}

/** The streaming heads of one layer's prefill tokens (Lambda over the streaming pool, in-step keys fresh). */
export interface PrefillStreamingArgs extends ScoreMods {
  q: Binding; // (T, qRowHeads, headDim) f32 after RoPE
  kCache: PoolBinding; // (numStreamingPages, pageSize, numKvHeads, headDim / 2) u32 packed f16: the streaming pool
  vCache: PoolBinding; // (numStreamingPages, pageSize, numKvHeads, headDim / 2) u32 packed f16
  streamTable: Binding; // (numSeqs, sinkPages + ringPages) u32: each sequence's sink pages then its ring
  tiles: Binding; // (numTiles, 6) u32: plan.tiles.tiles
  out: Binding; // (T, qRowHeads, headDim) f32; heads outside the range untouched
  plan: PrefillPlan;
  numHeads: number; // streaming query heads (numKvHeads * group)
  numKvHeads: number; // streaming KV heads (the pool's)
  qHeadOffset: number; // first streaming query head of the q/out rows
  qRowHeads: number;
  headDim: number;
  pageSize: number;
  scale: number;
  sinkTokens: number;
  localTokens: number;
  /** The step's k/v rows (the streaming heads are heads [kvHeadOffset, +numKvHeads) of them) and the ring shape. */
  fresh: StreamingSource;
}

export class PrefillAttention {
  readonly blockSize: number;
  readonly topBlocks: number;
  readonly localBlocks: number;
  readonly sink: number;
  readonly local: number;
  readonly hierarchy: BlockHierarchy;
  private readonly digest: BlockDigestKernel;
  private readonly select: BlockSelectKernel;
  readonly attention: PrefillAttentionKernel;

  constructor(gpu: Gpu, cfg: PrefillConfig = {}) {
    this.blockSize = cfg.blockSize ?? 64;
    this.localBlocks = cfg.localBlocks ?? 0;
    this.topBlocks =
      cfg.topBlocks ??
      (cfg.tokenBudget !== undefined
        ? Math.max(0, Math.floor(cfg.tokenBudget / this.blockSize) - 2 - this.localBlocks)
        : 8);
    this.sink = cfg.sink ?? 128;
    this.local = cfg.local ?? 256;
    this.hierarchy = cfg.hierarchy ?? DEFAULT_BLOCK_HIERARCHY;
    const ints = [this.blockSize, this.topBlocks, this.localBlocks, this.sink, this.local];
    if (!ints.every((x) => Number.isInteger(x) && x >= 0) || this.blockSize < 1 || this.local < 1) {
      throw new SiftError('INTERNAL', `PrefillAttention: bad config ${JSON.stringify(cfg)}`);
    }
    this.digest = new BlockDigestKernel(gpu);
    this.select = new BlockSelectKernel(gpu);
    this.attention = new PrefillAttentionKernel(gpu, { variant: cfg.variant, ...cfg.kernel });
  }

  /**
   * Compiles the pipelines that depend on the context rather than on a step's shape (warm-up): block selection's,
   * one per 256 key blocks of workgroup memory, up to `maxContext` tokens.
   */
  compileFor(maxContext: number, headDim: number, digests: PoolBinding[] = []): void {
    this.select.compileFor(maxContext, headDim, this.blockSize, digests, this.hierarchy);
  }

  /**
   * Plans the prefill tokens [first, T) of a step (decode rows come first): their query blocks and query tiles for
   * `group` query heads per KV head; token indices stay those of the step.
   */
  plan(tokenSeq: ArrayLike<number>, positions: ArrayLike<number>, group: number, first = 0): PrefillPlan {
    const seq = Array.from(tokenSeq).slice(first);
    const blocks = planPrefillBlocks(seq, Array.from(positions).slice(first), this.blockSize);
    for (let i = 0; i < blocks.numQBlocks; i++) blocks.qBlocks[i * QBLOCK_WORDS + 1] += first;
    blocks.T += first;
    return { blocks, tiles: planQueryTiles(blocks, this.attention.tileTokens(group)) };
  }

  /** Bytes of the block-list scratch for a plan (every layer reuses it in order). */
  blockListBytes(plan: PrefillPlan, numKvHeads: number): number {
    return Math.max(16, plan.blocks.numQBlocks * numKvHeads * this.listStride(plan) * 4);
  }

  listStride(plan: PrefillPlan): number {
    return blockListStride(plan.blocks, this.topBlocks, this.localBlocks);
  }

  /** (numEntries, 3) u32 block-digest entries of the positions the step writes (prefill and decode rows). */
  digestEntries(spans: readonly BlockSpan[]): Uint32Array {
    return blockDigestEntries(spans, this.blockSize);
  }

  /** Recomputes the digests of the key blocks the step wrote (after kv_write, before any selection). */
  encodeDigests(
    pass: GPUComputePassEncoder,
    arena: UniformArena,
    a: {
      kCache: PoolBinding;
      blockTable: Binding;
      entries: Binding;
      digests: PoolBinding;
      numEntries: number;
      numKvHeads: number;
      headDim: number;
      pageSize: number;
      maxPagesPerSeq: number;
    },
  ): void {
    this.digest.encode(pass, arena, { ...a, blockSize: this.blockSize, groupBlocks: this.hierarchy.groupBlocks });
  }

  /** Selection (block-sparse heads) + attention of one layer's prefill tokens. */
  encodeLayer(pass: GPUComputePassEncoder, arena: UniformArena, a: PrefillLayerArgs): void {
    const { blocks, tiles } = a.plan;
    if ((a.qHeadOffset ?? 0) !== 0 && a.headModes.some((m) => m === 1)) {
      // block_select pools the group's queries from head 0 of each q row (retrieval heads come first)
      throw new SiftError('INTERNAL', 'PrefillAttention: block-sparse heads must start at query head 0');
    }
    const listStride = this.listStride(a.plan);
    if (a.headModes.some((m) => m === 1)) {
      this.select.encode(pass, arena, {
        ...a,
        plan: blocks,
        qRowHeads: a.qRowHeads,
        topBlocks: this.topBlocks,
        localBlocks: this.localBlocks,
        hierarchy: this.hierarchy,
      });
    }
    this.attention.encode(pass, arena, {
      ...a,
      T: blocks.T,
      tilePlan: tiles,
      blockSize: this.blockSize,
      listStride,
      numQBlocks: blocks.numQBlocks,
      sink: this.sink,
      local: this.local,
    });
  }
  /**
   * Streaming heads of one layer's prefill tokens: the tiled kernel's Lambda mask (sink + local window) over the
   * streaming pool for the keys before the step and the fresh k/v rows for the step's own. Runs before the step's
   * ring write (kv_write_streaming), which may recycle slots the step's earlier tokens still need.
   */
  encodeStreaming(pass: GPUComputePassEncoder, arena: UniformArena, a: PrefillStreamingArgs): void {
    this.attention.encode(pass, arena, {
      ...a,
      blockTable: a.streamTable,
      T: a.plan.blocks.T,
      tilePlan: a.plan.tiles,
      maxPagesPerSeq: a.fresh.sinkPages + a.fresh.ringPages,
      headModes: new Array<HeadModeValue>(a.numKvHeads).fill(HeadMode.lambda),
      sink: a.sinkTokens,
      local: a.localTokens,
      stream: a.fresh,
    });
  }

  destroy(): void {
    this.attention.destroy();
  }
}
