/** Deterministic tests of KvCacheManager: validation, prefix reuse, LRU eviction, exhaustion. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isSiftError } from '../../config/errors.js';
import { type KvCacheConfig, KvCacheManager } from '../../kvcache/index.js';

const range = (n: number, from = 0) => Array.from({ length: n }, (_, i) => from + i);

function throwsCode(fn: () => unknown, code: 'CONFIG_INVALID' | 'INTERNAL', re?: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(isSiftError(e, code), `expected SiftError ${code}, got ${String(e)}`);
    if (re) assert.match((e as Error).message, re);
    return true;
  });
}

/** Allocates, "prefills" and commits a prompt; returns numCachedTokens. */
function admit(m: KvCacheManager, id: string, prompt: number[]): number {
  const r = m.allocate(id, prompt);
  assert.ok(r, `allocate ${id}`);
  m.commitTokens(id, prompt.slice(r.numCachedTokens));
  return r.numCachedTokens;
}

test('config validation throws CONFIG_INVALID with the field at fault', () => {
  const bad: [unknown, RegExp][] = [
    [{ numPages: 8, pageSize: 0 }, /pageSize/],
    [{ numPages: 8, pageSize: 1.5 }, /pageSize/],
    [{ numPages: 8, pageSize: '64' }, /pageSize/],
    [{ numPages: 0 }, /numPages/],
    [{ numPages: 2.5 }, /numPages/],
    [{ numPages: 8, pageSize: 64, logicalPageSize: 24 }, /logicalPageSize \(24\) must divide pageSize \(64\)/],
    [{ numPages: 8, pageSize: 64, logicalPageSize: 0 }, /logicalPageSize/],
    [{ numPages: 8, pageSzie: 64 }, /unknown key pageSzie/],
    [{ numPages: 8, enablePrefixCache: true, streaming: { numPages: 64 } }, /cannot be combined/],
    [{ numPages: 8, streaming: { numPages: 6 } }, /streaming.numPages \(6\) holds no sequence: one needs 7/],
    [{ numPages: 8, streaming: { numPages: 64, localTokens: 0 } }, /localTokens/],
    [{ numPages: 8, streaming: { numPages: 64, sink: 4 } }, /unknown key streaming.sink/],
  ];
  for (const [cfg, re] of bad) throwsCode(() => new KvCacheManager(cfg as KvCacheConfig), 'CONFIG_INVALID', re);
  const m = new KvCacheManager({ numPages: 8 });
  assert.equal(m.pageSize, 64);
  assert.equal(m.logicalPageSize, 16);
  assert.equal(m.logicalPagesPerPage, 4);
  assert.equal(m.config.enablePrefixCache, true);
  assert.equal(m.digestSlot(5), 5, 'digest slot == physical page id');
  const s = new KvCacheManager({ numPages: 8, streaming: { numPages: 14 } });
  assert.equal(s.config.enablePrefixCache, false, 'prefix cache defaults off with streaming heads');
  assert.equal(s.streaming?.pagesPerSequence, 7);
});

test('unknown sequences, double free and over-commit throw INTERNAL', () => {
  const m = new KvCacheManager({ numPages: 8, pageSize: 4 });
  for (const f of [
    () => m.blockTable('x'),
    () => m.numTokens('x'),
    () => m.appendSlots('x', 1),
    () => m.commitTokens('x', [1]),
    () => m.free('x'),
    () => m.streamingTable('x'),
  ]) {
    throwsCode(f, 'INTERNAL', /unknown or already freed sequence x/);
  }
  assert.ok(m.allocate('a', [1, 2, 3]));
  throwsCode(() => m.allocate('a', [1]), 'INTERNAL', /already allocated/);
  throwsCode(() => m.commitTokens('a', [1, 2, 3, 4]), 'INTERNAL', /exceeds its reserved slots/);
  throwsCode(() => m.physicalSlot('a', 3), 'INTERNAL');
  throwsCode(() => m.streamingTable('a'), 'INTERNAL', /no streaming pool/);
  m.free('a');
  throwsCode(() => m.free('a'), 'INTERNAL', /already freed/);
  assert.equal(m.stats().pagesUsed, 0);
});

