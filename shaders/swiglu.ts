/**
 * SwiGLU kernel wrapper: out (T, I) = silu(gate (T, I)) * up (T, I), all f32.
 * Gate and up are either two buffers ({ gate, up }) or one fused (T, 2I) buffer ({ gateUp }) whose row t holds
 * gate[t, :] followed by up[t, :], as written by a single fused gate_up projection.
 */
import { requireBytes, requireInts, requireU32 } from './lib/checks.js';
import { grid2d } from './lib/grid.js';
import { defineParams } from './lib/params.js';
import type { Binding, Gpu, UniformArena } from './runtime.js';

const WG = 256;

/** struct Params of swiglu.wgsl (both variants). */
const PARAMS = defineParams('swiglu', { rows: 'u32', n: 'u32' });

interface SwiGluShape {
  out: Binding; // (T, I) f32
  rows: number; // T
  n: number; // I
}
export interface SwiGluSplitArgs extends SwiGluShape {
  gate: Binding; // (T, I) f32
  up: Binding; // (T, I) f32
}
export interface SwiGluFusedArgs extends SwiGluShape {
  gateUp: Binding; // (T, 2I) f32: row t = [gate[t, 0..I) | up[t, 0..I)]; must not alias out
}
export type SwiGluArgs = SwiGluSplitArgs | SwiGluFusedArgs;

export class SwiGluKernel {
  private readonly split: GPUComputePipeline;
  private readonly fused: GPUComputePipeline;
  /** `maxWorkgroupsPerDim` (tests only) caps the grid's x dimension to exercise the 2-D layout. */
  constructor(
    private readonly gpu: Gpu,
    private readonly opts: { maxWorkgroupsPerDim?: number } = {},
  ) {
    this.split = gpu.pipeline('swiglu', {}, { WG }, PARAMS);
    this.fused = gpu.pipeline('swiglu', { FUSED: true }, { WG }, PARAMS);
  }

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: SwiGluArgs): void {
    const K = 'swiglu';
    requireInts(K, { rows: a.rows, n: a.n }, { n: 1 });
    const count = a.rows * a.n;
    requireU32(K, 'rows * n', count);
    const shape = `(${a.rows}, ${a.n}) f32`;
    requireBytes(K, 'out', a.out, count * 4, shape);
    if ('gateUp' in a) requireBytes(K, 'gateUp', a.gateUp, count * 8, `(${a.rows}, ${2 * a.n}) f32`);
    else {
      requireBytes(K, 'gate', a.gate, count * 4, shape);
      requireBytes(K, 'up', a.up, count * 4, shape);
    }
    const u = arena.params(PARAMS, { rows: a.rows, n: a.n });
    const [x, y] = grid2d(this.gpu, count, WG, this.opts.maxWorkgroupsPerDim);
    if ('gateUp' in a) this.gpu.dispatch(pass, this.fused, [a.gateUp, a.out, u], x, y);
    else this.gpu.dispatch(pass, this.split, [a.gate, a.up, a.out, u], x, y);
  }
}
