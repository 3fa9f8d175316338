/**
 * Prefill attention, FlashAttention-2 style (shaders/prefill_attention.wgsl): q (T, qRowHeads, headDim) f32 ->
 * out (T, qRowHeads, headDim) f32 over one layer's packed-f16 paged cache (numPages, pageSize, numKvHeads,
 * headDim / 2) u32, the step's own tokens already written (kv_write runs first). One workgroup per (query tile, KV
 * head): a query tile is up to `tileTokens` consecutive tokens of one sequence times the G query heads of the KV
 * head, and every key and value the tile needs is read from the cache once per tile (not once per query), unpacked
 * to f32 in workgroup memory, while each row keeps its query, accumulator and online softmax in registers.
 *
 * One kernel, three masks, per KV head (HeadMode): dense causal; block-sparse over the key blocks listed per
 * (query block, KV head) (shaders/block_select.ts) with the token-exact causal mask in the diagonal block; Lambda
 * (sink tokens + local window, the streaming heads' pattern). A layer's sliding window (`window`) masks keys older
 * than pos - window + 1 in every mode, and `softcap` caps the scores (Gemma 2). Fully masked key tiles are never
 * visited. With `stream`, the Lambda heads read the streaming heads' pool (sink pages + ring through the stream
 * table) for the keys before the step and the step's fresh f32 k/v rows for its own (the ring is written after
 * attention).
 *
 * Variants (same bindings, same results):
 *  - 'lanes' (CPU adapters such as lavapipe): 64 rows per workgroup; for steps of LANES_BLOCK_MIN_PAIRS causal
 *    pairs or more, 4 rows per invocation (register blocking: each key and value element, read and unpacked once,
 *    serves the invocation's 4 rows: 2-2.8x faster on lavapipe than one row per invocation, bench/results/
 *    PREFILL.md) with the head-dim loops over vec4 (so that the compiler unrolls them and keeps the rows' arrays
 *    out of indexed memory, also at head dim 128); smaller steps one row per invocation (a pipeline that builds
 *    several times faster). The SIMD lanes of the CPU are invocations, and every lane reads the same key word,
 *    loaded once and broadcast. At head dims of LANES_SPLIT_MIN_HEAD_DIM or more (Llama-3-8B's 128) the block's rows
 *    are split over LANES_SPLIT subgroup lanes, each holding an eighth of their head dim (scores summed with
 *    subgroupShuffleXor): 4 whole rows of 128 floats of query and accumulator per lane were 2.1x slower. Without
 *    subgroups, whole rows per invocation.
 *  - 'workgroup' (GPUs): each key tile is loaded into workgroup memory once (f32, coalesced); 4 threads per row
 *    (each holds a quarter of the head dim; scores summed with subgroupShuffleXor), 64 rows, 256 threads; where
 *    the device has no subgroups, one thread per row.
 * Key tiles hold up to 64 keys of one page (with 'workgroup', fewer for large heads: two f32 tiles of BK x headDim
 * must fit the device's workgroup memory). The 'lanes' layout uses no workgroup memory and no barrier: on lavapipe a
 * barrier makes the shader a coroutine, whose compile time explodes with the registers live across it.
 *
 * Host plan: `planQueryTiles(plan, tileTokens)` cuts the query blocks of planPrefillBlocks (the step's prefill
 * tokens grouped by sequence and key block) into query tiles; upload its `tiles` once per step for every layer.
 */
import { type HeadModeValue, modeWords, type PrefillBlockPlan, QBLOCK_WORDS } from './block_select.js';
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
import {
  check,
  defaultVariant,
  headRange,
  kvHeadRange,
  type LayoutVariant,
  MAX_KV_HEADS,
  requireBytes,
  requireInts,
  requireU32,
} from './lib/checks.js';
import { grid2d } from './lib/grid.js';
import { defineParams } from './lib/params.js';
import { type PoolBinding, slabDefines } from './lib/slabs.js';
import type { Binding, Gpu, UniformArena } from './runtime.js';

/** u32 words per query tile: [block-table row, firstToken, firstPos, count, listRow, firstNew]. */
export const TILE_WORDS = 6;
/** Query rows (tokens x heads of a KV head) a workgroup aims for. */
const TARGET_ROWS = 64;
/** Most keys per key tile. */
const MAX_KEY_TILE = 64;
/**
 * 'lanes': the register block (4 rows per invocation, vec4 loops) serves steps of at least this many causal (query
 * token, key) pairs; smaller steps run one row per invocation with pair loops. The block is 2-2.8x faster but its
 * pipeline takes 25-100 s to build on lavapipe (vs 10-20 s), so a short prompt never waits for it; the first long one
 * does, once per machine (Mesa keeps built shaders in its disk cache).
 */
