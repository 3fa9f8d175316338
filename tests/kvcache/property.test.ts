/**
 * Property tests of KvCacheManager: random sequences of allocate / appendSlots / commitTokens / free / evict over
 * small pools, with a shadow "GPU" (the token id written in every slot) so a page overwritten while another
 * sequence still reads it (a prefix-cache page) or a wrong prefix hit shows up as wrong content.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { pageHashes } from '../../kvcache/block-hash.js';
import { type KvCacheConfig, streamingPagesPerSequence } from '../../kvcache/config.js';
import { KvCacheManager } from '../../kvcache/manager.js';
import type { SeqId } from '../../kvcache/types.js';

const POISON = -1; // content of a slot nobody wrote since the page was handed out

/** What the random runs exercised, summed over all runs (checked so the property cannot pass vacuously). */
const coverage = { allocs: 0, allocNull: 0, prefixHits: 0, appendNull: 0, evictedByTake: 0 };

type Op =
  | { kind: 'alloc'; doc: number; prefix: number; suffix: number[]; prefill: boolean }
  | { kind: 'append'; sel: number; n: number }
  | { kind: 'commit'; sel: number; n: number; toks: number[] }
  | { kind: 'free'; sel: number }
  | { kind: 'evict'; n: number };

interface ShadowSeq {
  tokens: number[]; // committed token ids
  reserved: number;
  pending: number[]; // prompt tokens not yet committed (the engine's prefill)
}

const tok = (alphabet: number) => fc.integer({ min: 0, max: alphabet - 1 });

function opArb(alphabet: number): fc.Arbitrary<Op> {
  return fc.oneof(
    {
      weight: 3,
      arbitrary: fc.record({
        kind: fc.constant('alloc' as const),
        doc: fc.nat(2),
        prefix: fc.nat(40),
        suffix: fc.array(tok(alphabet), { maxLength: 6 }),
        prefill: fc.oneof({ weight: 3, arbitrary: fc.constant(true) }, fc.constant(false)),
      }),
    },
    {
      weight: 3,
      arbitrary: fc.record({ kind: fc.constant('append' as const), sel: fc.nat(), n: fc.integer({ min: 0, max: 20 }) }),
    },
    {
      weight: 4,
      arbitrary: fc.record({
        kind: fc.constant('commit' as const),
        sel: fc.nat(),
        n: fc.integer({ min: 1, max: 24 }),
        toks: fc.array(tok(alphabet), { minLength: 24, maxLength: 24 }),
      }),
    },
    { weight: 3, arbitrary: fc.record({ kind: fc.constant('free' as const), sel: fc.nat() }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('evict' as const), n: fc.integer({ min: 1, max: 4 }) }) },
  );
}

const scenarioArb = fc
  .record({
    numPages: fc.integer({ min: 4, max: 24 }),
    pageSize: fc.integer({ min: 4, max: 16 }),
    alphabet: fc.integer({ min: 2, max: 3 }),
    prefix: fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
    // One run in four adds a streaming pool (which turns the prefix cache off).
    streaming: fc.oneof(
      { weight: 3, arbitrary: fc.constant(null) },
      {
        weight: 1,
        arbitrary: fc.record({
          seqs: fc.integer({ min: 1, max: 4 }),
          sinkTokens: fc.integer({ min: 0, max: 8 }),
          localTokens: fc.integer({ min: 1, max: 12 }),
        }),
      },
    ),
  })
  .chain((s) =>
    fc.record({
      s: fc.constant(s),
      docs: fc.array(fc.array(tok(s.alphabet), { minLength: 4, maxLength: 64, size: 'max' }), {
        minLength: 3,
        maxLength: 3,
      }),
      ops: fc.array(opArb(s.alphabet), { minLength: 10, maxLength: 60, size: 'max' }),
    }),
  );

class Harness {
  readonly mgr: KvCacheManager;
  readonly ps: number;
  readonly seqs = new Map<SeqId, ShadowSeq>();
  /** (numPages, pageSize) token id in each slot: the simulated K/V memory. */
  readonly gpu: number[][];
  /** Every chained key the test has seen -> the token prefix it names. */
  readonly keyToPrefix = new Map<string, number[]>();
  private nextId = 0;
  private hitTokens = 0;
  private queryTokens = 0;

  constructor(readonly cfg: KvCacheConfig) {
    this.mgr = new KvCacheManager(cfg);
    this.ps = this.mgr.pageSize;
    this.gpu = Array.from({ length: cfg.numPages }, () => new Array<number>(this.ps).fill(POISON));
  }

  private live(sel: number): SeqId | undefined {
    const ids = [...this.seqs.keys()];
    return ids.length ? ids[sel % ids.length] : undefined;
  }

  private state(): string {
    return JSON.stringify([this.mgr.snapshot(), this.mgr.stats()]);
  }

