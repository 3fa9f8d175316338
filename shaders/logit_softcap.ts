/**
 * Final logit soft-capping (Gemma 2's final_logit_softcapping) in place: logits (rows, vocab) f32 become
 * cap * tanh(logits / cap), before any sampling reads them.
 */
import { check, requireBytes, requireInts, requireU32 } from './lib/checks.js';
import { grid2d } from './lib/grid.js';
import { defineParams } from './lib/params.js';
import type { Binding, Gpu, UniformArena } from './runtime.js';

const WG = 256;

/** struct Params of logit_softcap.wgsl. */
const PARAMS = defineParams('logit_softcap', { n: 'u32', cap: 'f32' });

export interface LogitSoftcapArgs {
  logits: Binding; // (n) f32, read and written
  n: number; // elements: rows * vocab
  cap: number; // > 0
}

export class LogitSoftcapKernel {
  private readonly pipeline: GPUComputePipeline;
  /** `maxWorkgroupsPerDim` (tests only) caps the grid's x dimension to exercise the 2-D layout. */
  constructor(
    private readonly gpu: Gpu,
    private readonly opts: { maxWorkgroupsPerDim?: number } = {},
  ) {
    this.pipeline = gpu.pipeline('logit_softcap', {}, { WG }, PARAMS);
  }

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: LogitSoftcapArgs): void {
    const K = 'logit_softcap';
    requireInts(K, { n: a.n });
    requireU32(K, 'n', a.n);
    check(K, Number.isFinite(a.cap) && a.cap > 0, `cap=${a.cap} must be finite and > 0`);
    requireBytes(K, 'logits', a.logits, a.n * 4, `(${a.n}) f32`);
    if (a.n === 0) return;
    const u = arena.params(PARAMS, { n: a.n, cap: a.cap });
    const [x, y] = grid2d(this.gpu, a.n, WG, this.opts.maxWorkgroupsPerDim);
    this.gpu.dispatch(pass, this.pipeline, [a.logits, u], x, y);
  }
}
