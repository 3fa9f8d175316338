/** Per-head RMSNorm (shaders/head_rmsnorm.wgsl) against the reference: heads in place, the other heads untouched. */
import { test } from 'node:test';
import { HeadRmsNormKernel } from '../../shaders/head_rmsnorm.js';
import { UniformArena } from '../../shaders/runtime.js';
import { assertClose } from '../helpers/compare.js';
import { assertNoGpuErrors, f32Buffer, testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/rng.js';
import { headRmsNormRef } from '../reference/head_rmsnorm.js';

test('head_rmsnorm matches the reference on seeded random shapes (q buffers and parts of fused qkv rows)', async () => {
  const gpu = await testGpu();
  const k = new HeadRmsNormKernel(gpu);
  const arena = new UniformArena(gpu);
  for (let seed = 1; seed <= 10; seed++) {
    const rng = new Rng(seed);
    const tokens = rng.int(1, 13);
    const headDim = rng.pick([2, 10, 32, 64, 72, 128, 130]);
    const nHeads = rng.int(1, 6);
    // a whole q buffer, or the q / k part of a (T, H + 2 KV, headDim) row
    const rowHeads = rng.pick([nHeads, nHeads + 1 + rng.int(0, 4)]);
    const firstHead = rng.int(0, rowHeads - nHeads);
    const eps = rng.pick([1e-6, 1e-5]);
    const x = rng.normalArray(tokens * rowHeads * headDim, 3);
    const w = rng.uniformArray(headDim, 1.5);
    const buf = f32Buffer(gpu, x);
    const args = { tokens, rowHeads, firstHead, nHeads, headDim, eps };
    arena.reset();
    gpu.run((pass) => k.encode(pass, arena, { x: buf, weight: f32Buffer(gpu, w), ...args }), arena);
    const got = await gpu.readF32(buf, x.length);
    assertNoGpuErrors(gpu);
    assertClose(got, headRmsNormRef(x, w, args), { atol: 1e-5, rtol: 1e-4 }, `seed=${seed} ${JSON.stringify(args)}`);
  }
});
