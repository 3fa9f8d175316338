/** Per-head RMSNorm in place (Qwen3's q/k norm): x (T, rowHeads, headDim) f32, heads [firstHead, +nHeads). */
import { requireBytes, requireFinite, requireInts } from './lib/checks.js';
import { defineParams } from './lib/params.js';
import type { Binding, Gpu, UniformArena } from './runtime.js';

/** struct Params of head_rmsnorm.wgsl. */
const PARAMS = defineParams('head_rmsnorm', {
  tokens: 'u32',
  rowHeads: 'u32',
  firstHead: 'u32',
  nHeads: 'u32',
  headDim: 'u32',
  eps: 'f32',
});

export interface HeadRmsNormArgs {
  x: Binding; // (T, rowHeads, headDim) f32, normalized in place
  weight: Binding; // (headDim) f32
  tokens: number; // T
  rowHeads: number;
  firstHead: number;
  nHeads: number;
  headDim: number;
  eps: number;
}

export class HeadRmsNormKernel {
  private readonly pipeline: GPUComputePipeline;
  constructor(private readonly gpu: Gpu) {
    this.pipeline = gpu.pipeline('head_rmsnorm', {}, { WG: 64 }, PARAMS);
  }

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: HeadRmsNormArgs): void {
    const K = 'head_rmsnorm';
    requireInts(K, { tokens: a.tokens, rowHeads: a.rowHeads, nHeads: a.nHeads, headDim: a.headDim }, { headDim: 1 });
    requireInts(K, { firstHead: a.firstHead }, {});
    if (a.firstHead + a.nHeads > a.rowHeads) {
      throw new RangeError(`${K}: heads [${a.firstHead}, ${a.firstHead + a.nHeads}) outside a row of ${a.rowHeads}`);
    }
    requireFinite(K, 'eps', a.eps);
    requireBytes(K, 'x', a.x, a.tokens * a.rowHeads * a.headDim * 4, `(${a.tokens}, ${a.rowHeads}, ${a.headDim}) f32`);
    requireBytes(K, 'weight', a.weight, a.headDim * 4, `(${a.headDim}) f32`);
    const u = arena.params(PARAMS, {
      tokens: a.tokens,
      rowHeads: a.rowHeads,
      firstHead: a.firstHead,
      nHeads: a.nHeads,
      headDim: a.headDim,
      eps: a.eps,
    });
    const items = a.tokens * a.nHeads;
    if (items === 0) return;
    const gx = Math.min(items, this.gpu.caps.maxComputeWorkgroupsPerDimension);
    this.gpu.dispatch(pass, this.pipeline, [a.x, a.weight, u], gx, Math.ceil(items / gx));
  }
}