test('a repeated prompt reuses its full pages, leaving at least one token to compute', () => {
  const m = new KvCacheManager({ numPages: 32, pageSize: 16 });
  const prompt = range(50, 100);
  assert.equal(admit(m, 'a', prompt), 0);
  const tableA = m.blockTable('a');
  // Same prompt while 'a' still runs: 3 full pages (48 tokens) shared, the partial page is private.
  const r = m.allocate('b', prompt);
  assert.equal(r?.numCachedTokens, 48);
  assert.deepEqual(m.blockTable('b').slice(0, 3), tableA.slice(0, 3));
  assert.notEqual(m.blockTable('b')[3], tableA[3]);
  assert.deepEqual(r?.newPages, [m.blockTable('b')[3]]);
  assert.equal(m.numTokens('b'), 48);
  assert.equal(m.numReserved('b'), 50);
  m.commitTokens('b', prompt.slice(48));
  assert.equal(m.stats().pagesUsed, 5, 'shared pages count once');
  // A prompt of exactly 3 pages: the last page is recomputed (only pages inside prompt[0, len-1) are looked up).
  assert.equal(admit(m, 'c', prompt.slice(0, 48)), 32);
  // Same first page, different second: only the first page hits; a different first page hides later equal pages.
  assert.equal(admit(m, 'd', [...prompt.slice(0, 16), 7, ...prompt.slice(17, 40)]), 16);
  assert.equal(admit(m, 'e', [7, ...prompt.slice(1)]), 0);
  // Prompts shorter than one page + 1 never hit.
  assert.equal(admit(m, 'f', prompt.slice(0, 16)), 0);
  assert.equal(admit(m, 'g', prompt.slice(0, 17)), 16);
  const st = m.stats();
  assert.equal(st.prefixQueries, 50 + 50 + 48 + 40 + 50 + 16 + 17, 'queries in prompt tokens');
  assert.equal(st.prefixHits, 48 + 32 + 16 + 16, 'hits in prompt tokens');
  for (const id of ['a', 'b', 'c', 'd', 'e', 'f', 'g']) m.free(id);
  assert.equal(m.stats().pagesUsed, 0);
  // After everyone is gone the cached pages are evictable but still hit.
  assert.ok(m.stats().pagesCached > 0);
  assert.equal(admit(m, 'h', prompt), 48);
  assert.deepEqual(m.blockTable('h').slice(0, 3), tableA.slice(0, 3));
});

test('prefix cache off: nothing is cached or counted', () => {
  const m = new KvCacheManager({ numPages: 8, pageSize: 4, enablePrefixCache: false });
  admit(m, 'a', range(9));
  m.free('a');
  assert.equal(admit(m, 'b', range(9)), 0);
  const st = m.stats();
  assert.deepEqual([st.pagesCached, st.prefixQueries, st.prefixHits], [0, 0, 0]);
});

