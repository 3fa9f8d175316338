/**
 * A fixed pool of physical pages with reference counts and a prefix cache.
 *
 * Every page is in exactly one state:
 *   - free:      refcount 0, no cache key, on the free list;
 *   - in use:    refcount > 0 (owned by that many block tables), with or without a cache key;
 *   - evictable: refcount 0 but holding a cached full page (cache key set), on the LRU list.
 * `take()` prefers the free list and otherwise evicts the least recently released evictable page.
 */
import { SiftError } from '../config/errors.js';

export class PagePool {
  readonly numPages: number;
  /** (numPages) block tables holding each page. */
  private readonly refcount: Int32Array;
  /** Free pages, used as a stack (page 0 handed out first on a fresh pool). */
  private readonly freeList: number[] = [];
  /** Evictable pages in LRU order: first = least recently released. */
  private readonly evictable = new Set<number>();
  /** (numPages) cache key of each page, or null. */
  private readonly keyOf: (string | null)[];
  /** Cache key -> page. */
  private readonly byKey = new Map<string, number>();

  constructor(numPages: number) {
    this.numPages = numPages;
    this.refcount = new Int32Array(numPages);
    this.keyOf = new Array<string | null>(numPages).fill(null);
    for (let p = numPages - 1; p >= 0; p--) this.freeList.push(p);
  }

  get numFree(): number {
    return this.freeList.length;
  }
  get numEvictable(): number {
    return this.evictable.size;
  }
  get numUsed(): number {
    return this.numPages - this.freeList.length - this.evictable.size;
  }
  /** Pages `take()` can still hand out: free plus evictable. */
  get numAvailable(): number {
    return this.freeList.length + this.evictable.size;
  }

  refs(page: number): number {
    return this.refcount[page];
  }

  /** A fresh page with refcount 1 and no cache key; evicts the LRU cached page when the free list is empty. */
  take(): number {
    let page = this.freeList.pop();
    if (page === undefined) {
      const lru = this.evictable.values().next();
      if (lru.done) throw new SiftError('INTERNAL', 'kvcache: take() on an exhausted page pool');
      page = lru.value;
      this.evictable.delete(page);
      this.dropKey(page);
    }
    this.refcount[page] = 1;
    return page;
  }

  /** One more block table holds `page` (a prefix hit); an evictable page comes back into use. */
  retain(page: number): void {
    if (this.refcount[page] === 0) {
      if (!this.evictable.delete(page)) throw new SiftError('INTERNAL', `kvcache: retain of free page ${page}`);
    }
    this.refcount[page]++;
  }

  /** One block table fewer holds `page`; at zero it becomes evictable (cached) or free. */
  release(page: number): void {
    if (this.refcount[page] <= 0) throw new SiftError('INTERNAL', `kvcache: release of unowned page ${page}`);
    if (--this.refcount[page] === 0) {
      if (this.keyOf[page] !== null) this.evictable.add(page);
      else this.freeList.push(page);
    }
  }

  /** The page cached under `key`, if any. */
  lookup(key: string): number | undefined {
    return this.byKey.get(key);
  }

  /**
   * Caches in-use `page` under `key`. A key already cached keeps its page (this page stays uncached and goes to the
   * free list when released); returns whether `page` was registered.
   */
  register(page: number, key: string): boolean {
    if (this.refcount[page] <= 0) throw new SiftError('INTERNAL', `kvcache: register of unowned page ${page}`);
    if (this.byKey.has(key) || this.keyOf[page] !== null) return false;
    this.byKey.set(key, page);
    this.keyOf[page] = key;
    return true;
  }

  /** Moves up to `max` evictable pages, least recently used first, to the free list; returns how many. */
  evict(max: number): number {
    let n = 0;
    for (const page of this.evictable) {
      if (n >= max) break;
      this.evictable.delete(page);
      this.dropKey(page);
      this.freeList.push(page);
      n++;
    }
    return n;
  }

  /** Copy of the whole state, for tests and debugging. */
  snapshot(): PoolSnapshot {
    return {
      refcounts: Array.from(this.refcount),
      free: [...this.freeList],
      evictable: [...this.evictable],
      cached: [...this.byKey].map(([key, page]) => ({ key, page })),
    };
  }

  private dropKey(page: number): void {
    const key = this.keyOf[page];
    if (key !== null) {
      this.byKey.delete(key);
      this.keyOf[page] = null;
    }
  }
}

export interface PoolSnapshot {
  /** (numPages) refcount per page. */
  refcounts: number[];
  /** Pages on the free list. */
  free: number[];
  /** Evictable cached pages, least recently used first. */
  evictable: number[];
  /** Prefix cache entries (in use or evictable). */
  cached: { key: string; page: number }[];
}
