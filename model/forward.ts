/**
 * The batched forward pass: one call runs the new tokens of many sequences (flattened, with per-token sequence
 * row and position) through every layer, writing their K/V into the paged cache through the block table, and
 * returns logits for the requested rows only (typically the last new token of each sequence).
 *
 * Per layer: h (T, hidden) -> RMSNorm -> q/k/v projections (+bias) -> RoPE -> KV write -> paged causal attention
 * -> o projection -> h += ; RMSNorm -> gate/up -> SwiGLU -> down -> h += . Then final norm on the gathered rows
 * and lm_head. All of it is WGSL; one command buffer per call.
 */
import { ropeFrequencies } from '../checkpoint/rope.js';
import { SiftError } from '../config/errors.js';
import { EmbeddingKernel } from '../shaders/embedding.js';
import { GatherRowsKernel } from '../shaders/gather_rows.js';
import { HeadRmsNormKernel } from '../shaders/head_rmsnorm.js';
import { MatmulKernel } from '../shaders/matmul.js';
import { ResidualAddKernel } from '../shaders/residual_add.js';
import { RmsNormKernel } from '../shaders/rmsnorm.js';
import { RopeKernel } from '../shaders/rope.js';
import { type Gpu, UniformArena } from '../shaders/runtime.js';
import { SwiGluKernel } from '../shaders/swiglu.js';
import { LayerAttention, type LayerAttentionOptions } from './attention/layer-attention.js';
import type { SeqId } from './executor.js';
import type { KvStorage } from './kv-storage.js';
import type { ModelWeights } from './weights.js';

/** A block-table row's sequence and kind (see model/executor.ts). */
export type BatchRow = { kind: 'decode'; seqId: SeqId; tokenBudget: number } | { kind: 'prefill'; seqId: SeqId };

/** One step's work: new tokens of several sequences, flattened (model/batch.ts builds it from a step's entries). */
export interface ForwardBatch {
  /** (T) token ids. */
  tokens: Uint32Array;
  /** (T) absolute position of each token in its sequence. */
  positions: Uint32Array;
  /** (T) row of the block table each token belongs to. */
  tokenSeq: Uint32Array;
  /** (numSeqs, maxPagesPerSeq) physical page of each logical page. */
  blockTable: Uint32Array;
  numSeqs: number;
  /** (R) indices into tokens whose logits are returned, in order. */
  logitRows: Uint32Array;
  /**
   * (numSeqs) per block-table row: its sequence and kind. Decode rows come first and hold exactly one token each,
   * token i of decode row i (asserted by encode); their attention goes through page selection within `tokenBudget`
   * (needs ForwardOptions.attention.sparse). Prefill rows' sequences reselect pages on their next decode step.
   */
  rows: readonly BatchRow[];
  /**
   * Streaming heads (required when the model has any): per block-table row its streaming table (sink pages then
   * ring pages, (numSeqs, sinkPages + ringPages) u32), and per token the streaming-pool slot it is written to
   * (page * pageSize + offset) or SKIP_SLOT (0xFFFFFFFF) when the ring does not keep it.
   */
  streaming?: { table: Uint32Array; slots: Uint32Array };
}

/**
 * Extra work encoded right after a layer's attention (calibration measures attention mass there). The layer's K/V
 * for this step are in the caches; q holds (T, nHeads, headDim) after RoPE.
 */
export type LayerTap = (
  pass: GPUComputePassEncoder,
  arena: UniformArena,
  layer: number,
  b: { q: GPUBuffer; kCache: GPUBuffer; blockTable: GPUBuffer; tokenSeq: GPUBuffer; positions: GPUBuffer; T: number },
) => void;

export interface ForwardOptions {
  maxBatchTokens: number;
  maxSeqs: number;
  maxPagesPerSeq: number;
  /** Most logit rows one call may ask for (default maxSeqs). */
  maxLogitRows?: number;
  /** Sparse attention: page digests + sparse decode, block-sparse prefill, streaming heads' window. */
  attention?: Pick<LayerAttentionOptions, 'sparse' | 'blockSparsePrefill' | 'streaming'>;
}

