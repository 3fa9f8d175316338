/** Streaming-head pool: constant pages per sequence, sink + page-granular window always resident and intact. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { isSiftError } from '../../config/errors.js';
import { KvCacheManager, resolveStreamingConfig, StreamingPool } from '../../kvcache/index.js';

/**
 * Grows one sequence to `total` tokens in chunks, writing each position's id into its slot (when the ring still
 * holds it) and checking after every chunk: the page set never changes, every sink position and the last `local`
 * positions are resident and read back, no two resident positions share a slot, recycled positions map to null.
 */
function growAndCheck(
  sp: StreamingPool,
  id: string,
  chunks: () => number,
  total: number,
  mem = new Map<number, number>(), // slot -> position written there
  reserve = (c: number) => sp.reserve(id, c),
): void {
  const ps = sp.pageSize;
  const pages = (() => {
    const t = sp.table(id);
    return [...t.sinkPages, ...t.ringPages];
  })();
  assert.equal(pages.length, sp.pagesPerSequence);
  let n = sp.table(id).numTokens;
  while (n < total) {
    const c = Math.min(chunks(), total - n);
    reserve(c);
    for (let pos = n; pos < n + c; pos++) {
      const s = sp.slotFor(id, pos);
      if (s) mem.set(s.slot, pos); // positions of a long chunk that the ring already recycled are not stored
    }
    n += c;
    const t = sp.table(id);
    assert.deepEqual([...t.sinkPages, ...t.ringPages], pages, 'the page set never changes');
    assert.equal(t.numTokens, n);
    assert.equal(t.sinkEnd, Math.min(sp.sinkTokens, n));
    const lastLocal = Math.max(sp.sinkTokens, n - sp.localTokens);
    assert.ok(t.windowStart <= lastLocal, `window [${t.windowStart}, ${n}) misses some of the last local tokens`);
    assert.ok(n - t.windowStart <= sp.numRingPages * ps, 'the window fits the ring');
    if (n > sp.sinkTokens) assert.equal((t.windowStart - sp.sinkTokens) % ps, 0, 'the window is page-granular');
    const seen = new Set<number>();
    for (let pos = 0; pos < n; pos++) {
      const s = sp.slotFor(id, pos);
      const resident = pos < t.sinkEnd || pos >= t.windowStart;
      assert.equal(s !== null, resident, `pos ${pos} resident=${resident}`);
      if (!s) continue;
      assert.ok(pages.includes(s.page));
      assert.equal(s.slot, s.page * ps + s.offset);
      assert.ok(!seen.has(s.slot), `two resident positions share slot ${s.slot}`);
      seen.add(s.slot);
      assert.equal(mem.get(s.slot), pos, `pos ${pos} was overwritten`);
    }
  }
}

test('defaults: 128 sink + 256 local in pages of 64 take 2 + 4 + 1 = 7 pages, constant over 10x the window', () => {
  const m = new KvCacheManager({ numPages: 128, streaming: { numPages: 14 } });
  const sp = m.streaming!;
  assert.deepEqual([sp.numSinkPages, sp.numRingPages, sp.pagesPerSequence], [2, 5, 7]);
  assert.ok(m.allocate('a', []));
  const used = m.stats().streaming!.pagesUsed;
  assert.equal(used, 7);
  // Decode one token at a time through the manager, then grow in page-sized chunks, to 10x (sink + local).
  const mem = new Map<number, number>();
  const end = 10 * (128 + 256);
  const decode = (c: number) => {
    const n = m.numTokens('a');
    if (!m.appendSlots('a', c)) assert.fail('appendSlots');
    m.commitTokens(
      'a',
      Array.from({ length: c }, (_, i) => (n + i) % 7),
    );
    assert.equal(m.stats().streaming!.pagesUsed, used);
    assert.deepEqual(m.streamingTable('a'), sp.table('a'));
  };
  growAndCheck(sp, 'a', () => 1, end, mem, decode);
  growAndCheck(sp, 'a', () => 64, 2 * end, mem, decode);
  assert.equal(m.numTokens('a'), 2 * end);
  assert.equal(m.stats().streaming!.pagesUsed, used);
  assert.equal(m.stats().pagesUsed, (2 * end) / 64, 'the paged pool grows, the streaming pool does not');
  assert.equal(m.slotFor('a', 200), null, 'an old position is recycled');
  m.free('a');
  assert.equal(m.stats().streaming!.pagesUsed, 0);
});

