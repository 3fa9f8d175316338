/** Residual add (shaders/residual_add.wgsl, 2-D grids through lib/grid.wgsl) against the reference. */
import { test } from 'node:test';
import { ResidualAddKernel } from '../../shaders/residual_add.js';
import { UniformArena } from '../../shaders/runtime.js';
import { assertClose } from '../helpers/compare.js';
import { assertNoGpuErrors, f32Buffer, testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/rng.js';
import { residualAddRef } from '../reference/residual_add.js';

// One f32 add rounds exactly like the reference: tolerance is exact up to one rounding.
const TOL = { atol: 0, rtol: 1e-7 };

test('residual_add matches the reference on seeded random lengths (1-D and forced 2-D grids)', async () => {
  const gpu = await testGpu();
  const arena = new UniformArena(gpu);
  for (let seed = 1; seed <= 8; seed++) {
    const rng = new Rng(seed);
    const n = rng.pick([1, 3, 255, 256, 257, 288 * 7, 5000, 65_537]);
    const maxWorkgroupsPerDim = seed % 2 ? undefined : 3; // even seeds: x capped at 3 workgroups -> 2-D grid
    const k = new ResidualAddKernel(gpu, { maxWorkgroupsPerDim });
    const a = rng.normalArray(n, 3);
    const b = rng.normalArray(n, 3);
    const aBuf = f32Buffer(gpu, a);
    arena.reset();
    gpu.run((pass) => k.encode(pass, arena, { a: aBuf, b: f32Buffer(gpu, b), n }), arena);
    const got = await gpu.readF32(aBuf, n);
    assertNoGpuErrors(gpu);
    assertClose(got, residualAddRef(a, b), TOL, `residual_add seed=${seed} n=${n} maxWg=${maxWorkgroupsPerDim}`);
  }
});
