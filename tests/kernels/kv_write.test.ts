/** Paged KV write (shaders/kv_write.wgsl) against the reference, bit for bit. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { KvWriteKernel } from '../../shaders/kv_write.js';
import { UniformArena } from '../../shaders/runtime.js';
import { f16ToF32 } from '../../util/dtype.js';
import { assertNoGpuErrors, f32Buffer, testGpu, u32Buffer } from '../helpers/gpu.js';
import { F16_NAN, makePagedBatch } from '../helpers/paged.js';
import { Rng } from '../helpers/rng.js';
import { poolOf, readPool } from '../helpers/slabs.js';
import { kvWriteRef } from '../reference/attention.js';

const hex = (h: number) => `0x${h.toString(16).padStart(4, '0')}`;

/**
 * Compares f16 caches. Slots nobody wrote must keep their bits (NaN stays 0x7e00); written slots must hold the
 * reference's round-to-nearest-even f16, or the other f16 neighbour of the same f32 (WGSL leaves the rounding
 * direction of f32 -> f16 to the implementation). `src` gives each written slot's f32 value, `written` marks them.
 */
function assertCacheEqual(
  got: Uint16Array,
  want: Uint16Array,
  before: Uint16Array,
  src: Map<number, number>,
  what: string,
): number {
  assert.equal(got.length, want.length, `${what}: length`);
  let bad = 0;
  let first = -1;
  let otherNeighbour = 0;
  for (let i = 0; i < want.length; i++) {
    let ok = got[i] === want[i];
    const x = src.get(i);
    if (!ok && x !== undefined && Math.abs(got[i] - want[i]) === 1 && (got[i] ^ want[i]) < 0x8000) {
      // adjacent codes of the same sign: accept if got and want bracket x
      ok = (f16ToF32(got[i]) - x) * (f16ToF32(want[i]) - x) <= 0;
      if (ok) otherNeighbour++;
    }
    if (x === undefined && got[i] !== before[i]) ok = false;
    if (!ok && bad++ === 0) first = i;
  }
  if (bad > 0) {
    assert.fail(
      `${what}: ${bad} slots differ; first at [${first}]: got ${hex(got[first])} want ${hex(want[first])} ` +
        `(${f16ToF32(got[first])} vs ${f16ToF32(want[first])})`,
    );
  }
  return otherNeighbour;
}

test('kv_write rounds to f16 and fills exactly the new tokens slots through shuffled block tables; NaN slots stay NaN; caches in one buffer or split into slabs', async () => {
  const gpu = await testGpu();
  const arena = new UniformArena(gpu);
  for (let seed = 1; seed <= 12; seed++) {
    const rng = new Rng(seed);
    const pageSize = rng.pick([16, 32, 64]);
    const numKvHeads = rng.pick([1, 2, 8]);
    const headDim = rng.pick([36, 48, 64, 128]);
    const numSeqs = rng.int(1, 4);
    const seqs = Array.from({ length: numSeqs }, () =>
      rng.next() < 0.5 ? { ctx: rng.int(0, 150), fresh: 1 } : { ctx: rng.int(0, 80), fresh: rng.int(1, 70) },
    );
    const b = makePagedBatch(rng, seqs, { numKvHeads, headDim, pageSize });
    // seeds 1..4: one buffer each; then K and V split into 2..5 slabs of whole pages (a sequence's pages spread
    // over several slabs, as the shuffled block table places them)
    const slabs = seed <= 4 ? 1 : rng.int(2, 5);
    const pageBytes = pageSize * numKvHeads * headDim * 2;
    const kCache = poolOf(gpu, 'kCache', b.kCache, pageBytes, slabs);
    const vCache = poolOf(gpu, 'vCache', b.vCache, pageBytes, slabs);
    const kernel = new KvWriteKernel(gpu, { maxWorkgroupsPerDim: seed % 2 ? undefined : 3 });
    arena.reset();
    gpu.run(
      (pass) =>
        kernel.encode(pass, arena, {
          k: f32Buffer(gpu, b.k),
          v: f32Buffer(gpu, b.v),
          kCache,
          vCache,
          blockTable: u32Buffer(gpu, b.blockTable),
          tokenSeq: u32Buffer(gpu, b.tokenSeq),
          positions: u32Buffer(gpu, b.positions),
          T: b.T,
          numKvHeads,
          headDim,
          pageSize,
          maxPagesPerSeq: b.maxPagesPerSeq,
        }),
      arena,
    );
    const gotK = new Uint16Array((await readPool(gpu, kCache)).buffer, 0, b.kCache.length);
    const gotV = new Uint16Array((await readPool(gpu, vCache)).buffer, 0, b.vCache.length);
    assertNoGpuErrors(gpu);
    const want = kvWriteRef(b.k, b.v, b.kCache, b.vCache, b.blockTable, b.tokenSeq, b.positions, b);
    // f32 source value of every slot the step writes
    const srcK = new Map<number, number>();
    const srcV = new Map<number, number>();
    const rowLen = numKvHeads * headDim;
    for (let t = 0; t < b.T; t++) {
      const page = b.blockTable[b.tokenSeq[t] * b.maxPagesPerSeq + Math.floor(b.positions[t] / pageSize)];
      const dst = (page * pageSize + (b.positions[t] % pageSize)) * rowLen;
      for (let e = 0; e < rowLen; e++) {
        srcK.set(dst + e, b.k[t * rowLen + e]);
        srcV.set(dst + e, b.v[t * rowLen + e]);
      }
    }
    const what = `kv_write seed=${seed} slabs=${slabs} page=${pageSize} kv=${numKvHeads}x${headDim} seqs=${JSON.stringify(seqs)}`;
    const nk = assertCacheEqual(gotK, want.kCache, b.kCache, srcK, `${what} kCache`);
    const nv = assertCacheEqual(gotV, want.vCache, b.vCache, srcV, `${what} vCache`);
    if (process.env.SIFT_TEST_VERBOSE) console.log(what, `${nk + nv} slots rounded to the other f16 neighbour`);
    // The reference itself must have written every new token (guards against a vacuous comparison).
    const nanBefore = b.kCache.filter((h) => h === F16_NAN).length;
    const nanAfter = want.kCache.filter((h) => h === F16_NAN).length;
    assert.equal(nanBefore - nanAfter, b.T * numKvHeads * headDim, `${what}: reference wrote every new slot`);
    assert.equal(srcK.size, b.T * numKvHeads * headDim, `${what}: every new slot is distinct`);
  }
});
