/**
 * The GPU for tests: one device per test file, created on first use. No adapter is a failure with the
 * remedy in the message (GPU tests never skip quietly).
 */
import { Gpu, type GpuOptions } from '../../shaders/runtime.js';

const cache = new Map<string, Promise<Gpu>>();

export function testGpu(opts: GpuOptions = {}): Promise<Gpu> {
  const key = JSON.stringify(opts);
  let p = cache.get(key);
  if (!p) {
    p = Gpu.create(opts);
    cache.set(key, p);
  }
  return p;
}

/** Creates a storage buffer from f32 data. */
export function f32Buffer(gpu: Gpu, data: Float32Array, label = 'test'): GPUBuffer {
  return gpu.upload(label, data);
}

/** Creates a storage buffer from u32 data. */
export function u32Buffer(gpu: Gpu, data: Uint32Array | number[], label = 'test'): GPUBuffer {
  return gpu.upload(label, data instanceof Uint32Array ? data : new Uint32Array(data));
}

/** Fails the test if Dawn reported validation errors. */
export function assertNoGpuErrors(gpu: Gpu): void {
  const errs = gpu.takeErrors();
  if (errs.length) throw new Error(`WebGPU reported errors:\n${errs.join('\n')}`);
}
