/** Residual add kernel wrapper: a (n) f32 += b (n) f32, in place. */
import { requireBytes, requireInts, requireU32 } from './lib/checks.js';
import { grid2d } from './lib/grid.js';
import { defineParams } from './lib/params.js';
import type { Binding, Gpu, UniformArena } from './runtime.js';

const WG = 256;

/** struct Params of residual_add.wgsl. */
const PARAMS = defineParams('residual_add', { n: 'u32' });

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
    this.pipeline = gpu.pipeline('residual_add', {}, { WG }, PARAMS);
  }

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: ResidualAddArgs): void {
    const K = 'residual_add';
    requireInts(K, { n: a.n });
    requireU32(K, 'n', a.n);
    requireBytes(K, 'a', a.a, a.n * 4, `(${a.n}) f32`);
    requireBytes(K, 'b', a.b, a.n * 4, `(${a.n}) f32`);
    const u = arena.params(PARAMS, { n: a.n });
    const [x, y] = grid2d(this.gpu, a.n, WG, this.opts.maxWorkgroupsPerDim);
    this.gpu.dispatch(pass, this.pipeline, [a.a, a.b, u], x, y);
  }
}
