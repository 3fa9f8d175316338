/**
 * Final logit soft-capping (shaders/logit_softcap.wgsl, with the softcap of lib/softmax.wgsl) against the reference
 * on sizes that are not multiples of the workgroup, large logits that saturate, and a 2-D grid.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LogitSoftcapKernel } from '../../shaders/logit_softcap.js';
import { UniformArena } from '../../shaders/runtime.js';
import { assertClose } from '../helpers/compare.js';
import { assertNoGpuErrors, f32Buffer, testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/rng.js';
import { logitSoftcapRef } from '../reference/logit_softcap.js';

test('logit soft-capping equals the reference: odd sizes, saturating logits, a 2-D grid', async () => {
  const gpu = await testGpu();
  const arena = new UniformArena(gpu);
  for (let seed = 1; seed <= 6; seed++) {
    const rng = new Rng(seed);
    const n = rng.pick([1, 255, 257, 1000, 32001]);
    const cap = rng.pick([30, 2.5, 0.5]);
    const x = rng.normalArray(n, seed % 2 ? 10 : 1000); // up to ~5000: tanh saturates
    const k = new LogitSoftcapKernel(gpu, { maxWorkgroupsPerDim: seed === 3 ? 3 : undefined });
    const buf = f32Buffer(gpu, new Float32Array([...x, 777]));
    arena.reset();
    gpu.run((pass) => k.encode(pass, arena, { logits: buf, n, cap }), arena);
    const got = await gpu.readF32(buf, n + 1);
    assertNoGpuErrors(gpu);
    assertClose(got.subarray(0, n), logitSoftcapRef(x, cap), { atol: 1e-5 * cap, rtol: 1e-5 }, `seed=${seed} n=${n}`);
    assert.ok(
      got.subarray(0, n).every((v) => Math.abs(v) <= cap),
      'inside the cap',
    );
    assert.equal(got[n], 777, 'wrote past n');
  }
  arena.destroy();
});
