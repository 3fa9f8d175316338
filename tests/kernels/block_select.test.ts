/**
 * Block selection for block-sparse prefill (shaders/block_select.wgsl) over block digests (shaders/block_digest.wgsl)
 * and the coarse digests of groups of blocks (shaders/block_group.wgsl, checked against the min / max of the block
 * means; both walk the written blocks through shaders/lib/block_entries.wgsl) against the reference, flat and hierarchical: digests written chunk by chunk (partial blocks updated)
 * equal the mean keys; lists per (query block, KV head) equal the reference top-k of pooled scores (near ties
 * aside); planPrefillBlocks. The K cache and the block digests also run split into slabs of a few pages
 * (shaders/lib/slabs.ts).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  BlockDigestKernel,
  blockDigestBytes,
  blockDigestEntries,
  blockDigestSlot,
} from '../../shaders/block_digest.js';
import {
  type BlockHierarchy,
  BlockSelectKernel,
  blockListStride,
  keptKeyBlocks,
  planPrefillBlocks,
  QBLOCK_WORDS,
} from '../../shaders/block_select.js';
import type { Slabs } from '../../shaders/lib/slabs.js';
import { UniformArena } from '../../shaders/runtime.js';
import { f16ToF32 } from '../../util/dtype.js';
import { assertNoGpuErrors, f32Buffer, testGpu, u32Buffer } from '../helpers/gpu.js';
import {
  decodedIndex,
  makePrefillCache,
  type PrefillCache,
  type PrefillCacheOptions,
  type PrefillSeq,
} from '../helpers/prefill-cache.js';
import { Rng } from '../helpers/rng.js';
import { poolOf, readPool } from '../helpers/slabs.js';
import { blockSelectRef } from '../reference/block_select.js';

// Pooled scores are f32 sums of up to 64 keys and 64 queries against f64: a GPU list may differ from the reference
// only where two candidate blocks' reference scores are within this of each other (a near tie at the top-k cut).
const TIE_EPS = 1e-4;
// Group bounds are f16 pairs of f32 means (the reference rounds f64 means): a rounding step apart at most.
const GROUP_EPS = 3e-3;

interface Case {
  seed: number;
  group: number;
  headDim: number;
  pageSize: number;
  blockSize: number;
  seqs: PrefillSeq[];
  topBlocks: number;
  localBlocks: number;
  modes?: number[]; // per KV head; default all sparse
  numKvHeads?: number;
  cacheOpts?: (rng: Rng) => PrefillCacheOptions;
  qFor?: (rng: Rng, t: number, h: number, pos: number, seq: number) => ArrayLike<number>;
  exact?: boolean; // demand the reference lists exactly (well-separated scores)
  maxWorkgroupsPerDim?: number;
  /** The K cache and the block digests each in this many slabs of whole pages (default one buffer). */
  slabs?: number;
  /** Hierarchical selection (default flat). */
  hier?: BlockHierarchy;
  /** Called with every sparse list the kernel wrote (after the reference comparison). */
  check?: (b: number, list: number[]) => void;
}

/**
 * Writes the block digests of every sequence in two steps, as chunked prefill does ([0, ctx) then the chunk, so a
 * block the first step left partial is updated by the second), and checks each written block's digest against the
 * mean of its keys. Returns the digest buffer.
 */
