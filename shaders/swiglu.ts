/**
 * SwiGLU kernel wrapper: out (T, I) = silu(gate (T, I)) * up (T, I), all f32.
 * Gate and up are either two buffers ({ gate, up }) or one fused (T, 2I) buffer ({ gateUp }) whose row t holds
 * gate[t, :] followed by up[t, :], as written by a single fused gate_up projection.
 */
import { SiftError } from '../config/errors.js';
import { grid2d } from './grid.js';
import { type Binding, type Gpu, type UniformArena, uniforms } from './runtime.js';

const WG = 256;

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
    this.split = gpu.pipeline('swiglu', {}, { WG });
    this.fused = gpu.pipeline('swiglu', { FUSED: true }, { WG });
  }

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: SwiGluArgs): void {
    const count = a.rows * a.n;
    if (!Number.isInteger(a.rows) || !Number.isInteger(a.n) || a.rows < 0 || a.n < 1 || count >= 2 ** 32) {
      throw new SiftError('INTERNAL', `swiglu: bad shape rows=${a.rows} n=${a.n}`);
    }
    const u = arena.alloc(
      uniforms([
        ['u32', a.rows],
        ['u32', a.n],
      ]),
    );
    const [x, y] = grid2d(this.gpu, count, WG, this.opts.maxWorkgroupsPerDim);
    if ('gateUp' in a) this.gpu.dispatch(pass, this.fused, [a.gateUp, a.out, u], x, y);
    else this.gpu.dispatch(pass, this.split, [a.gate, a.up, a.out, u], x, y);
  }
}
