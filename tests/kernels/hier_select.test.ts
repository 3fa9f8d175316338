/**
 * The digest hierarchy (shaders/digest_levels.wgsl with lib/f16_keys.wgsl) and hierarchical page selection
 * (shaders/hier_select.wgsl with lib/quest_bound.wgsl) against
 * their references (tests/reference/hier_select.ts) on seeded random shapes: page sizes, logical pages, fans and
 * head dims that are not multiples of the tiles, shuffled block tables, rows and slots; then planted needles at
 * 256k and 1M tokens (recall at budget 1024), and the property that the descent equals exhaustive scoring whenever
 * its margin covers it, with and without a sliding window (Gemma's local layers: only the window's pages are
 * candidates). The page digests and the hierarchy also run split into slabs of a few pages / slots
 * (shaders/lib/slabs.ts).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pagesKept } from '../../model/attention/budget.js';
import { DigestLevelsKernel, hierarchyRows, levelEntries, levelsBytes } from '../../shaders/digest_levels.js';
import { type HierarchyConfig, HierSelectKernel, hierScratchBytes, hierStrides } from '../../shaders/hier_select.js';
import { digestBytes } from '../../shaders/page_digest.js';
import type { GqaCombine } from '../../shaders/page_select.js';
import { type Gpu, UniformArena } from '../../shaders/runtime.js';
import { assertNoGpuErrors, f32Buffer, testGpu, u32Buffer } from '../helpers/gpu.js';
import { Rng } from '../helpers/rng.js';
import { poolOf, readPool } from '../helpers/slabs.js';
import { roundF16, toF16Bits } from '../helpers/sparse-cache.js';
import {
  certifiedRef,
  hierSelectRef,
  type SeqLevels,
  seqLevelsRef,
  slotLevelValues,
} from '../reference/hier_select.js';
import { type DigestShape, digestOffset, digestWordsRef } from '../reference/page_digest.js';
import {
  firstWindowPage,
  keptCount,
  pageScoresRef,
  type SelectRow,
  type SelectShape,
  topPagesRef,
} from '../reference/page_select.js';

const SENTINEL = 0xdeadbeef;

function shuffle<T>(rng: Rng, xs: T[]): T[] {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = rng.int(0, i);
    [xs[i], xs[j]] = [xs[j], xs[i]];
  }
  return xs;
}

/** Logical-page digests of `numPages` pages with min <= max per channel; integers in [-lim, lim] when `ints`. */
function randomDigests(rng: Rng, s: DigestShape, numPages: number, ints: boolean): Float32Array {
  const lpp = s.pageSize / s.logicalPageSize;
  const out = new Float32Array(numPages * lpp * s.numKvHeads * 2 * s.headDim);
  for (let o = 0; o < out.length; o += 2 * s.headDim) {
    for (let d = 0; d < s.headDim; d++) {
      const a = ints ? rng.int(-6, 6) : roundF16(rng.normal());
      const b = ints ? rng.int(-6, 6) : roundF16(rng.normal());
      out[o + d] = Math.min(a, b);
      out[o + s.headDim + d] = Math.max(a, b);
    }
  }
  return out;
}

interface Seqs {
  lens: number[];
  maxPagesPerSeq: number;
  numPages: number;
  blockTable: Uint32Array; // (numSeqs, maxPagesPerSeq), shuffled physical pages
}

function randomSeqs(rng: Rng, lens: number[], pageSize: number, extraPages: number): Seqs {
  const pagesOf = lens.map((l) => Math.ceil(l / pageSize));
  const maxPagesPerSeq = Math.max(...pagesOf) + extraPages;
  const numPages = pagesOf.reduce((a, b) => a + b, 0) + 1;
  const physical = shuffle(
    rng,
    Array.from({ length: numPages }, (_, i) => i),
  );
  const blockTable = new Uint32Array(lens.length * maxPagesPerSeq).fill(physical[numPages - 1]);
  let next = 0;
  lens.forEach((_, s) => {
    for (let i = 0; i < pagesOf[s]; i++) blockTable[s * maxPagesPerSeq + i] = physical[next++];
  });
  return { lens, maxPagesPerSeq, numPages, blockTable };
}

