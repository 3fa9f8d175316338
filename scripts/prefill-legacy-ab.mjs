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
import { interpolatedSum, sampleChunks } from '../dist/bench/attention-prefill.js';
import { PrefillAttention } from '../dist/model/attention/prefill.js';
import { AttentionKernel } from '../dist/shaders/attention.js';
import { Gpu, UniformArena } from '../dist/shaders/runtime.js';
import { denseChunkSetup, timeDenseChunk } from './lib/prefill-chunk.mjs';

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
const gpu = await Gpu.create();
const load = () =>
  os
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(' / ');
console.log(`# ${new Date().toISOString()} ${gpu.caps.adapterName}; load average at start ${load()}`);
const rows = [];
for (const ctx of contexts) {
  const s = denseChunkSetup(gpu, shape, ctx, CHUNK);
  const prefill = new PrefillAttention(gpu, { topBlocks: 1, kernel: { rowsPerThread: 4 } });
  const legacy = new AttentionKernel(gpu);
  const arena = new UniformArena(gpu);
  const nChunks = Math.ceil(ctx / CHUNK);
  const chosen = sampleChunks(nChunks, sample);
  // the per-(token, head) kernel on the same inputs
  const encodeLegacy = (pass, bufs, n) =>
    legacy.encode(pass, arena, {
      q: s.q,
      kCache: s.kCache,
      vCache: s.vCache,
      blockTable: s.blockTable,
      tokenSeq: bufs.tokenSeq,
      positions: bufs.positions,
      out: s.out,
      T: n,
      scale: s.scale,
      ...s.shapeArgs,
    });
  const runChunk = (name, c) => {
    const start = c * CHUNK;
    return timeDenseChunk(
      gpu,
      arena,
      prefill,
      s,
      start,
      Math.min(CHUNK, ctx - start),
      name === 'legacy' ? encodeLegacy : undefined,
    );
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
  s.destroy();
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
