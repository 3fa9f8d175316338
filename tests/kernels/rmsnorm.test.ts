/** RMSNorm (shaders/rmsnorm.wgsl) against the reference. */
import { test } from 'node:test';
import { RmsNormKernel } from '../../shaders/rmsnorm.js';
import { UniformArena } from '../../shaders/runtime.js';
import { assertClose } from '../helpers/compare.js';
import { assertNoGpuErrors, f32Buffer, testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/rng.js';
import { rmsnormRef } from '../reference/rmsnorm.js';

test('rmsnorm matches the reference on seeded random shapes', async () => {
  const gpu = await testGpu();
  const k = new RmsNormKernel(gpu);
  const arena = new UniformArena(gpu);
  for (let seed = 1; seed <= 8; seed++) {
    const rng = new Rng(seed);
    const rows = rng.int(1, 19);
    const n = rng.pick([1, 7, 63, 64, 65, 288, 300, 1023]);
    const eps = rng.pick([1e-5, 1e-6]);
    const x = rng.normalArray(rows * n, 2);
    const w = rng.uniformArray(n, 1.5);
    const out = gpu.createBuffer('out', rows * n * 4);
    arena.reset();
    gpu.run(
      (pass) => k.encode(pass, arena, { x: f32Buffer(gpu, x), weight: f32Buffer(gpu, w), out, rows, n, eps }),
      arena,
    );
    const got = await gpu.readF32(out, rows * n);
    assertNoGpuErrors(gpu);
    assertClose(got, rmsnormRef(x, w, rows, n, eps), { atol: 1e-5, rtol: 1e-4 }, `rmsnorm seed=${seed} (${rows}x${n})`);
  }
});

test('rmsnorm with accumulate adds the normed rows into out (Gemma sandwich norms)', async () => {
  const gpu = await testGpu();
  const k = new RmsNormKernel(gpu);
  const arena = new UniformArena(gpu);
  for (let seed = 11; seed <= 14; seed++) {
    const rng = new Rng(seed);
    const rows = rng.int(1, 9);
    const n = rng.pick([5, 64, 97, 300]);
    const x = rng.normalArray(rows * n, 3);
    const w = rng.uniformArray(n, 1.5);
    const h = rng.normalArray(rows * n);
    const out = f32Buffer(gpu, h);
    arena.reset();
    gpu.run(
      (pass) =>
        k.encode(pass, arena, {
          x: f32Buffer(gpu, x),
          weight: f32Buffer(gpu, w),
          out,
          rows,
          n,
          eps: 1e-6,
          accumulate: true,
        }),
      arena,
    );
    const got = await gpu.readF32(out, rows * n);
    assertNoGpuErrors(gpu);
    const normed = rmsnormRef(x, w, rows, n, 1e-6);
    const want = h.map((v, i) => v + normed[i]);
    assertClose(got, want, { atol: 1e-5, rtol: 1e-4 }, `rmsnorm accumulate seed=${seed} (${rows}x${n})`);
  }
});
