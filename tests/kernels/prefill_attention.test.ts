/**
 * FlashAttention-2-style prefill attention (shaders/prefill_attention.wgsl: both variants, the online softmax of
 * lib/softmax.wgsl, keys through lib/block_table.wgsl, lib/paged.wgsl and lib/grid.wgsl) against the token-by-token
 * references: dense causal (also against tests/reference/attention.ts), block-sparse over given key-block lists,
 * Lambda (sink + local window), per-head modes mixed in one dispatch; GQA 1/4/8; chunks and prefixes that are not
 * multiples of the query tile, key tile, key block or page; several sequences per step; NaN in every cache slot no
 * sequence owns; small key tiles to cross many tile edges; the 2-D workgroup grid; head ranges.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { planPrefillBlocks, QBLOCK_WORDS } from '../../shaders/block_select.js';
import type { LayoutVariant } from '../../shaders/lib/checks.js';
import { PrefillAttentionKernel, planQueryTiles } from '../../shaders/prefill_attention.js';
import { UniformArena } from '../../shaders/runtime.js';
import { assertClose, compareArrays } from '../helpers/compare.js';
import { assertNoGpuErrors, f32Buffer, testGpu, u32Buffer } from '../helpers/gpu.js';
import { makePrefillCache, type PrefillSeq } from '../helpers/prefill-cache.js';
import { Rng } from '../helpers/rng.js';
import { attentionRef } from '../reference/attention.js';
import { prefillAttentionRef } from '../reference/prefill_attention.js';

// f32 dot products of up to 256 terms and an f32 online softmax over up to ~1000 keys against f64, on identical
// f16-decoded K/V: outputs are convex combinations of N(0, 1) values, errors a few 1e-7 typically.
const TOL = { atol: 1e-5, rtol: 1e-4 };
const VARIANTS: LayoutVariant[] = ['lanes', 'workgroup'];

interface Case {
  seed: number;
  group: number;
  numKvHeads?: number;
  headDim: number;
  pageSize: number;
  blockSize?: number;
  seqs: PrefillSeq[];
  modes?: number[]; // per KV head; default all dense
  sink?: number;
  local?: number;
  /** Also compare with the dense reference attentionRef (every head dense). */
  dense?: boolean;
  maxKeyTile?: number;
  maxWorkgroupsPerDim?: number;
  /** q/out rows hold this many extra heads after the processed ones (a head range). */
  extraHeads?: number;
  /** The layer's sliding window (cached keys older than every chunk token's window are NaN) and soft-cap. */
  window?: number;
  softcap?: number;
}