interface LevelCase {
  seed: number;
  pageSize: number;
  logicalPageSize: number;
  headDim: number;
  fan1: number;
  fan2: number;
  /** Page digests and the hierarchy's slots in this many slabs each (default one buffer). */
  slabs?: number;
}

test('digest_levels: coarse digests equal the reference after chunked writes and decode steps', async () => {
  const gpu = await testGpu();
  const cases: LevelCase[] = [
    { seed: 1, pageSize: 16, logicalPageSize: 16, headDim: 8, fan1: 4, fan2: 16 },
    { seed: 2, pageSize: 64, logicalPageSize: 16, headDim: 12, fan1: 3, fan2: 5 },
    { seed: 3, pageSize: 32, logicalPageSize: 8, headDim: 64, fan1: 2, fan2: 3 },
  ];
  for (const c of cases) await levelCase(gpu, c);
});

test('digest_levels: page digests in 3 slabs of whole pages, the hierarchy in 2 slabs of whole slots', async () => {
  await levelCase(await testGpu(), {
    seed: 4,
    pageSize: 16,
    logicalPageSize: 8,
    headDim: 8,
    fan1: 3,
    fan2: 4,
    slabs: 3,
  });
});

async function levelCase(gpu: Gpu, c: LevelCase): Promise<void> {
  const rng = new Rng(c.seed);
  const numKvHeads = rng.int(1, 3);
  const s: DigestShape = { pageSize: c.pageSize, logicalPageSize: c.logicalPageSize, numKvHeads, headDim: c.headDim };
  const lens = [rng.int(1, 5 * c.pageSize), rng.int(40 * c.pageSize, 90 * c.pageSize) + 1, 24 * c.pageSize];
  const seqs = randomSeqs(rng, lens, c.pageSize, 3);
  const digests = randomDigests(rng, s, seqs.numPages, false);
  const slots = [2, 0, 3];
  const numSlots = 4;
  const rows = hierarchyRows(seqs.maxPagesPerSeq, c.fan1, c.fan2);
  const perBlock = numKvHeads * 2 * c.headDim;
  const levelWords = (numSlots * rows.blocksPerSlot * perBlock) / 2;
  const levels = poolOf(
    gpu,
    'levels',
    new Uint32Array(levelWords).fill(SENTINEL),
    (levelWords * 4) / numSlots,
    c.slabs ? 2 : 1,
  );
  const kernel = new DigestLevelsKernel(gpu);
  const table = u32Buffer(gpu, seqs.blockTable);
  const dWords = digestWordsRef(digests, c.headDim);
  const dBuf = poolOf(gpu, 'digests', dWords, dWords.byteLength / seqs.numPages, c.slabs ?? 1);
  // Each sequence: a prefill chunk, a second chunk, then single-token decode steps; blocks recomputed per step.
  const cuts = lens.map((len) => {
    const a = rng.int(0, len);
    const b = rng.int(a, len);
    return [a, b, ...Array.from({ length: Math.min(len - b, 5) }, (_, i) => len - Math.min(len - b, 5) + i + 1)];
  });
  const steps = Math.max(...cuts.map((x) => x.length));
  let prev = lens.map(() => 0);
  for (let st = 0; st < steps; st++) {
    const spans = lens.flatMap((_, i) => {
      const end = cuts[i][Math.min(st, cuts[i].length - 1)];
      const span = { blockRow: i, slot: slots[i], start: prev[i], end };
      return end > prev[i] ? [span] : [];
    });
    prev = lens.map((_, i) => Math.max(prev[i], cuts[i][Math.min(st, cuts[i].length - 1)]));
    if (spans.length === 0) continue;
    // entries are built for the current lengths: the reference below compares the final state
    const e = levelEntries(spans, c.pageSize, c.fan1, c.fan2);
    const arena = new UniformArena(gpu);
    gpu.run((pass) => {
      kernel.encode(pass, arena, {
        digests: dBuf,
        blockTable: table,
        entries: u32Buffer(gpu, e),
        levels,
        numKvHeads,
        headDim: c.headDim,
        pageSize: c.pageSize,
        logicalPageSize: c.logicalPageSize,
        maxPagesPerSeq: seqs.maxPagesPerSeq,
        fan1: c.fan1,
        fan2: c.fan2,
        grid: { entries: e[0] },
      });
    }, arena);
  }
  const got = new Uint32Array((await readPool(gpu, levels)).buffer, 0, levelWords);
  assertNoGpuErrors(gpu);
  const slotWords = (rows.blocksPerSlot * perBlock) / 2;
  for (let i = 0; i < lens.length; i++) {
    const lv = seqLevelsRef(digests, s, seqs.blockTable, seqs.maxPagesPerSeq, i, lens[i], { ...c, margin: 0 });
    const want = digestWordsRef(slotLevelValues(lv, rows.n1, rows.n2, perBlock), c.headDim);
    const base = slots[i] * slotWords;
    const n1 = lv.level1.length;
    const check = (row: number, what: string) => {
      for (let w = 0; w < perBlock / 2; w++) {
        const o = row * (perBlock / 2) + w;
        assert.equal(got[base + o], want[o], `seed=${c.seed} seq=${i} len=${lens[i]} ${what} word ${w}`);
      }
    };
    for (let b = 0; b < n1; b++) check(b, `level1[${b}]`);
    for (let b = 0; b < lv.level2.length; b++) check(rows.n1 + b, `level2[${b}]`);
    // rows past the sequence stay untouched
    if (n1 < rows.n1) assert.equal(got[base + n1 * (perBlock / 2)], SENTINEL, `seed=${c.seed} seq=${i}: wrote past`);
  }
  const free = 1; // slot 1 belongs to no sequence
  assert.ok(
    got.subarray(free * slotWords, (free + 1) * slotWords).every((w) => w === SENTINEL),
    'free slot written',
  );
}

