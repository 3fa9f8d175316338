/** Row gather wrapper: x (srcRows, n) f32, rowIds (R) u32 -> out (R, n) f32. */
import { SiftError } from '../config/errors.js';
import { type Binding, type Gpu, type UniformArena, uniforms } from './runtime.js';

export interface GatherRowsArgs {
  x: Binding; // (srcRows, n) f32
  rowIds: Binding; // (R) u32
  out: Binding; // (R, n) f32
  rows: number; // R
  n: number;
  srcRows: number;
}

export class GatherRowsKernel {
  private readonly pipeline: GPUComputePipeline;
  constructor(private readonly gpu: Gpu) {
    this.pipeline = gpu.pipeline('gather_rows', {}, { WG: 64 });
  }

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: GatherRowsArgs): void {
    if (a.n < 1 || a.rows < 0 || a.srcRows < 1)
      throw new SiftError(
        'INTERNAL',
        `gather_rows: bad shape ${JSON.stringify({ rows: a.rows, n: a.n, srcRows: a.srcRows })}`,
      );
    const u = arena.alloc(
      uniforms([
        ['u32', a.rows],
        ['u32', a.n],
        ['u32', a.srcRows],
      ]),
    );
    this.gpu.dispatch(pass, this.pipeline, [a.x, a.rowIds, a.out, u], a.rows);
  }
}