async function writeDigests(
  cache: PrefillCache,
  seqs: PrefillSeq[],
  blockSize: number,
  blockTable: GPUBuffer,
  slabs = 1,
  groupBlocks = 0,
): Promise<Slabs | GPUBuffer> {
  const gpu = await testGpu();
  const { numKvHeads, headDim, pageSize, numPages } = cache;
  const bytes = blockDigestBytes(numPages, pageSize, blockSize, numKvHeads, headDim);
  const digests = poolOf(gpu, 'digests', new Float32Array(bytes / 4).fill(Number.NaN), bytes / numPages, slabs);
  const kCache = poolOf(gpu, 'kCache', cache.kCache, pageSize * numKvHeads * headDim * 2, slabs);
  const kernel = new BlockDigestKernel(gpu, { maxWorkgroupsPerDim: 3 });
  const arena = new UniformArena(gpu);
  for (const step of [
    seqs.map((s, row) => ({ row, start: 0, end: s.ctx })),
    seqs.map((s, row) => ({ row, start: s.ctx, end: s.ctx + s.fresh })),
  ]) {
    const entries = blockDigestEntries(step, blockSize);
    arena.reset();
    gpu.run((pass) => {
      kernel.encode(pass, arena, {
        kCache,
        blockTable,
        entries: u32Buffer(gpu, entries.length ? entries : [0, 0, 0]),
        digests,
        numEntries: entries.length / 3,
        numKvHeads,
        headDim,
        pageSize,
        maxPagesPerSeq: cache.maxPagesPerSeq,
        blockSize,
        groupBlocks,
      });
    }, arena);
  }
  const raw = await readPool(gpu, digests);
  const got = new Float32Array(raw.buffer, 0, bytes / 4);
  const words = new Uint32Array(raw.buffer, 0, bytes / 4);
  assertNoGpuErrors(gpu);
  arena.destroy();
  seqs.forEach((s, row) => {
    const pages = cache.blockTable.subarray(row * cache.maxPagesPerSeq, (row + 1) * cache.maxPagesPerSeq);
    const end = s.ctx + s.fresh;
    for (let c = 0; c * blockSize < end; c++) {
      const n = Math.min(blockSize, end - c * blockSize);
      const slot = blockDigestSlot(pages, c, pageSize, blockSize);
      for (let h = 0; h < numKvHeads; h++) {
        for (let d = 0; d < headDim; d++) {
          let sum = 0;
          for (let j = c * blockSize; j < c * blockSize + n; j++) sum += cache.kF[decodedIndex(cache, row, j, h) + d];
          const x = got[(slot * 2 * numKvHeads + h) * headDim + d];
          assert.ok(
            Math.abs(x - sum / n) <= 1e-5 * (1 + Math.abs(sum / n)),
            `digest of row ${row} block ${c} head ${h} dim ${d}: ${x} vs ${sum / n}`,
          );
        }
      }
    }
    // coarse digests of the full groups: min / max of their blocks' means, widened, as f16 pairs in the last block's
    // slot (part 1)
    const G = groupBlocks;
    for (let g = 0; G > 0 && (g + 1) * G * blockSize <= end; g++) {
      const last = blockDigestSlot(pages, g * G + G - 1, pageSize, blockSize);
      for (let h = 0; h < numKvHeads; h++) {
        for (let d = 0; d < headDim; d++) {
          let mn = Number.POSITIVE_INFINITY;
          let mx = Number.NEGATIVE_INFINITY;
          for (let c = g * G; c < g * G + G; c++) {
            const m = got[(blockDigestSlot(pages, c, pageSize, blockSize) * 2 * numKvHeads + h) * headDim + d];
            mn = Math.min(mn, m);
            mx = Math.max(mx, m);
          }
          const o = ((last * 2 + 1) * numKvHeads + h) * headDim;
          const half = (w: number) => f16ToF32((words[o + (w >> 1)] >>> (16 * (w & 1))) & 0xffff);
          const gmn = half(d);
          const gmx = half(headDim + d);
          const what = `group ${g} of row ${row} head ${h} dim ${d}`;
          assert.ok(gmn <= mn && gmn >= mn - 4e-3 * Math.abs(mn) - 1e-7, `${what}: min ${gmn} vs ${mn}`);
          assert.ok(gmx >= mx && gmx <= mx + 4e-3 * Math.abs(mx) + 1e-7, `${what}: max ${gmx} vs ${mx}`);
        }
      }
    }
  });
  return digests;
}