interface SelectCase {
  seed: number;
  pageSize: number;
  logicalPageSize: number;
  headDim: number;
  group: number;
  combine: GqaCombine;
  hierarchy: HierarchyConfig;
  /** Page digests in this many slabs of whole pages, the hierarchy in 3 slabs of whole slots (default: buffers). */
  slabs?: number;
  /** The layer's sliding window in tokens (default none). */
  window?: number;
}

/** Uploads a levels buffer holding each sequence's reference coarse digests in its slot. */
function levelsFor(
  lvs: SeqLevels[],
  slots: number[],
  numSlots: number,
  rows: ReturnType<typeof hierarchyRows>,
  perBlock: number,
  headDim: number,
): Uint32Array {
  const vals = new Float32Array(numSlots * rows.blocksPerSlot * perBlock);
  lvs.forEach((lv, i) => {
    vals.set(slotLevelValues(lv, rows.n1, rows.n2, perBlock), slots[i] * rows.blocksPerSlot * perBlock);
  });
  return digestWordsRef(vals, headDim);
}

test('hier_select: the descent equals the reference on integer-valued digests (exact ties)', async () => {
  const gpu = await testGpu();
  const cases: SelectCase[] = [
    {
      seed: 11,
      pageSize: 16,
      logicalPageSize: 16,
      headDim: 8,
      group: 1,
      combine: 'sum',
      hierarchy: { fan1: 2, fan2: 3, margin: 0 },
    },
    {
      seed: 12,
      pageSize: 64,
      logicalPageSize: 16,
      headDim: 12,
      group: 4,
      combine: 'sum',
      hierarchy: { fan1: 4, fan2: 16, margin: 3 },
    },
    {
      seed: 13,
      pageSize: 32,
      logicalPageSize: 8,
      headDim: 64,
      group: 2,
      combine: 'max',
      hierarchy: { fan1: 3, fan2: 5, margin: 1 },
    },
    {
      seed: 14,
      pageSize: 16,
      logicalPageSize: 16,
      headDim: 16,
      group: 3,
      combine: 'sum',
      hierarchy: { fan1: 4, fan2: 4, margin: 2 },
    },
  ];
  for (const c of cases) await selectCase(gpu, c);
});

