/**
 * Byte accounting for KV pools. A token costs K and V (2 vectors of headDim) per KV head per layer. With streaming
 * heads, round(numLayers * numKvHeads * streamingFraction) of the (layer, KV head) pairs stream (DuoAttention picks
 * them across layers, not a fixed count per layer); their K/V lives in the streaming pool at a fixed cost per
 * sequence, and only the retrieval heads cost bytes per token in the paged pool.
 */
import { SiftError } from '../config/errors.js';
import { streamingPagesPerSequence } from './config.js';

export interface KvShape {
  numLayers: number;
  numKvHeads: number;
  headDim: number;
  /** 2 for f16/bf16, 4 for f32. */
  bytesPerElement: number;
  /** Share of (layer, KV head) pairs that are streaming heads, in [0, 1]. Default 0. */
  streamingFraction?: number;
}

export interface StreamingShape {
  sinkTokens: number;
  localTokens: number;
  pageSize: number;
}

function check(shape: KvShape): void {
  for (const k of ['numLayers', 'numKvHeads', 'headDim', 'bytesPerElement'] as const) {
    const v = shape[k];
    if (!Number.isInteger(v) || v < 1) throw new SiftError('CONFIG_INVALID', `kvcache: ${k} must be an integer >= 1`);
  }
  const f = shape.streamingFraction ?? 0;
  if (!(f >= 0 && f <= 1)) throw new SiftError('CONFIG_INVALID', 'kvcache: streamingFraction must be in [0, 1]');
}

/** (layer, KV head) pairs split into streaming and retrieval heads, summed over layers. */
export function headSplit(shape: KvShape): { streaming: number; retrieval: number } {
  check(shape);
  const total = shape.numLayers * shape.numKvHeads;
  const streaming = Math.round(total * (shape.streamingFraction ?? 0));
  return { streaming, retrieval: total - streaming };
}

/**
 * Bytes one token costs in the paged pool: 2 (K, V) * retrieval (layer, KV head) pairs * headDim * bytesPerElement.
 * Without streaming heads that is every head: stories15M (6 layers, 6 KV heads, 48 dims, f16) 6912 B; a
 * Llama-3-8B shape (32, 8, 128, f16) 131072 B, 65536 B with half the heads streaming.
 */
export function kvBytesPerToken(shape: KvShape): number {
  return 2 * headSplit(shape).retrieval * shape.headDim * shape.bytesPerElement;
}

/** Bytes of one streaming-pool page of `pageSize` tokens (streaming heads only). */
export function streamingBytesPerPage(shape: KvShape, pageSize: number): number {
  return 2 * headSplit(shape).streaming * shape.headDim * shape.bytesPerElement * pageSize;
}

/** Fixed bytes one sequence holds in the streaming pool, at any length. */
export function streamingBytesPerSequence(shape: KvShape, s: StreamingShape): number {
  return streamingPagesPerSequence(s.sinkTokens, s.localTokens, s.pageSize) * streamingBytesPerPage(shape, s.pageSize);
}

/**
 * Bytes of one paged-pool page: its K/V plus, when `logicalPageSize` is given, its key digests (min and max
 * vectors per logical page and retrieval head, same element type).
 */
export function bytesPerPage(shape: KvShape, pageSize: number, logicalPageSize?: number): number {
  const kv = kvBytesPerToken(shape) * pageSize;
  if (logicalPageSize === undefined) return kv;
  const digests = (pageSize / logicalPageSize) * headSplit(shape).retrieval * 2 * shape.headDim;
  return kv + digests * shape.bytesPerElement;
}

/** Total KV bytes of one sequence of `numTokens` tokens (whole pages), streaming pool included. */
export function kvBytesPerSequence(
  shape: KvShape,
  numTokens: number,
  opts: { pageSize: number; logicalPageSize?: number; streaming?: Omit<StreamingShape, 'pageSize'> },
): number {
  const paged = Math.ceil(numTokens / opts.pageSize) * bytesPerPage(shape, opts.pageSize, opts.logicalPageSize);
  const streaming = opts.streaming
    ? streamingBytesPerSequence(shape, { ...opts.streaming, pageSize: opts.pageSize })
    : 0;
  return paged + streaming;
}

export interface PoolSizing {
  /** Pages for the paged pool (KvCacheConfig.numPages). */
  numPages: number;
  /** Pages for the streaming pool (StreamingPoolConfig.numPages); 0 without streaming heads. */
  streamingPages: number;
  bytesPerPage: number;
  streamingBytesPerPage: number;
}

/**
 * Splits a byte budget into pools: the streaming pool first gets room for `maxSequences` rings (when the shape has
 * streaming heads), the rest goes to paged-pool pages (K/V + digests). Throws CONFIG_INVALID if not even one
 * paged page fits.
 */
export function pagesForBudget(
  bytes: number,
  shape: KvShape,
  opts: {
    pageSize: number;
    logicalPageSize?: number;
    streaming?: { sinkTokens: number; localTokens: number; maxSequences: number };
  },
): PoolSizing {
  const perPage = bytesPerPage(shape, opts.pageSize, opts.logicalPageSize);
  const sPerPage = streamingBytesPerPage(shape, opts.pageSize);
  let streamingPages = 0;
  if (opts.streaming && headSplit(shape).streaming > 0) {
    const s = opts.streaming;
    streamingPages = s.maxSequences * streamingPagesPerSequence(s.sinkTokens, s.localTokens, opts.pageSize);
  }
  const left = bytes - streamingPages * sPerPage;
  const numPages = perPage > 0 ? Math.floor(left / perPage) : 0;
  if (numPages < 1) {
    throw new SiftError(
      'CONFIG_INVALID',
      `kvcache: a budget of ${bytes} bytes holds no KV page (${perPage} bytes per page` +
        (streamingPages ? `, after ${streamingPages * sPerPage} bytes of streaming rings)` : ')'),
    );
  }
  return { numPages, streamingPages, bytesPerPage: perPage, streamingBytesPerPage: sPerPage };
}
