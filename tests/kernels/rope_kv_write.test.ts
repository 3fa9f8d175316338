/**
 * shaders/rope_kv_write.wgsl (RoPE, with the angle of shaders/lib/rope_angle.wgsl, + paged KV write + the decode
 * tokens' page digests in one dispatch) against the references of
 * the steps it fuses: ropeRef for q and k, kvWriteRef for the caches through shuffled block tables (slots nobody
 * writes keep their NaN), digestRef for the logical pages of the decode tokens (over the cache as written), and the
 * f32 rows of RoPE(k) and v (`fresh`). Odd head dims, a head range (cacheHeads < numKvHeads), decode rows before
 * prefill chunks, positions up to 131071. Caches and digests in one buffer each or split into slabs of whole pages
 * (shaders/lib/slabs.ts), in one dispatch or, when the slabs leave too few bindings, in the K pass and the V pass.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ropeInvFreq } from '../../shaders/rope.js';
import { RopeKvWriteKernel } from '../../shaders/rope_kv_write.js';
import { UniformArena } from '../../shaders/runtime.js';
import { f16ToF32 } from '../../util/dtype.js';
import { assertClose } from '../helpers/compare.js';
import { assertNoGpuErrors, f32Buffer, testGpu, u32Buffer } from '../helpers/gpu.js';
import { makePagedBatch } from '../helpers/paged.js';
import { Rng } from '../helpers/rng.js';
import { poolOf, readPool } from '../helpers/slabs.js';
import { kvWriteRef } from '../reference/attention.js';
import { digestOffset, digestRef, digestWordsRef } from '../reference/page_digest.js';
import { ropeRef } from '../reference/rope.js';

/** As tests/kernels/rope.test.ts: the angle is exact to ~1e-6 rad, what remains is sin/cos and the f32 rotation. */
const TOL = { atol: 2e-5, rtol: 2e-5 };
const DIGEST_SENTINEL = 0xdeadbeef;

/**
 * f16 caches: slots the reference leaves alone keep their bits exactly (NaN); written slots hold the reference's
 * value within the rotation's tolerance plus f16 rounding (one half ulp either side: WGSL may round either way).
 */
function assertF16Near(got: Uint16Array, want: Uint16Array, before: Uint16Array, what: string): void {
  let bad = 0;
  let first = -1;
  for (let i = 0; i < want.length; i++) {
    const w = f16ToF32(want[i]);
    const ok =
      want[i] === before[i]
        ? got[i] === want[i]
        : Math.abs(f16ToF32(got[i]) - w) <= TOL.atol + TOL.rtol * Math.abs(w) + 2 ** -10 * Math.abs(w);
    if (!ok && bad++ === 0) first = i;
  }
  if (bad) {
    assert.fail(
      `${what}: ${bad} slots differ; first [${first}] got ${f16ToF32(got[first])} want ${f16ToF32(want[first])}`,
    );
  }
}

/** Heads [h0, h1) of rows of `rowHeads` heads, from column offset `headOffset` (heads) of (T, rowHeads, hd) data. */
function heads(x: Float32Array, T: number, rowHeads: number, headOffset: number, n: number, hd: number): Float32Array {
  const out = new Float32Array(T * n * hd);
  for (let t = 0; t < T; t++) {
    out.set(x.subarray((t * rowHeads + headOffset) * hd, (t * rowHeads + headOffset + n) * hd), t * n * hd);
  }
  return out;
}

