/**
 * Page digests (shaders/page_digest.wgsl, cache addressing through lib/paged.wgsl) against the reference, with the
 * K cache and the digests in one buffer each or split into slabs of a few pages (shaders/lib/slabs.ts).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { digestBytes, digestEntries, PageDigestKernel } from '../../shaders/page_digest.js';
import { UniformArena } from '../../shaders/runtime.js';
import { assertClose } from '../helpers/compare.js';
import { assertNoGpuErrors, testGpu, u32Buffer } from '../helpers/gpu.js';
import { Rng } from '../helpers/rng.js';
import { poolOf, readPool, writePool } from '../helpers/slabs.js';
import { fromF16Bits, makeSeqCache, roundF16, uploadCache, writeSlot } from '../helpers/sparse-cache.js';
import { digestOffset, digestRef, digestValues, digestWordsRef, f16Directed } from '../reference/page_digest.js';

// min / max of f16 values widened to f32 are exact: the digests must match bit for bit.
const EXACT = { atol: 0, rtol: 0 };
const SENTINEL = 0xdeadbeef;
// Keys at the edges of f16: subnormals, signed zeros, the largest finite values.
const SPECIAL = [3e-6, -3e-6, 6e-8, -6e-8, 0, -0, 65504, -65504, 1e-4, -2.5];

test('digestEntries lists each touched logical page once with its valid count', () => {
  // Page size 64, logical 16: tokens [10, 40) of a sequence on pages [7, 3] touch logical 0, 1, 2 of page 7.
  const e = digestEntries([{ pages: [7, 3], start: 10, end: 40 }], 64, 16);
  assert.deepEqual(Array.from(e), [7, 0, 16, 7, 1, 16, 7, 2, 8]);
  // A decode token at 64 opens logical 0 of the second page; an empty span adds nothing.
  const d = digestEntries(
    [
      { pages: [7, 3], start: 64, end: 65 },
      { pages: [1], start: 5, end: 5 },
    ],
    64,
    16,
  );
  assert.deepEqual(Array.from(d), [3, 0, 1]);
});

interface Case {
  seed: number;
  pageSize: number;
  logicalPageSize: number;
  headDim: number;
  numKvHeads: number;
  maxWorkgroupsPerDim?: number;
  /** The digest buffer is sized for this many KV heads (a layer's r_l = numKvHeads of the model's nKv). */
  bufferKvHeads?: number;
  /** Mix f16 edge values (SPECIAL) into the keys. */
  special?: boolean;
  /** The K cache and the digests each in this many slabs of whole pages (default one buffer). */
  slabs?: number;
}