export class ForwardPass {
  readonly maxBatchTokens: number;
  readonly maxSeqs: number;
  readonly maxPagesPerSeq: number;
  readonly maxLogitRows: number;
  private readonly arena: UniformArena;
  private readonly k: {
    embed: EmbeddingKernel;
    norm: RmsNormKernel;
    matmul: MatmulKernel;
    rope: RopeKernel;
    add: ResidualAddKernel;
    swiglu: SwiGluKernel;
    gather: GatherRowsKernel;
    /** Qwen3's per-head q/k RMSNorm (null for models without it). */
    headNorm: HeadRmsNormKernel | null;
  };
  private readonly b: Record<string, GPUBuffer> = {};
  private readonly invFreq: GPUBuffer;
  /** Attention of every layer: dense, sparse decode, block-sparse prefill, streaming heads. */
  readonly attention: LayerAttention;

  constructor(
    private readonly gpu: Gpu,
    private readonly w: ModelWeights,
    private readonly kv: KvStorage,
    opts: ForwardOptions,
  ) {
    const c = w.config;
    this.maxBatchTokens = opts.maxBatchTokens;
    this.maxSeqs = opts.maxSeqs;
    this.maxPagesPerSeq = opts.maxPagesPerSeq;
    this.maxLogitRows = opts.maxLogitRows ?? opts.maxSeqs;
    this.arena = new UniformArena(gpu);
    this.k = {
      embed: new EmbeddingKernel(gpu),
      norm: new RmsNormKernel(gpu),
      matmul: new MatmulKernel(gpu),
      rope: new RopeKernel(gpu),
      add: new ResidualAddKernel(gpu),
      swiglu: new SwiGluKernel(gpu),
      gather: new GatherRowsKernel(gpu),
      headNorm: c.qkNorm ? new HeadRmsNormKernel(gpu) : null,
    };
    const T = this.maxBatchTokens;
    const qDim = c.numHeads * c.headDim;
    const kvDim = c.numKvHeads * c.headDim;
    const f = (name: string, elems: number) => {
      this.b[name] = gpu.createBuffer(`act.${name}`, elems * 4);
    };
    f('h', T * c.hiddenSize); // (T, hidden) residual stream
    f('xn', T * c.hiddenSize); // (T, hidden) normed
    f('q', T * qDim); // (T, heads, headDim)
    f('k', T * kvDim); // (T, kvHeads, headDim)
    f('v', T * kvDim); // (T, kvHeads, headDim)
    f('attn', T * qDim); // (T, heads, headDim)
    f('proj', T * c.hiddenSize); // (T, hidden) o_proj / down_proj output
    f('gate', T * c.intermediateSize); // (T, inter)
    f('up', T * c.intermediateSize); // (T, inter)
    f('act', T * c.intermediateSize); // (T, inter)
    f('last', this.maxLogitRows * c.hiddenSize); // (R, hidden) gathered rows
    f('lastn', this.maxLogitRows * c.hiddenSize); // (R, hidden)
    f('logits', this.maxLogitRows * c.vocabSize); // (R, vocab)
    f('ids', T); // (T) u32
    f('pos', T); // (T) u32
    f('seq', T); // (T) u32
    f('rows', this.maxLogitRows); // (R) u32
    f('table', this.maxSeqs * this.maxPagesPerSeq); // (numSeqs, maxPagesPerSeq) u32
    // Sequence-length-dependent scalings (dynamic, longrope) are fixed for the longest sequence the block table holds.
    const rope = ropeFrequencies(c, this.maxPagesPerSeq * kv.pageSize);
    this.invFreq = gpu.upload('rope.invFreq', Float32Array.from(rope.invFreq));
    this.attention = new LayerAttention(gpu, c, kv, {
      maxBatchTokens: T,
      maxSeqs: this.maxSeqs,
      maxPagesPerSeq: this.maxPagesPerSeq,
      ...opts.attention,
    });
  }