async function runCase(c: Case): Promise<number> {
  const gpu = await testGpu();
  const rng = new Rng(c.seed);
  const numKvHeads = c.numKvHeads ?? (c.group === 8 ? 1 : rng.int(1, 2));
  const numHeads = numKvHeads * c.group;
  const { headDim, pageSize, blockSize } = c;
  const cache = makePrefillCache(rng, c.seqs, { numKvHeads, headDim, pageSize }, c.cacheOpts?.(rng));
  const q = rng.normalArray(cache.T * numHeads * headDim);
  if (c.qFor) {
    for (let t = 0; t < cache.T; t++) {
      for (let h = 0; h < numHeads; h++) {
        q.set(c.qFor(rng, t, h, cache.positions[t], cache.tokenSeq[t]), (t * numHeads + h) * headDim);
      }
    }
  }
  const headModes = c.modes ?? Array(numKvHeads).fill(1);
  const plan = planPrefillBlocks(cache.tokenSeq, cache.positions, blockSize);
  const listStride = blockListStride(plan, c.topBlocks, c.localBlocks);
  const blockList = gpu.createBuffer('blockList', plan.numQBlocks * numKvHeads * listStride * 4);
  gpu.write(blockList, new Uint32Array(plan.numQBlocks * numKvHeads * listStride).fill(0xdeadbeef));
  const kernel = new BlockSelectKernel(gpu, { maxWorkgroupsPerDim: c.maxWorkgroupsPerDim });
  const blockTable = u32Buffer(gpu, cache.blockTable);
  const digests = await writeDigests(cache, c.seqs, blockSize, blockTable, c.slabs, c.hier?.groupBlocks ?? 0);
  const arena = new UniformArena(gpu);
  gpu.run((pass) => {
    kernel.encode(pass, arena, {
      q: f32Buffer(gpu, q),
      blockTable,
      digests,
      qBlocks: u32Buffer(gpu, plan.qBlocks),
      blockList,
      plan,
      numHeads,
      numKvHeads,
      headDim,
      pageSize,
      maxPagesPerSeq: cache.maxPagesPerSeq,
      headModes,
      topBlocks: c.topBlocks,
      localBlocks: c.localBlocks,
      hierarchy: c.hier,
    });
  }, arena);
  const got = await gpu.readU32(blockList, plan.numQBlocks * numKvHeads * listStride);
  assertNoGpuErrors(gpu);
  const ref = blockSelectRef({
    ...cache,
    q,
    numHeads,
    blockSize,
    headModes,
    topBlocks: c.topBlocks,
    localBlocks: c.localBlocks,
    groupBlocks: c.hier?.groupBlocks,
    margin: c.hier?.margin,
  });
  let differing = 0;
  let ranked = 0;
  for (let qb = 0; qb < plan.numQBlocks; qb++) {
    const row = plan.qBlocks[qb * QBLOCK_WORDS];
    const b = Math.floor(plan.qBlocks[qb * QBLOCK_WORDS + 2] / blockSize);
    const r = ref.get(`${row}:${b}`);
    assert.ok(r, `no reference for query block ${row}:${b}`);
    for (let h = 0; h < numKvHeads; h++) {
      const what = `seed=${c.seed} qb=${qb} (row ${row}, block ${b}) KV head ${h}`;
      const base = (qb * numKvHeads + h) * listStride;
      const n = got[base];
      const list = Array.from(got.subarray(base + 1, base + 1 + n));
      if (headModes[h] !== 1) {
        assert.equal(n, 0, `${what}: non-sparse head got a list`);
        continue;
      }
      assert.ok(n < listStride, `${what}: count ${n} overflows stride ${listStride}`);
      // usage reports the kernel's count through keptKeyBlocks (the skipped share of block-sparse prefill)
      assert.equal(n, keptKeyBlocks(b, c.topBlocks, c.localBlocks), `${what}: kept ${n}`);
      assert.ok(list.includes(0) && list.includes(b), `${what}: sink/diagonal missing from ${list}`);
      for (let c2 = Math.max(0, b - c.localBlocks); c2 <= b; c2++) assert.ok(list.includes(c2), `${what}: local`);
      assert.deepEqual(
        list,
        [...list].sort((x, y) => x - y),
        `${what}: not ascending`,
      );
      c.check?.(b, list);
      const want: number[] = r.lists[h];
      const grp = r.groups[h];
      if (grp) ranked++;
      if (list.join() === want.join()) continue;
      differing++;
      assert.ok(!c.exact, `${what}: got ${list}, want ${want}`);
      // Near tie: same size, and every block that differs scores within TIE_EPS of the k-th best candidate, or (the
      // coarse level) some group's f16 bound is within GROUP_EPS of the beam's cut, so the GPU's beam may differ.
      assert.equal(list.length, want.length, `${what}: got ${list}, want ${want}`);
      const s = r.scores[h];
      const scored = r.scored[h];
      const groupTie =
        grp !== null &&
        Array.from(grp.bounds).some(
          (x) => x !== grp.cut && Math.abs(x - grp.cut) <= GROUP_EPS * (1 + Math.abs(grp.cut)),
        );
      if (groupTie) continue;
      const cands = Array.from({ length: r.candEnd - 1 }, (_, i) => i + 1)
        .filter((x) => !scored || scored.has(x))
        .sort((x, y) => s[y] - s[x]);
      const cut = s[cands[c.topBlocks - 1]];
      for (const x of [...list.filter((y) => !want.includes(y)), ...want.filter((y) => !list.includes(y))]) {
        assert.ok(Math.abs(s[x] - cut) <= TIE_EPS * (1 + Math.abs(cut)), `${what}: got ${list}, want ${want}`);
      }
    }
  }
  arena.destroy();
  if (process.env.SIFT_TEST_VERBOSE)
    console.log(`seed ${c.seed}: ${differing} near-tie lists differ, ${ranked} ranked`);
  if (c.hier) assert.ok(ranked > 0, `seed ${c.seed}: no list ranked groups (the case does not exercise the hierarchy)`);
  return differing;
}

