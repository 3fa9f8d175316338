/**
 * Streaming-head attention wrapper (DuoAttention / StreamingLLM heads, LServe's streaming pool): one kernel for decode
 * and prefill. Query token t at position p attends to key positions [0, min(sink, p+1)) U [max(sink, p-local+1), p]
 * of its sequence (in a layer with a sliding window, only those of the window; scores soft-capped when `softcap` is
 * set): keys at positions >= the sequence's first new position in this batch come from the fresh k/v
 * activations (f32, full precision), older keys from the streaming pool (f16) through the per-sequence stream table
 * (kvcache/streaming.ts: position p >= sink lives in ring page ((p - sink) / pageSize) mod ringPages at offset
 * (p - sink) mod pageSize). So it runs BEFORE this step's streaming K/V write (shaders/kv_write_streaming.ts): a
 * prefill chunk longer than the ring never overwrites keys its own earlier tokens still need.
 *
 * Host contract per step, for each sequence with new tokens: its new tokens are contiguous rows of the batch with
 * consecutive positions; freshStart[t] = the batch row of that sequence's first new token; every cached position the
 * mask needs (< firstNew) must be resident, which StreamingPool guarantees (the last `local` positions before the
 * chunk and the sink) as long as the write of the previous step went through.
 *
 * Head ranges (after the head permutation, streaming heads are the last ones): query heads
 * [qHeadOffset, qHeadOffset + numHeads) of q/out rows of qRowHeads heads; the cache holds numKvHeads heads, and cache
 * head kvh is head kvHeadOffset + kvh of the fresh k/v rows (kvRowHeads heads each). GQA: local query head h reads
 * cache head h / (numHeads / numKvHeads).
 *
 * Variants: LANES invocations per (token, head), each with a private running softmax over its share of the keys,
 * merged once at the end; 'lanes' (8, CPU adapters) and 'workgroup' (32 lanes up to headDim 128, else 16; GPUs).
 */
import { SiftError } from '../config/errors.js';
import { HEADS, heads, requireAttention, requireRows, SCORE_MODS, type ScoreMods, scoreMods } from './lib/attention.js';
import { check, defaultVariant, headRange, kvHeadRange, type LayoutVariant, requireInts } from './lib/checks.js';
import { grid2d } from './lib/grid.js';
import { defineParams } from './lib/params.js';
import { type PoolBinding, slabDefines } from './lib/slabs.js';
import type { Binding, Gpu, UniformArena } from './runtime.js';

export type StreamingAttentionVariant = LayoutVariant;

/** struct Params of streaming_attention.wgsl. */
const PARAMS = defineParams('streaming_attention', {
  tokens: 'u32',
  ...HEADS,
  pageSize: 'u32',
  sink: 'u32',
  local: 'u32',
  sinkPages: 'u32',
  ringPages: 'u32',
  scale: 'f32',
  qHeadOffset: 'u32',
  qRowHeads: 'u32',
  kvHeadOffset: 'u32',
  kvRowHeads: 'u32',
  ...SCORE_MODS,
});

/** Sink and local window defaults (LServe decode). */
export const DEFAULT_SINK_TOKENS = 128;
export const DEFAULT_LOCAL_TOKENS = 256;

/**
 * Keys a streaming head's query at position `pos` reads: [0, min(sink, pos + 1)) U [max(sink, pos + 1 - local), pos]
 * (the kernel's mask, above), i.e. the whole context while it fits sink + local, then sink + local keys; with a
 * sliding window (> 0) only those in [pos + 1 - window, pos].
 */
export function streamingKeysRead(pos: number, sink: number, local: number, window = 0): number {
  const ctx = pos + 1;
  const win = window > 0 ? Math.max(0, ctx - window) : 0;
  const sinkEnd = Math.min(sink, ctx);
  return sinkEnd - Math.min(win, sinkEnd) + Math.max(0, ctx - Math.max(sink, ctx - local, win));
}

export interface StreamingAttentionArgs extends ScoreMods {
  q: Binding; // (T, qRowHeads, headDim) f32, after RoPE
  kFresh: Binding; // (T, kvRowHeads, headDim) f32, this batch's keys after RoPE
  vFresh: Binding; // (T, kvRowHeads, headDim) f32, this batch's values
  kCache: PoolBinding; // (numStreamingPages, pageSize, numKvHeads, headDim / 2) u32 f16 pairs, one layer
  vCache: PoolBinding; // (numStreamingPages, pageSize, numKvHeads, headDim / 2) u32 f16 pairs
  streamTable: Binding; // (numSeqs, sinkPages + ringPages) u32: StreamingTable.sinkPages then .ringPages
  tokenSeq: Binding; // (T) u32 stream-table row of each token
  positions: Binding; // (T) u32 absolute position of each token
  freshStart: Binding; // (T) u32 batch row of the token's sequence's first new token
  out: Binding; // (T, qRowHeads, headDim) f32; heads outside the range untouched
  T: number;
  numHeads: number; // query heads processed
  numKvHeads: number; // KV heads in the streaming cache; divides numHeads
  headDim: number; // even, 2..256
  pageSize: number;
  sinkTokens: number;
  localTokens: number; // >= 1
  sinkPages: number; // ceil(sinkTokens / pageSize)
  ringPages: number; // ring pages per sequence (StreamingPool.numRingPages)
  scale: number;
  qHeadOffset?: number;
  qRowHeads?: number;
  kvHeadOffset?: number;
  kvRowHeads?: number;
}

