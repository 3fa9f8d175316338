/**
 * Column Gram matrix (shaders/column_gram.wgsl) against the reference, on widths that are not multiples of the 4x4
 * register tile or the 8x8 workgroup: the upper triangle equals X^T X, the lower triangle is left as it was, rows
 * past `rows` are not read.
 */
import { test } from 'node:test';
import { ColumnGramKernel } from '../../shaders/column_gram.js';
import { UniformArena } from '../../shaders/runtime.js';
import { assertClose } from '../helpers/compare.js';
import { assertNoGpuErrors, f32Buffer, testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/rng.js';
import { columnGramRef } from '../reference/column_gram.js';

test('column_gram matches the reference X^T X on its upper triangle; the lower is untouched', async () => {
  const gpu = await testGpu();
  const k = new ColumnGramKernel(gpu);
  const arena = new UniformArena(gpu);
  for (let seed = 1; seed <= 8; seed++) {
    const rng = new Rng(seed);
    const rows = rng.int(1, 70);
    const n = [1, 3, 7, 33, 65, 100, 130, 288][seed - 1];
    const x = rng.normalArray((rows + 3) * n, 2);
    x.fill(Number.NaN, rows * n); // padding rows a wrong loop bound would read
    const out = f32Buffer(gpu, new Float32Array(n * n).fill(123));
    arena.reset();
    gpu.run((pass) => k.encode(pass, arena, { x: f32Buffer(gpu, x), out, rows, n }), arena);
    const got = await gpu.readF32(out, n * n);
    assertNoGpuErrors(gpu);
    const full = columnGramRef(x, rows, n);
    const upper = new Float32Array(n * n).fill(123);
    for (let i = 0; i < n; i++) for (let j = i; j < n; j++) upper[i * n + j] = full[i * n + j];
    assertClose(got, upper, { atol: 1e-3, rtol: 1e-5 }, `column_gram seed=${seed} (${rows}, ${n})`);
    // accumulate: a second pass over the first half of the rows adds its Gram matrix
    const half = Math.max(1, rows >> 1);
    arena.reset();
    gpu.run((pass) => k.encode(pass, arena, { x: f32Buffer(gpu, x), out, rows: half, n, accumulate: true }), arena);
    const got2 = await gpu.readF32(out, n * n);
    assertNoGpuErrors(gpu);
    const part = columnGramRef(x, half, n);
    const sum = new Float32Array(n * n).fill(123);
    for (let i = 0; i < n; i++) for (let j = i; j < n; j++) sum[i * n + j] = full[i * n + j] + part[i * n + j];
    assertClose(got2, sum, { atol: 2e-3, rtol: 1e-5 }, `column_gram accumulate seed=${seed} (${half}, ${n})`);
  }
});