async function runCase(c: Case): Promise<void> {
  const gpu = await testGpu();
  const rng = new Rng(c.seed);
  const { pageSize, logicalPageSize, headDim, numKvHeads } = c;
  // Prefill lengths that end mid logical page, on a logical boundary, and mid physical page; then appends of a
  // few tokens (several into one logical page, one crossing into a new physical page).
  const lens = [rng.int(1, 200), 3 * logicalPageSize, pageSize + rng.int(1, logicalPageSize - 1), rng.int(1, 7)];
  const appends = lens.map(() => rng.int(1, Math.min(2 * logicalPageSize, 20)));
  const cache = makeSeqCache(rng, lens, { numKvHeads, headDim, pageSize }, { extraPages: 1 });
  const final = lens.map((l, i) => l + appends[i]);
  const shape = { pageSize, logicalPageSize, numKvHeads, headDim };
  const lpp = pageSize / logicalPageSize;
  // The appended tokens' pages: the block table already reserves them (makeSeqCache leaves room), but they may
  // point at the shared NaN page; give each sequence a fresh page where it needs one.
  let nextFree = cache.numPages;
  const extraPages = final.reduce(
    (n, f, s) => n + Math.max(0, Math.ceil(f / pageSize) - Math.ceil(lens[s] / pageSize)),
    0,
  );
  const total = cache.numPages + extraPages;
  const kWords = new Uint32Array((total * pageSize * numKvHeads * headDim) / 2).fill(0x7e007e00);
  kWords.set(cache.kWords);
  const k = new Float32Array(total * pageSize * numKvHeads * headDim).fill(Number.NaN);
  k.set(cache.k);
  const big = { ...cache, numPages: total, kWords, k };
  final.forEach((f, s) => {
    for (let lp = Math.ceil(lens[s] / pageSize); lp < Math.ceil(f / pageSize); lp++) {
      cache.blockTable[s * cache.maxPagesPerSeq + lp] = nextFree++;
    }
  });

  if (c.special) {
    final.forEach((f, s) => {
      for (let j = 0; j < f; j++) {
        const page = cache.blockTable[s * cache.maxPagesPerSeq + Math.floor(j / pageSize)];
        for (let h = 0; h < numKvHeads; h++) {
          if (rng.next() < 0.5) continue;
          const vals = Array.from({ length: headDim }, () =>
            rng.next() < 0.6 ? SPECIAL[rng.int(0, SPECIAL.length - 1)] : rng.normal() * 3,
          );
          writeSlot(big, 'k', page, j % pageSize, h, vals);
        }
      }
    });
  }
  const { kCache } = uploadCache(gpu, big, c.slabs);
  const bufWords = digestBytes(total, pageSize, logicalPageSize, c.bufferKvHeads ?? numKvHeads, headDim) / 4;
  const digests = poolOf(
    gpu,
    'digests',
    new Uint32Array(bufWords).fill(SENTINEL),
    (bufWords * 4) / total,
    c.slabs ?? 1,
  );
  const usedWords = digestBytes(total, pageSize, logicalPageSize, numKvHeads, headDim) / 4;
  const kernel = new PageDigestKernel(gpu, { maxWorkgroupsPerDim: c.maxWorkgroupsPerDim });
  const arena = new UniformArena(gpu);
  const rowOf = (s: number) => cache.blockTable.subarray(s * cache.maxPagesPerSeq, (s + 1) * cache.maxPagesPerSeq);
  const runDigest = (entries: Uint32Array) => {
    arena.reset();
    gpu.run((pass) => {
      kernel.encode(pass, arena, {
        kCache,
        entries: u32Buffer(gpu, entries.length ? entries : new Uint32Array(3)),
        digests,
        numEntries: entries.length / 3,
        ...shape,
      });
    }, arena);
  };
  const check = async (lensNow: number[], what: string) => {
    const words = new Uint32Array((await readPool(gpu, digests)).buffer, 0, bufWords);
    assertNoGpuErrors(gpu);
    for (let i = usedWords; i < bufWords; i++) {
      assert.equal(words[i], SENTINEL, `${what}: digest word ${i} past the layer's ${numKvHeads} heads written`);
    }
    const got = digestValues(words.subarray(0, usedWords));
    const want = new Float32Array(got.length);
    const gotSel: number[] = [];
    const wantSel: number[] = [];
    lensNow.forEach((len, s) => {
      for (let g = 0; g * logicalPageSize < len; g++) {
        const page = rowOf(s)[Math.floor(g / lpp)];
        digestRef(big.k, shape, page, g % lpp, Math.min(logicalPageSize, len - g * logicalPageSize), want);
        for (let h = 0; h < numKvHeads; h++) {
          const o = digestOffset(shape, page, g % lpp, h);
          for (let i = 0; i < 2 * headDim; i++) {
            gotSel.push(got[o + i]);
            wantSel.push(want[o + i]);
          }
          // Bit patterns (signed zeros included) equal the reference's conservative f16 rounding, and every key of
          // the logical page lies within [min, max] channel by channel: Quest's bound is an upper bound.
          const ref = digestWordsRef(want.subarray(o, o + 2 * headDim), headDim);
          assert.deepEqual(Array.from(words.subarray(o / 2, o / 2 + headDim)), Array.from(ref), `${what}: f16 bits`);
          const n = Math.min(logicalPageSize, len - g * logicalPageSize);
          const qv = Array.from({ length: headDim }, () => rng.normal());
          let bound = 0;
          for (let d = 0; d < headDim; d++) bound += Math.max(qv[d] * got[o + d], qv[d] * got[o + headDim + d]);
          for (let t = 0; t < n; t++) {
            const kb = ((page * pageSize + (g % lpp) * logicalPageSize + t) * numKvHeads + h) * headDim;
            let dot = 0;
            for (let d = 0; d < headDim; d++) {
              const x = big.k[kb + d];
              assert.ok(got[o + d] <= x && x <= got[o + headDim + d], `${what}: key outside its digest`);
              dot += qv[d] * x;
            }
            assert.ok(bound >= dot - 1e-9 * (Math.abs(dot) + 1), `${what}: Quest bound ${bound} < q.k ${dot}`);
          }
        }
      }
    });
    assertClose(
      gotSel,
      wantSel,
      EXACT,
      `${what} seed=${c.seed} page=${pageSize}/${logicalPageSize} hd=${headDim} lens=${lensNow}`,
    );
  };

  // Prefill: every logical page of every sequence.
  runDigest(
    digestEntries(
      lens.map((l, s) => ({ pages: rowOf(s), start: 0, end: l })),
      pageSize,
      logicalPageSize,
    ),
  );
  await check(lens, 'digests after prefill');

  // Append: write the new keys into the cache, then recompute only the touched logical pages.
  final.forEach((f, s) => {
    for (let j = lens[s]; j < f; j++) {
      const page = rowOf(s)[Math.floor(j / pageSize)];
      for (let h = 0; h < numKvHeads; h++) writeSlot(big, 'k', page, j % pageSize, h, rng.normalArray(headDim, 2));
    }
  });
  writePool(gpu, kCache, big.kWords);
  runDigest(
    digestEntries(
      final.map((f, s) => ({ pages: rowOf(s), start: lens[s], end: f })),
      pageSize,
      logicalPageSize,
    ),
  );
  await check(final, 'digests after append');
  arena.destroy();
}