test('hier_select: a sliding-window layer selects among the window pages only, as the reference', async () => {
  const gpu = await testGpu();
  // rows of 200-300, 1-9, 120, 30-60 and 60-90 pages: the window cuts the long ones mid-page, the short ones not
  await selectCase(gpu, {
    seed: 16,
    pageSize: 16,
    logicalPageSize: 8,
    headDim: 8,
    group: 2,
    combine: 'sum',
    hierarchy: { fan1: 2, fan2: 3, margin: 1 },
    window: 100 * 16 + 5,
  });
  await selectCase(gpu, {
    seed: 17,
    pageSize: 32,
    logicalPageSize: 8,
    headDim: 16,
    group: 1,
    combine: 'max',
    hierarchy: { fan1: 2, fan2: 4, margin: 1 },
    window: 150 * 32,
    slabs: 3,
  });
});

test('hier_select: the descent over page digests in 4 slabs and the hierarchy in 3 slabs equals the reference', async () => {
  await selectCase(await testGpu(), {
    seed: 15,
    pageSize: 16,
    logicalPageSize: 8,
    headDim: 8,
    group: 2,
    combine: 'sum',
    hierarchy: { fan1: 3, fan2: 4, margin: 1 },
    slabs: 4,
  });
});

async function selectCase(gpu: Gpu, c: SelectCase): Promise<void> {
  const rng = new Rng(c.seed);
  const { pageSize, headDim, group } = c;
  const h = c.hierarchy;
  const numKvHeads = rng.int(1, 2);
  const numHeads = numKvHeads * group;
  const s: DigestShape = { pageSize, logicalPageSize: c.logicalPageSize, numKvHeads, headDim };
  const lens = [
    rng.int(200 * pageSize, 300 * pageSize) + 5,
    rng.int(1, 9 * pageSize),
    120 * pageSize, // ends on a page boundary
    rng.int(30 * pageSize, 60 * pageSize),
    rng.int(60 * pageSize, 90 * pageSize) + 1,
  ];
  const budgets = [
    rng.int(3, 12) * pageSize + rng.int(0, pageSize - 1),
    Number.POSITIVE_INFINITY, // dense
    rng.int(10, 25) * pageSize,
    0, // sink + newest only
    70 * pageSize, // most pages
  ];
  const seqs = randomSeqs(rng, lens, pageSize, 2);
  const digests = randomDigests(rng, s, seqs.numPages, true);
  const numRows = lens.length;
  const slotOf = [4, 0, 2, 5, 1];
  const numSlots = 6;
  const rowOrder = shuffle(rng, [0, 1, 2, 3, 4]); // block-table row of row i
  const table = new Uint32Array(numRows * seqs.maxPagesPerSeq);
  rowOrder.forEach((br, i) => {
    table.set(
      seqs.blockTable.subarray(i * seqs.maxPagesPerSeq, (i + 1) * seqs.maxPagesPerSeq),
      br * seqs.maxPagesPerSeq,
    );
  });
  const rows: SelectRow[] = lens.map((len, i) => ({
    blockRow: rowOrder[i],
    position: len - 1,
    pagesKept: pagesKept(len, budgets[i], pageSize),
  }));
  const rowWords = new Uint32Array(numRows * 4);
  rows.forEach((r, i) => {
    rowWords.set([r.blockRow, r.position, slotOf[i], r.pagesKept], 4 * i);
  });
  const selectRows = [4, 0, 1, 2]; // row 3 keeps its old selection
  const maxSelected = seqs.maxPagesPerSeq;
  const q = Float32Array.from({ length: numRows * numHeads * headDim }, () => rng.int(-3, 3));
  const hr = hierarchyRows(seqs.maxPagesPerSeq, h.fan1, h.fan2);
  const perBlock = numKvHeads * 2 * headDim;
  const lvs = lens.map((len, i) => seqLevelsRef(digests, s, seqs.blockTable, seqs.maxPagesPerSeq, i, len, h));
  const strides = hierStrides(h, seqs.maxPagesPerSeq, maxSelected);
  const sb = hierScratchBytes(selectRows.length, numKvHeads, strides);
  const selected = u32Buffer(gpu, new Uint32Array(numSlots * numKvHeads * maxSelected).fill(SENTINEL));
  const counts = u32Buffer(gpu, new Uint32Array(numSlots * numKvHeads).fill(SENTINEL));
  const kernel = new HierSelectKernel(gpu, { combine: c.combine, hierarchy: h });
  const arena = new UniformArena(gpu);
  const dWords = digestWordsRef(digests, headDim);
  const lWords = levelsFor(lvs, slotOf, numSlots, hr, perBlock, headDim);
  gpu.run((pass) => {
    kernel.encode(pass, arena, {
      q: f32Buffer(gpu, q),
      digests: poolOf(gpu, 'digests', dWords, dWords.byteLength / seqs.numPages, c.slabs ?? 1),
      levels: poolOf(gpu, 'levels', lWords, lWords.byteLength / numSlots, c.slabs ? 3 : 1),
      blockTable: u32Buffer(gpu, table),
      rows: u32Buffer(gpu, rowWords),
      selectRows: u32Buffer(gpu, selectRows),
      selected,
      counts,
      keys: gpu.createBuffer('keys', sb.keys),
      ids: gpu.createBuffer('ids', sb.keys),
      candA: gpu.createBuffer('candA', sb.cand),
      candB: gpu.createBuffer('candB', sb.cand),
      numSelect: selectRows.length,
      numHeads,
      numKvHeads,
      headDim,
      pageSize,
      logicalPageSize: c.logicalPageSize,
      maxPagesPerSeq: seqs.maxPagesPerSeq,
      maxSelected,
      window: c.window,
    });
  }, arena);
  const gotSel = await gpu.readU32(selected);
  const gotCnt = await gpu.readU32(counts);
  assertNoGpuErrors(gpu);
  const sshape: SelectShape = { ...s, numHeads, maxPagesPerSeq: seqs.maxPagesPerSeq, maxSelected };
  let dropped = 0;
  let cut = 0;
  const w = c.window ?? 0;
  for (let r = 0; r < numRows; r++) {
    for (let kvh = 0; kvh < numKvHeads; kvh++) {
      const sbase = slotOf[r] * numKvHeads + kvh;
      const what = `seed=${c.seed} row=${r} len=${lens[r]} budget=${budgets[r]} kvh=${kvh}`;
      if (!selectRows.includes(r)) {
        assert.equal(gotCnt[sbase], SENTINEL, `${what}: a row that does not reselect was written`);
        continue;
      }
      const K = keptCount(sshape, rows[r], w);
      // the reference walks sequence r's own block-table row (before the shuffle)
      const refRow = { ...rows[r], blockRow: r };
      const scores = pageScoresRef(q, digests, seqs.blockTable, sshape, r, refRow, kvh, c.combine, w);
      const want = hierSelectRef(q, lvs[r], scores, sshape, r, refRow, kvh, c.combine, h, w);
      dropped += want.dropped.length;
      const first = firstWindowPage(lens[r] - 1, pageSize, w);
      const sink = w === 0 || lens[r] <= w;
      if (first > 0) {
        cut++;
        assert.ok(want.pages[0] >= first, `${what}: the reference kept a page before the window`);
      }
      assert.equal(gotCnt[sbase], K, `${what}: count`);
      const got = Array.from(gotSel.subarray(sbase * maxSelected, sbase * maxSelected + K));
      assert.deepEqual(got, want.pages, `${what}: pages`);
      if (K < maxSelected) assert.equal(gotSel[sbase * maxSelected + K], SENTINEL, `${what}: wrote past K`);
      const exhaustive = topPagesRef(scores, K, first, sink);
      if (certifiedRef(want, exhaustive, scores, Math.ceil(lens[r] / pageSize), sink)) {
        assert.deepEqual(got, exhaustive, `${what}: certified descent differs from exhaustive scoring`);
      }
    }
  }
  assert.ok(dropped > 0, `seed=${c.seed}: the descent dropped no block (the case does not exercise the hierarchy)`);
  if (w > 0) assert.ok(cut > 0, `seed=${c.seed}: the window cut no row`);
}

