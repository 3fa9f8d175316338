/**
 * Block-sparse prefill attention (shaders/block_sparse_attention.wgsl, lanes layout: lib/lanes_acc.wgsl over
 * lib/lanes.wgsl and lib/softmax.wgsl, keys through lib/block_table.wgsl) against the dense and Lambda references.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  BlockSparseAttentionKernel,
  BlockSparsePrefill,
  HeadMode,
  planPrefillBlocks,
} from '../../shaders/block_sparse_attention.js';
import { UniformArena } from '../../shaders/runtime.js';
import { assertClose, compareArrays } from '../helpers/compare.js';
import { assertNoGpuErrors, f32Buffer, testGpu, u32Buffer } from '../helpers/gpu.js';
import { makePrefillCache, type PrefillSeq } from '../helpers/prefill-cache.js';
import { Rng } from '../helpers/rng.js';
import { attentionRef } from '../reference/attention.js';
import { blockSelectRef } from '../reference/block_select.js';
import { prefillAttentionRef } from '../reference/prefill_attention.js';

// f32 dot products of up to 256 terms and an f32 online softmax over up to ~1000 keys against f64, on identical
// f16-decoded K/V: outputs are convex combinations of N(0, 1) values, errors a few 1e-7 typically.
const TOL = { atol: 1e-5, rtol: 1e-4 };

interface Case {
  seed: number;
  group: number;
  numKvHeads?: number;
  headDim: number;
  pageSize: number;
  blockSize?: number;
  seqs: PrefillSeq[];
  modes?: number[]; // per KV head; default all sparse
  topBlocks: number;
  localBlocks?: number;
  sink?: number;
  local?: number;
  /** Also compare with the dense reference attentionRef (every head must see its whole causal context). */
  dense?: boolean;
}

