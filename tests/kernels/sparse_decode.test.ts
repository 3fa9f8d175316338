/**
 * Top-k decode attention against references: both variants (shaders/sparse_decode.wgsl, shaders/sparse_decode_lanes.wgsl,
 * sharing sparse_decode_common.wgsl) and the split reduction (shaders/sparse_decode_reduce.wgsl) run on every case.
 * The caches in one buffer each or split into slabs of a few pages (shaders/lib/slabs.ts).
 * The selection and schedule above the kernels: tests/model/attention/sparse-decode.test.ts.
 */
import { test } from 'node:test';
import { UniformArena } from '../../shaders/runtime.js';
import { partialsBytes, SparseDecodeKernel, type SparseDecodeVariant } from '../../shaders/sparse_decode.js';
import { assertClose } from '../helpers/compare.js';
import { assertNoGpuErrors, f32Buffer, testGpu, u32Buffer } from '../helpers/gpu.js';
import { Rng } from '../helpers/rng.js';
import { makeSeqCache, poisonPage, poisonSlot, uploadCache } from '../helpers/sparse-cache.js';
import { sparseDecodeRef } from '../reference/sparse_decode.js';

// f32 dot products (head dim <= 128) and an f32 online softmax over up to a few thousand keys of f16 values,
// against f64 on the same f16 values: the output is a convex combination of N(0, 1) values, errors are absolute,
// ~1e-7 typically. The same bound holds between the sparse kernel and the dense kernel.
const TOL = { atol: 2e-5, rtol: 1e-4 };
const VARIANTS: SparseDecodeVariant[] = ['lanes', 'workgroup'];

/**
 * Given page lists (some without the newest page, as a reused selection), unselected pages and unused slots full
 * of NaN: the kernel equals the reference over exactly the listed pages plus the newest page.
 */
async function listCase(
  seed: number,
  group: number,
  pageSize: number,
  headDim: number,
  splitTokens: number,
  range?: { qHeadOffset: number; qRowHeads: number },
  mods: { window?: number; softcap?: number } = {},
  slabs = 1,
): Promise<void> {
  const gpu = await testGpu();
  const rng = new Rng(seed);
  const numKvHeads = rng.int(1, 2);
  const numHeads = numKvHeads * group;
  const lens = [
    rng.int(1, 40) * pageSize + rng.int(1, pageSize - 1),
    rng.int(2, 30) * pageSize,
    rng.int(1, pageSize),
    rng.int(500, 2000),
  ];
  const cache = makeSeqCache(rng, lens, { numKvHeads, headDim, pageSize });
  const numRows = lens.length;
  const maxSelected = 24;
  const numSlots = numRows;
  const lists: number[][] = []; // (row, kvh) -> page columns stored in the selection
  const selected = new Uint32Array(numSlots * numKvHeads * maxSelected).fill(0xffffffff);
  const counts = new Uint32Array(numSlots * numKvHeads);
  const keep = lens.map(() => new Set<number>());
  for (let r = 0; r < numRows; r++) {
    const P = Math.ceil(lens[r] / pageSize);
    for (let h = 0; h < numKvHeads; h++) {
      const pick = Array.from({ length: P }, (_, i) => i).filter(() => rng.next() < 0.4);
      if (rng.next() < 0.5 && !pick.includes(P - 1)) pick.push(P - 1); // else: a reused list without the newest page
      const list = pick.slice(0, maxSelected).sort((a, b) => a - b);
      if (!list.length && P > 1) list.push(0);
      lists.push(list);
      selected.set(list, (r * numKvHeads + h) * maxSelected);
      counts[r * numKvHeads + h] = list.length;
      for (const i of list) keep[r].add(i);
      keep[r].add(P - 1);
    }
  }
  // Pages no head of the row attends to hold NaN: reading any of them would show.
  for (let r = 0; r < numRows; r++) {
    const P = Math.ceil(lens[r] / pageSize);
    for (let i = 0; i < P; i++) if (!keep[r].has(i)) poisonPage(cache, cache.blockTable[r * cache.maxPagesPerSeq + i]);
  }
  // A sliding window: every slot of the row older than its window holds NaN, listed pages too.
  if (mods.window) {
    for (let r = 0; r < numRows; r++) {
      for (let j = 0; j < lens[r] - mods.window; j++) {
        poisonSlot(cache, cache.blockTable[r * cache.maxPagesPerSeq + Math.floor(j / pageSize)], j % pageSize);
      }
    }
  }
  const rows = lens.map((len, r) => ({ blockRow: r, position: len - 1 }));
  const rowWords = new Uint32Array(numRows * 4);
  rows.forEach((r, i) => {
    rowWords.set([r.blockRow, r.position, i, 0], 4 * i);
  });
  const q = rng.normalArray(numRows * numHeads * headDim);
  const scale = rng.next() < 0.5 ? 1 / Math.sqrt(headDim) : 0.3;
  const want = sparseDecodeRef(
    q,
    cache.k,
    cache.v,
    cache.blockTable,
    rows,
    (r, kvh) => {
      const l = lists[r * numKvHeads + kvh];
      const newest = Math.floor(rows[r].position / pageSize);
      return l.includes(newest) ? l : [...l, newest];
    },
    { numHeads, numKvHeads, headDim, pageSize, maxPagesPerSeq: cache.maxPagesPerSeq },
    scale,
    mods,
  );
  const { kCache, vCache } = uploadCache(gpu, cache, slabs);
  const arena = new UniformArena(gpu);
  // With a head range q / out rows hold rowHeads heads: q's other heads are NaN, out's other heads a sentinel.
  const off = range?.qHeadOffset ?? 0;
  const rowHeads = range?.qRowHeads ?? numHeads;
  const widen = (x: Float32Array, fill: number) => {
    const w = new Float32Array(numRows * rowHeads * headDim).fill(fill);
    for (let r = 0; r < numRows; r++) {
      w.set(x.subarray(r * numHeads * headDim, (r + 1) * numHeads * headDim), (r * rowHeads + off) * headDim);
    }
    return w;
  };
  const OUT_SENTINEL = 12345.5;
  const qWide = widen(q, Number.NaN);
  const wantWide = widen(want, OUT_SENTINEL);
  for (const variant of VARIANTS) {
    const kernel = new SparseDecodeKernel(gpu, { variant, splitTokens });
    const { numSplits, pagesPerSplit } = kernel.splitPlan(maxSelected + 1, pageSize);
    const out = f32Buffer(gpu, new Float32Array(numRows * rowHeads * headDim).fill(OUT_SENTINEL));
    arena.reset();
    gpu.run((pass) => {
      kernel.encode(pass, arena, {
        q: f32Buffer(gpu, qWide),
        qHeadOffset: range?.qHeadOffset,
        qRowHeads: range?.qRowHeads,
        kCache,
        vCache,
        blockTable: u32Buffer(gpu, cache.blockTable),
        rows: u32Buffer(gpu, rowWords),
        selected: u32Buffer(gpu, selected),
        counts: u32Buffer(gpu, counts),
        partials: gpu.createBuffer('partials', partialsBytes(numRows, numHeads, numSplits, headDim)),
        out,
        numRows,
        numHeads,
        numKvHeads,
        headDim,
        pageSize,
        maxPagesPerSeq: cache.maxPagesPerSeq,
        maxSelected,
        numSplits,
        pagesPerSplit,
        scale,
        ...mods,
      });
    }, arena);
    const got = await gpu.readF32(out, wantWide.length);
    assertNoGpuErrors(gpu);
    assertClose(
      got,
      wantWide,
      TOL,
      `sparse ${variant} seed=${seed} slabs=${slabs} window=${mods.window ?? 0} softcap=${mods.softcap ?? 0} heads=${numHeads}/${numKvHeads} range=${off}+${numHeads}/${rowHeads} hd=${headDim} page=${pageSize} splits=${numSplits}x${pagesPerSplit}`,
    );
  }
  arena.destroy();
}

