/**
 * Page selection against the reference top-k of Quest scores: the scoring pass (shaders/page_score.wgsl) and the
 * top-k pass (shaders/page_select.wgsl) run together through PageSelectKernel.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pagesKept } from '../../model/attention/budget.js';
import { digestBytes, digestEntries, PageDigestKernel } from '../../shaders/page_digest.js';
import { type GqaCombine, PageSelectKernel, selectScoresBytes } from '../../shaders/page_select.js';
import { UniformArena } from '../../shaders/runtime.js';
import { assertNoGpuErrors, f32Buffer, testGpu, u32Buffer } from '../helpers/gpu.js';
import { Rng } from '../helpers/rng.js';
import { poolOf } from '../helpers/slabs.js';
import { emptyCache, makeSeqCache, uploadCache, writeSlot } from '../helpers/sparse-cache.js';
import { allDigestsRef, digestWordsRef } from '../reference/page_digest.js';
import { firstWindowPage, keptCount, pageScoresRef, type SelectRow, topPagesRef } from '../reference/page_select.js';

// The GPU scores pages in f32, the reference in f64: a page may swap with the K-th one only when their scores are
// this close (relative to the score's magnitude); everything else must match exactly.
const SCORE_RTOL = 1e-5;
const SENTINEL = 0xdeadbeef;

interface Case {
  seed: number;
  group: number;
  pageSize: number;
  headDim: number;
  combine: GqaCombine;
  constantKeys?: boolean;
  /** q rows hold qRowHeads heads, of which [qHeadOffset, qHeadOffset + numHeads) are this layer's. */
  qHeadOffset?: number;
  qRowHeads?: number;
  /** The layer's sliding window in tokens. */
  window?: number;
  /** The digests in this many slabs of whole pages (default one buffer). */
  slabs?: number;
}

