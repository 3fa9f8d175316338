#!/usr/bin/env node
// One layer of dense prefill attention, the per-(token, head) paged kernel (AttentionKernel: one workgroup per
// (token, head), every query re-reading its whole prefix) vs the tiled kernel as long prompts run it (PrefillAttention,
// dense mode, the 'lanes' register block on CPU adapters), in one process on the same random f16 K/V, 512-token
// chunks summed over the prompt as `sift bench attention` sums them (the same chunk sampling and interpolation).
// The model no longer runs the per-(token, head) kernel for prefill; this keeps the 5x comparison repeatable.
// Usage (after `npm run build`; not part of the tests):
//   node scripts/prefill-legacy-ab.mjs --shape stories15M --contexts 4096,16384 --sample 3
// Prints one JSON line per context and a markdown table.
import os from 'node:os';
import { parseArgs } from 'node:util';
import { ATTENTION_SHAPES, parseShape } from '../dist/bench/attention.js';
import { interpolatedSum, randomCache, sampleChunks } from '../dist/bench/attention-prefill.js';
import { HeadMode, PrefillAttention } from '../dist/model/attention/prefill.js';
import { AttentionKernel } from '../dist/shaders/attention.js';
import { Gpu, UniformArena } from '../dist/shaders/runtime.js';
import { Rng } from '../dist/util/rng.js';

const { values } = parseArgs({
  options: {
    shape: { type: 'string', default: 'stories15M' },
    contexts: { type: 'string', default: '4096,16384' },
    sample: { type: 'string', default: '3' },
  },
});
const shape = ATTENTION_SHAPES[values.shape] ?? parseShape(values.shape);
const contexts = values.contexts.split(',').map(Number);
const sample = Number(values.sample);
const CHUNK = 512;
const PS = 64;
const gpu = await Gpu.create();
const load = () =>
  os
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(' / ');
console.log(`# ${new Date().toISOString()} ${gpu.caps.adapterName}; load average at start ${load()}`);
const rows = [];
for (const ctx of contexts) {
  const { numHeads, numKvHeads, headDim } = shape;
  const group = numHeads / numKvHeads;
  const pages = Math.ceil(ctx / PS);
  const words = (pages * PS * numKvHeads * headDim) / 2;
  const kCache = randomCache(gpu, 'ab.k', words, 31);
  const vCache = randomCache(gpu, 'ab.v', words, 37);
  const blockTable = gpu.upload(
    'ab.bt',
    Uint32Array.from({ length: pages }, (_, i) => i),
  );
  const q = gpu.upload('ab.q', new Rng(9).normalArray(CHUNK * numHeads * headDim));
  const out = gpu.createBuffer('ab.out', CHUNK * numHeads * headDim * 4);
  const prefill = new PrefillAttention(gpu, { topBlocks: 1, kernel: { rowsPerThread: 4 } });
  const legacy = new AttentionKernel(gpu);
  const arena = new UniformArena(gpu);
  const shapeArgs = { numHeads, numKvHeads, headDim, pageSize: PS, maxPagesPerSeq: pages };
  const scale = 1 / Math.sqrt(headDim);
  const nChunks = Math.ceil(ctx / CHUNK);
  const chosen = sampleChunks(nChunks, sample);
  const runChunk = async (name, c) => {
    const start = c * CHUNK;
    const n = Math.min(CHUNK, ctx - start);
    const positions = Uint32Array.from({ length: n }, (_, i) => start + i);
    const plan = prefill.plan(new Uint32Array(n), positions, group);
    const bufs = {
      tokenSeq: gpu.upload('ab.seq', new Uint32Array(n)),
      positions: gpu.upload('ab.pos', positions),
      qBlocks: gpu.upload('ab.qb', plan.blocks.qBlocks),
      tiles: gpu.upload('ab.tiles', plan.tiles.tiles),
      blockList: gpu.createBuffer('ab.bl', prefill.blockListBytes(plan, numKvHeads)),
    };
    await gpu.sync();
    arena.reset();
    const t0 = performance.now();
    gpu.run((pass) => {
      if (name === 'legacy') {
        legacy.encode(pass, arena, {
          q,
          kCache,
          vCache,
          blockTable,
          tokenSeq: bufs.tokenSeq,
          positions: bufs.positions,
          out,
          T: n,
          scale,
          ...shapeArgs,
        });
        return;
      }
      prefill.encodeLayer(pass, arena, {
        q,
        kCache,
        vCache,
        blockTable,
        qBlocks: bufs.qBlocks,
        tiles: bufs.tiles,
        digests: bufs.qBlocks, // unread: every head dense
        blockList: bufs.blockList,
        out,
        plan,
        scale,
        ...shapeArgs,
        headModes: new Array(numKvHeads).fill(HeadMode.dense),
      });
    }, arena);
    await gpu.sync();
    const ms = performance.now() - t0;
    for (const b of Object.values(bufs)) b.destroy();
    return ms;
  };
  const ms = {};
  for (const name of ['tiled', 'legacy']) {
    await runChunk(name, 0); // warm-up (pipelines)
    const per = [];
    for (const c of chosen) per.push(await runChunk(name, c));
    ms[name] = interpolatedSum(nChunks, chosen, per);
  }
  const errs = gpu.takeErrors();
  if (errs.length) throw new Error(`WebGPU errors: ${errs.join('; ')}`);
  const row = {
    shape: shape.name,
    ctx,
    chunksTimed: `${chosen.length}/${nChunks}`,
    legacyMs: ms.legacy,
    tiledMs: ms.tiled,
    speedup: ms.legacy / ms.tiled,
    load: load(),
  };
  console.log(JSON.stringify(row));
  rows.push(row);
  arena.destroy();
  prefill.destroy();
  for (const b of [kCache, vCache, blockTable, q, out]) b.destroy();
}
console.log(
  '\n| shape | context | chunks timed | per-(token, head) dense, s | tiled dense, s | speedup | load after |',
);
console.log('| --- | --- | --- | --- | --- | --- | --- |');
for (const r of rows) {
  console.log(
    `| ${r.shape} | ${r.ctx} | ${r.chunksTimed} | ${(r.legacyMs / 1000).toFixed(1)} | ${(r.tiledMs / 1000).toFixed(1)} | ${r.speedup.toFixed(2)}x | ${r.load} |`,
  );
}
