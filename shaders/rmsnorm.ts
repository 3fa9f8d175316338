/**
 * RMSNorm kernel wrapper: x (T, n) f32, weight (n) f32 -> out (T, n) f32; with `accumulate`, out += the normed rows
 * (Gemma's sandwich norms: the attention / MLP output normalized into the residual stream).
 */
import { requireBytes, requireFinite, requireInts } from './lib/checks.js';
import { defineParams } from './lib/params.js';
import type { Binding, Gpu, UniformArena } from './runtime.js';

/** struct Params of rmsnorm.wgsl. */
const PARAMS = defineParams('rmsnorm', { rows: 'u32', n: 'u32', eps: 'f32' });

export interface RmsNormArgs {
  x: Binding; // (T, n) f32
  weight: Binding; // (n) f32
  out: Binding; // (T, n) f32, must not alias x
  rows: number; // T
  n: number;
  eps: number;
  /** out += normed instead of out = normed. */
  accumulate?: boolean;
}

export class RmsNormKernel {
  private readonly pipeline: GPUComputePipeline;
  private accPipeline: GPUComputePipeline | null = null;
  constructor(private readonly gpu: Gpu) {
    this.pipeline = gpu.pipeline('rmsnorm', {}, { WG: 64 }, PARAMS);
  }

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: RmsNormArgs): void {
    const K = 'rmsnorm';
    requireInts(K, { rows: a.rows, n: a.n }, { n: 1 });
    requireFinite(K, 'eps', a.eps);
    requireBytes(K, 'x', a.x, a.rows * a.n * 4, `(${a.rows}, ${a.n}) f32`);
    requireBytes(K, 'weight', a.weight, a.n * 4, `(${a.n}) f32`);
    requireBytes(K, 'out', a.out, a.rows * a.n * 4, `(${a.rows}, ${a.n}) f32`);
    const u = arena.params(PARAMS, { rows: a.rows, n: a.n, eps: a.eps });
    if (a.accumulate) this.accPipeline ??= this.gpu.pipeline('rmsnorm', { ACC: true }, { WG: 64 }, PARAMS);
    const pipe = a.accumulate ? (this.accPipeline as GPUComputePipeline) : this.pipeline;
    this.gpu.dispatch(pass, pipe, [a.x, a.weight, a.out, u], a.rows);
  }
}