async function runCase(c: Case): Promise<void> {
  const gpu = await testGpu();
  const t0 = performance.now();
  const rng = new Rng(c.seed);
  const numKvHeads = c.numKvHeads ?? (c.group === 8 ? 1 : rng.int(1, 2));
  const numHeads = numKvHeads * c.group;
  const { headDim, pageSize } = c;
  const blockSize = c.blockSize ?? 64;
  const cache = makePrefillCache(rng, c.seqs, { numKvHeads, headDim, pageSize });
  const q = rng.normalArray(cache.T * numHeads * headDim);
  const scale = rng.next() < 0.75 ? 1 / Math.sqrt(headDim) : 0.3;
  const headModes = c.modes ?? Array(numKvHeads).fill(HeadMode.sparse);
  const prefill = new BlockSparsePrefill(gpu, {
    blockSize,
    topBlocks: c.topBlocks,
    localBlocks: c.localBlocks ?? 0,
    sink: c.sink,
    local: c.local,
  });
  const plan = planPrefillBlocks(cache.tokenSeq, cache.positions, blockSize);
  const shape = { numHeads, numKvHeads, headDim };
  const scratch = prefill.scratchBytes(plan, shape);
  const blockList = gpu.createBuffer('blockList', scratch.blockList);
  const out = gpu.createBuffer('out', cache.T * numHeads * headDim * 4);
  const arena = new UniformArena(gpu);
  gpu.run((pass) => {
    prefill.encodeLayer(pass, arena, {
      q: f32Buffer(gpu, q),
      kCache: u32Buffer(gpu, cache.kCache),
      vCache: u32Buffer(gpu, cache.vCache),
      blockTable: u32Buffer(gpu, cache.blockTable),
      qBlocks: u32Buffer(gpu, plan.qBlocks),
      kBlocks: u32Buffer(gpu, plan.kBlocks),
      kPool: gpu.createBuffer('kPool', scratch.kPool),
      blockList,
      out,
      plan,
      ...shape,
      pageSize,
      maxPagesPerSeq: cache.maxPagesPerSeq,
      scale,
      headModes,
    });
  }, arena);
  const got = await gpu.readF32(out, cache.T * numHeads * headDim);
  const t1 = performance.now();
  const stride = prefill.listStride(plan);
  const lists = await gpu.readU32(blockList, scratch.blockList / 4);
  assertNoGpuErrors(gpu);
  const what =
    `seed=${c.seed} heads=${numHeads}/${numKvHeads} modes=${headModes} headDim=${headDim} page=${pageSize} ` +
    `BS=${blockSize} top=${c.topBlocks} seqs=${JSON.stringify(c.seqs)}`;
  assert.ok(
    got.every((x) => Number.isFinite(x)),
    `${what}: non-finite output (NaN padding leaked)`,
  );
  // The attention reference uses the GPU's own block lists (selection is checked against its reference in
  // block_select.test.ts, and here for the lists it produced); it demands the lists hold sink and diagonal.
  const qbOf = new Map<string, number>();
  for (let qb = 0; qb < plan.numQBlocks; qb++) {
    qbOf.set(`${plan.qBlocks[qb * 5]}:${Math.floor(plan.qBlocks[qb * 5 + 2] / blockSize)}`, qb);
  }
  const gpuList = (seq: number, b: number, h: number) => {
    const base = ((qbOf.get(`${seq}:${b}`) ?? -1) * numHeads + h) * stride;
    return Array.from(lists.subarray(base + 1, base + 1 + lists[base]));
  };
  const sel = blockSelectRef({
    ...cache,
    q,
    numHeads,
    blockSize,
    headModes,
    topBlocks: prefill.topBlocks,
    localBlocks: prefill.localBlocks,
  });
  for (const [key, r] of sel) {
    const [seq, b] = key.split(':').map(Number);
    for (let h = 0; h < numHeads; h++) {
      if (headModes[Math.floor(h / c.group)] !== HeadMode.sparse) continue;
      assert.deepEqual(gpuList(seq, b, h), r.lists[h], `${what}: selection of ${key} head ${h}`);
    }
  }
  const want = prefillAttentionRef({
    ...cache,
    q,
    ...shape,
    scale,
    headModes,
    blockSize,
    lists: gpuList,
    sink: prefill.sink,
    local: prefill.local,
  });
  if (process.env.SIFT_TEST_VERBOSE) {
    const ms = `gpu ${(t1 - t0).toFixed(0)} ms, refs ${(performance.now() - t1).toFixed(0)} ms`;
    console.log(what, ms, compareArrays(got, want, TOL));
  }
  assertClose(got, want, TOL, what);
  if (c.dense) {
    const dense = attentionRef({ ...cache, q, kCache: cache.kH, vCache: cache.vH, numHeads, scale });
    assertClose(got, dense, TOL, `${what} vs dense attentionRef`);
  }
  arena.destroy();
}

const CHUNKS = [1, 63, 65, 130];
const PREFIXES = [0, 37, 64, 200];

test('(a) with every causal block selected, block-sparse equals dense attentionRef: GQA 1/4/8, chunk edges', async () => {
  let seed = 1;
  for (const group of [1, 4, 8]) {
    for (let i = 0; i < CHUNKS.length; i++) {
      const seqs = [{ ctx: PREFIXES[(i + group) % 4], fresh: CHUNKS[i] }];
      if (i === 3) seqs.push({ ctx: 90, fresh: 65 }); // two sequences in one step
      await runCase({
        seed,
        group,
        headDim: [48, 64, 128, 80][seed % 4],
        pageSize: [16, 64][seed % 2],
        seqs,
        topBlocks: 1000,
        dense: true,
      });
      seed++;
    }
  }
  // Dense mode (0) is the same kernel's third path.
  await runCase({
    seed: 30,
    group: 4,
    headDim: 64,
    pageSize: 32,
    seqs: [{ ctx: 100, fresh: 65 }],
    modes: [0, 0],
    numKvHeads: 2,
    topBlocks: 0,
    dense: true,
  });
});