test('block selection matches the reference top-k of pooled scores: GQA 1/4/8, BS 16/64, chunk edges', async () => {
  let seed = 1;
  const chunks: PrefillSeq[][] = [
    [{ ctx: 0, fresh: 130 }],
    [{ ctx: 37, fresh: 63 }],
    [{ ctx: 200, fresh: 65 }],
    [
      { ctx: 300, fresh: 1 },
      { ctx: 64, fresh: 130 },
    ],
  ];
  for (const group of [1, 4, 8]) {
    for (const seqs of chunks) {
      const blockSize = seed % 2 ? 16 : 64;
      await runCase({
        seed,
        group,
        headDim: [48, 64, 128][seed % 3],
        pageSize: [16, 32, 64][(seed + 1) % 3],
        blockSize,
        seqs: blockSize === 64 ? seqs.map((s) => ({ ctx: s.ctx * 3, fresh: s.fresh })) : seqs,
        topBlocks: 1 + (seed % 4),
        localBlocks: seed % 3,
      });
      seed++;
    }
  }
});

test('block digests and selection over a K cache and block digests in 3 and 4 slabs of whole pages', async () => {
  await runCase({
    seed: 40,
    group: 2,
    headDim: 16,
    pageSize: 16,
    blockSize: 16,
    seqs: [
      { ctx: 37, fresh: 63 },
      { ctx: 0, fresh: 40 },
    ],
    topBlocks: 2,
    localBlocks: 1,
    slabs: 3,
  });
  await runCase({
    seed: 41,
    group: 1,
    headDim: 12,
    pageSize: 32,
    blockSize: 16,
    seqs: [{ ctx: 64, fresh: 100 }],
    topBlocks: 3,
    localBlocks: 0,
    slabs: 4,
  });
});

test('block selection finds the planted key blocks exactly, skips non-sparse heads, 2-D grid', async () => {
  const headDim = 64;
  const blockSize = 64;
  // Keys N(0, 0.3^2); in blocks 3, 7 and 11 of each sequence keys carry a shared direction u; queries are u + noise.
  const hot = new Set([3, 7, 11]);
  const u = new Rng(99).normalArray(headDim);
  await runCase({
    seed: 50,
    group: 4,
    numKvHeads: 3,
    modes: [1, 2, 1],
    headDim,
    pageSize: 64,
    blockSize,
    seqs: [
      { ctx: 900, fresh: 130 },
      { ctx: 1000, fresh: 70 },
    ],
    topBlocks: 3,
    localBlocks: 1,
    exact: true,
    maxWorkgroupsPerDim: 7,
    cacheOpts: (rng) => ({
      key: (_s, pos) => {
        const k = rng.normalArray(headDim, 0.3);
        if (hot.has(Math.floor(pos / blockSize))) for (let d = 0; d < headDim; d++) k[d] += u[d];
        return k;
      },
    }),
    qFor: (rng) => {
      const x = rng.normalArray(headDim, 0.5);
      for (let d = 0; d < headDim; d++) x[d] += u[d];
      return x;
    },
  });
});

test('planPrefillBlocks cuts runs at block edges and rejects split blocks', () => {
  const plan = planPrefillBlocks([1, 1, 1, 0, 0], [62, 63, 64, 5, 6], 64);
  assert.deepEqual(Array.from(plan.qBlocks), [1, 0, 62, 2, 1, 2, 64, 1, 0, 3, 5, 2]);
  assert.equal(plan.maxQBlock, 1);
  assert.throws(() => planPrefillBlocks([0, 1, 0], [3, 0, 4], 64), /not adjacent/);
});

