/** Column sums of squares wrapper: x (rows, n) f32 -> out (n) f32, out[c] = sum_t x[t, c]^2 (overwritten). */
import { requireBytes, requireInts, requireU32 } from './lib/checks.js';
import { defineParams } from './lib/params.js';
import type { Binding, Gpu, UniformArena } from './runtime.js';

const WG = 64;

/** struct Params of column_sumsq.wgsl. */
const PARAMS = defineParams('column_sumsq', { rows: 'u32', n: 'u32' });

export interface ColumnSumSqArgs {
  x: Binding; // (rows, n) f32
  out: Binding; // (n) f32, written
  rows: number;
  n: number;
}

export class ColumnSumSqKernel {
  private readonly pipeline: GPUComputePipeline;
  constructor(private readonly gpu: Gpu) {
    this.pipeline = gpu.pipeline('column_sumsq', {}, { WG }, PARAMS);
  }

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: ColumnSumSqArgs): void {
    const K = 'column_sumsq';
    requireInts(K, { rows: a.rows, n: a.n }, { n: 1 });
    requireU32(K, 'rows * n', a.rows * a.n);
    requireBytes(K, 'x', a.x, a.rows * a.n * 4, `(${a.rows}, ${a.n}) f32`);
    requireBytes(K, 'out', a.out, a.n * 4, `(${a.n}) f32`);
    const u = arena.params(PARAMS, { rows: a.rows, n: a.n });
    this.gpu.dispatch(pass, this.pipeline, [a.x, a.out, u], Math.ceil(a.n / WG));
  }
}
