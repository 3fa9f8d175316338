#!/usr/bin/env node
// Layouts of the tiled prefill attention kernel (PrefillAttentionOptions) timed on one 512-token chunk of dense
// prefill attention, one layer, the last chunk of a CTX-token prompt (default 2048) of the SHAPE head layout (default
// llama3-8b), each variant's pipeline built first on a 64-token chunk (compileMs); the output of every variant is
// compared with the first's (maxDiffVsFirst). Quick A/B of layouts; `sift bench attention` and
// scripts/prefill-legacy-ab.mjs are the benchmarks. Usage (after `npm run build`):
//   SHAPE=llama3-8b CTX=2048 node scripts/prefill-lanes-layouts.mjs '[{"rowsPerThread":4,"split":1},{"rowsPerThread":4}]'
import os from 'node:os';
import { ATTENTION_SHAPES } from '../dist/bench/attention.js';
import { randomCache } from '../dist/bench/attention-prefill.js';
import { HeadMode, PrefillAttention } from '../dist/model/attention/prefill.js';
import { Gpu, UniformArena } from '../dist/shaders/runtime.js';
import { Rng } from '../dist/util/rng.js';

const shape = ATTENTION_SHAPES[process.env.SHAPE ?? 'llama3-8b'];
const ctx = Number(process.env.CTX ?? 2048);
const CHUNK = 512;
const PS = 64;
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
const arena = new UniformArena(gpu);
const shapeArgs = { numHeads, numKvHeads, headDim, pageSize: PS, maxPagesPerSeq: pages };
let ref;
for (const v of variants) {
  const prefill = new PrefillAttention(gpu, { topBlocks: 1, kernel: v });
  const run = async (start, n) => {
    const positions = Uint32Array.from({ length: n }, (_, i) => start + i);
    const plan = prefill.plan(new Uint32Array(n), positions, group);
    const bufs = {
      qBlocks: gpu.upload('ab.qb', plan.blocks.qBlocks),
      tiles: gpu.upload('ab.tiles', plan.tiles.tiles),
      blockList: gpu.createBuffer('ab.bl', prefill.blockListBytes(plan, numKvHeads)),
    };
    await gpu.sync();
    arena.reset();
    const t0 = performance.now();
    gpu.run(
      (pass) =>
        prefill.encodeLayer(pass, arena, {
          q,
          kCache,
          vCache,
          blockTable,
          qBlocks: bufs.qBlocks,
          tiles: bufs.tiles,
          digests: bufs.qBlocks,
          blockList: bufs.blockList,
          out,
          plan,
          scale: 1 / Math.sqrt(headDim),
          ...shapeArgs,
          headModes: new Array(numKvHeads).fill(HeadMode.dense),
        }),
      arena,
    );
    await gpu.sync();
    const ms = performance.now() - t0;
    for (const b of Object.values(bufs)) b.destroy();
    return ms;
  };
  const tc = performance.now();
  await run(0, 64); // compile
  const compileMs = performance.now() - tc;
  const ms = await run(ctx - CHUNK, CHUNK);
  const o = new Float32Array(await gpu.read(out, 0, CHUNK * numHeads * headDim * 4));
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
