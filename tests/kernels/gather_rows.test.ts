/** Row gather (shaders/gather_rows.wgsl) against the reference. */
import { test } from 'node:test';
import { GatherRowsKernel } from '../../shaders/gather_rows.js';
import { UniformArena } from '../../shaders/runtime.js';
import { assertClose } from '../helpers/compare.js';
import { assertNoGpuErrors, f32Buffer, testGpu, u32Buffer } from '../helpers/gpu.js';
import { Rng } from '../helpers/rng.js';
import { gatherRowsRef } from '../reference/gather_rows.js';

test('gather_rows matches the reference, out-of-range ids give zeros', async () => {
  const gpu = await testGpu();
  const k = new GatherRowsKernel(gpu);
  const arena = new UniformArena(gpu);
  for (let seed = 1; seed <= 6; seed++) {
    const rng = new Rng(seed);
    const srcRows = rng.int(1, 40);
    const n = rng.pick([1, 5, 64, 65, 288]);
    const rows = rng.int(1, 9);
    const ids = Array.from({ length: rows }, () =>
      rng.next() < 0.15 ? srcRows + rng.int(0, 3) : rng.int(0, srcRows - 1),
    );
    const x = rng.normalArray(srcRows * n);
    const out = gpu.createBuffer('out', rows * n * 4);
    arena.reset();
    gpu.run(
      (pass) => k.encode(pass, arena, { x: f32Buffer(gpu, x), rowIds: u32Buffer(gpu, ids), out, rows, n, srcRows }),
      arena,
    );
    const got = await gpu.readF32(out, rows * n);
    assertNoGpuErrors(gpu);
    assertClose(got, gatherRowsRef(x, ids, n, srcRows), { atol: 0, rtol: 0 }, `gather_rows seed=${seed}`);
  }
});
