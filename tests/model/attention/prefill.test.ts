/**
 * Prefill attention of a step (model/attention/prefill.ts): block digests written over two steps, block selection
 * and the tiled attention together, against the references: the block lists equal blockSelectRef's exactly on keys
 * whose planted blocks score far apart, and the output equals prefillAttentionRef over those lists, with per-KV-head
 * modes mixed (block-sparse, Lambda, dense), GQA 4, two sequences, decode rows before the prefill tokens (the plan's
 * first token), q/out rows wider than the heads processed, NaN in every unused cache slot.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HeadMode, PrefillAttention } from '../../../model/attention/prefill.js';
import { blockDigestBytes } from '../../../shaders/block_digest.js';
import { type HeadModeValue, QBLOCK_WORDS } from '../../../shaders/block_select.js';
import { UniformArena } from '../../../shaders/runtime.js';
import { assertClose } from '../../helpers/compare.js';
import { assertNoGpuErrors, f32Buffer, testGpu, u32Buffer } from '../../helpers/gpu.js';
import { makePrefillCache } from '../../helpers/prefill-cache.js';
import { Rng } from '../../helpers/rng.js';
import { blockSelectRef } from '../../reference/block_select.js';
import { prefillAttentionRef } from '../../reference/prefill_attention.js';

const TOL = { atol: 1e-5, rtol: 1e-4 };

test('digests + selection + tiled attention equal the references (mixed modes, GQA, decode rows first)', async () => {
  const gpu = await testGpu();
  const rng = new Rng(77);
  const headDim = 64;
  const pageSize = 32;
  const BS = 64;
  const group = 4;
  const numKvHeads = 3;
  const numHeads = numKvHeads * group;
  const rowHeads = numHeads + 2;
  const headModes: HeadModeValue[] = [HeadMode.sparse, HeadMode.lambda, HeadMode.dense];
  const seqs = [
    { ctx: 700, fresh: 150 },
    { ctx: 30, fresh: 100 },
  ];
  // Keys N(0, 0.3^2), plus a shared direction u in key blocks 2, 5 and 9: the queries (u + noise) pick them.
  const hot = new Set([2, 5, 9]);
  const u = new Rng(5).normalArray(headDim);
  const cache = makePrefillCache(
    rng,
    seqs,
    { numKvHeads, headDim, pageSize },
    {
      key: (_s, pos) => {
        const k = rng.normalArray(headDim, 0.3);
        if (hot.has(Math.floor(pos / BS))) for (let d = 0; d < headDim; d++) k[d] += u[d];
        return k;
      },
    },
  );
  // D = 3 rows before the prefill tokens stand for decode rows (their q/out rows are left alone).
  const D = 3;
  const T = D + cache.T;
  const tokenSeq = Uint32Array.from([...Array(D).fill(9), ...cache.tokenSeq]);
  const positions = Uint32Array.from([...Array(D).fill(0), ...cache.positions]);
  const qRows = rng.normalArray(T * rowHeads * headDim);
  for (let t = D; t < T; t++) {
    for (let h = 0; h < numHeads; h++) {
      const o = (t * rowHeads + h) * headDim;
      for (let d = 0; d < headDim; d++) qRows[o + d] = 0.3 * qRows[o + d] + u[d];
    }
  }
  const prefill = new PrefillAttention(gpu, { topBlocks: 2, sink: 20, local: 70 });
  const plan = prefill.plan(tokenSeq, positions, group, D);
  assert.equal(plan.blocks.T, T);
  const shape = { numKvHeads, headDim, pageSize, maxPagesPerSeq: cache.maxPagesPerSeq };
  const kCache = u32Buffer(gpu, cache.kCache);
  const blockTable = u32Buffer(gpu, cache.blockTable);
  const digests = f32Buffer(
    gpu,
    new Float32Array(blockDigestBytes(cache.numPages, pageSize, BS, numKvHeads, headDim) / 4).fill(Number.NaN),
  );
  const blockList = gpu.createBuffer('blockList', prefill.blockListBytes(plan, numKvHeads));
  const out = f32Buffer(gpu, new Float32Array(T * rowHeads * headDim).fill(-7));
  const arena = new UniformArena(gpu);
  for (const spans of [
    seqs.map((s, row) => ({ row, start: 0, end: s.ctx })),
    seqs.map((s, row) => ({ row, start: s.ctx, end: s.ctx + s.fresh })),
  ]) {
    const entries = prefill.digestEntries(spans);
    arena.reset();
    gpu.run((pass) => {
      prefill.encodeDigests(pass, arena, {
        kCache,
        blockTable,
        entries: u32Buffer(gpu, entries),
        digests,
        numEntries: entries.length / 3,
        ...shape,
      });
    }, arena);
  }
  arena.reset();
  gpu.run((pass) => {
    prefill.encodeLayer(pass, arena, {
      q: f32Buffer(gpu, qRows),
      kCache,
      vCache: u32Buffer(gpu, cache.vCache),
      blockTable,
      qBlocks: u32Buffer(gpu, plan.blocks.qBlocks),
      tiles: u32Buffer(gpu, plan.tiles.tiles),
      digests,
      blockList,
      out,
      plan,
      numHeads,
      qRowHeads: rowHeads,
      ...shape,
      scale: 1 / Math.sqrt(headDim),
      headModes,
    });
  }, arena);
  const all = await gpu.readF32(out, T * rowHeads * headDim);
  const lists = await gpu.readU32(blockList, prefill.blockListBytes(plan, numKvHeads) / 4);
  assertNoGpuErrors(gpu);
  arena.destroy();
  prefill.destroy();

  // The references over the prefill tokens [D, T) and the processed heads.
  const q = new Float32Array(cache.T * numHeads * headDim);
  for (let t = 0; t < cache.T; t++) {
    const o = (t + D) * rowHeads * headDim;
    q.set(qRows.subarray(o, o + numHeads * headDim), t * numHeads * headDim);
  }
  const sel = blockSelectRef({
    ...cache,
    q,
    numHeads,
    blockSize: BS,
    headModes,
    topBlocks: 2,
    localBlocks: 0,
  });
  const stride = prefill.listStride(plan);
  const gpuLists = new Map<string, number[]>();
  for (let qb = 0; qb < plan.blocks.numQBlocks; qb++) {
    const row = plan.blocks.qBlocks[qb * QBLOCK_WORDS];
    const b = Math.floor(plan.blocks.qBlocks[qb * QBLOCK_WORDS + 2] / BS);
    const base = qb * numKvHeads * stride; // KV head 0 is the sparse one
    const got = Array.from(lists.subarray(base + 1, base + 1 + lists[base]));
    assert.deepEqual(got, sel.get(`${row}:${b}`)?.lists[0], `list of row ${row} block ${b}`);
    gpuLists.set(`${row}:${b}`, got);
  }
  const want = prefillAttentionRef({
    ...cache,
    q,
    numHeads,
    scale: 1 / Math.sqrt(headDim),
    headModes,
    blockSize: BS,
    lists: (seq, b) => gpuLists.get(`${seq}:${b}`) ?? [],
    sink: 20,
    local: 70,
  });
  const got = new Float32Array(q.length);
  for (let t = 0; t < T; t++) {
    const row = all.subarray(t * rowHeads * headDim, (t + 1) * rowHeads * headDim);
    if (t < D) {
      assert.ok(
        row.every((x) => x === -7),
        `decode row ${t} was written`,
      );
      continue;
    }
    assert.ok(
      row.subarray(numHeads * headDim).every((x) => x === -7),
      `row ${t}: heads outside the range written`,
    );
    got.set(row.subarray(0, numHeads * headDim), (t - D) * numHeads * headDim);
  }
  assertClose(got, want, TOL, 'prefill attention');
});