test('rope_kv_write equals rope + kv_write + page digests of the decode tokens, pools in one buffer or in slabs', async () => {
  const gpu = await testGpu();
  const arena = new UniformArena(gpu);
  let splits = 0;
  for (let seed = 1; seed <= 16; seed++) {
    const rng = new Rng(seed * 131);
    const [H, KV] = rng.pick([
      [4, 4],
      [8, 2],
      [4, 1],
      [32, 8],
    ]);
    const hd = rng.pick([2, 10, 36, 64, 128]);
    const pageSize = rng.pick([16, 32, 64]);
    const L = rng.pick([4, 8, 16].filter((l) => pageSize % l === 0));
    const cacheHeads = seed % 3 === 0 ? Math.max(1, KV - 1) : KV;
    const fresh = seed % 2 === 0;
    const numDecode = rng.int(0, 3);
    const seqs = [
      ...Array.from({ length: numDecode }, () => ({ ctx: rng.int(0, 150), fresh: 1 })),
      ...Array.from({ length: rng.int(numDecode ? 0 : 1, 2) }, () => ({ ctx: rng.int(0, 60), fresh: rng.int(1, 40) })),
    ];
    const batch = makePagedBatch(rng, seqs, { numKvHeads: cacheHeads, headDim: hd, pageSize });
    // tokens in the kernel's order: decode rows first (row i = token i), then the prefill chunks
    const tokens: [number, number][] = [];
    seqs.forEach((s, r) => {
      for (let i = 0; i < s.fresh; i++) tokens.push([r, s.ctx + i]);
    });
    const T = tokens.length;
    const tokenSeq = Uint32Array.from(tokens.map((x) => x[0]));
    const positions = Uint32Array.from(tokens.map((x) => x[1]));
    const invFreq = ropeInvFreq(hd, rng.pick([10_000, 500_000]), { type: 'none' });
    const rowHeads = H + 2 * KV;
    const qkv = rng.normalArray(T * rowHeads * hd);
    const lpp = pageSize / L;
    const numPages = batch.numPages;
    const digestWords = (numPages * lpp * cacheHeads * 2 * hd) / 2;

    // seeds 1..8: one buffer per pool; 9..12: caches in 2 slabs and digests in 2 (one dispatch); 13..16: caches in
    // up to 5 slabs and digests in 3 (more bindings than a stage has: the K pass, then the V pass)
    const kvSlabs = seed <= 8 ? 1 : seed <= 12 ? 2 : 5;
    const dSlabs = seed <= 8 ? 1 : seed <= 12 ? 2 : 3;
    const pageBytes = pageSize * cacheHeads * hd * 2;
    const kc = poolOf(gpu, 'kc', new Uint32Array(batch.kCache.buffer.slice(0)), pageBytes, kvSlabs);
    const vc = poolOf(gpu, 'vc', new Uint32Array(batch.vCache.buffer.slice(0)), pageBytes, kvSlabs);
    const dg = poolOf(
      gpu,
      'dg',
      new Uint32Array(digestWords).fill(DIGEST_SENTINEL),
      (digestWords * 4) / numPages,
      dSlabs,
    );
    const qOut = f32Buffer(gpu, new Float32Array(T * H * hd));
    const kOut = f32Buffer(gpu, new Float32Array(T * KV * hd));
    const vOut = f32Buffer(gpu, new Float32Array(T * KV * hd));
    // Far positions for some rounds (angles up to ~131k): the sequences' pages move `shift` columns right in the
    // block table and their positions by shift pages, so the cache slots stay those of `positions`.
    const shift = seed % 4 === 1 ? Math.floor(131_000 / pageSize) : 0;
    const M = batch.maxPagesPerSeq + shift;
    const table = new Uint32Array(batch.numSeqs * M);
    for (let r = 0; r < batch.numSeqs; r++) {
      for (let j = 0; j < batch.maxPagesPerSeq; j++)
        table[r * M + shift + j] = batch.blockTable[r * batch.maxPagesPerSeq + j];
    }
    const posBig = Uint32Array.from(positions, (p) => p + shift * pageSize);
    const kernel = new RopeKvWriteKernel(gpu, { maxWorkgroupsPerDim: seed % 5 === 0 ? 2 : undefined });
    const n = (b: object) => ('numSlabs' in b ? (b.numSlabs as number) : 1);
    const split = 6 + n(kc) + n(vc) + n(dg) + (fresh ? 2 : 0) > gpu.caps.maxStorageBuffersPerShaderStage;
    splits += split ? 1 : 0;
    const before = gpu.counters().dispatches;
    arena.reset();
    gpu.run(
      (pass) =>
        kernel.encode(pass, arena, {
          qkv: f32Buffer(gpu, qkv),
          q: qOut,
          kCache: kc,
          vCache: vc,
          blockTable: u32Buffer(gpu, table),
          tokenSeq: u32Buffer(gpu, tokenSeq),
          positions: u32Buffer(gpu, posBig),
          invFreq: f32Buffer(gpu, invFreq),
          T,
          numHeads: H,
          numKvHeads: KV,
          headDim: hd,
          pageSize,
          maxPagesPerSeq: M,
          cacheHeads,
          digest: { digests: dg, logicalPageSize: L, numDecode },
          fresh: fresh ? { k: kOut, v: vOut } : undefined,
        }),
      arena,
    );
    const what = `seed=${seed} slabs=${kvSlabs}/${dSlabs} T=${T} H=${H}/${KV} cache=${cacheHeads} hd=${hd} ps=${pageSize} L=${L} decode=${numDecode}`;
    assert.equal(gpu.counters().dispatches - before, split ? 2 : 1, `${what}: dispatches`);
    const gotQ = await gpu.readF32(qOut, T * H * hd);
    const gotK = new Uint16Array((await readPool(gpu, kc)).buffer, 0, batch.kCache.length);
    const gotV = new Uint16Array((await readPool(gpu, vc)).buffer, 0, batch.vCache.length);
    const gotD = new Uint32Array((await readPool(gpu, dg)).buffer, 0, digestWords);
    assertNoGpuErrors(gpu);

    const posRef = Uint32Array.from(positions, (p) => p + shift * pageSize);
    assertClose(gotQ, ropeRef(heads(qkv, T, rowHeads, 0, H, hd), posRef, invFreq, T, H, hd), TOL, `${what} q`);
    const kRot = ropeRef(heads(qkv, T, rowHeads, H, KV, hd), posRef, invFreq, T, KV, hd);
    const v = heads(qkv, T, rowHeads, H + KV, KV, hd);
    const shape = { T, numKvHeads: cacheHeads, headDim: hd, pageSize, maxPagesPerSeq: batch.maxPagesPerSeq };
    const want = kvWriteRef(
      heads(kRot, T, KV, 0, cacheHeads, hd),
      heads(v, T, KV, 0, cacheHeads, hd),
      batch.kCache,
      batch.vCache,
      batch.blockTable,
      tokenSeq,
      positions,
      shape,
    );
    assertF16Near(gotK, want.kCache, batch.kCache, `${what} kCache`);
    assertF16Near(gotV, want.vCache, batch.vCache, `${what} vCache`);
    if (fresh) {
      assertClose(await gpu.readF32(kOut, T * KV * hd), kRot, TOL, `${what} fresh k`);
      assertClose(await gpu.readF32(vOut, T * KV * hd), v, { atol: 0, rtol: 0 }, `${what} fresh v`);
    }
    // digests: the decode tokens' logical pages from the cache as the kernel wrote it; every other word untouched
    const kF32 = Float32Array.from(gotK, (b) => f16ToF32(b));
    const ds = { pageSize, logicalPageSize: L, numKvHeads: cacheHeads, headDim: hd };
    const wantD = new Uint32Array(digestWords).fill(DIGEST_SENTINEL);
    for (let t = 0; t < numDecode; t++) {
      const pos = positions[t];
      const page = batch.blockTable[tokenSeq[t] * batch.maxPagesPerSeq + Math.floor(pos / pageSize)];
      const l = Math.floor((pos % pageSize) / L);
      const f = new Float32Array(numPages * lpp * cacheHeads * 2 * hd);
      digestRef(kF32, ds, page, l, (pos % L) + 1, f);
      const words = digestWordsRef(f, hd);
      for (let h = 0; h < cacheHeads; h++) {
        const o = digestOffset(ds, page, l, h) / 2;
        wantD.set(words.subarray(o, o + hd), o);
      }
    }
    assert.deepEqual(Array.from(gotD), Array.from(wantD), `${what} digests`);
  }
  assert.ok(splits >= 2, `${splits} rounds ran the K and V passes`);
  arena.destroy();
});

