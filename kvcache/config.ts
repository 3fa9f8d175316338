/**
 * Configuration of the KV cache bookkeeping: the paged pool (retrieval heads), its prefix cache and page digests,
 * and the optional streaming-head pool (sink + local ring). Every field is range-checked; unknown keys are errors.
 */
import { SiftError } from '../config/errors.js';

/** Streaming-head pool (LServe's second pool): per sequence, sink pages plus a ring of local pages. */
export interface StreamingPoolConfig {
  /** Physical pages in the streaming pool (each holds `pageSize` tokens of the streaming KV heads). */
  numPages: number;
  /** Tokens per streaming page; defaults to the paged pool's `pageSize`. */
  pageSize?: number;
  /** Leading tokens every streaming head keeps (attention sink). Default 128 (LServe decode). 0 = pure window. */
  sinkTokens?: number;
  /** Newest tokens every streaming head keeps at least. Default 256 (LServe decode). */
  localTokens?: number;
}

export interface KvCacheConfig {
  /** Physical pages in the paged pool. */
  numPages: number;
  /** Tokens per physical page. Default 64 (LServe). */
  pageSize?: number;
  /** Tokens per logical page (one key digest per logical page and KV head). Default 16; must divide `pageSize`. */
  logicalPageSize?: number;
  /** Reuse full pages of earlier prompts (chained hash of their token ids). Default true without streaming heads. */
  enablePrefixCache?: boolean;
  /** Bytes one physical page occupies on the GPU, only reported in `stats()` for metrics. */
  bytesPerPage?: number;
  /** Streaming-head pool; omit when no KV head streams. */
  streaming?: StreamingPoolConfig;
}

export interface ResolvedStreamingConfig {
  readonly numPages: number;
  readonly pageSize: number;
  readonly sinkTokens: number;
  readonly localTokens: number;
}

export interface ResolvedKvCacheConfig {
  readonly numPages: number;
  readonly pageSize: number;
  readonly logicalPageSize: number;
  readonly enablePrefixCache: boolean;
  readonly bytesPerPage: number | null;
  readonly streaming: ResolvedStreamingConfig | null;
}

export const KV_DEFAULTS = {
  pageSize: 64,
  logicalPageSize: 16,
  sinkTokens: 128,
  localTokens: 256,
} as const;

const KV_KEYS = new Set(['numPages', 'pageSize', 'logicalPageSize', 'enablePrefixCache', 'bytesPerPage', 'streaming']);
const STREAMING_KEYS = new Set(['numPages', 'pageSize', 'sinkTokens', 'localTokens']);

function invalid(message: string): SiftError {
  return new SiftError('CONFIG_INVALID', `kvcache: ${message}`);
}

/** Throws CONFIG_INVALID unless `v` is an integer >= `min`. */
export function checkInt(name: string, v: unknown, min: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
    throw invalid(`${name} must be an integer >= ${min}, got ${String(v)}`);
  }
  return v;
}

function checkKeys(name: string, obj: object, allowed: Set<string>): void {
  for (const k of Object.keys(obj)) {
    if (!allowed.has(k)) throw invalid(`unknown key ${name}${k} (known: ${[...allowed].join(', ')})`);
  }
}

/** Validates a streaming-pool config, filling defaults (`defaultPageSize` from the paged pool). */
export function resolveStreamingConfig(cfg: StreamingPoolConfig, defaultPageSize: number): ResolvedStreamingConfig {
  if (cfg === null || typeof cfg !== 'object') throw invalid('streaming must be an object');
  checkKeys('streaming.', cfg, STREAMING_KEYS);
  const pageSize = checkInt('streaming.pageSize', cfg.pageSize ?? defaultPageSize, 1);
  const sinkTokens = checkInt('streaming.sinkTokens', cfg.sinkTokens ?? KV_DEFAULTS.sinkTokens, 0);
  const localTokens = checkInt('streaming.localTokens', cfg.localTokens ?? KV_DEFAULTS.localTokens, 1);
  const numPages = checkInt('streaming.numPages', cfg.numPages, 1);
  const perSeq = streamingPagesPerSequence(sinkTokens, localTokens, pageSize);
  if (numPages < perSeq) {
    throw invalid(
      `streaming.numPages (${numPages}) holds no sequence: one needs ${perSeq} pages ` +
        `(sink ${sinkTokens} + local ${localTokens} tokens in pages of ${pageSize}, plus one)`,
    );
  }
  return Object.freeze({ numPages, pageSize, sinkTokens, localTokens });
}

/** Validates a KV cache config and fills defaults. Throws SiftError('CONFIG_INVALID') with the field at fault. */
export function resolveKvCacheConfig(cfg: KvCacheConfig): ResolvedKvCacheConfig {
  if (cfg === null || typeof cfg !== 'object') throw invalid('config must be an object');
  checkKeys('', cfg, KV_KEYS);
  const numPages = checkInt('numPages', cfg.numPages, 1);
  const pageSize = checkInt('pageSize', cfg.pageSize ?? KV_DEFAULTS.pageSize, 1);
  const logicalPageSize = checkInt(
    'logicalPageSize',
    cfg.logicalPageSize ?? Math.min(KV_DEFAULTS.logicalPageSize, pageSize),
    1,
  );
  if (pageSize % logicalPageSize !== 0) {
    throw invalid(`logicalPageSize (${logicalPageSize}) must divide pageSize (${pageSize})`);
  }
  const streaming = cfg.streaming === undefined ? null : resolveStreamingConfig(cfg.streaming, pageSize);
  if (cfg.enablePrefixCache !== undefined && typeof cfg.enablePrefixCache !== 'boolean') {
    throw invalid(`enablePrefixCache must be a boolean, got ${String(cfg.enablePrefixCache)}`);
  }
  const enablePrefixCache = cfg.enablePrefixCache ?? streaming === null;
  if (enablePrefixCache && streaming !== null) {
    // A prefix hit skips the prefill of the cached tokens, but the streaming ring keeps no pages across
    // sequences: the sink and local window of the cached part would never be written.
    throw invalid('enablePrefixCache cannot be combined with streaming heads (the streaming ring is not cached)');
  }
  let bytesPerPage: number | null = null;
  // 0 when every head is a streaming head: the paged pool then only numbers pages (its K/V live in the rings)
  if (cfg.bytesPerPage !== undefined) bytesPerPage = checkInt('bytesPerPage', cfg.bytesPerPage, 0);
  return Object.freeze({ numPages, pageSize, logicalPageSize, enablePrefixCache, bytesPerPage, streaming });
}

/** Pages one streaming sequence holds: ceil(sink/pageSize) + ceil(local/pageSize) + 1. */
export function streamingPagesPerSequence(sinkTokens: number, localTokens: number, pageSize: number): number {
  return Math.ceil(sinkTokens / pageSize) + Math.ceil(localTokens / pageSize) + 1;
}
