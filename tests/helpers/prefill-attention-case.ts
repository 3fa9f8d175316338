/**
 * One case of the prefill attention kernel tests (tests/kernels/prefill_attention*.test.ts): a paged cache of
 * random K/V with NaN in every slot no sequence owns, random block lists, the token-by-token reference, and the
 * kernel in each of the case's layouts compared with it.
 */
import assert from 'node:assert/strict';
import { planPrefillBlocks, QBLOCK_WORDS } from '../../shaders/block_select.js';
import type { LayoutVariant } from '../../shaders/lib/checks.js';
import {
  PrefillAttentionKernel,
  type PrefillAttentionOptions,
  planQueryTiles,
} from '../../shaders/prefill_attention.js';
import { UniformArena } from '../../shaders/runtime.js';
import { attentionRef } from '../reference/attention.js';
import { prefillAttentionRef } from '../reference/prefill_attention.js';
import { assertClose, compareArrays } from './compare.js';
import { assertNoGpuErrors, f32Buffer, testGpu, u32Buffer } from './gpu.js';
import { makePrefillCache, type PrefillSeq } from './prefill-cache.js';
import { Rng } from './rng.js';
import { poolOf } from './slabs.js';

// f32 dot products of up to 256 terms and an f32 online softmax over up to ~1000 keys against f64, on identical
// f16-decoded K/V: outputs are convex combinations of N(0, 1) values, errors a few 1e-7 typically.
export const TOL = { atol: 1e-5, rtol: 1e-4 };
export type Layout = PrefillAttentionOptions & { variant: LayoutVariant };
/** 'lanes' as it runs small steps (the tests' steps are all small) and as it runs large ones. */
export const LANES_1: Layout = { variant: 'lanes' };
export const LANES_BLOCK: Layout = { variant: 'lanes', rowsPerThread: 4 };
/** The register block split over 8 subgroup lanes per row ('lanes' at head dims of 128 or more, large steps). */
export const LANES_SPLIT_BLOCK: Layout = { variant: 'lanes', rowsPerThread: 4, split: 8 };
/** The layouts a case runs: one row per invocation, the register block when `block`, and the GPU layout. */
function layoutsFor(block: boolean): Layout[] {
  return [...(block ? [LANES_BLOCK] : []), LANES_1, { variant: 'workgroup' }];
}

export interface Case {
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
  /** Also run the 'lanes' register block (the CPU default). */
  block?: boolean;
  /** Layouts to run (default layoutsFor(block)). */
  layouts?: Layout[];
  /** K and V each in this many slabs of whole pages (default one buffer). */
  slabs?: number;
}

export async function runCase(c: Case): Promise<void> {
  const gpu = await testGpu();
  const rng = new Rng(c.seed);
  const numKvHeads = c.numKvHeads ?? (c.group === 8 ? 1 : rng.int(1, 2));
  const numHeads = numKvHeads * c.group;
  const rowHeads = numHeads + (c.extraHeads ?? 0);
  const { headDim, pageSize } = c;
  const blockSize = c.blockSize ?? 64;
  const cache = makePrefillCache(rng, c.seqs, { numKvHeads, headDim, pageSize }, { window: c.window });
  const mods = { window: c.window, softcap: c.softcap };
  const pageBytes = pageSize * numKvHeads * headDim * 2;
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
    `seed=${c.seed} slabs=${c.slabs ?? 1} heads=${numHeads}/${numKvHeads}+${c.extraHeads ?? 0} modes=${headModes} headDim=${headDim} ` +
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
  for (const layout of c.layouts ?? layoutsFor(c.block ?? false)) {
    const t0 = performance.now();
    const variant = JSON.stringify(layout);
    const kernel = new PrefillAttentionKernel(gpu, {
      ...layout,
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
        kCache: poolOf(gpu, 'kCache', cache.kCache, pageBytes, c.slabs ?? 1),
        vCache: poolOf(gpu, 'vCache', cache.vCache, pageBytes, c.slabs ?? 1),
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