test('odd sizes, zero sink and long prefill chunks keep the window intact', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 9 }),
      fc.integer({ min: 0, max: 13 }),
      fc.integer({ min: 1, max: 17 }),
      fc.integer({ min: 1, max: 40 }),
      fc.integer({ min: 0, max: 1000 }),
      (pageSize, sinkTokens, localTokens, maxChunk, seed) => {
        const cfg = resolveStreamingConfig({ numPages: 64, pageSize, sinkTokens, localTokens }, pageSize);
        const sp = new StreamingPool(cfg);
        assert.equal(sp.pagesPerSequence, Math.ceil(sinkTokens / pageSize) + Math.ceil(localTokens / pageSize) + 1);
        assert.ok(sp.allocate('s', 0));
        let x = seed;
        const chunk = () => {
          x = (x * 1103515245 + 12345) % 2147483648;
          return 1 + (x % maxChunk);
        };
        growAndCheck(sp, 's', chunk, 10 * (sinkTokens + localTokens) + 3 * pageSize);
        sp.free('s');
        assert.equal(sp.numUsed, 0);
      },
    ),
    { numRuns: 60, seed: 0x5eed },
  );
});

test('the pool holds numPages / pagesPerSequence sequences and throws for unknown ones', () => {
  const sp = new StreamingPool(resolveStreamingConfig({ numPages: 10, sinkTokens: 4, localTokens: 8 }, 4));
  assert.equal(sp.pagesPerSequence, 1 + 2 + 1);
  assert.ok(sp.allocate(1, 0));
  assert.ok(sp.allocate(2, 0));
  assert.ok(!sp.canAllocate());
  assert.equal(sp.allocate(3, 0), false);
  assert.equal(sp.numUsed, 8);
  sp.free(2);
  assert.ok(sp.allocate(3, 0));
  assert.equal(
    new Set([...sp.table(1).sinkPages, ...sp.table(1).ringPages, ...sp.table(3).sinkPages, ...sp.table(3).ringPages])
      .size,
    8,
  );
  for (const f of [() => sp.table(2), () => sp.free(2), () => sp.reserve(9, 1), () => sp.slotFor(1, 0)]) {
    assert.throws(f, (e: unknown) => isSiftError(e, 'INTERNAL'));
  }
});

test('slotFor judges residency at the end of the chunk being written, not at the whole reserved prompt', () => {
  // sink 16 + 3 ring pages of 16: a 90-token prompt reserved at once, written in chunks [0, 40), [40, 80), [80, 90)
  const sp = new StreamingPool({ numPages: 8, pageSize: 16, sinkTokens: 16, localTokens: 32 });
  assert.ok(sp.allocate('s', 90));
  // against all 90 reserved positions, 20 is already recycled; while the first chunk is written it is resident
  assert.equal(sp.slotFor('s', 20), null);
  assert.notEqual(sp.slotFor('s', 20, 40), null);
  // within one chunk no two written positions share a slot: the later one wins, the earlier is skipped
  for (const [start, end] of [
    [0, 40],
    [40, 80],
    [80, 90],
  ]) {
    const seen = new Map<number, number>();
    for (let p = start; p < end; p++) {
      const s = sp.slotFor('s', p, end);
      if (s === null) continue;
      assert.ok(
        !seen.has(s.slot),
        `chunk [${start}, ${end}): positions ${seen.get(s.slot)} and ${p} share slot ${s.slot}`,
      );
      seen.set(s.slot, p);
    }
    // the last `local` positions of the chunk are always written
    for (let p = Math.max(16, end - 32); p < end; p++) assert.notEqual(sp.slotFor('s', p, end), null, `position ${p}`);
  }
  assert.throws(() => sp.slotFor('s', 50, 40), /outside \[0, 40\)/);
  assert.throws(() => sp.slotFor('s', 5, 91), /past the 90 reserved/);
});
