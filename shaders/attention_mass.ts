/**
 * Attention-mass wrapper (calibration, `sift calibrate`): for every query token and head, the share of its dense
 * causal softmax mass that falls on keys outside the streaming window [0, sink) U [pos + 1 - local, pos], over one
 * layer's paged f16 kCache (numPages, pageSize, numKvHeads, headDim / 2) through the block table, after this step's
 * kv_write. mass (T, numHeads) f32. A head whose mass stays near 0 loses nothing by streaming (DuoAttention's
 * criterion, measured instead of trained). The layer's sliding window and soft-cap apply as its attention applies
 * them. Same head-range convention as shaders/attention.ts.
 */
import {
  type AttentionShape,
  PAGED_HEADS,
  pagedHeads,
  requireAttention,
  requireRows,
  SCORE_MODS,
  type ScoreMods,
  scoreMods,
} from './lib/attention.js';
import { headRange, requireBytes, requireInts } from './lib/checks.js';
import { grid2d } from './lib/grid.js';
import { defineParams } from './lib/params.js';
import { type PoolBinding, slabDefines } from './lib/slabs.js';
import type { Binding, Gpu, UniformArena } from './runtime.js';

/** struct Params of attention_mass.wgsl. */
const PARAMS = defineParams('attention_mass', {
  tokens: 'u32',
  ...PAGED_HEADS,
  scale: 'f32',
  sink: 'u32',
  local: 'u32',
  qHeadOffset: 'u32',
  qRowHeads: 'u32',
  ...SCORE_MODS,
});

export interface AttentionMassArgs extends AttentionShape, ScoreMods {
  q: Binding; // (T, qRowHeads, headDim) f32, after RoPE
  kCache: PoolBinding; // (numPages, pageSize, numKvHeads, headDim / 2) u32 f16 pairs, one layer, this step written
  blockTable: Binding; // (numSeqs, maxPagesPerSeq) u32
  tokenSeq: Binding; // (T) u32
  positions: Binding; // (T) u32
  mass: Binding; // (T, numHeads) f32 out
  T: number;
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
    const K = 'attention_mass';
    requireInts(
      K,
      { T: a.T, maxPagesPerSeq: a.maxPagesPerSeq, sinkTokens: a.sinkTokens, localTokens: a.localTokens },
      { localTokens: 1 },
    );
    requireAttention(K, a, a.kCache);
    const r = headRange(K, a.numHeads, a.qHeadOffset, a.qRowHeads);
    requireRows(K, 'q', a.q, a.T, r.qRowHeads, a.headDim);
    requireBytes(K, 'mass', a.mass, a.T * a.numHeads * 4, `(${a.T}, ${a.numHeads}) f32`);
    const u = arena.params(PARAMS, {
      tokens: a.T,
      ...pagedHeads(a),
      scale: a.scale,
      sink: a.sinkTokens,
      local: a.localTokens,
      qHeadOffset: r.qHeadOffset,
      qRowHeads: r.qRowHeads,
      ...scoreMods(K, a),
    });
    const lanes = this.opts.lanes ?? (this.gpu.caps.isCpu ? 8 : 32);
    const slabs = slabDefines({ kCache: a.kCache });
    const pipeline = this.gpu.pipeline('attention_mass', { HD: a.headDim, LANES: lanes, ...slabs }, {}, PARAMS);
    const [x, y] = grid2d(this.gpu, a.T * a.numHeads, 1, this.opts.maxWorkgroupsPerDim);
    this.gpu.dispatch(pass, pipeline, [a.q, a.kCache, a.blockTable, a.tokenSeq, a.positions, a.mass, u], x, y);
  }
}
