import assert from 'node:assert/strict';
import { test } from 'node:test';
import { KvWriteKernel } from '../../shaders/kv_write.js';
import { UniformArena } from '../../shaders/runtime.js';
import { assertNoGpuErrors, f32Buffer, testGpu, u32Buffer } from '../helpers/gpu.js';
import { makePagedBatch } from '../helpers/paged.js';
import { Rng } from '../helpers/rng.js';
import { kvWriteRef } from '../reference/attention.js';

/** Exact comparison where NaN must stay NaN (slots nobody wrote) and everything else must match bit for bit. */
function assertCacheEqual(got: Float32Array, want: Float32Array, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  let bad = 0;
  let first = -1;
  for (let i = 0; i < want.length; i++) {
    const ok = Number.isNaN(want[i]) ? Number.isNaN(got[i]) : got[i] === want[i];
    if (!ok && bad++ === 0) first = i;
  }
  assert.equal(bad, 0, `${what}: ${bad} slots differ; first at [${first}]: got ${got[first]} want ${want[first]}`);
}

test('kv_write fills exactly the new tokens slots through shuffled block tables; NaN slots stay NaN', async () => {
  const gpu = await testGpu();
  const arena = new UniformArena(gpu);
  for (let seed = 1; seed <= 8; seed++) {
    const rng = new Rng(seed);
    const pageSize = rng.pick([16, 32, 64]);
    const numKvHeads = rng.pick([1, 2, 8]);
    const headDim = rng.pick([36, 48, 64, 128]);
    const numSeqs = rng.int(1, 4);
    const seqs = Array.from({ length: numSeqs }, () =>
      rng.next() < 0.5 ? { ctx: rng.int(0, 150), fresh: 1 } : { ctx: rng.int(0, 80), fresh: rng.int(1, 70) },
    );
    const b = makePagedBatch(rng, seqs, { numKvHeads, headDim, pageSize });
    const kCache = f32Buffer(gpu, b.kCache);
    const vCache = f32Buffer(gpu, b.vCache);
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
    const gotK = await gpu.readF32(kCache, b.kCache.length);
    const gotV = await gpu.readF32(vCache, b.vCache.length);
    assertNoGpuErrors(gpu);
    const want = kvWriteRef(b.k, b.v, b.kCache, b.vCache, b.blockTable, b.tokenSeq, b.positions, b);
    const what = `kv_write seed=${seed} page=${pageSize} kv=${numKvHeads}x${headDim} seqs=${JSON.stringify(seqs)}`;
    assertCacheEqual(gotK, want.kCache, `${what} kCache`);
    assertCacheEqual(gotV, want.vCache, `${what} vCache`);
    // The reference itself must have written every new token (guards against a vacuous comparison).
    const nanBefore = b.kCache.filter(Number.isNaN).length;
    const nanAfter = want.kCache.filter(Number.isNaN).length;
    assert.equal(nanBefore - nanAfter, b.T * numKvHeads * headDim, `${what}: reference wrote every new slot`);
  }
});
