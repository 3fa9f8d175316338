/** Row gather wrapper: x (srcRows, n) f32, rowIds (R) u32 -> out (R, n) f32. */
import { requireBytes, requireInts } from './lib/checks.js';
import { defineParams } from './lib/params.js';
import type { Binding, Gpu, UniformArena } from './runtime.js';

/** struct Params of gather_rows.wgsl. */
const PARAMS = defineParams('gather_rows', { rows: 'u32', n: 'u32', srcRows: 'u32' });

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
    this.pipeline = gpu.pipeline('gather_rows', {}, { WG: 64 }, PARAMS);
  }

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: GatherRowsArgs): void {
    const K = 'gather_rows';
    requireInts(K, { rows: a.rows, n: a.n, srcRows: a.srcRows }, { n: 1, srcRows: 1 });
    requireBytes(K, 'x', a.x, a.srcRows * a.n * 4, `(${a.srcRows}, ${a.n}) f32`);
    requireBytes(K, 'rowIds', a.rowIds, a.rows * 4, `(${a.rows}) u32`);
    requireBytes(K, 'out', a.out, a.rows * a.n * 4, `(${a.rows}, ${a.n}) f32`);
    const u = arena.params(PARAMS, { rows: a.rows, n: a.n, srcRows: a.srcRows });
    this.gpu.dispatch(pass, this.pipeline, [a.x, a.rowIds, a.out, u], a.rows);
  }
}
