/**
 * Paged causal attention against the token-by-token reference. Both variants run on every case, so this covers
 * shaders/attention.wgsl (workgroup, lib/tile.wgsl), shaders/attention_lanes.wgsl (lanes, lib/lanes_acc.wgsl and
 * lib/lanes.wgsl), the online softmax both share (lib/softmax.wgsl), their attention_common.wgsl, and the grid
 * and cache addressing includes (lib/token_head.wgsl, lib/grid.wgsl, lib/block_table.wgsl, lib/paged.wgsl), with the
 * caches in one buffer or split into slabs of whole pages (shaders/lib/slabs.ts, tiny binding limits: a few pages).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AttentionKernel, type AttentionVariant } from '../../shaders/attention.js';
import { KvWriteKernel } from '../../shaders/kv_write.js';
import { UniformArena } from '../../shaders/runtime.js';
import { assertClose, compareArrays } from '../helpers/compare.js';
import { assertNoGpuErrors, f32Buffer, testGpu, u32Buffer } from '../helpers/gpu.js';
import { makePagedBatch, type SeqSpec } from '../helpers/paged.js';
import { Rng } from '../helpers/rng.js';
import { poolOf } from '../helpers/slabs.js';
import { attentionRef, kvWriteRef } from '../reference/attention.js';

// The caches are f16 and the reference reads the very same f16 values (the new tokens' k, v are f16-representable,
// so the GPU's rounding direction cannot matter); what remains is the GPU's f32 arithmetic.
// f32 dot products of up to 256 terms and an f32 online softmax over up to ~400 keys, against f64: the output is
// a convex combination of N(0, 1) values, so errors are absolute, a few 1e-7 typically.
const TOL = { atol: 1e-5, rtol: 1e-4 };
// With q ~ N(0, 12^2) scores reach ~+-60: an f32 score carries ~1e-5 absolute rounding error, which the softmax
// passes straight into the weights, so the bound is looser there.
const TOL_LARGE_SCORES = { atol: 1e-4, rtol: 1e-4 };
const VARIANTS: AttentionVariant[] = ['workgroup', 'lanes'];

interface Case {
  seed: number;
  group: number; // GQA ratio numHeads / numKvHeads
  pageSize: number;
  headDim: number;
  qStd?: number;
  tol?: { atol: number; rtol: number };
  maxWorkgroupsPerDim?: number;
  /** Sliding window (cached keys older than every query's window are NaN) and logit soft-cap. */
  window?: number;
  softcap?: number;
  /** K and V each split into this many slabs of whole pages (default one buffer). */
  slabs?: number;
}

