/**
 * The KV cache manager: per sequence a block table (logical page index -> physical page id) over a fixed page
 * pool, a prefix cache of full pages, and optionally the streaming-head pool.
 *
 * Protocol for one sequence (vLLM's allocate_slots, split in reserve and commit):
 *   allocate(seq, prompt)      reserves prompt.length slots; prompt[0, numCachedTokens) are prefix hits
 *   (forward pass writes prompt[numCachedTokens:] through blockTable/physicalSlot)
 *   commitTokens(seq, ids)     the K/V of `ids` is written: full pages become cacheable
 *   appendSlots(seq, n)        reserves n more slots (decode: 1)
 *   free(seq)                  finished or preempted (recompute): pages go back, full cached ones stay evictable
 * Allocation never half-happens: a null result leaves every page, table and counter as it was.
 *
 * Pages are shared only through the prefix cache, and only full pages of committed tokens: a sequence always writes
 * into pages it holds alone, so no page is ever copied (no copy-on-write).
 *
 * Digest slots: the key digest of physical page p (per logical page of `logicalPageSize` tokens and per KV head,
 * per-channel min/max) lives in digest slot p. The model owns the buffer
 * (numPages, pageSize / logicalPageSize, kvHeads, 2, headDim) f16.
 */
import { SiftError } from '../config/errors.js';
import { chainHash, ROOT_HASH } from './block-hash.js';
import { type KvCacheConfig, type ResolvedKvCacheConfig, resolveKvCacheConfig } from './config.js';
import { PagePool, type PoolSnapshot } from './page-pool.js';
import { StreamingPool, type StreamingSlot, type StreamingTable } from './streaming.js';
import type { AllocResult, AppendResult, KvCacheStats, SeqId } from './types.js';

interface SeqState {
  /** Block table: pages[i] holds positions [i*pageSize, (i+1)*pageSize). */
  pages: number[];
  /** Slots reserved; pages.length == ceil(reserved / pageSize). */
  reserved: number;
  /** Tokens whose K/V is written (committed), <= reserved. */
  committed: number;
  /** Committed token ids of the last, partly filled page (prefix cache only). */
  partial: number[];
  /** Cache key of the last full committed page (ROOT_HASH before the first one). */
  lastKey: string;
}

export interface KvCacheSnapshot extends PoolSnapshot {
  /** Block table of every live sequence. */
  tables: { seqId: SeqId; pages: number[]; reserved: number; committed: number }[];
}

export class KvCacheManager {
  readonly config: ResolvedKvCacheConfig;
  readonly pageSize: number;
  readonly logicalPageSize: number;
  /** pageSize / logicalPageSize: key digests per physical page and KV head. */
  readonly logicalPagesPerPage: number;
  private readonly pool: PagePool;
  private readonly streamingPool: StreamingPool | null;
  private readonly seqs = new Map<SeqId, SeqState>();
  private prefixQueries = 0;
  private prefixHits = 0;

  /** Throws SiftError('CONFIG_INVALID') on a bad config (see resolveKvCacheConfig). */
  constructor(config: KvCacheConfig) {
    this.config = resolveKvCacheConfig(config);
    this.pageSize = this.config.pageSize;
    this.logicalPageSize = this.config.logicalPageSize;
    this.logicalPagesPerPage = this.pageSize / this.logicalPageSize;
    this.pool = new PagePool(this.config.numPages);
    this.streamingPool = this.config.streaming ? new StreamingPool(this.config.streaming) : null;
  }

  /** The streaming-head pool, or null when no KV head streams. */
  get streaming(): StreamingPool | null {
    return this.streamingPool;
  }

  /** Digest slot of physical page `page`: the page id itself. */
  digestSlot(page: number): number {
    return page;
  }

  has(seqId: SeqId): boolean {
    return this.seqs.has(seqId);
  }

  /**
   * FCFS admission check: would a new sequence of `numTokens` tokens fit, counting no prefix hit (hits only
   * lower the need) and counting evictable cached pages as available?
   */
  canAllocate(numTokens: number): boolean {
    if (this.streamingPool && !this.streamingPool.canAllocate()) return false;
    return Math.ceil(numTokens / this.pageSize) <= this.pool.numAvailable;
  }

