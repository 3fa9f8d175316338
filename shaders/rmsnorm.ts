/** RMSNorm kernel wrapper: x (T, n) f32, weight (n) f32 -> out (T, n) f32. */
import { SiftError } from '../config/errors.js';
import { type Binding, type Gpu, type UniformArena, uniforms } from './runtime.js';

export interface RmsNormArgs {
  x: Binding; // (T, n) f32
  weight: Binding; // (n) f32
  out: Binding; // (T, n) f32, must not alias x
  rows: number; // T
  n: number;
  eps: number;
}

export class RmsNormKernel {
  private readonly pipeline: GPUComputePipeline;
  constructor(private readonly gpu: Gpu) {
    this.pipeline = gpu.pipeline('rmsnorm', {}, { WG: 64 });
  }

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: RmsNormArgs): void {
    if (a.n < 1 || a.rows < 0) throw new SiftError('INTERNAL', `rmsnorm: bad shape rows=${a.rows} n=${a.n}`);
    const u = arena.alloc(
      uniforms([
        ['u32', a.rows],
        ['u32', a.n],
        ['f32', a.eps],
      ]),
    );
    this.gpu.dispatch(pass, this.pipeline, [a.x, a.weight, a.out, u], a.rows);
  }
}