async function runCase(c: Case): Promise<void> {
  const gpu = await testGpu();
  const rng = new Rng(c.seed);
  const numKvHeads = c.numKvHeads ?? (c.group === 8 ? 1 : rng.int(1, 2));
  const numHeads = numKvHeads * c.group;
  const rowHeads = numHeads + (c.extraHeads ?? 0);
  const { headDim, pageSize } = c;
  const blockSize = c.blockSize ?? 64;
  const cache = makePrefillCache(rng, c.seqs, { numKvHeads, headDim, pageSize }, { window: c.window });
  const mods = { window: c.window, softcap: c.softcap };
  const qRows = rng.normalArray(cache.T * rowHeads * headDim);
  const scale = rng.next() < 0.75 ? 1 / Math.sqrt(headDim) : 0.3;
  const headModes = c.modes ?? Array(numKvHeads).fill(0);
  const plan = planPrefillBlocks(cache.tokenSeq, cache.positions, blockSize);
  // Random block lists per (query block, KV head): causal blocks, always holding block 0 or the diagonal, so
  // every token sees a key; the diagonal is kept with probability 3/4.
  const maxLen =
    1 + Math.max(...Array.from({ length: plan.numQBlocks }, (_, i) => plan.qBlocks[i * QBLOCK_WORDS + 2])) + 1;
  const listStride = 1 + Math.ceil(maxLen / blockSize) + 1;
  const lists = new Uint32Array(plan.numQBlocks * numKvHeads * listStride);
  const listOf = new Map<string, number[]>();
  for (let qb = 0; qb < plan.numQBlocks; qb++) {
    const b = Math.floor(plan.qBlocks[qb * QBLOCK_WORDS + 2] / blockSize);
    for (let kvh = 0; kvh < numKvHeads; kvh++) {
      const keep = Array.from({ length: b + 1 }, (_, i) => i).filter((i) =>
        // with a window, block 0 may lie outside it: keep the diagonal so every token sees a key
        i === b ? rng.next() < 0.75 || c.window !== undefined : rng.next() < 0.4,
      );
      if (!keep.includes(0) && !keep.includes(b)) keep.unshift(rng.next() < 0.5 ? 0 : b);
      keep.sort((x, y) => x - y);
      lists.set([keep.length, ...keep], (qb * numKvHeads + kvh) * listStride);
      listOf.set(`${plan.qBlocks[qb * QBLOCK_WORDS]}:${b}:${kvh}`, keep);
    }
  }
  const sink = c.sink ?? 4;
  const local = c.local ?? 32;
  const what =
    `seed=${c.seed} heads=${numHeads}/${numKvHeads}+${c.extraHeads ?? 0} modes=${headModes} headDim=${headDim} ` +
    `page=${pageSize} BS=${blockSize} sink=${sink} local=${local} window=${c.window ?? 0} softcap=${c.softcap ?? 0} ` +
    `seqs=${JSON.stringify(c.seqs)}`;
  // The reference over the processed heads: q rows restricted to them.
  const q = new Float32Array(cache.T * numHeads * headDim);
  for (let t = 0; t < cache.T; t++) {
    q.set(qRows.subarray(t * rowHeads * headDim, (t * rowHeads + numHeads) * headDim), t * numHeads * headDim);
  }
  const want = prefillAttentionRef({
    ...cache,
    q,
    numHeads,
    numKvHeads,
    headDim,
    scale,
    headModes,
    blockSize,
    lists: (seq, b, h) => listOf.get(`${seq}:${b}:${Math.floor(h / c.group)}`) ?? [],
    sink,
    local,
    ...mods,
  });
  const dense = c.dense
    ? attentionRef({ ...cache, q, kCache: cache.kH, vCache: cache.vH, numHeads, scale, ...mods })
    : null;
  for (const variant of VARIANTS) {
    const t0 = performance.now();
    const kernel = new PrefillAttentionKernel(gpu, {
      variant,
      maxKeyTile: c.maxKeyTile,
      maxWorkgroupsPerDim: c.maxWorkgroupsPerDim,
    });
    const tilePlan = planQueryTiles(plan, kernel.tileTokens(c.group));
    const sentinel = new Float32Array(cache.T * rowHeads * headDim).fill(-7);
    const out = f32Buffer(gpu, sentinel);
    const arena = new UniformArena(gpu);
    gpu.run((pass) => {
      kernel.encode(pass, arena, {
        q: f32Buffer(gpu, qRows),
        kCache: u32Buffer(gpu, cache.kCache),
        vCache: u32Buffer(gpu, cache.vCache),
        blockTable: u32Buffer(gpu, cache.blockTable),
        tiles: u32Buffer(gpu, tilePlan.tiles.length ? tilePlan.tiles : [0]),
        blockList: u32Buffer(gpu, lists),
        out,
        T: cache.T,
        tilePlan,
        numHeads,
        numKvHeads,
        headDim,
        pageSize,
        maxPagesPerSeq: cache.maxPagesPerSeq,
        scale,
        headModes,
        blockSize,
        listStride,
        numQBlocks: plan.numQBlocks,
        sink,
        local,
        qRowHeads: rowHeads,
        ...mods,
      });
    }, arena);
    const all = await gpu.readF32(out, cache.T * rowHeads * headDim);
    assertNoGpuErrors(gpu);
    arena.destroy();
    kernel.destroy();
    const got = new Float32Array(q.length);
    for (let t = 0; t < cache.T; t++) {
      const row = all.subarray(t * rowHeads * headDim, (t + 1) * rowHeads * headDim);
      got.set(row.subarray(0, numHeads * headDim), t * numHeads * headDim);
      assert.ok(
        row.subarray(numHeads * headDim).every((x) => x === -7),
        `${what} ${variant}: heads outside the range were written`,
      );
    }
    assert.ok(
      got.every((x) => Number.isFinite(x)),
      `${what} ${variant}: non-finite output (NaN padding leaked)`,
    );
    if (process.env.SIFT_TEST_VERBOSE) {
      console.log(what, variant, `${(performance.now() - t0).toFixed(0)} ms`, compareArrays(got, want, TOL));
    }
    assertClose(got, want, TOL, `${what} ${variant}`);
    if (dense) assertClose(got, dense, TOL, `${what} ${variant} vs dense attentionRef`);
  }
}

const CHUNKS = [1, 63, 65, 130];
const PREFIXES = [0, 37, 64, 200];

test('dense causal equals the dense references: GQA 1/4/8, chunk and prefix edges, key tiles of 8 and the device', async () => {
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
        dense: true,
        maxKeyTile: seed % 3 === 0 ? 8 : undefined,
      });
      seed++;
    }
  }
});