test('ties keep the lower blocks, over hundreds of key blocks (the radix top-k)', async () => {
  const headDim = 32;
  const key = new Rng(7).normalArray(headDim);
  await runCase({
    seed: 60,
    group: 2,
    numKvHeads: 1,
    headDim,
    pageSize: 32,
    blockSize: 16,
    seqs: [{ ctx: 3000, fresh: 40 }],
    topBlocks: 5,
    localBlocks: 2,
    exact: true,
    // every key the same: every pooled score ties, so the lowest candidate blocks are kept
    cacheOpts: () => ({ key: () => key }),
  });
});

test('hierarchical selection matches the reference: groups of 3 and 8, shapes off the block and group sizes', async () => {
  await runCase({
    seed: 70,
    group: 4,
    headDim: 48,
    pageSize: 32,
    blockSize: 16,
    seqs: [
      { ctx: 1000, fresh: 77 },
      { ctx: 517, fresh: 130 },
    ],
    topBlocks: 2,
    localBlocks: 1,
    hier: { groupBlocks: 3, margin: 1 },
  });
  await runCase({
    seed: 71,
    group: 1,
    headDim: 64,
    pageSize: 64,
    blockSize: 64,
    seqs: [{ ctx: 5003, fresh: 190 }],
    topBlocks: 3,
    localBlocks: 0,
    hier: { groupBlocks: 8, margin: 2 },
  });
  await runCase({
    seed: 72,
    group: 2,
    headDim: 16,
    pageSize: 16,
    blockSize: 16,
    seqs: [
      { ctx: 611, fresh: 45 },
      { ctx: 0, fresh: 300 },
    ],
    topBlocks: 1,
    localBlocks: 2,
    hier: { groupBlocks: 4, margin: 0 },
    slabs: 3,
  });
});

test('hierarchical selection keeps planted blocks past decoy groups only with its margin', async () => {
  // Keys N(0, 0.3^2). Blocks 61 and 73 (groups 15 and 18 of 4 blocks) carry u: they score |u|^2. Every block of
  // decoy groups 3 and 9 carries 2u on a quarter of the channels only: each block scores |u|^2 / 2, but the group's
  // min / max bound is about 2 |u|^2, above the planted groups'. Beam = topBlocks + margin groups: with margin 0
  // the decoys fill the beam and the planted blocks are never scored; with margin 2 they are, and win.
  const headDim = 64;
  const blockSize = 16;
  const hot = new Set([61, 73]);
  const u = new Rng(98).normalArray(headDim);
  const key = (rng: Rng, pos: number) => {
    const k = rng.normalArray(headDim, 0.3);
    const c = Math.floor(pos / blockSize);
    const g = Math.floor(c / 4);
    if (hot.has(c)) for (let d = 0; d < headDim; d++) k[d] += u[d];
    if (g === 3 || g === 9) for (let d = (c % 4) * 16; d < (c % 4) * 16 + 16; d++) k[d] += 2 * u[d];
    return k;
  };
  const base = {
    group: 4,
    numKvHeads: 1,
    headDim,
    pageSize: 16,
    blockSize,
    seqs: [{ ctx: 1300, fresh: 50 }],
    topBlocks: 2,
    localBlocks: 0,
    exact: true,
    cacheOpts: (rng: Rng) => ({ key: (_s: number, pos: number) => key(rng, pos) }),
    qFor: (rng: Rng) => {
      const x = rng.normalArray(headDim, 0.5);
      for (let d = 0; d < headDim; d++) x[d] += u[d];
      return x;
    },
  };
  let lists = 0;
  await runCase({
    ...base,
    seed: 80,
    hier: { groupBlocks: 4, margin: 2 },
    check: (_b, list) => {
      lists++;
      assert.ok(list.includes(61) && list.includes(73), `margin 2: planted blocks missing from ${list}`);
    },
  });
  assert.ok(lists > 0);
  let missed = 0;
  await runCase({
    ...base,
    seed: 80,
    hier: { groupBlocks: 4, margin: 0 },
    check: (_b, list) => {
      if (!list.includes(61) && !list.includes(73)) missed++;
    },
  });
  assert.equal(missed, lists, 'margin 0: the decoy groups should fill the beam (the case tests the margin)');
});