  private poison(pages: readonly number[]): void {
    for (const p of pages) this.gpu[p].fill(POISON);
  }

  private record(tokens: number[]): void {
    const n = Math.floor(tokens.length / this.ps);
    pageHashes(tokens, this.ps, n).forEach((k, i) => {
      this.keyToPrefix.set(k, tokens.slice(0, (i + 1) * this.ps));
    });
  }

  /** The engine's forward pass: write up to `n` reserved tokens, commit them. */
  commit(id: SeqId, n: number, toks: number[]): void {
    const { mgr, ps } = this;
    const s = this.seqs.get(id)!;
    const k = Math.min(n, s.reserved - s.tokens.length);
    if (k === 0) return;
    const ids = [...s.pending.splice(0, k)];
    ids.push(...toks.slice(0, k - ids.length));
    const table = mgr.blockTable(id);
    for (let j = 0; j < k; j++) {
      const pos = s.tokens.length + j;
      this.gpu[table[Math.floor(pos / ps)]][pos % ps] = ids[j];
      assert.equal(mgr.physicalSlot(id, pos), table[Math.floor(pos / ps)] * ps + (pos % ps));
    }
    mgr.commitTokens(id, ids);
    s.tokens.push(...ids);
    this.record(s.tokens);
  }

  step(op: Op, docs: number[][]): void {
    const { mgr, ps } = this;
    switch (op.kind) {
      case 'alloc': {
        const doc = docs[op.doc];
        const prompt = [...doc.slice(0, op.prefix % (doc.length + 1)), ...op.suffix];
        const before = this.state();
        const snap = mgr.snapshot();
        const id = this.nextId++;
        const r = mgr.allocate(id, prompt);
        coverage.allocs++;
        if (!r) {
          coverage.allocNull++;
          assert.equal(this.state(), before, 'a null allocate changed nothing');
          return;
        }
        if (r.numCachedTokens > 0) coverage.prefixHits++;
        const wasEvictable = new Set(snap.evictable);
        coverage.evictedByTake += r.newPages.filter((p) => wasEvictable.has(p)).length;
        // Expected hits from the state before: leading cached pages of the prompt, within prompt[0, len - 1).
        let expectHits = 0;
        if (mgr.config.enablePrefixCache) {
          const cached = new Set(snap.cached.map((c) => c.key));
          const keys = pageHashes(prompt, ps, Math.floor(Math.max(0, prompt.length - 1) / ps));
          while (expectHits < keys.length && cached.has(keys[expectHits])) expectHits++;
          this.queryTokens += prompt.length;
          this.hitTokens += r.numCachedTokens;
        }
        assert.equal(r.numCachedTokens, expectHits * ps, 'numCachedTokens = leading cached pages * pageSize');
        const table = mgr.blockTable(id);
        assert.equal(table.length, Math.ceil(prompt.length / ps));
        assert.deepEqual(r.newPages, table.slice(expectHits));
        const owned = new Set(snap.tables.flatMap((t) => t.pages));
        for (const p of r.newPages) assert.ok(!owned.has(p), `fresh page ${p} was owned`);
        this.poison(r.newPages);
        this.seqs.set(id, {
          tokens: prompt.slice(0, r.numCachedTokens),
          reserved: prompt.length,
          pending: prompt.slice(r.numCachedTokens),
        });
        if (op.prefill) this.commit(id, prompt.length, []);
        return;
      }
      case 'append': {
        const id = this.live(op.sel);
        if (id === undefined) return;
        const before = this.state();
        const r = mgr.appendSlots(id, op.n);
        if (!r) {
          coverage.appendNull++;
          assert.equal(this.state(), before, 'a null appendSlots changed nothing');
          return;
        }
        this.poison(r.newPages);
        const s = this.seqs.get(id)!;
        s.reserved += op.n;
        assert.equal(mgr.blockTable(id).length, Math.ceil(s.reserved / ps));
        return;
      }
      case 'commit': {
        const id = this.live(op.sel);
        if (id !== undefined) this.commit(id, op.n, op.toks);
        return;
      }
      case 'free': {
        const id = this.live(op.sel);
        if (id === undefined) return;
        mgr.free(id);
        this.seqs.delete(id);
        return;
      }
      case 'evict': {
        const cachedBefore = mgr.stats().pagesCached;
        const n = mgr.evictCached(op.n);
        assert.equal(n, Math.min(op.n, cachedBefore));
        assert.equal(mgr.stats().pagesCached, cachedBefore - n);
        return;
      }
    }
  }

