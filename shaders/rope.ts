/**
 * RoPE kernel wrapper (HF Llama rotate_half convention: dim i pairs with i + headDim/2 in each head), in place on
 * q (T, nHeads, headDim) and k (T, nKvHeads, headDim) in one dispatch, plus `ropeInvFreq`, the inverse frequencies
 * of HF transformers' rope types none / linear / llama3.
 */
import { SiftError } from '../config/errors.js';
import { requireRows } from './lib/attention.js';
import { requireBytes, requireHeadDim, requireInts, requireU32 } from './lib/checks.js';
import { grid2d } from './lib/grid.js';
import { defineParams } from './lib/params.js';
import type { Binding, Gpu, UniformArena } from './runtime.js';

const WG = 64;

/** struct Params of rope.wgsl. */
const PARAMS = defineParams('rope', { tokens: 'u32', nHeads: 'u32', nKvHeads: 'u32', half: 'u32' });

/** HF `rope_scaling` kinds sift supports. */
export type RopeScaling =
  | { type: 'none' }
  | { type: 'linear'; factor: number }
  | {
      type: 'llama3';
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositionEmbeddings: number;
    };

/**
 * Inverse frequencies (headDim / 2) in rad per position, as HF transformers computes them:
 * none: 1 / theta^(2i / headDim); linear: that divided by factor; llama3 (`_compute_llama3_parameters`):
 * wavelength 2*pi/f above original/lowFreqFactor -> f / factor, below original/highFreqFactor -> f, between ->
 * (1 - s) * f / factor + s * f with s = (original / wavelength - lowFreqFactor) / (highFreqFactor - lowFreqFactor).
 * Computed in f64 and rounded once to f32 (HF computes in f32, so values can differ from HF's by an ulp).
 */
export function ropeInvFreq(headDim: number, theta: number, scaling: RopeScaling): Float32Array {
  if (!Number.isInteger(headDim) || headDim < 2 || headDim % 2 !== 0) {
    throw new SiftError('INTERNAL', `ropeInvFreq: headDim must be a positive even integer, got ${headDim}`);
  }
  if (!(theta > 1)) throw new SiftError('INTERNAL', `ropeInvFreq: theta must be > 1, got ${theta}`);
  const half = headDim / 2;
  const out = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    const f = 1 / theta ** ((2 * i) / headDim);
    out[i] = scaleFreq(f, scaling);
  }
  return out;
}

function scaleFreq(f: number, s: RopeScaling): number {
  switch (s.type) {
    case 'none':
      return f;
    case 'linear':
      if (!(s.factor > 0)) throw new SiftError('INTERNAL', `ropeInvFreq: linear factor must be > 0, got ${s.factor}`);
      return f / s.factor;
    case 'llama3': {
      const { factor, lowFreqFactor: lo, highFreqFactor: hi, originalMaxPositionEmbeddings: orig } = s;
      if (!(factor > 0) || !(hi > lo) || !(lo > 0) || !(orig > 0)) {
        throw new SiftError('INTERNAL', `ropeInvFreq: bad llama3 scaling ${JSON.stringify(s)}`);
      }
      const wavelen = (2 * Math.PI) / f;
      if (wavelen < orig / hi) return f; // high frequency: unchanged
      if (wavelen > orig / lo) return f / factor; // low frequency: scaled
      const smooth = (orig / wavelen - lo) / (hi - lo);
      return ((1 - smooth) * f) / factor + smooth * f;
    }
  }
}

export interface RopeArgs {
  q: Binding; // (T, nHeads, headDim) f32, rotated in place
  k: Binding; // (T, nKvHeads, headDim) f32, rotated in place; a different buffer (or range) than q
  positions: Binding; // (T) u32 absolute position of each token, < 2^24
  invFreq: Binding; // (headDim / 2) f32, from ropeInvFreq
  tokens: number; // T
  nHeads: number;
  nKvHeads: number;
  headDim: number; // even
}

export class RopeKernel {
  private readonly pipeline: GPUComputePipeline;
  /** `maxWorkgroupsPerDim` (tests only) caps the grid's x dimension to exercise the 2-D layout. */
  constructor(
    private readonly gpu: Gpu,
    private readonly opts: { maxWorkgroupsPerDim?: number } = {},
  ) {
    this.pipeline = gpu.pipeline('rope', {}, { WG }, PARAMS);
  }

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: RopeArgs): void {
    const K = 'rope';
    requireInts(K, { tokens: a.tokens, nHeads: a.nHeads, nKvHeads: a.nKvHeads }, { nHeads: 1, nKvHeads: 1 });
    requireHeadDim(K, a.headDim);
    const count = a.tokens * (a.nHeads + a.nKvHeads) * (a.headDim / 2);
    requireU32(K, 'work items', count);
    requireRows(K, 'q', a.q, a.tokens, a.nHeads, a.headDim);
    requireRows(K, 'k', a.k, a.tokens, a.nKvHeads, a.headDim);
    requireBytes(K, 'positions', a.positions, a.tokens * 4, `(${a.tokens}) u32`);
    requireBytes(K, 'invFreq', a.invFreq, a.headDim * 2, `(${a.headDim / 2}) f32`);
    const u = arena.params(PARAMS, { tokens: a.tokens, nHeads: a.nHeads, nKvHeads: a.nKvHeads, half: a.headDim / 2 });
    const [x, y] = grid2d(this.gpu, count, WG, this.opts.maxWorkgroupsPerDim);
    this.gpu.dispatch(pass, this.pipeline, [a.q, a.k, a.positions, a.invFreq, u], x, y);
  }
}