test('block-sparse over given key-block lists, token-exact in the diagonal block', async () => {
  await runCase({
    seed: 20,
    group: 4,
    numKvHeads: 2,
    headDim: 64,
    pageSize: 32,
    seqs: [
      { ctx: 300, fresh: 130 },
      { ctx: 0, fresh: 70 },
    ],
    modes: [1, 1],
  });
  await runCase({
    seed: 21,
    group: 1,
    numKvHeads: 3,
    headDim: 48,
    pageSize: 64,
    blockSize: 16,
    seqs: [{ ctx: 150, fresh: 97 }],
    modes: [1, 1, 1],
    maxKeyTile: 8,
  });
  await runCase({
    seed: 22,
    group: 8,
    numKvHeads: 1,
    headDim: 128,
    pageSize: 16,
    seqs: [{ ctx: 513, fresh: 64 }],
    modes: [1],
  });
});

test('Lambda (sink + local window) equals the reference, token-exact at both edges', async () => {
  await runCase({
    seed: 30,
    group: 4,
    numKvHeads: 2,
    headDim: 64,
    pageSize: 16,
    seqs: [{ ctx: 150, fresh: 130 }],
    modes: [2, 2],
    sink: 5,
    local: 40,
    maxKeyTile: 16,
  });
  // LServe defaults over a prefix that crosses both edges; a second sequence shorter than the sink.
  await runCase({
    seed: 31,
    group: 1,
    numKvHeads: 2,
    headDim: 48,
    pageSize: 64,
    seqs: [
      { ctx: 300, fresh: 65 },
      { ctx: 0, fresh: 63 },
    ],
    modes: [2, 2],
    sink: 128,
    local: 256,
  });
  // local = 1: each token sees the sinks and itself; no sink at all.
  await runCase({
    seed: 32,
    group: 8,
    numKvHeads: 1,
    headDim: 32,
    pageSize: 32,
    seqs: [{ ctx: 10, fresh: 63 }],
    modes: [2],
    sink: 3,
    local: 1,
  });
  await runCase({
    seed: 33,
    group: 2,
    numKvHeads: 1,
    headDim: 32,
    pageSize: 32,
    seqs: [{ ctx: 77, fresh: 50 }],
    modes: [2],
    sink: 0,
    local: 20,
  });
});

test('mixed per-head modes in one dispatch, a head range, NaN padding and a 2-D grid', async () => {
  await runCase({
    seed: 40,
    group: 2,
    numKvHeads: 3,
    headDim: 64,
    pageSize: 32,
    blockSize: 32,
    seqs: [
      { ctx: 400, fresh: 130 },
      { ctx: 33, fresh: 1 },
    ],
    modes: [1, 2, 0],
    sink: 20,
    local: 50,
    extraHeads: 3,
    maxWorkgroupsPerDim: 7,
  });
  // The last page of the sequence is mostly NaN past the chunk (makePrefillCache): every mode must stay finite.
  await runCase({
    seed: 41,
    group: 4,
    numKvHeads: 3,
    headDim: 96,
    pageSize: 64,
    seqs: [{ ctx: 5, fresh: 66 }],
    modes: [0, 1, 2],
    sink: 2,
    local: 7,
    maxKeyTile: 16,
  });
});

test('sliding window in every mode: keys older than the window masked (NaN, never read), fully masked tiles skipped', async () => {
  // Windows not multiples of the query tile, key tile, key block or page; chunks and prefixes on both sides of them.
  const cases: [group: number, window: number, seqs: PrefillSeq[], pageSize: number][] = [
    [1, 5, [{ ctx: 0, fresh: 70 }], 16],
    [4, 37, [{ ctx: 130, fresh: 65 }], 32],
    [
      8,
      100,
      [
        { ctx: 300, fresh: 130 },
        { ctx: 20, fresh: 33 },
      ],
      64,
    ],
  ];
  for (const [i, [group, window, seqs, pageSize]] of cases.entries()) {
    await runCase({ seed: 50 + i, group, headDim: 64, pageSize, seqs, window, dense: true, maxKeyTile: 8 << i });
  }
  // block-sparse and Lambda heads under a window, mixed in one dispatch
  await runCase({
    seed: 60,
    group: 2,
    numKvHeads: 3,
    headDim: 64,
    pageSize: 32,
    blockSize: 16,
    seqs: [{ ctx: 200, fresh: 97 }],
    modes: [1, 2, 0],
    sink: 6,
    local: 30,
    window: 45,
  });
});

test('attention logit soft-capping (Gemma 2), with and without a window', async () => {
  await runCase({ seed: 70, group: 4, headDim: 64, pageSize: 16, seqs: [{ ctx: 90, fresh: 70 }], softcap: 1.5 });
  await runCase({
    seed: 71,
    group: 1,
    numKvHeads: 2,
    headDim: 48,
    pageSize: 32,
    seqs: [{ ctx: 40, fresh: 65 }],
    modes: [0, 2],
    sink: 4,
    local: 20,
    window: 33,
    softcap: 0.5,
    dense: false,
  });
});
