#!/usr/bin/env node
// Prefill GEMM micro-benchmark: GFLOP/s of MatmulKernel on stories15M's prefill shapes (out (T, rows) = x (T, cols)
// @ W^T), one dispatch per shape timed after one warm-up (the compile), on the adapter Dawn picks.
//
//   node scripts/gemm-bench.mjs [--T 512] [--layouts thread4,rows,tiled] [--dtype f32|f16|bf16|q8|q4] [--repeat 2] [--shapes 288x288,...] [--glu]
//
// Not a test; used for the GEMM rows of bench/results/PREFILL.md (run on the built dist/).
import os from 'node:os';
import { parseArgs } from 'node:util';
import { MatmulKernel } from '../dist/shaders/matmul.js';
import { Gpu, UniformArena } from '../dist/shaders/runtime.js';
import { destroyWeight, uploadQuantized, uploadWeight } from '../dist/shaders/tensor.js';
import { encodeFromF32 } from '../dist/util/dtype.js';
import { quantizeInt8, quantizeQ4 } from '../dist/util/quant.js';

const { values } = parseArgs({
  options: {
    T: { type: 'string', default: '512' },
    layouts: { type: 'string', default: 'thread4,tiled' },
    dtype: { type: 'string', default: 'f32' },
    repeat: { type: 'string', default: '2' },
    shapes: { type: 'string', default: '288x288,768x288,288x768' },
    glu: { type: 'boolean', default: false },
  },
});
const T = Number(values.T);
const gpu = await Gpu.create();
const arena = new UniformArena(gpu);
const load = () =>
  os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' / ');
console.log(`T ${T}; dtype ${values.dtype}; load ${load()}`);
let seed = 1;
const rand = () => {
  seed = (seed * 1103515245 + 12345) >>> 0;
  return seed / 2 ** 32 - 0.5;
};
for (const shape of values.shapes.split(',')) {
  const [rows, cols] = shape.split('x').map(Number);
  const wf = new Float32Array(rows * cols).map(rand);
  // q8: int8 per output channel; q4: 4 bits with a scale and min per group of 64 columns (sift's own layouts)
  const d = values.dtype;
  const w =
    d === 'q8' || d === 'q4'
      ? uploadQuantized(gpu, 'w', d === 'q8' ? quantizeInt8(wf, rows, cols) : quantizeQ4(wf, rows, cols, 64))
      : uploadWeight(gpu, 'w', d, rows, cols, encodeFromF32(wf, d));
  const x = gpu.upload('x', new Float32Array(T * cols).map(rand));
  const out = gpu.createBuffer('out', T * rows * 4);
  for (const layout of values.layouts.split(',')) {
    // 'threadN': the per-row kernel (shaders/matmul.wgsl) with N tokens per invocation; 'rows': the register-tile
    // kernel of CPU adapters (shaders/matmul_rows.wgsl); 'tiled': the tiled GEMM (its GPU layout)
    const m = /^thread(\d+)$/.exec(layout);
    if (!m && layout !== 'tiled' && layout !== 'rows')
      throw new Error(`unknown layout ${layout} (threadN, rows or tiled)`);
    const k = m
      ? new MatmulKernel(gpu, { variant: 'thread', tokenTile: Number(m[1]), rowTileMinTokens: Infinity })
      : layout === 'rows'
        ? new MatmulKernel(gpu, { variant: 'thread', rowTileMinTokens: 1 })
        : new MatmulKernel(gpu, { variant: 'workgroup', tiledMinTokens: 2 });
    const once = async () => {
      arena.reset();
      const t0 = performance.now();
      gpu.run((pass) => k.encode(pass, arena, { x, w, out, T, glu: values.glu }), arena);
      await gpu.readF32(out, 4);
      return (performance.now() - t0) / 1000;
    };
    const compile = await once();
    const times = [];
    for (let i = 0; i < Number(values.repeat); i++) times.push(await once());
    const best = Math.min(...times);
    const gflops = (2 * T * rows * cols) / best / 1e9;
    console.log(
      `${shape} ${layout}: first ${compile.toFixed(3)} s, best ${best.toFixed(3)} s, ${gflops.toFixed(2)} GFLOP/s (load ${load()})`,
    );
  }
  destroyWeight(w);
  x.destroy();
  out.destroy();
}
gpu.destroy();
