/** Residual add kernel wrapper: a (n) f32 += b (n) f32, in place. */
import { SiftError } from '../config/errors.js';
import { grid2d } from './grid.js';
import { type Binding, type Gpu, type UniformArena, uniforms } from './runtime.js';

const WG = 256;

export interface ResidualAddArgs {
  a: Binding; // (n) f32, read and written
  b: Binding; // (n) f32, must not alias a
  n: number; // elements, e.g. T * dim
}

export class ResidualAddKernel {
  private readonly pipeline: GPUComputePipeline;
  /** `maxWorkgroupsPerDim` (tests only) caps the grid's x dimension to exercise the 2-D layout. */
  constructor(
    private readonly gpu: Gpu,
    private readonly opts: { maxWorkgroupsPerDim?: number } = {},
  ) {
    this.pipeline = gpu.pipeline('residual_add', {}, { WG });
  }

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: ResidualAddArgs): void {
    if (!Number.isInteger(a.n) || a.n < 0 || a.n >= 2 ** 32) {
      throw new SiftError('INTERNAL', `residual_add: bad length n=${a.n}`);
    }
    const u = arena.alloc(uniforms([['u32', a.n]]));
    const [x, y] = grid2d(this.gpu, a.n, WG, this.opts.maxWorkgroupsPerDim);
    this.gpu.dispatch(pass, this.pipeline, [a.a, a.b, u], x, y);
  }
}