  /**
   * Creates `seqId` with slots for its whole prompt, reusing cached full pages of the prompt.
   *
   * Prefix-cache rule: the prompt's full pages are looked up in order under their chained keys, stopping at the
   * first miss, and only pages lying entirely within prompt[0, len - 1) are looked up, so at least one prompt token
   * is always computed (it yields the logits of the first output token; vLLM does the same). Thus
   * numCachedTokens = pageSize * (number of leading hits) <= floor((len - 1) / pageSize) * pageSize; e.g. with pages of
   * 16 a 48-token prompt seen before gets 32 cached tokens and a 49-token one 48.
   *
   * Returns null, changing nothing (not even the prefix counters), when the pool lacks pages (after evicting every
   * evictable page) or the streaming pool has no room: the scheduler keeps the request waiting or preempts.
   */
  allocate(seqId: SeqId, promptTokenIds: readonly number[]): AllocResult | null {
    if (this.seqs.has(seqId)) throw new SiftError('INTERNAL', `kvcache: sequence ${seqId} already allocated`);
    const len = promptTokenIds.length;
    const ps = this.pageSize;
    const hits: number[] = [];
    let lastKey = ROOT_HASH;
    if (this.config.enablePrefixCache) {
      const lookupPages = Math.floor(Math.max(0, len - 1) / ps);
      for (let i = 0; i < lookupPages; i++) {
        const key = chainHash(lastKey, promptTokenIds.slice(i * ps, (i + 1) * ps));
        const page = this.pool.lookup(key);
        if (page === undefined) break;
        hits.push(page);
        lastKey = key;
      }
    }
    // Hit pages that are evictable leave the evictable set, so they cannot also serve as fresh pages.
    let evictableHits = 0;
    for (const p of hits) if (this.pool.refs(p) === 0) evictableHits++;
    const needed = Math.ceil(len / ps) - hits.length;
    if (needed > this.pool.numAvailable - evictableHits) return null;
    if (this.streamingPool && !this.streamingPool.allocate(seqId, len)) return null;

    for (const p of hits) this.pool.retain(p);
    const pages = [...hits];
    const newPages: number[] = [];
    for (let i = 0; i < needed; i++) {
      const p = this.pool.take();
      pages.push(p);
      newPages.push(p);
    }
    const numCachedTokens = hits.length * ps;
    this.seqs.set(seqId, { pages, reserved: len, committed: numCachedTokens, partial: [], lastKey });
    if (this.config.enablePrefixCache) {
      this.prefixQueries += len;
      this.prefixHits += numCachedTokens;
    }
    return { numCachedTokens, newPages };
  }

  /**
   * Reserves `numNewTokens` more slots (0 is allowed and changes nothing). Returns null (nothing changed) when the
   * pool lacks pages.
   */
  appendSlots(seqId: SeqId, numNewTokens: number): AppendResult | null {
    const seq = this.get(seqId);
    if (!Number.isInteger(numNewTokens) || numNewTokens < 0) {
      throw new SiftError('INTERNAL', `kvcache: appendSlots of ${numNewTokens} tokens`);
    }
    const grow = Math.ceil((seq.reserved + numNewTokens) / this.pageSize) - seq.pages.length;
    if (grow > this.pool.numAvailable) return null;

    const newPages: number[] = [];
    for (let i = 0; i < grow; i++) {
      const p = this.pool.take();
      seq.pages.push(p);
      newPages.push(p);
    }
    seq.reserved += numNewTokens;
    this.streamingPool?.reserve(seqId, numNewTokens);
    return { newPages };
  }

  /**
   * Records that the forward pass wrote the K/V of `tokenIds` at positions [numTokens, numTokens + len), within the
   * reserved slots. Each page this completes is registered in the prefix cache under chainHash(previous key, its
   * tokens), unless that key is cached already (then the existing page stays the cached one).
   */
  commitTokens(seqId: SeqId, tokenIds: readonly number[]): void {
    const seq = this.get(seqId);
    const ps = this.pageSize;
    if (seq.committed + tokenIds.length > seq.reserved) {
      throw new SiftError(
        'INTERNAL',
        `kvcache: commit of ${tokenIds.length} tokens to ${seqId} exceeds its reserved slots ` +
          `(${seq.committed} committed of ${seq.reserved})`,
      );
    }
    if (tokenIds.length === 0) return;
    const first = Math.floor(seq.committed / ps);
    const last = Math.floor((seq.committed + tokenIds.length - 1) / ps);
    for (let i = first; i <= last; i++) {
      if (this.pool.refs(seq.pages[i]) !== 1) {
        throw new SiftError(
          'INTERNAL',
          `kvcache: ${seqId} writes into page ${seq.pages[i]}, shared through the prefix cache`,
        );
      }
    }
    if (!this.config.enablePrefixCache) {
      seq.committed += tokenIds.length;
      return;
    }
    let i = 0;
    while (i < tokenIds.length) {
      const take = Math.min(ps - seq.partial.length, tokenIds.length - i);
      for (let j = 0; j < take; j++) seq.partial.push(tokenIds[i + j]);
      i += take;
      seq.committed += take;
      if (seq.partial.length === ps) {
        const key = chainHash(seq.lastKey, seq.partial);
        this.pool.register(seq.pages[seq.committed / ps - 1], key);
        seq.lastKey = key;
        seq.partial = [];
      }
    }
  }

