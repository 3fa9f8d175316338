/** SwiGLU (shaders/swiglu.wgsl, both variants) against the reference. */
import { test } from 'node:test';
import { UniformArena } from '../../shaders/runtime.js';
import { SwiGluKernel } from '../../shaders/swiglu.js';
import { assertClose } from '../helpers/compare.js';
import { assertNoGpuErrors, f32Buffer, testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/rng.js';
import { splitGateUp, swigluRef } from '../reference/swiglu.js';

// exp and one division in f32: a few ulp relative; atol covers results near zero (gate ~ 0 or up ~ 0).
const TOL = { atol: 1e-6, rtol: 2e-6 };

test('swiglu (separate gate and up) matches the reference on seeded random shapes', async () => {
  const gpu = await testGpu();
  const arena = new UniformArena(gpu);
  for (let seed = 1; seed <= 6; seed++) {
    const rng = new Rng(seed);
    const rows = rng.int(1, 13);
    const n = rng.pick([1, 5, 255, 257, 768, 1000]);
    const k = new SwiGluKernel(gpu, { maxWorkgroupsPerDim: seed % 2 ? undefined : 2 });
    const gate = rng.normalArray(rows * n, 4);
    if (n > 3) gate.set([-100, 100, 0, -88.5]); // silu's limits and exp overflow
    const up = rng.normalArray(rows * n, 2);
    const out = gpu.createBuffer('out', rows * n * 4);
    arena.reset();
    gpu.run(
      (pass) => k.encode(pass, arena, { gate: f32Buffer(gpu, gate), up: f32Buffer(gpu, up), out, rows, n }),
      arena,
    );
    const got = await gpu.readF32(out, rows * n);
    assertNoGpuErrors(gpu);
    assertClose(got, swigluRef(gate, up), TOL, `swiglu seed=${seed} (${rows}x${n})`);
  }
});

test('swiglu (fused (T, 2I) gate_up) matches the reference on seeded random shapes', async () => {
  const gpu = await testGpu();
  const arena = new UniformArena(gpu);
  for (let seed = 11; seed <= 16; seed++) {
    const rng = new Rng(seed);
    const rows = rng.int(1, 13);
    const n = rng.pick([1, 7, 256, 259, 688]);
    const k = new SwiGluKernel(gpu, { maxWorkgroupsPerDim: seed % 2 ? undefined : 2 });
    const gateUp = rng.normalArray(rows * 2 * n, 4);
    const { gate, up } = splitGateUp(gateUp, rows, n);
    const out = gpu.createBuffer('out', rows * n * 4);
    arena.reset();
    gpu.run((pass) => k.encode(pass, arena, { gateUp: f32Buffer(gpu, gateUp), out, rows, n }), arena);
    const got = await gpu.readF32(out, rows * n);
    assertNoGpuErrors(gpu);
    assertClose(got, swigluRef(gate, up), TOL, `swiglu fused seed=${seed} (${rows}x${n})`);
  }
});