  /** Forgets a finished (or preempted) sequence's attention state (its sparse selection slot). */
  release(seqId: SeqId): void {
    this.attention.release(seqId);
  }

  /** Runs the batch; resolves with logits (R, vocab) for batch.logitRows. */
  async forward(batch: ForwardBatch, tap?: LayerTap): Promise<Float32Array> {
    const R = this.encode(batch, tap);
    return this.gpu.readF32(this.b.logits, R * this.w.config.vocabSize);
  }

  /** Encodes and submits the batch without reading back (benchmarks); returns the logit row count. */
  encode(batch: ForwardBatch, tap?: LayerTap): number {
    const c = this.w.config;
    const T = batch.tokens.length;
    const R = batch.logitRows.length;
    if (T < 1 || T > this.maxBatchTokens) {
      throw new SiftError('INTERNAL', `forward: ${T} tokens, batch holds 1..${this.maxBatchTokens}`);
    }
    if (batch.positions.length !== T || batch.tokenSeq.length !== T)
      throw new SiftError('INTERNAL', 'forward: positions/tokenSeq length != tokens');
    if (R > this.maxLogitRows) throw new SiftError('INTERNAL', `forward: ${R} logit rows > ${this.maxLogitRows}`);
    if (batch.numSeqs > this.maxSeqs)
      throw new SiftError('INTERNAL', `forward: ${batch.numSeqs} sequences > ${this.maxSeqs}`);
    if (batch.blockTable.length !== batch.numSeqs * this.maxPagesPerSeq) {
      throw new SiftError(
        'INTERNAL',
        `forward: block table has ${batch.blockTable.length} entries, want ${batch.numSeqs}x${this.maxPagesPerSeq}`,
      );
    }
    checkBatchRows(batch);
    for (let i = 0; i < T; i++) {
      if (batch.tokens[i] < 0 || batch.tokens[i] >= c.vocabSize) {
        throw new SiftError(
          'INVALID_ARGUMENT',
          `token id ${batch.tokens[i]} is outside the vocabulary [0, ${c.vocabSize})`,
        );
      }
    }
    const g = this.gpu;
    this.attention.prepare({ ...batch, maxPagesPerSeq: this.maxPagesPerSeq });
    g.write(this.b.ids, batch.tokens);
    g.write(this.b.pos, batch.positions);
    g.write(this.b.seq, batch.tokenSeq);
    g.write(this.b.rows, batch.logitRows);
    g.write(this.b.table, batch.blockTable);

    const b = this.b;
    const k = this.k;
    const a = this.arena;
    const hidden = c.hiddenSize;
    a.reset();
    g.run((pass) => {
      k.embed.encode(pass, a, { ids: b.ids, table: this.w.embed, out: b.h, T });
      for (let li = 0; li < c.numLayers; li++) {
        const L = this.w.layers[li];
        const kv = this.kv.layers[li];
        k.norm.encode(pass, a, { x: b.h, weight: L.attnNorm, out: b.xn, rows: T, n: hidden, eps: c.rmsNormEps });
        k.matmul.encode(pass, a, { x: b.xn, w: L.q, bias: L.qBias ?? undefined, out: b.q, T });
        k.matmul.encode(pass, a, { x: b.xn, w: L.k, bias: L.kBias ?? undefined, out: b.k, T });
        k.matmul.encode(pass, a, { x: b.xn, w: L.v, bias: L.vBias ?? undefined, out: b.v, T });
        if (k.headNorm && L.qNorm && L.kNorm) {
          const d = { tokens: T, firstHead: 0, headDim: c.headDim, eps: c.rmsNormEps };
          k.headNorm.encode(pass, a, { x: b.q, weight: L.qNorm, rowHeads: c.numHeads, nHeads: c.numHeads, ...d });
          k.headNorm.encode(pass, a, { x: b.k, weight: L.kNorm, rowHeads: c.numKvHeads, nHeads: c.numKvHeads, ...d });
        }
        k.rope.encode(pass, a, {
          q: b.q,
          k: b.k,
          positions: b.pos,
          invFreq: this.invFreq,
          tokens: T,
          nHeads: c.numHeads,
          nKvHeads: c.numKvHeads,
          headDim: c.headDim,
        });
        this.attention.encodeLayer(pass, a, li, {
          q: b.q,
          k: b.k,
          v: b.v,
          out: b.attn,
          table: b.table,
          seq: b.seq,
          pos: b.pos,
        });
        tap?.(pass, a, li, { q: b.q, kCache: kv.k, blockTable: b.table, tokenSeq: b.seq, positions: b.pos, T });
        k.matmul.encode(pass, a, { x: b.attn, w: L.o, out: b.proj, T });
        k.add.encode(pass, a, { a: b.h, b: b.proj, n: T * hidden });
        k.norm.encode(pass, a, { x: b.h, weight: L.mlpNorm, out: b.xn, rows: T, n: hidden, eps: c.rmsNormEps });
        k.matmul.encode(pass, a, { x: b.xn, w: L.gate, out: b.gate, T });
        k.matmul.encode(pass, a, { x: b.xn, w: L.up, out: b.up, T });
        k.swiglu.encode(pass, a, { gate: b.gate, up: b.up, out: b.act, rows: T, n: c.intermediateSize });
        k.matmul.encode(pass, a, { x: b.act, w: L.down, out: b.proj, T });
        k.add.encode(pass, a, { a: b.h, b: b.proj, n: T * hidden });
      }
      if (R === 0) return; // a prefill chunk whose logits nobody needs
      k.gather.encode(pass, a, { x: b.h, rowIds: b.rows, out: b.last, rows: R, n: hidden, srcRows: T });
      k.norm.encode(pass, a, {
        x: b.last,
        weight: this.w.finalNorm,
        out: b.lastn,
        rows: R,
        n: hidden,
        eps: c.rmsNormEps,
      });
      k.matmul.encode(pass, a, { x: b.lastn, w: this.w.lmHead, out: b.logits, T: R });
    }, a);
    this.attention.finishStep(batch.rows);
    return R;
  }