test('(b) Lambda mode equals the sink + local-window reference, token-exact', async () => {
  await runCase({
    seed: 40,
    group: 4,
    numKvHeads: 2,
    headDim: 64,
    pageSize: 16,
    seqs: [{ ctx: 150, fresh: 130 }],
    modes: [2, 2],
    topBlocks: 0,
    sink: 5,
    local: 40,
  });
  // LServe defaults (sink 128, local 256) over a prefix that crosses both edges; also a sink beyond the chunk.
  await runCase({
    seed: 41,
    group: 1,
    numKvHeads: 2,
    headDim: 48,
    pageSize: 64,
    seqs: [
      { ctx: 300, fresh: 65 },
      { ctx: 0, fresh: 63 },
    ],
    modes: [2, 2],
    topBlocks: 0,
  });
  // local = 1 (each token sees the sinks and itself).
  await runCase({
    seed: 42,
    group: 8,
    numKvHeads: 1,
    headDim: 32,
    pageSize: 32,
    seqs: [{ ctx: 10, fresh: 63 }],
    modes: [2],
    topBlocks: 0,
    sink: 3,
    local: 1,
  });
});

test('(e) mixed per-head modes in one dispatch, with real sparsity and local blocks', async () => {
  await runCase({
    seed: 50,
    group: 2,
    numKvHeads: 3,
    headDim: 64,
    pageSize: 32,
    blockSize: 16,
    seqs: [
      { ctx: 400, fresh: 130 },
      { ctx: 33, fresh: 1 },
    ],
    modes: [HeadMode.sparse, HeadMode.lambda, HeadMode.dense],
    topBlocks: 3,
    localBlocks: 1,
    sink: 20,
    local: 50,
  });
  await runCase({
    seed: 51,
    group: 4,
    numKvHeads: 2,
    headDim: 128,
    pageSize: 64,
    seqs: [{ ctx: 640, fresh: 65 }],
    modes: [HeadMode.lambda, HeadMode.sparse],
    topBlocks: 2,
    sink: 64,
    local: 128,
  });
});

test('(d) NaN in unused cache slots never leaks, even with partial last pages and a 2-D grid', async () => {
  const gpu = await testGpu();
  const rng = new Rng(60);
  const headDim = 32;
  const cache = makePrefillCache(rng, [{ ctx: 5, fresh: 66 }], { numKvHeads: 1, headDim, pageSize: 64 });
  const plan = planPrefillBlocks(cache.tokenSeq, cache.positions, 64);
  const q = rng.normalArray(cache.T * 2 * headDim);
  const out = gpu.createBuffer('out', q.byteLength);
  const arena = new UniformArena(gpu);
  const kernel = new BlockSparseAttentionKernel(gpu, { maxWorkgroupsPerDim: 9 });
  // Every slot past position 70 of the sequence's second page is NaN; dense, Lambda and a hand-made list that
  // names the diagonal block only must all stay finite and equal their references.
  const lists = new Uint32Array(plan.numQBlocks * 2 * 3);
  for (let i = 0; i < plan.numQBlocks * 2; i++)
    lists.set([1, Math.floor(plan.qBlocks[Math.floor(i / 2) * 5 + 2] / 64)], i * 3);
  for (const mode of [0, 1, 2]) {
    gpu.run((pass) => {
      kernel.encode(pass, arena, {
        q: f32Buffer(gpu, q),
        kCache: u32Buffer(gpu, cache.kCache),
        vCache: u32Buffer(gpu, cache.vCache),
        blockTable: u32Buffer(gpu, cache.blockTable),
        qBlocks: u32Buffer(gpu, plan.qBlocks),
        blockList: u32Buffer(gpu, lists),
        out,
        plan,
        numHeads: 2,
        numKvHeads: 1,
        headDim,
        pageSize: 64,
        maxPagesPerSeq: cache.maxPagesPerSeq,
        scale: 0.2,
        headModes: [mode],
        listStride: 3,
        sink: 2,
        local: 7,
      });
    }, arena);
    const got = await gpu.readF32(out, q.length);
    assertNoGpuErrors(gpu);
    assert.ok(
      got.every((x) => Number.isFinite(x)),
      `mode ${mode}: NaN leaked`,
    );
    const want = prefillAttentionRef({
      ...cache,
      q,
      numHeads: 2,
      numKvHeads: 1,
      headDim,
      scale: 0.2,
      headModes: [mode],
      blockSize: 64,
      lists: (_s, b) => [b],
      sink: 2,
      local: 7,
    });
    assertClose(got, want, TOL, `NaN padding, mode ${mode}`);
    arena.reset();
  }
  arena.destroy();
});
