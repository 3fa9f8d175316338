/** The small types the KV cache manager hands out; its data structures stay inside. */

/** A request's id as the scheduler knows it. */
export type SeqId = string | number;

/**
 * A page copy the engine must perform on the GPU BEFORE the next forward pass writes into `dst`: copy the K/V of
 * every layer and the key digests (digest slot == page id) of page `src` into page `dst`, in the same pool.
 */
export interface PageCopy {
  src: number;
  dst: number;
}

/** What `allocate` did for a new sequence. */
export interface AllocResult {
  /**
   * Leading prompt tokens whose K/V is already in the sequence's pages (prefix-cache hits): the engine prefills only
   * prompt[numCachedTokens:]. Always a multiple of pageSize and < prompt length (see KvCacheManager.allocate).
   */
  numCachedTokens: number;
  /**
   * Pages handed out fresh (not prefix hits), in block-table order: their slots hold stale data, so their key digests
   * must be reset before the first write (min = +inf, max = -inf).
   */
  newPages: readonly number[];
}

/** What `appendSlots` did. */
export interface AppendResult {
  /** Copy-on-write copies to perform before writing (at most one: the shared last partial page). */
  copies: readonly PageCopy[];
  /** Pages handed out fresh, including copy destinations; reset their digests (copies then overwrite theirs). */
  newPages: readonly number[];
}

/** What `fork` did. */
export interface ForkResult {
  /** Streaming-pool page copies to perform (the paged pool shares pages, so it needs none until copy-on-write). */
  streamingCopies: readonly PageCopy[];
}

/** Figures for metrics (`sift:kv_cache_usage_perc`, `sift:prefix_cache_queries`/`hits`). */
export interface KvCacheStats {
  /** Physical pages in the paged pool. */
  pagesTotal: number;
  /** Pages held by at least one block table. */
  pagesUsed: number;
  /** Pages held by no block table but kept in the prefix cache (evictable, LRU). */
  pagesCached: number;
  /** Pages on the free list. pagesUsed + pagesCached + pagesFree == pagesTotal. */
  pagesFree: number;
  /** pagesUsed / pagesTotal, in [0, 1] (cached pages count as free, as in vLLM). */
  usage: number;
  /** Prompt tokens looked up in the prefix cache (successful allocations only), in TOKENS. */
  prefixQueries: number;
  /** Prompt tokens found in the prefix cache (sum of numCachedTokens), in TOKENS. */
  prefixHits: number;
  /** Bytes per paged-pool page, when the config gave it. */
  bytesPerPage: number | null;
  /** Streaming pool figures, when streaming heads are configured. */
  streaming: { pagesTotal: number; pagesUsed: number; pagesFree: number; pagesPerSequence: number } | null;
}
