/**
 * Head ranges in the dense kernels (the two pools after the head permutation): attention processes query heads
 * [qHeadOffset, qHeadOffset + numHeads) of wider q/out rows against a cache of its own KV head count, and kv_write
 * writes KV heads [kvHeadOffset, kvHeadOffset + n) of wider k/v rows into a cache of n heads. Checked against the
 * all-heads references on the sliced rows; heads outside the range of `out` must keep their sentinel.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AttentionKernel, type AttentionVariant } from '../../shaders/attention.js';
import { KvWriteKernel } from '../../shaders/kv_write.js';
import { UniformArena } from '../../shaders/runtime.js';
import { assertClose } from '../helpers/compare.js';
import { assertNoGpuErrors, f32Buffer, testGpu, u32Buffer } from '../helpers/gpu.js';
import { makePagedBatch } from '../helpers/paged.js';
import { Rng } from '../helpers/rng.js';
import { attentionRef, kvWriteRef } from '../reference/attention.js';

const TOL = { atol: 1e-5, rtol: 1e-4 };
const SENTINEL = -777;

/** Heads [off, off + n) of rows of `rowHeads` heads: (T, rowHeads, hd) -> (T, n, hd). */
function sliceHeads(x: Float32Array, T: number, rowHeads: number, off: number, n: number, hd: number): Float32Array {
  const out = new Float32Array(T * n * hd);
  for (let t = 0; t < T; t++) out.set(x.subarray((t * rowHeads + off) * hd, (t * rowHeads + off + n) * hd), t * n * hd);
  return out;
}

for (const c of [
  { seed: 1, group: 1, kvRowHeads: 3, kvHeadOffset: 1, n: 2, headDim: 48, pageSize: 16 },
  { seed: 2, group: 4, kvRowHeads: 2, kvHeadOffset: 0, n: 1, headDim: 32, pageSize: 32 },
  { seed: 3, group: 2, kvRowHeads: 4, kvHeadOffset: 3, n: 1, headDim: 64, pageSize: 16 },
]) {
  test(`kv_write + attention over KV heads [${c.kvHeadOffset}, +${c.n}) of ${c.kvRowHeads}, GQA ${c.group}`, async () => {
    const gpu = await testGpu();
    const rng = new Rng(c.seed);
    const { headDim, pageSize, group, n, kvRowHeads, kvHeadOffset } = c;
    const qRowHeads = kvRowHeads * group;
    const qHeadOffset = kvHeadOffset * group;
    const numHeads = n * group;
    // the cache holds n heads; the batch's k/v rows hold kvRowHeads
    const b = makePagedBatch(
      rng,
      [
        { ctx: 0, fresh: 20 },
        { ctx: 37, fresh: 1 },
        { ctx: 50, fresh: 9 },
      ],
      { numKvHeads: n, headDim, pageSize },
      { exactF16: true },
    );
    const kWide = rng.normalArray(b.T * kvRowHeads * headDim);
    const vWide = rng.normalArray(b.T * kvRowHeads * headDim);
    for (const x of [kWide, vWide]) for (let i = 0; i < x.length; i++) x[i] = Math.round(x[i] * 256) / 256; // f16-exact
    const q = rng.normalArray(b.T * qRowHeads * headDim);
    const scale = 1 / Math.sqrt(headDim);
    const kCache = gpu.upload('kCache', b.kCache);
    const vCache = gpu.upload('vCache', b.vCache);
    const common = {
      blockTable: u32Buffer(gpu, b.blockTable),
      tokenSeq: u32Buffer(gpu, b.tokenSeq),
      positions: u32Buffer(gpu, b.positions),
      T: b.T,
      numKvHeads: n,
      headDim,
      pageSize,
      maxPagesPerSeq: b.maxPagesPerSeq,
    };
    const variants: AttentionVariant[] = ['lanes', 'workgroup'];
    // tokens before firstToken (the engine's sparse decode rows) are skipped and their out rows left alone
    const firstToken = c.seed === 1 ? 0 : Math.floor(b.T / 3);
    const outs = variants.map(() => f32Buffer(gpu, new Float32Array(b.T * qRowHeads * headDim).fill(SENTINEL)));
    const arena = new UniformArena(gpu);
    gpu.run((pass) => {
      new KvWriteKernel(gpu).encode(pass, arena, {
        ...common,
        k: f32Buffer(gpu, kWide),
        v: f32Buffer(gpu, vWide),
        kCache,
        vCache,
        kvHeadOffset,
        kvRowHeads,
      });
      variants.forEach((variant, i) => {
        new AttentionKernel(gpu, { variant }).encode(pass, arena, {
          ...common,
          q: f32Buffer(gpu, q),
          kCache,
          vCache,
          out: outs[i],
          numHeads,
          scale,
          qHeadOffset,
          qRowHeads,
          firstToken,
        });
      });
    }, arena);
    const kSub = sliceHeads(kWide, b.T, kvRowHeads, kvHeadOffset, n, headDim);
    const vSub = sliceHeads(vWide, b.T, kvRowHeads, kvHeadOffset, n, headDim);
    const cache = kvWriteRef(kSub, vSub, b.kCache, b.vCache, b.blockTable, b.tokenSeq, b.positions, b);
    const gotK = new Uint16Array(await gpu.read(kCache, 0, b.kCache.byteLength));
    assert.deepEqual(gotK, cache.kCache, 'K cache holds exactly the range heads');
    const want = attentionRef({
      ...b,
      q: sliceHeads(q, b.T, qRowHeads, qHeadOffset, numHeads, headDim),
      kCache: cache.kCache,
      vCache: cache.vCache,
      numHeads,
      numKvHeads: n,
      scale,
    });
    for (let i = 0; i < variants.length; i++) {
      const got = await gpu.readF32(outs[i], b.T * qRowHeads * headDim);
      const from = firstToken * numHeads * headDim;
      const sliced = sliceHeads(got, b.T, qRowHeads, qHeadOffset, numHeads, headDim);
      assertClose(sliced.subarray(from), want.subarray(from), TOL, variants[i]);
      const outside = got.filter((_, j) => {
        const h = Math.floor(j / headDim) % qRowHeads;
        const t = Math.floor(j / (headDim * qRowHeads));
        return h < qHeadOffset || h >= qHeadOffset + numHeads || t < firstToken;
      });
      assert.ok(
        outside.every((x) => x === SENTINEL),
        `${variants[i]}: heads outside the range and tokens before firstToken untouched`,
      );
    }
    assertNoGpuErrors(gpu);
    arena.destroy();
  });
}

test('head ranges that do not fit the rows are rejected', async () => {
  const gpu = await testGpu();
  const arena = new UniformArena(gpu);
  const buf = gpu.createBuffer('x', 4096);
  const shape = { T: 1, numKvHeads: 1, headDim: 8, pageSize: 16, maxPagesPerSeq: 1 };
  const bufs = { kCache: buf, vCache: buf, blockTable: buf, tokenSeq: buf, positions: buf };
  const pass = gpu.device.createCommandEncoder().beginComputePass();
  assert.throws(
    () =>
      new AttentionKernel(gpu).encode(pass, arena, {
        ...shape,
        ...bufs,
        q: buf,
        out: buf,
        numHeads: 2,
        scale: 1,
        qHeadOffset: 1,
        qRowHeads: 2,
      }),
    /head range/,
  );
  assert.throws(
    () =>
      new KvWriteKernel(gpu).encode(pass, arena, { ...shape, ...bufs, k: buf, v: buf, kvHeadOffset: 2, kvRowHeads: 2 }),
    /head range/,
  );
  pass.end();
  arena.destroy();
});
