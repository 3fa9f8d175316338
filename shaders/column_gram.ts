/**
 * Column Gram matrix wrapper: x (rows, n) f32 -> out (n, n) f32, out[i, j] = sum_t x[t, i] x[t, j] for j >= i (the
 * upper triangle, overwritten, or added to with `accumulate`; entries below the diagonal untouched). GPTQ's statistic (model/gram.ts).
 */
import { requireBytes, requireInts, requireU32 } from './lib/checks.js';
import { defineParams } from './lib/params.js';
import type { Binding, Gpu, UniformArena } from './runtime.js';

const WG = 8; // WG x WG invocations a workgroup, each a 4x4 tile of out
const TILE = 4;

/** struct Params of column_gram.wgsl. */
const PARAMS = defineParams('column_gram', { rows: 'u32', n: 'u32', accumulate: 'u32' });

export interface ColumnGramArgs {
  x: Binding; // (rows, n) f32
  out: Binding; // (n, n) f32, upper triangle written
  rows: number;
  n: number;
  /** Add to out instead of overwriting it. */
  accumulate?: boolean;
}

export class ColumnGramKernel {
  private readonly pipeline: GPUComputePipeline;
  constructor(private readonly gpu: Gpu) {
    this.pipeline = gpu.pipeline('column_gram', {}, { WG }, PARAMS);
  }

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: ColumnGramArgs): void {
    const K = 'column_gram';
    requireInts(K, { rows: a.rows, n: a.n }, { n: 1 });
    requireU32(K, 'rows * n', a.rows * a.n);
    requireU32(K, 'n * n', a.n * a.n);
    requireBytes(K, 'x', a.x, a.rows * a.n * 4, `(${a.rows}, ${a.n}) f32`);
    requireBytes(K, 'out', a.out, a.n * a.n * 4, `(${a.n}, ${a.n}) f32`);
    const u = arena.params(PARAMS, { rows: a.rows, n: a.n, accumulate: a.accumulate ? 1 : 0 });
    const tiles = Math.ceil(Math.ceil(a.n / TILE) / WG);
    this.gpu.dispatch(pass, this.pipeline, [a.x, a.out, u], tiles, tiles);
  }
}
