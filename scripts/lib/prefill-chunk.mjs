// Shared by scripts/prefill-lanes-layouts.mjs and scripts/prefill-legacy-ab.mjs: one layer's random paged f16 K/V of
// a CTX-token prompt of an attention shape, a chunk's queries, and one chunk of dense prefill attention through the
// tiled kernel (PrefillAttention), timed from submit to completion. Needs the built dist/.
import { randomCache } from '../../dist/bench/attention-prefill.js';
import { HeadMode } from '../../dist/model/attention/prefill.js';
import { Rng } from '../../dist/util/rng.js';

export const PAGE_SIZE = 64;

/** The cache (pages in order, one sequence), q of `chunk` tokens (seeded) and out, for `shape` at `ctx` tokens. */
export function denseChunkSetup(gpu, shape, ctx, chunk) {
  const { numHeads, numKvHeads, headDim } = shape;
  const pages = Math.ceil(ctx / PAGE_SIZE);
  const words = (pages * PAGE_SIZE * numKvHeads * headDim) / 2;
  const s = {
    group: numHeads / numKvHeads,
    kCache: randomCache(gpu, 'ab.k', words, 31),
    vCache: randomCache(gpu, 'ab.v', words, 37),
    blockTable: gpu.upload(
      'ab.bt',
      Uint32Array.from({ length: pages }, (_, i) => i),
    ),
    q: gpu.upload('ab.q', new Rng(9).normalArray(chunk * numHeads * headDim)),
    out: gpu.createBuffer('ab.out', chunk * numHeads * headDim * 4),
    shapeArgs: { numHeads, numKvHeads, headDim, pageSize: PAGE_SIZE, maxPagesPerSeq: pages },
    scale: 1 / Math.sqrt(headDim),
  };
  s.destroy = () => {
    for (const b of [s.kCache, s.vCache, s.blockTable, s.q, s.out]) b.destroy();
  };
  return s;
}

/**
 * Times `n` tokens from position `start` of dense prefill attention through `prefill` (a PrefillAttention), or
 * through `encodeOther(pass, bufs)` when given (another kernel on the same inputs; bufs holds the step's tokenSeq and
 * positions). Returns milliseconds from submit to completion.
 */
export async function timeDenseChunk(gpu, arena, prefill, s, start, n, encodeOther) {
  const positions = Uint32Array.from({ length: n }, (_, i) => start + i);
  const plan = prefill.plan(new Uint32Array(n), positions, s.group);
  const bufs = {
    tokenSeq: gpu.upload('ab.seq', new Uint32Array(n)),
    positions: gpu.upload('ab.pos', positions),
    qBlocks: gpu.upload('ab.qb', plan.blocks.qBlocks),
    tiles: gpu.upload('ab.tiles', plan.tiles.tiles),
    blockList: gpu.createBuffer('ab.bl', prefill.blockListBytes(plan, s.shapeArgs.numKvHeads)),
  };
  await gpu.sync();
  arena.reset();
  const t0 = performance.now();
  gpu.run((pass) => {
    if (encodeOther) {
      encodeOther(pass, bufs, n);
      return;
    }
    prefill.encodeLayer(pass, arena, {
      q: s.q,
      kCache: s.kCache,
      vCache: s.vCache,
      blockTable: s.blockTable,
      qBlocks: bufs.qBlocks,
      tiles: bufs.tiles,
      digests: bufs.qBlocks, // unread: every head dense
      blockList: bufs.blockList,
      out: s.out,
      plan,
      scale: s.scale,
      ...s.shapeArgs,
      headModes: new Array(s.shapeArgs.numKvHeads).fill(HeadMode.dense),
    });
  }, arena);
  await gpu.sync();
  const ms = performance.now() - t0;
  for (const b of Object.values(bufs)) b.destroy();
  return ms;
}
