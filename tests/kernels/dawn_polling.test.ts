/**
 * Dawn's event polling (shaders/runtime.ts throttleDawnPolling): on a CPU adapter the native callback Dawn re-arms
 * through the global setImmediate while GPU work is pending goes through a 1 ms timer instead of spinning the main
 * thread, so the adapter's worker threads keep the cores. The hook must actually be taken with the pinned Dawn
 * (a later binding that polls differently fails here, not silently), waits still resolve, JavaScript setImmediate
 * callbacks still run before timers, and a bad SIFT_GPU_POLL_MS is refused.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MatmulKernel } from '../../shaders/matmul.js';
import { dawnPolling, Gpu, UniformArena } from '../../shaders/runtime.js';
import { uploadWeight } from '../../shaders/tensor.js';
import { encodeFromF32 } from '../../util/dtype.js';
import { assertNoGpuErrors, testGpu } from '../helpers/gpu.js';

test('on a CPU adapter, waits for GPU work poll Dawn through a timer, and the results arrive', async () => {
  const gpu = await testGpu();
  assert.ok(gpu.caps.isCpu, `the test adapter (${gpu.caps.adapterName}) is a CPU adapter`);
  assert.equal(dawnPolling.installed, true);
  assert.equal(dawnPolling.ms, 1);
  // some seconds' worth of work on lavapipe: a 256-token matmul, repeated
  const T = 256;
  const rows = 288;
  const cols = 288;
  const w = uploadWeight(gpu, 'w', 'f32', rows, cols, encodeFromF32(new Float32Array(rows * cols).fill(0.5), 'f32'));
  const x = gpu.upload('x', new Float32Array(T * cols).fill(2));
  const out = gpu.createBuffer('out', T * rows * 4);
  const k = new MatmulKernel(gpu);
  const arena = new UniformArena(gpu);
  const before = dawnPolling.throttled;
  gpu.run((pass) => {
    for (let i = 0; i < 8; i++) k.encode(pass, arena, { x, w, out, T });
  }, arena);
  const got = await gpu.readF32(out, 4);
  assert.deepEqual([...got], [288, 288, 288, 288], 'the work finished with its result');
  assert.ok(
    dawnPolling.throttled > before,
    'Dawn polled through the hook (none: the binding no longer uses setImmediate)',
  );
  assertNoGpuErrors(gpu);
  for (const b of [x, out]) b.destroy();
  arena.destroy();
});

test('JavaScript setImmediate callbacks are not delayed', async () => {
  await testGpu();
  const order: string[] = [];
  await new Promise<void>((resolve) => {
    setTimeout(() => {
      order.push('timeout');
      resolve();
    }, 5);
    setImmediate(() => order.push('immediate'));
  });
  assert.deepEqual(order, ['immediate', 'timeout']);
  const { promisify } = await import('node:util');
  await promisify(setImmediate)(); // util.promisify.custom kept
});

test('a bad SIFT_GPU_POLL_MS is refused naming the variable', async () => {
  const prev = process.env.SIFT_GPU_POLL_MS;
  process.env.SIFT_GPU_POLL_MS = 'fast';
  try {
    await assert.rejects(Gpu.create(), /SIFT_GPU_POLL_MS=fast: milliseconds in \[0, 100\]/);
  } finally {
    if (prev === undefined) delete process.env.SIFT_GPU_POLL_MS;
    else process.env.SIFT_GPU_POLL_MS = prev;
  }
});