test('rope_kv_write rejects bad shapes', async () => {
  const gpu = await testGpu();
  const k = new RopeKvWriteKernel(gpu);
  const arena = new UniformArena(gpu);
  const b = gpu.createBuffer('b', 1 << 12);
  const args = {
    qkv: b,
    q: b,
    kCache: b,
    vCache: b,
    blockTable: b,
    tokenSeq: b,
    positions: b,
    invFreq: b,
    T: 1,
    numHeads: 2,
    numKvHeads: 1,
    headDim: 8,
    pageSize: 4,
    maxPagesPerSeq: 2,
  };
  const encode = (a: typeof args & Record<string, unknown>) => {
    const enc = gpu.device.createCommandEncoder();
    const pass = enc.beginComputePass();
    try {
      k.encode(pass, arena, a);
    } finally {
      pass.end();
      enc.finish();
    }
  };
  assert.throws(() => encode({ ...args, headDim: 7 }), /bad shape/);
  assert.throws(() => encode({ ...args, cacheHeads: 2 }), /bad shape/);
  assert.throws(() => encode({ ...args, T: 1000 }), /binding qkv/);
  assert.throws(() => encode({ ...args, digest: { digests: b, logicalPageSize: 3, numDecode: 1 } }), /digest shape/);
  gpu.takeErrors();
  b.destroy();
  arena.destroy();
});