test('hierarchical selection equals exhaustive scoring whenever the margin covers it (property, reference)', () => {
  const rng = new Rng(77);
  let certified = 0;
  let differed = 0;
  for (let trial = 0; trial < 300; trial++) {
    const pageSize = rng.pick([16, 32]);
    const logicalPageSize = rng.pick([8, 16]);
    const headDim = rng.pick([4, 6, 8]);
    const numKvHeads = 1;
    const group = rng.int(1, 3);
    const h = { fan1: rng.int(2, 4), fan2: rng.int(2, 6), margin: rng.int(0, 6) };
    const s: DigestShape = { pageSize, logicalPageSize, numKvHeads, headDim };
    const len = rng.int(20 * pageSize, 150 * pageSize);
    const seqs = randomSeqs(rng, [len], pageSize, 0);
    const digests = randomDigests(rng, s, seqs.numPages, false);
    // planted structure: a few pages with wide digests, so bounds differ between blocks
    for (let n = 0; n < 3; n++) {
      const o = digestOffset(s, rng.int(0, seqs.numPages - 1), 0, 0);
      for (let d = 0; d < headDim; d++) {
        digests[o + d] -= 3;
        digests[o + headDim + d] += 3;
      }
    }
    const q = rng.normalArray(group * headDim);
    const sshape: SelectShape = {
      ...s,
      numHeads: group,
      maxPagesPerSeq: seqs.maxPagesPerSeq,
      maxSelected: seqs.maxPagesPerSeq,
    };
    const row: SelectRow = { blockRow: 0, position: len - 1, pagesKept: rng.int(2, 12) };
    const combine = rng.pick(['sum', 'max'] as const);
    // half the trials in a sliding-window layer: only the window's pages are candidates
    const w = trial % 2 ? rng.int(4 * pageSize, len + pageSize) : 0;
    const first = firstWindowPage(len - 1, pageSize, w);
    const sink = w === 0 || len <= w;
    const lv = seqLevelsRef(digests, s, seqs.blockTable, seqs.maxPagesPerSeq, 0, len, h);
    const scores = pageScoresRef(q, digests, seqs.blockTable, sshape, 0, row, 0, combine, w);
    const K = keptCount(sshape, row, w);
    const exhaustive = topPagesRef(scores, K, first, sink);
    const d = hierSelectRef(q, lv, scores, sshape, 0, row, 0, combine, h, w);
    if (certifiedRef(d, exhaustive, scores, Math.ceil(len / pageSize), sink)) {
      certified++;
      assert.deepEqual(d.pages, exhaustive, `trial ${trial}: certified but differs (window ${w})`);
    } else if (d.pages.join() !== exhaustive.join()) differed++;
    // a margin that keeps every block is exhaustive scoring
    const all = hierSelectRef(q, lv, scores, sshape, 0, row, 0, combine, { ...h, margin: seqs.maxPagesPerSeq }, w);
    assert.deepEqual(all.pages, exhaustive, `trial ${trial}: full margin differs (window ${w})`);
    // every coarse bound bounds the pages below it
    lv.level1.forEach((a, b) => {
      const bound = boundOf(q, a, sshape, combine);
      for (let i = b * h.fan1; i < Math.min((b + 1) * h.fan1, scores.length); i++) {
        assert.ok(
          bound >= scores[i] - 1e-9,
          `trial ${trial}: level-1 block ${b} bound ${bound} < page ${i} ${scores[i]}`,
        );
      }
    });
  }
  assert.ok(certified > 100, `only ${certified} of 300 trials certified`);
  assert.ok(
    differed > 0 || certified === 300,
    'uncertified trials always agreed: the certificate is never tested against a miss',
  );
});