export const LANES_BLOCK_MIN_PAIRS = 1 << 22;
/**
 * 'lanes' at large head dims: the register block's rows split over LANES_SPLIT subgroup lanes (each lane 1/8 of the
 * head dim of the invocation's rows, scores summed with subgroupShuffleXor), so that a lane's share of the rows'
 * queries and accumulators stays small. At head dim 128 (Llama-3-8B) on lavapipe, whose subgroup is the 8 lanes of
 * an AVX2 vector: 2.1x faster than 4 whole rows per invocation and a pipeline built in ~17 s instead of 1.5-5 min
 * (bench/results/PREFILL.md).
 */
export const LANES_SPLIT = 8;
export const LANES_SPLIT_MIN_HEAD_DIM = 128;

/** struct Params of prefill_attention.wgsl. */
const PARAMS = defineParams('prefill_attention', {
  ...PAGED_HEADS,
  numTiles: 'u32',
  blockSize: 'u32',
  listStride: 'u32',
  sink: 'u32',
  local: 'u32',
  scale: 'f32',
  qHeadOffset: 'u32',
  qRowHeads: 'u32',
  ...SCORE_MODS,
  sinkPages: 'u32',
  ringPages: 'u32',
  kvHeadOffset: 'u32',
  kvRowHeads: 'u32',
  modes: 'array<vec4<u32>, 16>',
});

/** The query tiles of one step (host side; upload `tiles` once per step, shared by every layer). */
export interface QueryTilePlan {
  tileTokens: number;
  numTiles: number;
  /**
   * (numTiles, 6) u32: [row, firstToken, firstPos, count, listRow, firstNew]; listRow = the tile's query block in
   * plan, firstNew = the first position of the tile's sequence in the step.
   */
  tiles: Uint32Array;
  /**
   * Whether each sequence's tokens are one run of consecutive rows at consecutive positions (as the engine lays a
   * chunk out): the fresh keys of the streaming pool (`stream`) are found by row, so it needs this.
   */
  contiguousRows: boolean;
  /** Query rows x keys of the causal mask over the step: sum over tiles of count x (lastPos + 1) (a size of the work). */
  causalPairs: number;
}

/**
 * Cuts each query block of `plan` (its tokens sit at consecutive positions of one sequence) into tiles of at most
 * `tileTokens` tokens, aligned to multiples of tileTokens in absolute positions. A tile's listRow is the index of its
 * query block, the row of the block lists (numQBlocks, numKvHeads, listStride) it reads.
 */
export function planQueryTiles(plan: PrefillBlockPlan, tileTokens: number): QueryTilePlan {
  check('prefill_attention', Number.isInteger(tileTokens) && tileTokens >= 1, `tileTokens ${tileTokens}`);
  const qBlock = (qb: number) => plan.qBlocks.subarray(qb * QBLOCK_WORDS, qb * QBLOCK_WORDS + 4);
  // per sequence row: its first position in the step, and (row - position) of its tokens, one value if contiguous
  const firstNew = new Map<number, number>();
  const shift = new Map<number, number>();
  let contiguousRows = true;
  for (let qb = 0; qb < plan.numQBlocks; qb++) {
    const [row, firstToken, firstPos, count] = qBlock(qb);
    firstNew.set(row, Math.min(firstNew.get(row) ?? firstPos, firstPos));
    const d = firstToken - firstPos;
    if ((shift.get(row) ?? d) !== d) contiguousRows = false;
    shift.set(row, d);
    if (count === 0) contiguousRows = false;
  }
  const out: number[] = [];
  let causalPairs = 0;
  for (let qb = 0; qb < plan.numQBlocks; qb++) {
    const [row, firstToken, firstPos, count] = qBlock(qb);
    causalPairs += count * (firstPos + count);
    let i = 0;
    while (i < count) {
      const pos = firstPos + i;
      const n = Math.min(count - i, tileTokens - (pos % tileTokens));
      out.push(row, firstToken + i, pos, n, qb, firstNew.get(row)!);
      i += n;
    }
  }
  return { tileTokens, numTiles: out.length / TILE_WORDS, tiles: Uint32Array.from(out), contiguousRows, causalPairs };
}