export interface StreamingAttentionOptions {
  /** Default 'lanes' on CPU adapters, else 'workgroup'. */
  variant?: StreamingAttentionVariant;
  /** Tests only: caps the grid's x dimension. */
  maxWorkgroupsPerDim?: number;
}

export class StreamingAttentionKernel {
  readonly variant: StreamingAttentionVariant;
  constructor(
    private readonly gpu: Gpu,
    private readonly opts: StreamingAttentionOptions = {},
  ) {
    this.variant = defaultVariant(gpu.caps, opts.variant);
  }

  private lanes(headDim: number): number {
    if (this.variant === 'lanes') return 8;
    return headDim <= 128 ? 32 : 16;
  }

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: StreamingAttentionArgs): void {
    const K = 'streaming_attention';
    requireInts(
      K,
      { T: a.T, sinkTokens: a.sinkTokens, localTokens: a.localTokens, sinkPages: a.sinkPages, ringPages: a.ringPages },
      { localTokens: 1, ringPages: 1 },
    );
    requireAttention(K, a, a.kCache, a.vCache);
    check(K, a.sinkPages * a.pageSize >= a.sinkTokens, `${a.sinkPages} sink pages do not hold ${a.sinkTokens} tokens`);
    const r = headRange(K, a.numHeads, a.qHeadOffset, a.qRowHeads);
    const kv = kvHeadRange(K, a.numKvHeads, a.headDim, a.kvHeadOffset, a.kvRowHeads);
    requireRows(K, 'q', a.q, a.T, r.qRowHeads, a.headDim);
    requireRows(K, 'out', a.out, a.T, r.qRowHeads, a.headDim);
    requireRows(K, 'kFresh', a.kFresh, a.T, kv.kvRowHeads, a.headDim);
    requireRows(K, 'vFresh', a.vFresh, a.T, kv.kvRowHeads, a.headDim);
    const u = arena.params(PARAMS, {
      tokens: a.T,
      ...heads(a),
      pageSize: a.pageSize,
      sink: a.sinkTokens,
      local: a.localTokens,
      sinkPages: a.sinkPages,
      ringPages: a.ringPages,
      scale: a.scale,
      qHeadOffset: r.qHeadOffset,
      qRowHeads: r.qRowHeads,
      kvHeadOffset: kv.kvHeadOffset,
      kvRowHeads: kv.kvRowHeads,
      ...scoreMods(K, a),
    });
    const pipeline = this.gpu.pipeline(
      'streaming_attention',
      { HD: a.headDim, LANES: this.lanes(a.headDim), ...slabDefines({ kCache: a.kCache, vCache: a.vCache }) },
      {},
      PARAMS,
    );
    const [x, y] = grid2d(this.gpu, a.T * a.numHeads, 1, this.opts.maxWorkgroupsPerDim);
    this.gpu.dispatch(
      pass,
      pipeline,
      [a.q, a.kFresh, a.vFresh, a.kCache, a.vCache, a.streamTable, a.tokenSeq, a.positions, a.freshStart, a.out, u],
      x,
      y,
    );
  }
}

/**
 * Host side of one streaming step for the batch (T tokens): freshStart per token, from tokenSeq, assuming each
 * sequence's new tokens are contiguous rows with consecutive positions (checked).
 */
export function freshStartRows(tokenSeq: ArrayLike<number>, positions: ArrayLike<number>): Uint32Array {
  const T = tokenSeq.length;
  const out = new Uint32Array(T);
  const first = new Map<number, number>();
  for (let t = 0; t < T; t++) {
    const s = tokenSeq[t];
    const f = first.get(s);
    if (f === undefined) {
      first.set(s, t);
      out[t] = t;
    } else {
      if (tokenSeq[t - 1] !== s || positions[t] !== positions[t - 1] + 1) {
        throw new SiftError(
          'INTERNAL',
          `streaming: new tokens of sequence row ${s} are not contiguous rows with consecutive positions`,
        );
      }
      out[t] = f;
    }
  }
  return out;
}