test('sparse decode over given page lists equals the reference over only those pages; NaN pages never leak', async () => {
  let seed = 100;
  for (const [group, pageSize, headDim, splitTokens] of [
    [1, 16, 64, 16],
    [4, 32, 48, 64],
    [8, 64, 128, 512],
    [2, 64, 36, 64],
    [4, 16, 80, 1000],
  ]) {
    await listCase(seed++, group, pageSize, headDim, splitTokens);
  }
});

test('sparse decode on a head range of wider q/out rows: the range equals the reference, other heads untouched', async () => {
  await listCase(200, 4, 32, 48, 64, { qHeadOffset: 0, qRowHeads: 16 });
  await listCase(201, 1, 16, 64, 32, { qHeadOffset: 3, qRowHeads: 6 });
  await listCase(202, 2, 64, 36, 512, { qHeadOffset: 2, qRowHeads: 9 });
});

test('sparse decode under a sliding window: keys older than the window (NaN, listed pages too) never read; soft-cap', async () => {
  await listCase(300, 4, 16, 64, 64, undefined, { window: 37 });
  await listCase(301, 1, 32, 48, 512, undefined, { window: 300, softcap: 3 });
  await listCase(302, 8, 64, 64, 64, undefined, { window: 1 });
  await listCase(303, 2, 16, 64, 64, undefined, { softcap: 0.7 });
});

test('sparse decode over K/V pools split into 2 and 5 slabs of whole pages: equals the reference, NaN pages never leak', async () => {
  await listCase(310, 4, 16, 16, 64, undefined, {}, 2);
  await listCase(311, 2, 32, 12, 128, { qHeadOffset: 2, qRowHeads: 6 }, {}, 5);
  await listCase(312, 4, 16, 16, 64, undefined, { window: 37, softcap: 2 }, 3);
});