async function runCase(c: Case): Promise<void> {
  const gpu = await testGpu();
  const rng = new Rng(c.seed);
  const { pageSize, headDim, group } = c;
  const logicalPageSize = 16;
  const numKvHeads = group === 8 ? 1 : rng.int(1, 2);
  const numHeads = numKvHeads * group;
  const lens = [
    rng.int(1, 12 * pageSize),
    rng.int(20 * pageSize, 40 * pageSize),
    20 * pageSize, // ends on a page boundary
    rng.int(3 * pageSize, 9 * pageSize),
    1,
    rng.int(50 * pageSize, 70 * pageSize) + 3,
  ];
  const budgets = [
    lens[0] + rng.int(0, pageSize - 1), // fits the context, fewer than P whole pages: still dense
    rng.int(4, 12) * pageSize + rng.int(0, pageSize - 1), // not a multiple of the page size
    Number.POSITIVE_INFINITY, // dense
    0, // below two pages: still keeps sink + newest
    5 * pageSize,
    17 * pageSize,
  ];
  const cache = makeSeqCache(rng, lens, { numKvHeads, headDim, pageSize });
  if (c.constantKeys) {
    cache.k.fill(0.5);
  }
  const shape = { pageSize, logicalPageSize, numKvHeads, headDim };
  const digests = allDigestsRef(cache.k, shape, cache.numPages, cache.blockTable, cache.maxPagesPerSeq, lens);
  // Rows in a shuffled order with shuffled block-table rows and selection slots; one row does not reselect.
  const numRows = lens.length;
  const slotOf = [3, 0, 6, 1, 5, 2];
  // Each row keeps the pages the budget rule gives it (the kernel takes K, it does not apply the rule).
  const rows: SelectRow[] = lens.map((len, s) => ({
    blockRow: s,
    position: len - 1,
    pagesKept: pagesKept(len, budgets[s], pageSize),
  }));
  const rowWords = new Uint32Array(numRows * 4);
  rows.forEach((r, i) => {
    rowWords.set([r.blockRow, r.position, slotOf[i], r.pagesKept], 4 * i);
  });
  const selectRows = [5, 0, 1, 2, 3]; // row 4 keeps its old selection
  const numSlots = 7;
  const maxSelected = Math.max(cache.maxPagesPerSeq, 20);
  const q = rng.normalArray(numRows * numHeads * headDim);
  // The kernel sees q inside wider rows (other heads NaN: reading them would poison the scores).
  const qOff = c.qHeadOffset ?? 0;
  const qRowHeads = c.qRowHeads ?? numHeads;
  const qWide = new Float32Array(numRows * qRowHeads * headDim).fill(Number.NaN);
  for (let r = 0; r < numRows; r++) {
    qWide.set(q.subarray(r * numHeads * headDim, (r + 1) * numHeads * headDim), (r * qRowHeads + qOff) * headDim);
  }
  const selected = u32Buffer(gpu, new Uint32Array(numSlots * numKvHeads * maxSelected).fill(SENTINEL));
  const counts = u32Buffer(gpu, new Uint32Array(numSlots * numKvHeads).fill(SENTINEL));
  const kernel = new PageSelectKernel(gpu, { combine: c.combine });
  const arena = new UniformArena(gpu);
  const dWords = digestWordsRef(digests, headDim);
  gpu.run((pass) => {
    kernel.encode(pass, arena, {
      q: f32Buffer(gpu, qWide),
      qHeadOffset: c.qHeadOffset,
      qRowHeads: c.qRowHeads,
      digests: poolOf(gpu, 'digests', dWords, dWords.byteLength / cache.numPages, c.slabs ?? 1),
      scores: gpu.createBuffer('scores', selectScoresBytes(selectRows.length, numKvHeads, cache.maxPagesPerSeq)),
      blockTable: u32Buffer(gpu, cache.blockTable),
      rows: u32Buffer(gpu, rowWords),
      selectRows: u32Buffer(gpu, selectRows),
      selected,
      counts,
      numSelect: selectRows.length,
      numHeads,
      numKvHeads,
      headDim,
      pageSize,
      logicalPageSize,
      maxPagesPerSeq: cache.maxPagesPerSeq,
      maxSelected,
      window: c.window,
    });
  }, arena);
  const gotSel = await gpu.readU32(selected, numSlots * numKvHeads * maxSelected);
  const gotCnt = await gpu.readU32(counts, numSlots * numKvHeads);
  assertNoGpuErrors(gpu);
  const sshape = { ...shape, numHeads, maxPagesPerSeq: cache.maxPagesPerSeq, maxSelected };
  for (let r = 0; r < numRows; r++) {
    for (let h = 0; h < numKvHeads; h++) {
      const sb = slotOf[r] * numKvHeads + h;
      const what = `select seed=${c.seed} ${c.combine} heads=${numHeads}/${numKvHeads} page=${pageSize} row=${r} len=${lens[r]} budget=${budgets[r]} window=${c.window ?? 0} kvh=${h}`;
      if (!selectRows.includes(r)) {
        assert.equal(gotCnt[sb], SENTINEL, `${what}: a row that does not reselect was written`);
        continue;
      }
      const P = Math.ceil(lens[r] / pageSize);
      const first = firstWindowPage(rows[r].position, pageSize, c.window);
      const sink = !c.window || lens[r] <= c.window; // the window still holds token 0
      const K = keptCount(sshape, rows[r], c.window);
      assert.equal(gotCnt[sb], K, `${what}: count`);
      const got = Array.from(gotSel.subarray(sb * maxSelected, sb * maxSelected + K));
      for (let i = 1; i < got.length; i++) assert.ok(got[i] > got[i - 1], `${what}: not ascending ${got}`);
      assert.ok(got.includes(0) || !sink, `${what}: sink page missing in ${got}`);
      assert.ok(got.includes(P - 1), `${what}: newest page missing in ${got}`);
      assert.ok(got[0] >= first, `${what}: a page before the window (first ${first}) in ${got}`);
      assert.equal(
        gotSel[sb * maxSelected + K],
        K < maxSelected ? SENTINEL : gotSel[sb * maxSelected + K],
        `${what}: wrote past K`,
      );
      const scores = pageScoresRef(q, digests, cache.blockTable, sshape, r, rows[r], h, c.combine, c.window);
      const want = topPagesRef(scores, K, first, sink);
      if (c.constantKeys || K >= P - first) {
        assert.deepEqual(got, want, `${what}: ties / dense`);
        continue;
      }
      // Near-ties at the cut may order differently in f32; anything else must match.
      const forced = sink ? [0, P - 1] : [P - 1];
      const kth = Math.min(...want.filter((i) => !forced.includes(i)).map((i) => scores[i]));
      const diff = got.filter((i) => !want.includes(i)).concat(want.filter((i) => !got.includes(i)));
      for (const i of diff) {
        assert.ok(
          Math.abs(scores[i] - kth) <= SCORE_RTOL * (Math.abs(kth) + 1),
          `${what}: page ${i} (score ${scores[i]}, cut ${kth}) differs: got ${got} want ${want}`,
        );
      }
    }
  }
  arena.destroy();
}