async function runCase(c: Case): Promise<void> {
  const gpu = await testGpu();
  const rng = new Rng(c.seed);
  const numKvHeads = c.group === 8 ? 1 : rng.int(1, 2);
  const numHeads = numKvHeads * c.group;
  const { pageSize, headDim } = c;
  // Mixed batch: a fresh prefill, a chunked prefill continuing a cached prefix, and decode tokens of
  // sequences of different lengths (including page-boundary lengths).
  const seqs: SeqSpec[] = [
    { ctx: 0, fresh: rng.int(1, 40) },
    { ctx: rng.int(1, 120), fresh: rng.int(2, 30) },
    { ctx: rng.int(1, 300), fresh: 1 },
    { ctx: pageSize - 1, fresh: 1 },
    { ctx: 2 * pageSize, fresh: 1 },
  ];
  const b = makePagedBatch(rng, seqs, { numKvHeads, headDim, pageSize }, { exactF16: true, window: c.window });
  const mods = { window: c.window, softcap: c.softcap };
  const q = rng.normalArray(b.T * numHeads * headDim, c.qStd ?? 1);
  const scale = rng.next() < 0.75 ? 1 / Math.sqrt(headDim) : 0.3;
  // (numPages, pageSize, numKvHeads, headDim / 2) f16 pairs, as one buffer or slabs of whole pages
  const pageBytes = pageSize * numKvHeads * headDim * 2;
  const kCache = poolOf(gpu, 'kCache', b.kCache, pageBytes, c.slabs ?? 1);
  const vCache = poolOf(gpu, 'vCache', b.vCache, pageBytes, c.slabs ?? 1);
  const blockTable = u32Buffer(gpu, b.blockTable);
  const tokenSeq = u32Buffer(gpu, b.tokenSeq);
  const positions = u32Buffer(gpu, b.positions);
  const qBuf = f32Buffer(gpu, q);
  const shape = { T: b.T, numKvHeads, headDim, pageSize, maxPagesPerSeq: b.maxPagesPerSeq };
  const outs = VARIANTS.map(() => gpu.createBuffer('out', b.T * numHeads * headDim * 4));
  const kvWrite = new KvWriteKernel(gpu);
  const kernels = VARIANTS.map(
    (variant) => new AttentionKernel(gpu, { variant, maxWorkgroupsPerDim: c.maxWorkgroupsPerDim }),
  );
  const arena = new UniformArena(gpu);
  gpu.run((pass) => {
    kvWrite.encode(pass, arena, {
      k: f32Buffer(gpu, b.k),
      v: f32Buffer(gpu, b.v),
      kCache,
      vCache,
      blockTable,
      tokenSeq,
      positions,
      ...shape,
    });
    kernels.forEach((k, i) => {
      k.encode(pass, arena, {
        q: qBuf,
        kCache,
        vCache,
        blockTable,
        tokenSeq,
        positions,
        out: outs[i],
        numHeads,
        scale,
        ...shape,
        ...mods,
      });
    });
  }, arena);
  const cache = kvWriteRef(b.k, b.v, b.kCache, b.vCache, b.blockTable, b.tokenSeq, b.positions, b);
  const want = attentionRef({
    q,
    kCache: cache.kCache,
    vCache: cache.vCache,
    blockTable: b.blockTable,
    tokenSeq: b.tokenSeq,
    positions: b.positions,
    numHeads,
    scale,
    ...shape,
    ...mods,
  });
  for (let i = 0; i < VARIANTS.length; i++) {
    const got = await gpu.readF32(outs[i], want.length);
    assertNoGpuErrors(gpu);
    const what =
      `attention ${VARIANTS[i]} seed=${c.seed} slabs=${c.slabs ?? 1} heads=${numHeads}/${numKvHeads} ` +
      `headDim=${headDim} page=${pageSize} T=${b.T} window=${c.window ?? 0} softcap=${c.softcap ?? 0} ` +
      `seqs=${JSON.stringify(seqs)}`;
    if (process.env.SIFT_TEST_VERBOSE) console.log(what, compareArrays(got, want, c.tol ?? TOL));
    assertClose(got, want, c.tol ?? TOL, what);
  }
  arena.destroy();
}

const HEAD_DIMS = [36, 48, 64, 80, 128, 256];

test('paged attention matches the token-by-token reference: GQA 1/4/8 x page 16/32/64, mixed prefill + decode', async () => {
  let seed = 1;
  for (const group of [1, 4, 8]) {
    for (const pageSize of [16, 32, 64]) {
      const headDim = HEAD_DIMS[(seed - 1) % HEAD_DIMS.length];
      await runCase({ seed, group, pageSize, headDim });
      seed++;
    }
  }
});

test('paged attention stays stable with large scores, and on a 2-D workgroup grid', async () => {
  await runCase({ seed: 101, group: 4, pageSize: 16, headDim: 64, qStd: 12, tol: TOL_LARGE_SCORES });
  await runCase({ seed: 102, group: 1, pageSize: 32, headDim: 48, maxWorkgroupsPerDim: 5 });
});

test('sliding window (keys older than the window are NaN, never read) and logit soft-capping', async () => {
  // windows shorter than most sequences, not multiples of the page or the tile; window 1 sees only itself
  let seed = 200;
  for (const window of [1, 7, 33, 100]) {
    await runCase({ seed: seed++, group: [1, 4, 8][seed % 3], pageSize: 16, headDim: 48, window });
  }
  await runCase({ seed: seed++, group: 4, pageSize: 32, headDim: 64, qStd: 12, softcap: 5, tol: TOL_LARGE_SCORES });
  await runCase({ seed: seed++, group: 1, pageSize: 16, headDim: 64, qStd: 4, window: 50, softcap: 2 });
});