test('evictable pages go least recently used first, later pages of a sequence before earlier ones', () => {
  const m = new KvCacheManager({ numPages: 4, pageSize: 4 });
  const A = range(8, 0);
  const B = range(8, 10);
  admit(m, 'a', A);
  const [a0, a1] = m.blockTable('a');
  admit(m, 'b', B);
  const [b0, b1] = m.blockTable('b');
  m.free('a');
  m.free('b');
  assert.deepEqual(m.snapshot().evictable, [a1, a0, b1, b0]);
  assert.deepEqual(m.stats(), { ...m.stats(), pagesUsed: 0, pagesCached: 4, pagesFree: 0 });
  // A new 1-page prompt takes the LRU page a1; A's first page still hits.
  assert.deepEqual(m.allocate('c', [50, 51, 52])?.newPages, [a1]);
  assert.equal(admit(m, 'a2', A), 4);
  assert.deepEqual(m.blockTable('a2'), [a0, m.blockTable('a2')[1]]);
  assert.equal(m.blockTable('a2')[1], b1, 'the next LRU page serves the recomputed page');
  // A hit refreshes recency: free a2 and its pages move to the MRU end.
  m.free('a2');
  m.free('c');
  const order = m.snapshot().evictable;
  assert.deepEqual(order.slice(0, 1), [b0]);
  assert.equal(m.evictCached(1), 1);
  assert.ok(!m.snapshot().evictable.includes(b0));
  assert.equal(admit(m, 'b2', B), 0, 'B lost its first page, so nothing of B hits');
  m.free('b2');
  const cached = m.stats().pagesCached;
  assert.equal(m.evictCached(), cached);
  assert.equal(m.stats().pagesFree, 4);
  assert.equal(m.snapshot().cached.length, 0);
});

test('a hit on an evictable page is not also counted as a free page', () => {
  const m = new KvCacheManager({ numPages: 4, pageSize: 4 });
  const A = range(8);
  admit(m, 'a', A);
  m.free('a'); // 2 evictable + 2 free
  const r = m.allocate('b', [...A, ...range(8, 20)]); // 16 tokens: 2 hits + 2 fresh pages
  assert.equal(r?.numCachedTokens, 8);
  assert.equal(m.stats().pagesUsed, 4);
  const before = JSON.stringify([m.snapshot(), m.stats()]);
  assert.equal(m.allocate('c', [1]), null);
  assert.equal(JSON.stringify([m.snapshot(), m.stats()]), before);
});

test('pool exhaustion returns null and changes nothing', () => {
  const m = new KvCacheManager({ numPages: 4, pageSize: 4 });
  assert.ok(m.canAllocate(16));
  assert.ok(!m.canAllocate(17));
  admit(m, 'a', range(10)); // 3 pages
  const before = JSON.stringify([m.snapshot(), m.stats()]);
  assert.ok(!m.canAllocate(8));
  assert.ok(m.canAllocate(4));
  assert.equal(m.allocate('b', range(8, 50)), null);
  assert.equal(m.appendSlots('a', 7), null, '10 + 7 tokens need 5 pages');
  assert.equal(JSON.stringify([m.snapshot(), m.stats()]), before);
  throwsCode(() => m.blockTable('b'), 'INTERNAL');
  assert.deepEqual(m.appendSlots('a', 6)?.newPages.length, 1);
  assert.equal(m.blockTable('a').length, 4);
  assert.equal(m.stats().usage, 1);
  m.free('a');
  assert.equal(m.stats().pagesUsed, 0);
  assert.ok(m.allocate('b', range(16, 50)));
});

test('stats report bytes per page and the streaming pool', () => {
  const m = new KvCacheManager({ numPages: 10, pageSize: 64, bytesPerPage: 442368, streaming: { numPages: 21 } });
  assert.equal(m.stats().bytesPerPage, 442368);
  assert.ok(m.allocate(1, range(100)));
  m.commitTokens(1, range(100));
  assert.deepEqual(m.stats().streaming, { pagesTotal: 21, pagesUsed: 7, pagesFree: 14, pagesPerSequence: 7 });
  assert.ok(m.allocate(2, range(10)));
  assert.ok(m.allocate(3, range(10)));
  assert.ok(!m.canAllocate(1), 'streaming pool full');
  const before = JSON.stringify([m.snapshot(), m.stats()]);
  assert.equal(m.allocate(4, [1]), null);
  assert.equal(JSON.stringify([m.snapshot(), m.stats()]), before);
  m.free(3);
  assert.ok(m.allocate(5, range(30)));
  assert.equal(m.streamingTable(5).numTokens, 30);
  for (const id of [1, 2, 5]) m.free(id);
  assert.equal(m.stats().streaming?.pagesUsed, 0);
});