/**
 * The streaming heads' pool (LServe's streaming pool, kvcache/streaming.ts) as prefill_attention reads it: kCache /
 * vCache are the pool's, blockTable is the stream table, every KV head is Lambda, and the step's own keys come from
 * the fresh k/v rows (the ring is written after attention).
 */
export interface StreamingSource {
  kFresh: Binding; // (T, kvRowHeads, headDim) f32 this step's keys after RoPE
  vFresh: Binding; // (T, kvRowHeads, headDim) f32 this step's values
  /** Sink pages per stream-table row: ceil(sink / pageSize). */
  sinkPages: number;
  /** Ring pages per stream-table row (>= 1). */
  ringPages: number;
  /** Fresh k/v row head of cache head 0 (default 0) and heads per fresh row (default kvHeadOffset + numKvHeads). */
  kvHeadOffset?: number;
  kvRowHeads?: number;
}

export interface PrefillAttentionArgs extends AttentionShape, ScoreMods {
  q: Binding; // (T, qRowHeads, headDim) f32, after RoPE
  kCache: PoolBinding; // (numPages, pageSize, numKvHeads, headDim / 2) u32 packed f16 pairs, step's tokens written
  vCache: PoolBinding; // (numPages, pageSize, numKvHeads, headDim / 2) u32 packed f16 pairs
  blockTable: Binding; // (numSeqs, maxPagesPerSeq) u32 physical page of each logical page
  tiles: Binding; // (numTiles, 6) u32 = tilePlan.tiles
  /** (numQBlocks, numKvHeads, listStride) u32 from block_select; read for block-sparse heads only. */
  blockList?: Binding;
  out: Binding; // (T, qRowHeads, headDim) f32, must not alias q
  T: number;
  tilePlan: QueryTilePlan;
  /** (numKvHeads) HeadMode per KV head; numKvHeads <= MAX_KV_HEADS (a uniform table). */
  headModes: readonly HeadModeValue[] | readonly number[];
  /** Block-sparse heads: tokens per key block and words per (query block, KV head) list. */
  blockSize?: number;
  listStride?: number;
  numQBlocks?: number;
  /** Lambda heads: sink tokens and local window (>= 1). */
  sink?: number;
  local?: number;
  /** First query head of the q/out rows processed (default 0). */
  qHeadOffset?: number;
  /** Query heads per q/out row (default qHeadOffset + numHeads). */
  qRowHeads?: number;
  /**
   * Streaming heads: read the streaming pool (kCache / vCache / blockTable = its caches and stream table,
   * maxPagesPerSeq = sinkPages + ringPages, every head Lambda) and the step's fresh k/v rows.
   */
  stream?: StreamingSource;
}

export interface PrefillAttentionOptions {
  /** Force a variant; default 'lanes' on CPU adapters, else 'workgroup'. */
  variant?: LayoutVariant;
  /** Tests only: caps the grid's x dimension to exercise the 2-D workgroup layout. */
  maxWorkgroupsPerDim?: number;
  /** Tests only: a smaller key tile (a power of two), to cross more tile edges on small inputs. */
  maxKeyTile?: number;
  /** 'lanes': query rows per invocation, 1, 2, 4 or 8 (default: 4 for steps of LANES_BLOCK_MIN_PAIRS, else 1). */
  rowsPerThread?: number;
  /**
   * 'lanes': vec4 head-dim loops where each thread's share of the head dim is a multiple of 4 (default: with more
   * than one row per invocation).
   */
  quad?: boolean;
  /**
   * 'lanes' with vec4 loops: a row's score summed by fma chains into one float (default at head dims of
   * LANES_SPLIT_MIN_HEAD_DIM or more: 1.2-1.7x faster there on lavapipe, slower at stories15M's 48).
   */
  fmaScores?: boolean;
  /**
   * 'lanes': subgroup lanes per query row, each holding 1/split of the head dim (1, or a power of two up to the
   * subgroup size dividing headDim / 2; default LANES_SPLIT for the register block at head dims of
   * LANES_SPLIT_MIN_HEAD_DIM or more, where the adapter has subgroups, else 1).
   */
  split?: number;
}

export class PrefillAttentionKernel {
  readonly variant: LayoutVariant;
  private readonly noList: GPUBuffer;

  constructor(
    private readonly gpu: Gpu,
    private readonly opts: PrefillAttentionOptions = {},
  ) {
    this.variant = defaultVariant(gpu.caps, opts.variant);
    this.noList = gpu.createBuffer('prefill_attention.noList', 16);
  }