  check(): void {
    const { mgr, ps } = this;
    const snap = mgr.snapshot();
    const stats = mgr.stats();
    const n = this.cfg.numPages;
    // Refcount == number of block tables holding the page; no table holds a page twice.
    const held = new Array<number>(n).fill(0);
    for (const t of snap.tables) {
      assert.equal(new Set(t.pages).size, t.pages.length, `table of ${t.seqId} holds a page twice`);
      for (const p of t.pages) held[p]++;
    }
    assert.deepEqual(snap.refcounts, held, 'refcount == number of block tables holding the page');
    // Every page exactly one of free / in use / cached-evictable.
    const free = new Set(snap.free);
    const evictable = new Set(snap.evictable);
    assert.equal(free.size, snap.free.length, 'a page twice on the free list');
    assert.equal(evictable.size, snap.evictable.length, 'a page twice on the LRU list');
    const cachedPages = new Set(snap.cached.map((c) => c.page));
    assert.equal(cachedPages.size, snap.cached.length, 'a page cached under two keys');
    for (let p = 0; p < n; p++) {
      const states = Number(free.has(p)) + Number(evictable.has(p)) + Number(held[p] > 0);
      assert.equal(states, 1, `page ${p} is in ${states} states`);
      if (evictable.has(p)) assert.ok(cachedPages.has(p), `evictable page ${p} is not cached`);
      if (free.has(p)) assert.ok(!cachedPages.has(p), `free page ${p} is still cached`);
    }
    const used = held.filter((h) => h > 0).length;
    assert.equal(stats.pagesUsed, used);
    assert.equal(stats.pagesFree, free.size);
    assert.equal(stats.pagesCached, evictable.size);
    assert.equal(stats.pagesUsed + stats.pagesFree + stats.pagesCached, stats.pagesTotal);
    if (mgr.config.enablePrefixCache) {
      assert.equal(stats.prefixQueries, this.queryTokens);
      assert.equal(stats.prefixHits, this.hitTokens);
    }
    // Tables match the shadow, and every committed token reads back from its slot.
    assert.equal(snap.tables.length, this.seqs.size);
    for (const t of snap.tables) {
      const s = this.seqs.get(t.seqId)!;
      assert.equal(t.committed, s.tokens.length);
      assert.equal(mgr.numTokens(t.seqId), s.tokens.length);
      assert.equal(t.reserved, s.reserved);
      assert.equal(mgr.numReserved(t.seqId), s.reserved);
      assert.equal(t.pages.length, Math.ceil(s.reserved / ps));
      for (let pos = 0; pos < s.tokens.length; pos++) {
        const got = this.gpu[t.pages[Math.floor(pos / ps)]][pos % ps];
        assert.equal(got, s.tokens[pos], `seq ${t.seqId} pos ${pos} reads ${got}, wrote ${s.tokens[pos]}`);
      }
    }
    // Prefix cache entries point to pages whose content is the page their key names.
    for (const { key, page } of snap.cached) {
      const prefix = this.keyToPrefix.get(key);
      assert.ok(prefix, 'cached key the test never committed');
      assert.deepEqual(this.gpu[page], prefix.slice(prefix.length - ps), `cached page ${page} content`);
    }
    if (mgr.streaming) {
      assert.equal(stats.streaming?.pagesUsed, this.seqs.size * mgr.streaming.pagesPerSequence);
    }
  }

  drain(): void {
    for (const id of [...this.seqs.keys()]) {
      this.mgr.free(id);
      this.seqs.delete(id);
      this.check();
    }
    const st = this.mgr.stats();
    assert.equal(st.pagesUsed, 0, 'pages leaked after freeing everything');
    assert.equal(st.pagesFree + st.pagesCached, st.pagesTotal);
    if (st.streaming) assert.equal(st.streaming.pagesUsed, 0, 'streaming pages leaked');
    this.mgr.evictCached();
    assert.equal(this.mgr.stats().pagesFree, st.pagesTotal);
    assert.equal(this.mgr.snapshot().cached.length, 0);
  }
}

test('random allocate/append/commit/free/evict keep the pool invariants', () => {
  fc.assert(
    fc.property(scenarioArb, ({ s, docs, ops }) => {
      const cfg: KvCacheConfig = { numPages: s.numPages, pageSize: s.pageSize, logicalPageSize: s.pageSize };
      if (s.streaming) {
        const per = streamingPagesPerSequence(s.streaming.sinkTokens, s.streaming.localTokens, s.pageSize);
        cfg.streaming = {
          numPages: per * s.streaming.seqs,
          sinkTokens: s.streaming.sinkTokens,
          localTokens: s.streaming.localTokens,
        };
        cfg.enablePrefixCache = false;
      } else {
        cfg.enablePrefixCache = s.prefix;
      }
      const h = new Harness(cfg);
      h.check();
      for (const op of ops) {
        h.step(op, docs);
        h.check();
      }
      h.drain();
    }),
    { numRuns: 400, seed: 0x51f7, includeErrorInReport: true },
  );
  for (const [what, n] of Object.entries(coverage)) assert.ok(n >= 20, `random runs exercised ${what} only ${n} times`);
});