function boundOf(q: Float32Array, a: Float32Array, s: SelectShape, combine: 'sum' | 'max'): number {
  const group = s.numHeads / s.numKvHeads;
  let sc = combine === 'sum' ? 0 : Number.NEGATIVE_INFINITY;
  for (let g = 0; g < group; g++) {
    let b = 0;
    for (let d = 0; d < s.headDim; d++)
      b += Math.max(q[g * s.headDim + d] * a[d], q[g * s.headDim + d] * a[s.headDim + d]);
    sc = combine === 'sum' ? sc + b : Math.max(sc, b);
  }
  return sc;
}

for (const tokens of [262144, 1048576]) {
  test(`hier_select: planted needles at ${tokens} tokens are all selected at budget 1024`, async () => {
    const gpu = await testGpu();
    const rng = new Rng(tokens);
    const pageSize = 64;
    const logicalPageSize = 16;
    const headDim = 64;
    const numKvHeads = 1;
    const group = 4;
    const numHeads = numKvHeads * group;
    const len = tokens - rng.int(1, 40);
    const P = Math.ceil(len / pageSize);
    const lpp = pageSize / logicalPageSize;
    const s: DigestShape = { pageSize, logicalPageSize, numKvHeads, headDim };
    // identity block table; noise digests [-u, u] with u in [0, 2) per channel, needles [-2.5, 2.5] aligned with q
    const q = rng.normalArray(numHeads * headDim);
    const sumQ = new Float32Array(headDim);
    for (let g = 0; g < group; g++) for (let d = 0; d < headDim; d++) sumQ[d] += q[g * headDim + d];
    const words = new Uint32Array(digestBytes(P, pageSize, logicalPageSize, numKvHeads, headDim) / 4);
    const f16 = new Uint16Array(words.buffer);
    const half = (x: number) => toF16Bits(x);
    for (let o = 0; o < f16.length; o += 2 * headDim) {
      for (let d = 0; d < headDim; d++) {
        const u = rng.next() * 2;
        f16[o + d] = half(-u);
        f16[o + headDim + d] = half(u);
      }
    }
    const needles = new Set<number>();
    while (needles.size < 8) needles.add(rng.int(1, P - 2));
    for (const page of needles) {
      const o = digestOffset(s, page, rng.int(0, lpp - 1), 0);
      for (let d = 0; d < headDim; d++) {
        f16[o + d] = half(sumQ[d] < 0 ? -2.5 : 0);
        f16[o + headDim + d] = half(sumQ[d] > 0 ? 2.5 : 0);
      }
    }
    const h = { fan1: 4, fan2: 16, margin: 16 };
    const maxPagesPerSeq = P;
    const hr = hierarchyRows(maxPagesPerSeq, h.fan1, h.fan2);
    const levels = gpu.createBuffer('levels', levelsBytes(1, hr.blocksPerSlot, numKvHeads, headDim));
    const table = u32Buffer(
      gpu,
      Uint32Array.from({ length: P }, (_, i) => i),
    );
    const dBuf = u32Buffer(gpu, words);
    const e = levelEntries([{ blockRow: 0, slot: 0, start: 0, end: len }], pageSize, h.fan1, h.fan2);
    const budget = 1024;
    const K = pagesKept(len, budget, pageSize);
    const maxSelected = K;
    const strides = hierStrides(h, maxPagesPerSeq, maxSelected);
    const sb = hierScratchBytes(1, numKvHeads, strides);
    const selected = gpu.createBuffer('selected', maxSelected * 4);
    const counts = gpu.createBuffer('counts', 4);
    const arena = new UniformArena(gpu);
    gpu.run((pass) => {
      new DigestLevelsKernel(gpu).encode(pass, arena, {
        digests: dBuf,
        blockTable: table,
        entries: u32Buffer(gpu, e),
        levels,
        numKvHeads,
        headDim,
        pageSize,
        logicalPageSize,
        maxPagesPerSeq,
        fan1: h.fan1,
        fan2: h.fan2,
        grid: { entries: e[0] },
      });
      new HierSelectKernel(gpu, { hierarchy: h }).encode(pass, arena, {
        q: f32Buffer(gpu, q),
        digests: dBuf,
        levels,
        blockTable: table,
        rows: u32Buffer(gpu, [0, len - 1, 0, K]),
        selectRows: u32Buffer(gpu, [0]),
        selected,
        counts,
        keys: gpu.createBuffer('keys', sb.keys),
        ids: gpu.createBuffer('ids', sb.keys),
        candA: gpu.createBuffer('candA', sb.cand),
        candB: gpu.createBuffer('candB', sb.cand),
        numSelect: 1,
        numHeads,
        numKvHeads,
        headDim,
        pageSize,
        logicalPageSize,
        maxPagesPerSeq,
        maxSelected,
      });
    }, arena);
    const got = Array.from(await gpu.readU32(selected, K));
    const cnt = (await gpu.readU32(counts, 1))[0];
    assertNoGpuErrors(gpu);
    assert.equal(cnt, K);
    assert.ok(got.includes(0) && got.includes(P - 1), 'sink or newest page missing');
    const missed = [...needles].filter((n) => !got.includes(n));
    assert.deepEqual(missed, [], `needles missed at ${tokens} tokens (recall ${(8 - missed.length) / 8})`);
  });
}