test('page digests equal the reference min/max after prefill and after appends (partial logical pages)', async () => {
  let seed = 1;
  for (const [pageSize, logicalPageSize] of [
    [64, 16],
    [32, 16],
    [16, 16],
    [64, 8],
  ]) {
    for (const headDim of [48, 128]) {
      await runCase({ seed: seed++, pageSize, logicalPageSize, headDim, numKvHeads: 1 + (seed % 3) });
    }
  }
  await runCase({ seed: 99, pageSize: 64, logicalPageSize: 16, headDim: 36, numKvHeads: 2, maxWorkgroupsPerDim: 3 });
});

test('f16 digests: edge keys (subnormals, signed zeros, 65504) bit-exact; a layer of r_l heads leaves the rest of a full-size buffer alone', async () => {
  await runCase({ seed: 7, pageSize: 64, logicalPageSize: 16, headDim: 48, numKvHeads: 2, special: true });
  await runCase({ seed: 8, pageSize: 32, logicalPageSize: 8, headDim: 64, numKvHeads: 1, bufferKvHeads: 4 });
  await runCase({
    seed: 9,
    pageSize: 64,
    logicalPageSize: 16,
    headDim: 128,
    numKvHeads: 3,
    bufferKvHeads: 8,
    special: true,
  });
});

test('page digests over a K cache and digests split into 2 and 4 slabs of whole pages', async () => {
  await runCase({ seed: 21, pageSize: 16, logicalPageSize: 8, headDim: 48, numKvHeads: 2, slabs: 4 });
  await runCase({
    seed: 22,
    pageSize: 32,
    logicalPageSize: 16,
    headDim: 64,
    numKvHeads: 1,
    bufferKvHeads: 3,
    slabs: 2,
  });
});

test('conservative f16 rounding: min rounds down, max rounds up, exact for f16 values, one ulp apart otherwise', () => {
  const rng = new Rng(3);
  const values = [0, -0, 1, -1, 65504, -65504, 70000, -70000, 1e-9, -1e-9, 5.96e-8, 3e-6, ...SPECIAL];
  for (let i = 0; i < 2000; i++) values.push(rng.normal() * 10 ** rng.int(-8, 4));
  for (const x of values) {
    const lo = fromF16Bits(f16Directed(x, -1));
    const hi = fromF16Bits(f16Directed(x, 1));
    assert.ok(lo <= x && x <= hi, `${x}: [${lo}, ${hi}]`);
    if (roundF16(x) === x) assert.ok(lo === x && hi === x, `${x} is an f16 value: kept exactly`);
    else assert.ok(lo < hi && f16Directed(x, 1) !== f16Directed(x, -1), `${x}: one ulp`);
  }
});

test('page digest rejects bad shapes', async () => {
  const gpu = await testGpu();
  const kernel = new PageDigestKernel(gpu);
  const arena = new UniformArena(gpu);
  const buf = gpu.createBuffer('x', 1 << 16);
  const small = gpu.createBuffer('d', 1024);
  const base = {
    kCache: buf,
    entries: buf,
    digests: small,
    numEntries: 1,
    numKvHeads: 1,
    headDim: 64,
    pageSize: 64,
    logicalPageSize: 16,
  };
  assert.throws(() => kernel.encode({} as GPUComputePassEncoder, arena, { ...base, logicalPageSize: 24 }), /divide/);
  assert.throws(() => kernel.encode({} as GPUComputePassEncoder, arena, { ...base, headDim: 63 }), /even/);
  assert.throws(() => kernel.encode({} as GPUComputePassEncoder, arena, { ...base, numKvHeads: 2 }), /binding digests/);
  arena.destroy();
});
