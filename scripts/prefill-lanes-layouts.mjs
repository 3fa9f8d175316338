#!/usr/bin/env node
// Layouts of the tiled prefill attention kernel (PrefillAttentionOptions) timed on one 512-token chunk of dense
// prefill attention, one layer, the last chunk of a CTX-token prompt (default 2048) of the SHAPE head layout (default
// llama3-8b), each variant's pipeline built first on a 64-token chunk (compileMs); the output of every variant is
// compared with the first's (maxDiffVsFirst). Quick A/B of layouts; `sift bench attention` and
// scripts/prefill-legacy-ab.mjs are the benchmarks. Usage (after `npm run build`):
//   SHAPE=llama3-8b CTX=2048 node scripts/prefill-lanes-layouts.mjs '[{"rowsPerThread":4,"split":1},{"rowsPerThread":4}]'
import os from 'node:os';
import { ATTENTION_SHAPES } from '../dist/bench/attention.js';
import { PrefillAttention } from '../dist/model/attention/prefill.js';
import { Gpu, UniformArena } from '../dist/shaders/runtime.js';
import { denseChunkSetup, timeDenseChunk } from './lib/prefill-chunk.mjs';

const shape = ATTENTION_SHAPES[process.env.SHAPE ?? 'llama3-8b'];
const ctx = Number(process.env.CTX ?? 2048);
const CHUNK = 512;
const variants = JSON.parse(process.argv[2]);
const gpu = await Gpu.create();
console.log(
  JSON.stringify({
    caps: {
      sg: gpu.caps.subgroups,
      min: gpu.caps.subgroupMinSize,
      max: gpu.caps.subgroupMaxSize,
      name: gpu.caps.adapterName,
    },
  }),
);
const { numHeads, headDim } = shape;
const s = denseChunkSetup(gpu, shape, ctx, CHUNK);
const arena = new UniformArena(gpu);
let ref;
for (const v of variants) {
  const prefill = new PrefillAttention(gpu, { topBlocks: 1, kernel: v });
  const run = (start, n) => timeDenseChunk(gpu, arena, prefill, s, start, n);
  const tc = performance.now();
  await run(0, 64); // compile
  const compileMs = performance.now() - tc;
  const ms = await run(ctx - CHUNK, CHUNK);
  const o = new Float32Array(await gpu.read(s.out, 0, CHUNK * numHeads * headDim * 4));
  let err = 0;
  if (ref) for (let i = 0; i < o.length; i++) err = Math.max(err, Math.abs(o[i] - ref[i]));
  else ref = o;
  console.log(
    JSON.stringify({
      v,
      ms: Math.round(ms),
      compileMs: Math.round(compileMs),
      maxDiffVsFirst: err,
      load: os.loadavg()[0].toFixed(2),
    }),
  );
  prefill.destroy();
}
const errs = gpu.takeErrors();
if (errs.length) console.log('ERR', errs);
process.exit(0);