  destroy(): void {
    for (const buf of Object.values(this.b)) buf.destroy();
    this.attention.destroy();
    this.invFreq.destroy();
    this.arena.destroy();
  }
}

/**
 * The invariants the attention relies on: one row per sequence of the block table; decode rows first, decode row i
 * holding exactly one token, token i; every other token in a prefill row.
 */
export function checkBatchRows(batch: ForwardBatch): void {
  if (batch.rows.length !== batch.numSeqs) {
    throw new SiftError('INTERNAL', `forward: ${batch.rows.length} rows described for ${batch.numSeqs} sequences`);
  }
  let D = 0;
  while (D < batch.rows.length && batch.rows[D].kind === 'decode') D++;
  for (let r = D; r < batch.rows.length; r++) {
    if (batch.rows[r].kind === 'decode')
      throw new SiftError('INTERNAL', `forward: decode row ${r} after a prefill row`);
  }
  if (D > batch.tokens.length)
    throw new SiftError('INTERNAL', `forward: ${D} decode rows but ${batch.tokens.length} tokens`);
  for (let t = 0; t < batch.tokenSeq.length; t++) {
    const r = batch.tokenSeq[t];
    if (r >= batch.numSeqs) throw new SiftError('INTERNAL', `forward: token ${t} in row ${r} of ${batch.numSeqs}`);
    if (t < D !== r < D || (t < D && r !== t)) {
      throw new SiftError('INTERNAL', `forward: token ${t} (row ${r}) breaks "decode row i holds exactly token i"`);
    }
  }
}