test('page selection equals the reference top-k: sink + newest, exactly min(K, P) ascending, GQA 1/4/8, sum and max', async () => {
  let seed = 1;
  for (const group of [1, 4, 8]) {
    for (const pageSize of [16, 32, 64]) {
      const combine: GqaCombine = seed % 2 ? 'sum' : 'max';
      await runCase({ seed, group, pageSize, headDim: seed % 3 ? 64 : 48, combine });
      seed++;
    }
  }
});

test('page selection over digests split into 3 slabs of whole pages equals the reference', async () => {
  await runCase({ seed: 70, group: 2, pageSize: 16, headDim: 16, combine: 'sum', slabs: 3 });
  await runCase({ seed: 71, group: 1, pageSize: 32, headDim: 12, combine: 'max', slabs: 3 });
});

test('page selection on a head range of wider q rows equals the reference on the range alone', async () => {
  await runCase({ seed: 60, group: 4, pageSize: 32, headDim: 64, combine: 'sum', qHeadOffset: 0, qRowHeads: 12 });
  await runCase({ seed: 61, group: 1, pageSize: 16, headDim: 48, combine: 'max', qHeadOffset: 3, qRowHeads: 7 });
  await runCase({ seed: 62, group: 8, pageSize: 64, headDim: 36, combine: 'sum', qHeadOffset: 8, qRowHeads: 24 });
});

test("page selection under a sliding window: only the window's pages, newest forced, dense when they fit K", async () => {
  // windows shorter than some rows, not page multiples; one wider than every row (no effect); ties within a window
  await runCase({ seed: 70, group: 4, pageSize: 16, headDim: 64, combine: 'sum', window: 150 });
  await runCase({ seed: 71, group: 1, pageSize: 32, headDim: 48, combine: 'max', window: 700 });
  await runCase({ seed: 72, group: 8, pageSize: 64, headDim: 64, combine: 'sum', window: 1000 });
  await runCase({ seed: 73, group: 2, pageSize: 16, headDim: 32, combine: 'sum', window: 5000 });
  await runCase({ seed: 74, group: 4, pageSize: 16, headDim: 32, combine: 'sum', window: 200, constantKeys: true });
});

test('page selection breaks ties by the lower page index', async () => {
  await runCase({ seed: 50, group: 4, pageSize: 16, headDim: 32, combine: 'sum', constantKeys: true });
  await runCase({ seed: 51, group: 1, pageSize: 64, headDim: 64, combine: 'max', constantKeys: true });
});

/**
 * Planted needle: contexts 4k / 16k / 32k of random f16 keys (N(0, 1), head dim 64), digests built by the digest
 * kernel, one key per seed set to c * q (c = 4) of one query head at a random position; at budget 1024 (16 pages
 * of 64) the needle's page must be selected for that head's KV head, for all 20 seeds.
 */
