/** Column sums of squares (shaders/column_sumsq.wgsl) against the reference, on widths that are not tile multiples. */
import { test } from 'node:test';
import { ColumnSumSqKernel } from '../../shaders/column_sumsq.js';
import { UniformArena } from '../../shaders/runtime.js';
import { assertClose } from '../helpers/compare.js';
import { assertNoGpuErrors, f32Buffer, testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/rng.js';
import { columnSumSqRef } from '../reference/column_sumsq.js';

test('column_sumsq matches the reference; rows past `rows` are not read, out is overwritten', async () => {
  const gpu = await testGpu();
  const k = new ColumnSumSqKernel(gpu);
  const arena = new UniformArena(gpu);
  for (let seed = 1; seed <= 8; seed++) {
    const rng = new Rng(seed);
    const rows = rng.int(1, 70);
    const n = rng.pick([1, 7, 64, 65, 288, 300, 768]);
    const x = rng.normalArray((rows + 3) * n, 2);
    x.fill(Number.NaN, rows * n); // padding rows a wrong loop bound would read
    const out = f32Buffer(gpu, new Float32Array(n).fill(123));
    arena.reset();
    gpu.run((pass) => k.encode(pass, arena, { x: f32Buffer(gpu, x), out, rows, n }), arena);
    const got = await gpu.readF32(out, n);
    assertNoGpuErrors(gpu);
    const want = Float32Array.from(columnSumSqRef(x, rows, n));
    assertClose(got, want, { atol: 1e-4, rtol: 1e-5 }, `column_sumsq seed=${seed} (${rows}, ${n})`);
  }
});