  /**
   * Drops `seqId` (finished, aborted or preempted). Pages are released last page first, so a sequence's later
   * pages are evicted before its earlier ones (an earlier page is reachable by more prompts). Throws INTERNAL for an
   * unknown sequence, which includes freeing twice.
   */
  free(seqId: SeqId): void {
    const seq = this.get(seqId);
    for (let i = seq.pages.length - 1; i >= 0; i--) this.pool.release(seq.pages[i]);
    this.seqs.delete(seqId);
    this.streamingPool?.free(seqId);
  }

  /** Evicts up to `maxPages` (default all) evictable cached pages, least recently used first; returns how many. */
  evictCached(maxPages = Number.POSITIVE_INFINITY): number {
    return this.pool.evict(maxPages);
  }

  /** Copy of the block table: entry i is the physical page of positions [i*pageSize, (i+1)*pageSize). */
  blockTable(seqId: SeqId): readonly number[] {
    return this.get(seqId).pages.slice();
  }

  /** Flat slot (page * pageSize + offset) of reserved position `pos` in the paged pool (vLLM's slot mapping). */
  physicalSlot(seqId: SeqId, pos: number): number {
    const seq = this.get(seqId);
    if (!Number.isInteger(pos) || pos < 0 || pos >= seq.reserved) {
      throw new SiftError('INTERNAL', `kvcache: position ${pos} outside [0, ${seq.reserved}) of ${seqId}`);
    }
    return seq.pages[Math.floor(pos / this.pageSize)] * this.pageSize + (pos % this.pageSize);
  }

  /** Tokens whose K/V is written (prefix hits + committed). */
  numTokens(seqId: SeqId): number {
    return this.get(seqId).committed;
  }

  /** Slots reserved (>= numTokens): the positions the next forward pass may write are [numTokens, numReserved). */
  numReserved(seqId: SeqId): number {
    return this.get(seqId).reserved;
  }

  /** Streaming pages and resident positions of `seqId`; throws INTERNAL without streaming heads. */
  streamingTable(seqId: SeqId): StreamingTable {
    this.get(seqId);
    return this.requireStreaming().table(seqId);
  }

  /** Streaming slot of `pos`, or null if the ring recycles it by `upTo` written positions (see StreamingPool.slotFor). */
  slotFor(seqId: SeqId, pos: number, upTo?: number): StreamingSlot | null {
    this.get(seqId);
    return this.requireStreaming().slotFor(seqId, pos, upTo);
  }

  stats(): KvCacheStats {
    const sp = this.streamingPool;
    return {
      pagesTotal: this.pool.numPages,
      pagesUsed: this.pool.numUsed,
      pagesCached: this.pool.numEvictable,
      pagesFree: this.pool.numFree,
      usage: this.pool.numUsed / this.pool.numPages,
      prefixQueries: this.prefixQueries,
      prefixHits: this.prefixHits,
      bytesPerPage: this.config.bytesPerPage,
      streaming: sp
        ? {
            pagesTotal: sp.config.numPages,
            pagesUsed: sp.numUsed,
            pagesFree: sp.numFree,
            pagesPerSequence: sp.pagesPerSequence,
          }
        : null,
    };
  }

  /** Copy of the whole state (pool, prefix cache, block tables), for tests and debugging. */
  snapshot(): KvCacheSnapshot {
    const tables = [...this.seqs].map(([seqId, s]) => ({
      seqId,
      pages: s.pages.slice(),
      reserved: s.reserved,
      committed: s.committed,
    }));
    return { ...this.pool.snapshot(), tables };
  }

  private requireStreaming(): StreamingPool {
    if (!this.streamingPool) throw new SiftError('INTERNAL', 'kvcache: no streaming pool configured');
    return this.streamingPool;
  }

  private get(seqId: SeqId): SeqState {
    const seq = this.seqs.get(seqId);
    if (!seq) throw new SiftError('INTERNAL', `kvcache: unknown or already freed sequence ${seqId}`);
    return seq;
  }
}