  /** Query tokens per tile for `group` query heads per KV head (a power of two, TARGET_ROWS / group or 1). */
  tileTokens(group: number): number {
    return 2 ** Math.floor(Math.log2(Math.max(1, Math.floor(TARGET_ROWS / group))));
  }

  /**
   * Threads per query row (`qb` rows per thread) for a head dim: 1 without subgroups; 'workgroup' up to 4 (dividing
   * HD/2); 'lanes' the `split` option or LANES_SPLIT for the register block (qb > 1) at head dims of
   * LANES_SPLIT_MIN_HEAD_DIM or more, halved until it divides HD/2 and fits the subgroup (a row's lanes must lie in
   * one subgroup: the shuffles that sum its scores stay inside it).
   */
  split(headDim: number, rows: number, qb = 1): number {
    const caps = this.gpu.caps;
    if (!caps.subgroups) return 1;
    if (this.variant === 'lanes') {
      const big = qb > 1 && headDim >= LANES_SPLIT_MIN_HEAD_DIM;
      let s = this.opts.split ?? (big ? LANES_SPLIT : 1);
      check('prefill_attention', [1, 2, 4, 8, 16, 32].includes(s), `split ${s}: a power of two up to 32`);
      while (
        s > 1 &&
        ((headDim / 2) % s !== 0 ||
          s > caps.subgroupMinSize ||
          (rows / qb) * s > caps.maxComputeInvocationsPerWorkgroup)
      ) {
        s /= 2;
      }
      return s;
    }
    const min = caps.subgroupMinSize || 4;
    let s = Math.min(4, min);
    while (s > 1 && ((headDim / 2) % s !== 0 || rows * s > this.gpu.caps.maxComputeInvocationsPerWorkgroup)) s /= 2;
    return s;
  }

  /**
   * Query rows per invocation: 'lanes' up to rowsPerThread (default 4 for a step of at least LANES_BLOCK_MIN_PAIRS
   * causal pairs, else 1; the largest of those dividing the rows), else 1.
   */
  rowsPerThread(rows: number, causalPairs: number): number {
    if (this.variant !== 'lanes') return 1;
    let qb = this.opts.rowsPerThread ?? (causalPairs >= LANES_BLOCK_MIN_PAIRS ? 4 : 1);
    while (qb > 1 && rows % qb !== 0) qb /= 2;
    return qb;
  }

