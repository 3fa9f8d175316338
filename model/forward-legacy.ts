/**
 * The forward pass as it ran before the decode-step work, kept (ForwardOptions.stepPath 'per-step') only to measure
 * before and after the same way (`sift bench step --path per-step,graph`); to be removed once that comparison is
 * recorded. Every step encodes every dispatch anew (a bind group each, uniforms re-uploaded) through the unfused
 * kernels: rmsnorm, separate q/k/v matmuls, rope, kv_write and page digests of every token (LayerAttention's legacy
 * mode), o, residual add, rmsnorm, gate, up, swiglu, down, residual add; the logits of every row are returned and
 * sampled on the host.
 */
import { SiftError } from '../config/errors.js';
import { EmbeddingKernel } from '../shaders/embedding.js';
import { GatherRowsKernel } from '../shaders/gather_rows.js';
import type { MatmulKernel } from '../shaders/matmul.js';
import { ResidualAddKernel } from '../shaders/residual_add.js';
import { RmsNormKernel } from '../shaders/rmsnorm.js';
import { RopeKernel } from '../shaders/rope.js';
import type { Gpu, UniformArena } from '../shaders/runtime.js';
import { SwiGluKernel } from '../shaders/swiglu.js';
import type { LayerAttention } from './attention/layer-attention.js';
import type { ForwardBatch, LayerTap } from './forward.js';
import type { KvStorage } from './kv-storage.js';
import type { StepInputs } from './step-inputs.js';
import type { ModelWeights } from './weights.js';

export class LegacyForward {
  private readonly k: {
    embed: EmbeddingKernel;
    norm: RmsNormKernel;
    rope: RopeKernel;
    add: ResidualAddKernel;
    swiglu: SwiGluKernel;
    gather: GatherRowsKernel;
  };
  private readonly own: Record<string, GPUBuffer> = {};

  constructor(
    gpu: Gpu,
    private readonly w: ModelWeights,
    private readonly kv: KvStorage,
    private readonly attention: LayerAttention,
    /** The forward pass's buffers: h, xn, q, k, v, attn, act, last, logits. */
    private readonly b: Record<string, GPUBuffer>,
    private readonly invFreq: GPUBuffer,
    private readonly matmul: MatmulKernel,
  ) {
    if (!w.legacy) throw new SiftError('INTERNAL', 'the per-step path needs the separate projections (legacy weights)');
    this.k = {
      embed: new EmbeddingKernel(gpu),
      norm: new RmsNormKernel(gpu),
      rope: new RopeKernel(gpu),
      add: new ResidualAddKernel(gpu),
      swiglu: new SwiGluKernel(gpu),
      gather: new GatherRowsKernel(gpu),
    };
    const c = w.config;
    const T = b.h.size / 4 / c.hiddenSize;
    const R = b.last.size / 4 / c.hiddenSize;
    this.own.proj = gpu.createBuffer('legacy.proj', T * c.hiddenSize * 4); // (T, hidden)
    this.own.gate = gpu.createBuffer('legacy.gate', T * c.intermediateSize * 4); // (T, inter)
    this.own.up = gpu.createBuffer('legacy.up', T * c.intermediateSize * 4); // (T, inter)
    this.own.lastn = gpu.createBuffer('legacy.lastn', R * c.hiddenSize * 4); // (R, hidden)
  }

  /** The old step for `batch` (its inputs already in `inputs`: ids, pos, seq, logitRows; attention prepared). */
  encode(
    pass: GPUComputePassEncoder,
    a: UniformArena,
    batch: ForwardBatch,
    inputs: StepInputs,
    table: GPUBuffer,
    tap?: LayerTap,
  ): void {
    const c = this.w.config;
    const T = batch.tokens.length;
    const R = batch.logitRows.length;
    const b = this.b;
    const o = this.own;
    const k = this.k;
    const mm = this.matmul;
    const hidden = c.hiddenSize;
    const eps = c.rmsNormEps;
    const seq = inputs.binding('seq');
    const pos = inputs.binding('pos');
    k.embed.encode(pass, a, { ids: inputs.binding('ids'), table: this.w.embed, out: b.h, T });
    for (let li = 0; li < c.numLayers; li++) {
      const L = this.w.layers[li];
      const P = this.w.legacy![li];
      k.norm.encode(pass, a, { x: b.h, weight: L.attnNorm, out: b.xn, rows: T, n: hidden, eps });
      mm.encode(pass, a, { x: b.xn, w: P.q, bias: P.qBias ?? undefined, out: b.q, T });
      mm.encode(pass, a, { x: b.xn, w: P.k, bias: P.kBias ?? undefined, out: b.k, T });
      mm.encode(pass, a, { x: b.xn, w: P.v, bias: P.vBias ?? undefined, out: b.v, T });
      k.rope.encode(pass, a, {
        q: b.q,
        k: b.k,
        positions: pos,
        invFreq: this.invFreq,
        tokens: T,
        nHeads: c.numHeads,
        nKvHeads: c.numKvHeads,
        headDim: c.headDim,
      });
      this.attention.encodeLayer(pass, a, li, { q: b.q, k: b.k, v: b.v, out: b.attn, table, seq, pos });
      tap?.(pass, a, li, { q: b.q, kCache: this.kv.layers[li].k, blockTable: table, tokenSeq: seq, positions: pos, T });
      mm.encode(pass, a, { x: b.attn, w: L.o, out: o.proj, T });
      k.add.encode(pass, a, { a: b.h, b: o.proj, n: T * hidden });
      k.norm.encode(pass, a, { x: b.h, weight: L.mlpNorm, out: b.xn, rows: T, n: hidden, eps });
      mm.encode(pass, a, { x: b.xn, w: P.gate, out: o.gate, T });
      mm.encode(pass, a, { x: b.xn, w: P.up, out: o.up, T });
      k.swiglu.encode(pass, a, { gate: o.gate, up: o.up, out: b.act, rows: T, n: c.intermediateSize });
      mm.encode(pass, a, { x: b.act, w: L.down, out: o.proj, T });
      k.add.encode(pass, a, { a: b.h, b: o.proj, n: T * hidden });
    }
    if (R === 0) return;
    k.gather.encode(pass, a, {
      x: b.h,
      rowIds: inputs.binding('logitRows'),
      out: b.last,
      rows: R,
      n: hidden,
      srcRows: T,
    });
    k.norm.encode(pass, a, { x: b.last, weight: this.w.finalNorm, out: o.lastn, rows: R, n: hidden, eps });
    mm.encode(pass, a, { x: o.lastn, w: this.w.lmHead, out: b.logits, T: R });
  }

  destroy(): void {
    for (const buf of Object.values(this.own)) buf.destroy();
  }
}
