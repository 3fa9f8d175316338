/**
 * Attention-mass wrapper (calibration, `sift calibrate`): for every query token and head, the share of its dense
 * causal softmax mass that falls on keys outside the streaming window [0, sink) U [pos + 1 - local, pos], over one
 * layer's paged f16 kCache (numPages, pageSize, numKvHeads, headDim / 2) through the block table, after this step's
 * kv_write. mass (T, numHeads) f32. A head whose mass stays near 0 loses nothing by streaming (DuoAttention's
 * criterion, measured instead of trained). Same head-range convention as shaders/attention.ts.
 */
import { SiftError } from '../config/errors.js';
import { headRange, MAX_HEAD_DIM } from './attention.js';
import { grid2d } from './grid.js';
import { cachePages, checkPagedShape } from './kv_write.js';
import { type Binding, type Gpu, type UniformArena, uniforms } from './runtime.js';

export interface AttentionMassArgs {
  q: Binding; // (T, qRowHeads, headDim) f32, after RoPE
  kCache: Binding; // (numPages, pageSize, numKvHeads, headDim / 2) u32 f16 pairs, one layer, this step written
  blockTable: Binding; // (numSeqs, maxPagesPerSeq) u32
  tokenSeq: Binding; // (T) u32
  positions: Binding; // (T) u32
  mass: Binding; // (T, numHeads) f32 out
  T: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  pageSize: number;
  maxPagesPerSeq: number;
  scale: number;
  sinkTokens: number;
  localTokens: number;
  qHeadOffset?: number;
  qRowHeads?: number;
}

export class AttentionMassKernel {
  constructor(
    private readonly gpu: Gpu,
    private readonly opts: { lanes?: number; maxWorkgroupsPerDim?: number } = {},
  ) {}

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: AttentionMassArgs): void {
    checkPagedShape('attention_mass', a);
    if (
      a.numHeads < 1 ||
      a.numHeads % a.numKvHeads !== 0 ||
      a.headDim > MAX_HEAD_DIM ||
      !Number.isInteger(a.sinkTokens) ||
      a.sinkTokens < 0 ||
      !Number.isInteger(a.localTokens) ||
      a.localTokens < 1
    ) {
      throw new SiftError(
        'INTERNAL',
        `attention_mass: bad shape numHeads=${a.numHeads} numKvHeads=${a.numKvHeads} headDim=${a.headDim} sink=${a.sinkTokens} local=${a.localTokens}`,
      );
    }
    if (cachePages(a.kCache, a.pageSize, a.numKvHeads, a.headDim) < 1) {
      throw new SiftError('INTERNAL', 'attention_mass: the cache holds no page');
    }
    const r = headRange('attention_mass', a.numHeads, a.qHeadOffset, a.qRowHeads ?? (a.qHeadOffset ?? 0) + a.numHeads);
    const u = arena.alloc(
      uniforms([
        ['u32', a.T],
        ['u32', a.numHeads],
        ['u32', a.numKvHeads],
        ['u32', a.numHeads / a.numKvHeads],
        ['u32', a.pageSize],
        ['u32', a.maxPagesPerSeq],
        ['f32', a.scale],
        ['u32', a.sinkTokens],
        ['u32', a.localTokens],
        ['u32', r.qHeadOffset],
        ['u32', r.qRowHeads],
      ]),
    );
    const lanes = this.opts.lanes ?? (this.gpu.caps.isCpu ? 8 : 32);
    const pipeline = this.gpu.pipeline('attention_mass', { HD: a.headDim, LANES: lanes });
    const [x, y] = grid2d(this.gpu, a.T * a.numHeads, 1, this.opts.maxWorkgroupsPerDim);
    this.gpu.dispatch(pass, pipeline, [a.q, a.kCache, a.blockTable, a.tokenSeq, a.positions, a.mass, u], x, y);
  }
}