  /**
   * Keys per key tile: at most 64, a power of two dividing the page size (a tile is never split across pages);
   * 'workgroup': two f32 tiles of BK x headDim must fit the device's workgroup memory.
   */
  keyTile(headDim: number, pageSize: number): number {
    let bk = Math.min(MAX_KEY_TILE, this.opts.maxKeyTile ?? MAX_KEY_TILE);
    while (pageSize % bk !== 0) bk /= 2;
    if (this.variant === 'workgroup') {
      while (bk > 1 && bk * 2 * headDim * 4 > this.gpu.caps.maxComputeWorkgroupStorageSize) bk /= 2;
    }
    return bk;
  }

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: PrefillAttentionArgs): void {
    const K = 'prefill_attention';
    requireInts(K, { T: a.T, maxPagesPerSeq: a.maxPagesPerSeq });
    requireAttention(K, a, a.kCache, a.vCache, MAX_KV_HEADS);
    const r = headRange(K, a.numHeads, a.qHeadOffset, a.qRowHeads);
    requireRows(K, 'q', a.q, a.T, r.qRowHeads, a.headDim);
    requireRows(K, 'out', a.out, a.T, r.qRowHeads, a.headDim);
    const { tilePlan } = a;
    const group = a.numHeads / a.numKvHeads;
    check(
      K,
      tilePlan.tileTokens === this.tileTokens(group),
      `tile plan of ${tilePlan.tileTokens} tokens, the kernel takes ${this.tileTokens(group)} for group ${group}`,
    );
    requireBytes(K, 'tiles', a.tiles, tilePlan.numTiles * TILE_WORDS * 4, `(${tilePlan.numTiles}, 6) u32`);
    const modes = modeWords(K, a.headModes, a.numKvHeads);
    const sparse = a.headModes.some((m) => m === 1);
    const lambda = a.headModes.some((m) => m === 2);
    const blockSize = a.blockSize ?? 64;
    const listStride = a.listStride ?? 1;
    requireInts(K, { blockSize, listStride, sink: a.sink ?? 0, local: a.local ?? 1 }, { blockSize: 1, local: 1 });
    if (sparse) {
      check(K, a.blockList !== undefined && a.numQBlocks !== undefined, 'block-sparse heads need blockList');
      requireBytes(
        K,
        'blockList',
        a.blockList!,
        a.numQBlocks! * a.numKvHeads * listStride * 4,
        `(${a.numQBlocks}, ${a.numKvHeads}, ${listStride}) u32`,
      );
    }
    check(K, !lambda || (a.sink !== undefined && a.local !== undefined), 'Lambda heads need sink and local');
    const st = a.stream;
    let kv = { kvHeadOffset: 0, kvRowHeads: 0 };
    if (st) {
      check(
        K,
        a.headModes.every((m) => m === 2),
        'the streaming pool is read by Lambda heads only',
      );
      requireInts(K, { sinkPages: st.sinkPages, ringPages: st.ringPages }, { ringPages: 1 });
      check(
        K,
        st.sinkPages * a.pageSize >= a.sink! && a.maxPagesPerSeq === st.sinkPages + st.ringPages,
        `stream table rows of ${a.maxPagesPerSeq} pages, ${st.sinkPages} sink pages of ${a.pageSize} for ` +
          `${a.sink} sink tokens + ${st.ringPages} ring pages`,
      );
      check(K, tilePlan.contiguousRows, 'fresh keys need each sequence as one run of rows at consecutive positions');
      kv = kvHeadRange(K, a.numKvHeads, a.headDim, st.kvHeadOffset, st.kvRowHeads);
      requireRows(K, 'kFresh', st.kFresh, a.T, kv.kvRowHeads, a.headDim);
      requireRows(K, 'vFresh', st.vFresh, a.T, kv.kvRowHeads, a.headDim);
    }
    if (tilePlan.numTiles === 0) return;
    requireU32(K, 'workgroups', tilePlan.numTiles * a.numKvHeads);
    const rows = tilePlan.tileTokens * group;
    const bk = this.keyTile(a.headDim, a.pageSize);
    const qb = this.rowsPerThread(rows, tilePlan.causalPairs);
    const split = this.split(a.headDim, rows, qb);
    check(
      K,
      (rows / qb) * split <= this.gpu.caps.maxComputeInvocationsPerWorkgroup,
      `${rows} query rows (group ${group}) exceed a workgroup`,
    );
    // 'lanes': head-dim loops over vec4 (two pairs) where the head dim allows, half the trip count
    const quad = this.variant === 'lanes' && (a.headDim / split) % 4 === 0 && (this.opts.quad ?? qb > 1);
    const u = arena.params(PARAMS, {
      ...pagedHeads(a),
      numTiles: tilePlan.numTiles,
      blockSize,
      listStride,
      sink: a.sink ?? 0,
      local: a.local ?? 1,
      scale: a.scale,
      qHeadOffset: r.qHeadOffset,
      qRowHeads: r.qRowHeads,
      ...scoreMods(K, a),
      sinkPages: st?.sinkPages ?? 0,
      ringPages: st?.ringPages ?? 0,
      kvHeadOffset: kv.kvHeadOffset,
      kvRowHeads: kv.kvRowHeads,
      modes,
    });
    const defines = {
      HD: a.headDim,
      G: group,
      BQ: tilePlan.tileTokens,
      SPLIT: split,
      QB: qb,
      UW: quad ? 4 : 2,
      QUAD: quad,
      SDOT: quad && (this.opts.fmaScores ?? a.headDim >= LANES_SPLIT_MIN_HEAD_DIM),
      BK: bk,
      SHARED: this.variant === 'workgroup',
      SUBGROUPS: split > 1,
      STREAM: st !== undefined,
      ...slabDefines({ kCache: a.kCache, vCache: a.vCache }),
    };
    const pipe = this.gpu.pipeline('prefill_attention', defines, {}, PARAMS);
    const [x, y] = grid2d(this.gpu, tilePlan.numTiles * a.numKvHeads, 1, this.opts.maxWorkgroupsPerDim);
    this.gpu.dispatch(
      pass,
      pipe,
      [
        a.q,
        a.kCache,
        a.vCache,
        a.blockTable,
        a.tiles,
        sparse ? a.blockList! : this.noList,
        a.out,
        u,
        ...(st ? [st.kFresh, st.vFresh] : []),
      ],
      x,
      y,
    );
  }

  destroy(): void {
    this.noList.destroy();
  }
}