async function needleRecall(numHeads: number, numKvHeads: number, combine: GqaCombine, c = 4): Promise<number> {
  const gpu = await testGpu();
  const rng = new Rng(7000 + numHeads * 10 + numKvHeads);
  const pageSize = 64;
  const logicalPageSize = 16;
  const headDim = 64;
  const contexts = [4096, 16384, 32768];
  const seeds = 20;
  const budget = 1024;
  // One shared pool of 32k random tokens; each (context, seed) row reads it through its own block table, with its
  // needle's page replaced by a private copy holding the needle.
  const poolPages = 32768 / pageSize;
  const numRows = contexts.length * seeds;
  const numPages = poolPages + numRows;
  const cache = emptyCache(numPages, { numKvHeads, headDim, pageSize });
  for (let pg = 0; pg < poolPages; pg++) {
    for (let s = 0; s < pageSize; s++) {
      for (let h = 0; h < numKvHeads; h++) writeSlot(cache, 'k', pg, s, h, rng.normalArray(headDim));
    }
  }
  const maxPagesPerSeq = poolPages;
  const blockTable = new Uint32Array(numRows * maxPagesPerSeq);
  const rowWords = new Uint32Array(numRows * 4);
  const q = rng.normalArray(numRows * numHeads * headDim);
  const group = numHeads / numKvHeads;
  const needles: { page: number; kvh: number }[] = [];
  const spans: { pages: Uint32Array; start: number; end: number }[] = [];
  for (let r = 0; r < numRows; r++) {
    const ctx = contexts[Math.floor(r / seeds)];
    const row = blockTable.subarray(r * maxPagesPerSeq, (r + 1) * maxPagesPerSeq);
    for (let i = 0; i < maxPagesPerSeq; i++) row[i] = i;
    const pos = rng.int(0, ctx - 1);
    const lp = Math.floor(pos / pageSize);
    const priv = poolPages + r;
    const n = pageSize * numKvHeads * headDim;
    cache.kWords.set(cache.kWords.subarray((lp * n) / 2, ((lp + 1) * n) / 2), (priv * n) / 2);
    cache.k.set(cache.k.subarray(lp * n, (lp + 1) * n), priv * n);
    row[lp] = priv;
    const h = rng.int(0, numHeads - 1);
    const kvh = Math.floor(h / group);
    const qh = q.subarray((r * numHeads + h) * headDim, (r * numHeads + h + 1) * headDim);
    writeSlot(
      cache,
      'k',
      priv,
      pos % pageSize,
      kvh,
      Array.from(qh, (x) => c * x),
    );
    needles.push({ page: lp, kvh });
    rowWords.set([r, ctx - 1, r, pagesKept(ctx, budget, pageSize)], 4 * r);
    spans.push({ pages: row, start: 0, end: ctx });
  }
  const { kCache } = uploadCache(gpu, cache);
  const digests = gpu.createBuffer('digests', digestBytes(numPages, pageSize, logicalPageSize, numKvHeads, headDim));
  // Digest entries: the pool once, plus every private page.
  const entries = digestEntries(
    [
      { pages: Uint32Array.from({ length: poolPages }, (_, i) => i), start: 0, end: 32768 },
      ...spans.map((s) => ({
        ...s,
        start: Math.floor(needles[spans.indexOf(s)].page * pageSize),
        end: Math.min(s.end, (needles[spans.indexOf(s)].page + 1) * pageSize),
      })),
    ],
    pageSize,
    logicalPageSize,
  );
  const maxSelected = budget / pageSize;
  const selected = gpu.createBuffer('selected', numRows * numKvHeads * maxSelected * 4);
  const counts = gpu.createBuffer('counts', numRows * numKvHeads * 4);
  const arena = new UniformArena(gpu);
  gpu.run((pass) => {
    new PageDigestKernel(gpu).encode(pass, arena, {
      kCache,
      entries: u32Buffer(gpu, entries),
      digests,
      numEntries: entries.length / 3,
      numKvHeads,
      headDim,
      pageSize,
      logicalPageSize,
    });
    new PageSelectKernel(gpu, { combine }).encode(pass, arena, {
      q: f32Buffer(gpu, q),
      digests,
      scores: gpu.createBuffer('scores', selectScoresBytes(numRows, numKvHeads, maxPagesPerSeq)),
      blockTable: u32Buffer(gpu, blockTable),
      rows: u32Buffer(gpu, rowWords),
      selectRows: u32Buffer(
        gpu,
        Uint32Array.from({ length: numRows }, (_, i) => i),
      ),
      selected,
      counts,
      numSelect: numRows,
      numHeads,
      numKvHeads,
      headDim,
      pageSize,
      logicalPageSize,
      maxPagesPerSeq,
      maxSelected,
    });
  }, arena);
  const sel = await gpu.readU32(selected, numRows * numKvHeads * maxSelected);
  const cnt = await gpu.readU32(counts, numRows * numKvHeads);
  assertNoGpuErrors(gpu);
  arena.destroy();
  let found = 0;
  needles.forEach((nd, r) => {
    const sb = r * numKvHeads + nd.kvh;
    assert.equal(cnt[sb], maxSelected);
    if (Array.from(sel.subarray(sb * maxSelected, (sb + 1) * maxSelected)).includes(nd.page)) found++;
  });
  return found / numRows;
}

test('planted needle is always selected at budget 1024 over 4k/16k/32k contexts (20 seeds): MHA and GQA 4:1', async () => {
  assert.equal(await needleRecall(2, 2, 'sum'), 1, 'MHA recall');
  assert.equal(await needleRecall(4, 1, 'sum'), 1, 'GQA 4:1 recall (sum)');
  assert.equal(await needleRecall(4, 1, 'max'), 1, 'GQA 4:1 recall (max)');
});

export { needleRecall };
