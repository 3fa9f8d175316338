/** The small types the KV cache manager hands out; its data structures stay inside. */

/** A request's id as the scheduler knows it. */
export type SeqId = string | number;

/** What `allocate` did for a new sequence. */
export interface AllocResult {
  /**
   * Leading prompt tokens whose K/V is already in the sequence's pages (prefix-cache hits): the engine prefills only
   * prompt[numCachedTokens:]. Always a multiple of pageSize and < prompt length (see KvCacheManager.allocate).
   */
  numCachedTokens: number;
  /**
   * Pages handed out fresh (not prefix hits), in block-table order. Their slots hold stale data until written; the
   * key digests need no reset, since the digest kernel rebuilds a logical page from its written tokens only.
   */
  newPages: readonly number[];
}

/** What `appendSlots` did. */
export interface AppendResult {
  /** Pages handed out fresh, in block-table order (stale until written, as in AllocResult). */
  newPages: readonly number[];
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