test('paged attention over K/V pools split into 3 and 5 slabs of a few pages each (a sequence spans several)', async () => {
  await runCase({ seed: 201, group: 4, pageSize: 16, headDim: 16, slabs: 3 });
  await runCase({ seed: 202, group: 1, pageSize: 32, headDim: 12, slabs: 5 });
  await runCase({ seed: 203, group: 4, pageSize: 16, headDim: 16, slabs: 4, window: 40, softcap: 3 });
});

test('attention picks the lanes variant on CPU adapters and workgroup otherwise', async () => {
  const gpu = await testGpu();
  assert.equal(new AttentionKernel(gpu).variant, gpu.caps.isCpu ? 'lanes' : 'workgroup');
  assert.equal(new AttentionKernel(gpu, { variant: 'workgroup' }).variant, 'workgroup');
});

test('NaN padding is live in the f16 cache: a query that reads one unowned slot gets NaN (both variants)', async () => {
  // Guards the NaN-padding method itself: if 0x7e00 did not come back as NaN through unpack2x16float, the other
  // tests could not see reads of padding.
  const gpu = await testGpu();
  const rng = new Rng(7);
  const headDim = 48;
  const pageSize = 16;
  const b = makePagedBatch(rng, [{ ctx: 20, fresh: 1 }], { numKvHeads: 1, headDim, pageSize }, { exactF16: true });
  // kv_write does not run: the query at position 21 reads keys 20 and 21, slots no sequence owns (NaN)
  const positions = Uint32Array.from([b.positions[0] + 1]);
  const q = rng.normalArray(headDim);
  const outs = VARIANTS.map(() => gpu.createBuffer('out', headDim * 4));
  const arena = new UniformArena(gpu);
  const common = {
    q: f32Buffer(gpu, q),
    kCache: gpu.upload('kCache', b.kCache),
    vCache: gpu.upload('vCache', b.vCache),
    blockTable: u32Buffer(gpu, b.blockTable),
    tokenSeq: u32Buffer(gpu, b.tokenSeq),
    positions: u32Buffer(gpu, positions),
    T: 1,
    numHeads: 1,
    numKvHeads: 1,
    headDim,
    pageSize,
    maxPagesPerSeq: b.maxPagesPerSeq,
    scale: 1 / Math.sqrt(headDim),
  };
  const kernels = VARIANTS.map((variant) => new AttentionKernel(gpu, { variant }));
  gpu.run((pass) => {
    kernels.forEach((k, i) => {
      k.encode(pass, arena, { ...common, out: outs[i] });
    });
  }, arena);
  for (let i = 0; i < VARIANTS.length; i++) {
    const got = await gpu.readF32(outs[i], headDim);
    assert.ok(got.every(Number.isNaN), `${VARIANTS[i]}: reading an unowned slot must give NaN, got ${got[0]}`);
  }
  assertNoGpuErrors(gpu);
  arena.destroy();
});

test('attention and kv_write reject an odd head dim (the cache packs f16 pairs)', async () => {
  const gpu = await testGpu();
  const arena = new UniformArena(gpu);
  const buf = gpu.createBuffer('x', 4096);
  const shape = { T: 1, numKvHeads: 1, headDim: 7, pageSize: 16, maxPagesPerSeq: 1 };
  const bufs = { kCache: buf, vCache: buf, blockTable: buf, tokenSeq: buf, positions: buf };
  const pass = gpu.device.createCommandEncoder().beginComputePass();
  assert.throws(
    () => new AttentionKernel(gpu).encode(pass, arena, { ...shape, ...bufs, q: buf, out: buf, numHeads: 1, scale: 1 }),
    /even/,
  );
  assert.throws(() => new KvWriteKernel(gpu).encode(pass, arena, { ...shape, ...bufs, k: buf, v: buf }), /even/);
  pass.end();
  arena.destroy();
});
