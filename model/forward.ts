/**
 * The batched forward pass: one call runs the new tokens of many sequences (flattened, with per-token sequence
 * row and position) through every layer, writing their K/V into the paged cache through the block table, and
 * samples or returns logits for the requested rows only (typically the last new token of each sequence).
 *
 * Two paths, one set of weights (model/weights.ts: q/k/v stacked, gate/up interleaved):
 * - decode (every row a decode, one token each): per layer 7 dispatches, 9 on a step that reselects pages:
 *     qkv = rmsnorm(h) @ Wqkv (norm folded into the matmul) -> rope_kv_write (RoPE, KV write, the decode tokens'
 *     page digests) -> [page_score, page_select] -> sparse_decode + reduce -> h += attn @ Wo
 *     -> act = swiglu(rmsnorm(h) @ Wgate_up) -> h += act @ Wdown
 *   (+2 for Qwen3's and Gemma 3's q/k head norm before rope_kv_write, +1 for the key-block digests of block-sparse
 *   prefill; Gemma: the MLP's gate is GeGLU, and o and down write xn, then h += rmsnorm(xn) (+2): its norms around
 *   attention and MLP), then logits = rmsnorm(h) @ Wlm_head [-> Gemma 2's logit soft-cap] and the sampler. The dispatches are captured once per batch size (model/
 *   decode-graph.ts) and replayed: a step writes its inputs (one writeBuffer, plus the block table's changed span),
 *   replays, copies the sampled token ids (4 bytes a sequence) back, and creates nothing.
 * - prefill (any step with prompt tokens, or a tap: calibration's after each layer's attention, the importance
 *   matrix's at each linear layer's input): per layer rmsnorm -> qkv [-> q/k head norm]
 *   -> rope_kv_write -> attention (digests of the prefill tokens' pages and key blocks, tiled prefill attention,
 *   dense or block-sparse, sparse decode for decode rows) -> o (+= h) -> rmsnorm -> gate_up (swiglu) -> down (+= h);
 *   then the logit rows gathered, lm_head with the final norm folded in, the sampler. From 64 tokens on the matmuls
 *   are the tiled GEMM (shaders/matmul_tiled.wgsl) with the same fusions on GPUs, from 16 tokens on the register
 *   tiles (shaders/matmul_rows.wgsl) on CPU adapters. Encoded per step (bind groups per
 *   dispatch; prefill is device-bound).
 */
import { layerRopeConfig, ropeFrequencies } from '../checkpoint/rope.js';
import { SiftError } from '../config/errors.js';
import { EmbeddingKernel } from '../shaders/embedding.js';
import { GatherRowsKernel } from '../shaders/gather_rows.js';
import { HeadRmsNormKernel } from '../shaders/head_rmsnorm.js';
import type { PoolBinding } from '../shaders/lib/slabs.js';
import { LogitSoftcapKernel } from '../shaders/logit_softcap.js';
import { MatmulKernel } from '../shaders/matmul.js';
import { RmsNormKernel } from '../shaders/rmsnorm.js';
import { RopeKvWriteKernel } from '../shaders/rope_kv_write.js';
import { type Binding, type Gpu, StagingRing, UniformArena } from '../shaders/runtime.js';
import { packRowSpecs, SAMPLE_SPEC_WORDS, SampleKernel, sampleScratchBytes } from '../shaders/sample.js';
import { LayerAttention, type LayerAttentionOptions } from './attention/layer-attention.js';
import { DecodeGraphs } from './decode-graph.js';
import type { SampleSpec, SeqId } from './executor.js';
import type { KvStorage } from './kv-storage.js';
import { MirroredBuffer, StepInputs } from './step-inputs.js';
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
  /** (R) indices into tokens whose logits are returned or sampled, in order. */
  logitRows: Uint32Array;
  /**
   * (numSeqs) per block-table row: its sequence and kind. Decode rows come first and hold exactly one token each,
   * token i of decode row i (asserted by encode); their attention goes through page selection within `tokenBudget`
   * (needs ForwardOptions.attention.sparse). Prefill rows' sequences reselect pages on their next decode step.
   */
  rows: readonly BatchRow[];
  /**
   * (R) per logit row: how to sample it on the device (SampleSpec), or null to return its logits. Absent: every
   * row's logits are returned.
   */
  sampling?: readonly (SampleSpec | null)[];
  /**
   * Tokens whose id is the one the previous step sampled for its logit row `row` (still on the device: copied into
   * this step's inputs by the step itself); their entry in `tokens` is a placeholder.
   */
  chained?: readonly { token: number; row: number }[];
  /**
   * Streaming heads (required when the model has any): per block-table row its streaming table (sink pages then
   * ring pages, (numSeqs, sinkPages + ringPages) u32), and per token the streaming-pool slot it is written to
   * (page * pageSize + offset) or SKIP_SLOT (0xFFFFFFFF) when the ring does not keep it.
   */
  streaming?: { table: Uint32Array; slots: Uint32Array };
}

/** What a step hands back: per logit row a sampled token (-1: not sampled) and the logits rows returned. */
export interface StepOutputs {
  /** (R) the device's token, or -1 where the row's logits are returned instead (or as well). */
  tokens: Int32Array;
  /** (L, vocab) the logits rows returned, in row order. */
  logits: Float32Array;
  /** (R) each row's row of `logits`, or -1. */
  logitsRow: Int32Array;
}

/**
 * Extra work encoded right after a layer's attention (calibration measures attention mass there). The layer's K/V
 * for this step are in the caches; q holds (T, nHeads, headDim) after RoPE.
 */
export type LayerTap = (
  pass: GPUComputePassEncoder,
  arena: UniformArena,
  layer: number,
  b: { q: Binding; kCache: PoolBinding; blockTable: Binding; tokenSeq: Binding; positions: Binding; T: number },
) => void;

/** The linear layers whose input an ActivationTap sees: q/k/v (one input), o_proj, gate/up (one input), down, lm_head. */
export type ActivationPoint = 'qkv' | 'o' | 'gate-up' | 'down' | 'lm-head';

/**
 * Extra work encoded where a linear layer's input x (rows, cols) f32 is ready, before the matmul that reads it (the
 * importance matrix measures it there, model/imatrix.ts). 'lm-head': x is the final norm's output of every token
 * (layer = numLayers), computed for the tap.
 */
export type ActivationTap = (
  pass: GPUComputePassEncoder,
  arena: UniformArena,
  point: ActivationPoint,
  layer: number,
  x: Binding,
  rows: number,
  cols: number,
) => void;

/** Taps of a step (either runs it on the prefill path): after each layer's attention, at each linear layer's input. */
export interface ForwardTaps {
  layer?: LayerTap;
  activation?: ActivationTap;
}

/** Kernel variants: 'cpu' = one invocation per row / lanes (lavapipe's fastest), 'gpu' = workgroup reductions. */
export interface KernelChoice {
  variant: 'cpu' | 'gpu';
  /** 'gpu': reduce with subgroups where the device has them (default true). */
  subgroups?: boolean;
}

export interface ForwardOptions {
  maxBatchTokens: number;
  maxSeqs: number;
  maxPagesPerSeq: number;
  /** Most logit rows one call may ask for (default maxSeqs). */
  maxLogitRows?: number;
  /** Sparse attention: page digests + sparse decode, block-sparse prefill, streaming heads' window. */
  attention?: Pick<LayerAttentionOptions, 'sparse' | 'blockSparsePrefill' | 'streaming'>;
  /** Kernel variants; default per adapter (gpu.caps.isCpu: 'cpu'). Tests run both on lavapipe. */
  kernels?: KernelChoice;
}

/** Bias entries the step inputs hold per logit row; a row with more is sampled on the host. */
const BIAS_ENTRIES_PER_ROW = 256;

export class ForwardPass {
  readonly maxBatchTokens: number;
  readonly maxSeqs: number;
  readonly maxPagesPerSeq: number;
  readonly maxLogitRows: number;
  /** Attention of every layer: dense, sparse decode, block-sparse prefill, streaming heads. */
  readonly attention: LayerAttention;
  /** The step's inputs, one buffer (see model/step-inputs.ts). */
  readonly inputs: StepInputs;
  /** (maxSeqs, maxPagesPerSeq) u32 block table, uploaded by its changes. */
  readonly table: MirroredBuffer;
  /** Host time of the latest step's encoding (checks, uploads, encoding, submit), ms: `sift bench step` reports it. */
  lastEncodeMs = 0;
  /**
   * CPU time of the process over that encoding, ms: the host's own work when the device is idle (on lavapipe the
   * device's threads are in this process, so a step running meanwhile adds its time).
   */
  lastEncodeCpuMs = 0;
  /** Which logit rows the latest step sampled on the device (a chained step may take their tokens). */
  private sampledRows: boolean[] = [];
  private readonly arena: UniformArena;
  private readonly k: {
    embed: EmbeddingKernel;
    norm: RmsNormKernel;
    matmul: MatmulKernel;
    ropeKv: RopeKvWriteKernel;
    gather: GatherRowsKernel;
    sample: SampleKernel;
    /** Qwen3's per-head q/k RMSNorm (null for models without it). */
    headNorm: HeadRmsNormKernel | null;
    /** Gemma 2's final logit soft-cap (null for models without it). */
    logitCap: LogitSoftcapKernel | null;
  };
  private readonly b: Record<string, GPUBuffer> = {};
  /** Per layer, its RoPE inverse frequencies (headDim / 2) f32: one buffer, or Gemma 3's global and local two. */
  private readonly invFreq: GPUBuffer[];
  /** (max(T, R)) u32 0, 1, 2, ...: the token rows of a decode step, its logit rows and fresh-token starts. */
  private readonly identity: GPUBuffer;
  private readonly graphs: DecodeGraphs;
  private readonly staging: { tokens: StagingRing; logits: StagingRing };

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
    const gpuKernels = (opts.kernels?.variant ?? (gpu.caps.isCpu ? 'cpu' : 'gpu')) === 'gpu';
    this.arena = new UniformArena(gpu);
    this.k = {
      embed: new EmbeddingKernel(gpu),
      norm: new RmsNormKernel(gpu),
      matmul: new MatmulKernel(gpu, {
        variant: gpuKernels ? 'workgroup' : 'thread',
        subgroups: gpuKernels ? (opts.kernels?.subgroups ?? true) && gpu.caps.subgroups : undefined,
      }),
      ropeKv: new RopeKvWriteKernel(gpu),
      gather: new GatherRowsKernel(gpu),
      sample: new SampleKernel(gpu),
      headNorm: c.qkNorm ? new HeadRmsNormKernel(gpu) : null,
      logitCap: c.finalLogitSoftcap ? new LogitSoftcapKernel(gpu) : null,
    };
    const T = this.maxBatchTokens;
    const R = this.maxLogitRows;
    const qkvDim = (c.numHeads + 2 * c.numKvHeads) * c.headDim;
    const kvDim = c.numKvHeads * c.headDim;
    const f = (name: string, bytes: number) => {
      this.b[name] = gpu.createBuffer(`act.${name}`, bytes);
    };
    f('h', T * c.hiddenSize * 4); // (T, hidden) residual stream
    f('xn', T * c.hiddenSize * 4); // (T, hidden) normed (prefill path)
    f('qkv', T * qkvDim * 4); // (T, heads + 2 kvHeads, headDim) fused projection
    f('q', T * c.numHeads * c.headDim * 4); // (T, heads, headDim) after RoPE
    f('attn', T * c.numHeads * c.headDim * 4); // (T, heads, headDim)
    f('act', T * c.intermediateSize * 4); // (T, inter) swiglu output
    f('last', R * c.hiddenSize * 4); // (R, hidden) gathered logit rows (prefill path)
    f('logits', R * c.vocabSize * 4); // (R, vocab)
    f('tokens', R * 4); // (R) u32 sampled tokens
    f('sampleKeys', sampleScratchBytes(R, c.vocabSize)); // (R, vocab) u32 sampler scratch
    f('sampleWeights', sampleScratchBytes(R, c.vocabSize)); // (R, vocab) f32 sampler scratch
    const streaming = kv.layers.some((l) => l.numStreamingHeads > 0);
    if (streaming) {
      f('k', T * kvDim * 4); // (T, kvHeads, headDim) RoPE(k) f32 for the streaming heads
      f('v', T * kvDim * 4); // (T, kvHeads, headDim)
    }
    // Sequence-length-dependent scalings (dynamic, longrope) are fixed for the longest sequence the block table holds.
    // Gemma 3's sliding layers rotate with their own base (layerRopeConfig): one buffer per distinct RoPE.
    const byRope = new Map<string, GPUBuffer>();
    this.invFreq = c.layerWindows.map((_, li) => {
      const inv = Float32Array.from(ropeFrequencies(layerRopeConfig(c, li), this.maxPagesPerSeq * kv.pageSize).invFreq);
      const key = inv.join(',');
      let buf = byRope.get(key);
      if (!buf) byRope.set(key, (buf = gpu.upload(`rope.invFreq.${byRope.size}`, inv)));
      return buf;
    });
    this.identity = gpu.upload(
      'identity',
      Uint32Array.from({ length: Math.max(T, R) }, (_, i) => i),
    );
    const attnOpts: LayerAttentionOptions = {
      maxBatchTokens: T,
      maxSeqs: this.maxSeqs,
      maxPagesPerSeq: this.maxPagesPerSeq,
      ...opts.attention,
      variant: gpuKernels ? 'workgroup' : 'lanes',
    };
    // decode regions first (a decode step's upload is their span), the prefill path's after
    const D = Math.min(this.maxSeqs, R);
    this.inputs = new StepInputs(gpu, [
      ['dTokens', D],
      ['dPositions', D],
      ...LayerAttention.inputRegions(c, kv, attnOpts),
      ['specs', R * SAMPLE_SPEC_WORDS],
      ['bias', R * BIAS_ENTRIES_PER_ROW * 2],
      ['ids', T],
      ['pos', T],
      ['seq', T],
      ['logitRows', R],
      ...LayerAttention.prefillInputRegions(kv, attnOpts),
    ]);
    this.table = new MirroredBuffer(gpu, 'block-table', this.maxSeqs * this.maxPagesPerSeq);
    this.attention = new LayerAttention(gpu, c, kv, attnOpts, this.inputs);
    this.graphs = new DecodeGraphs(
      gpu,
      D,
      (pass, a, n, reselect) => this.encodeDecode(pass, a, n, reselect),
      !!opts.attention?.sparse,
    );
    this.staging = { tokens: new StagingRing(gpu, 'readback.tokens'), logits: new StagingRing(gpu, 'readback.logits') };
  }

  /**
   * Smallest step (in tokens) whose matmuls take a prefill GEMM: the tiled GEMM (shaders/matmul_tiled.wgsl) on GPUs,
   * the register tiles (shaders/matmul_rows.wgsl) on CPU adapters.
   */
  get tiledMinTokens(): number {
    return this.k.matmul.prefillMinTokens;
  }

  /** Forgets a finished (or preempted) sequence's attention state (its sparse selection slot). */
  release(seqId: SeqId): void {
    this.attention.release(seqId);
  }

  /** Captures every decode batch size's step (warm-up; compiles every decode pipeline). */
  captureDecodeSteps(): void {
    this.graphs.captureAll();
  }

  /** Runs the batch; resolves with logits (R, vocab) for batch.logitRows (no row sampled). */
  async forward(batch: ForwardBatch, tap?: LayerTap | ForwardTaps): Promise<Float32Array> {
    const out = await this.step({ ...batch, sampling: undefined }, tap);
    return out.logits;
  }

  /** Runs the batch: samples the rows with a spec on the device, returns the logits of the others (and asked). */
  step(batch: ForwardBatch, tap?: LayerTap | ForwardTaps): Promise<StepOutputs> {
    return this.submit(batch, tap, true) as Promise<StepOutputs>;
  }

  /** Encodes and submits the batch without reading back (prefill chunks, benchmarks); returns the logit row count. */
  encode(batch: ForwardBatch, tap?: LayerTap | ForwardTaps): number {
    this.submit(batch, tap, false);
    return batch.logitRows.length;
  }

  private submit(
    batch: ForwardBatch,
    tap: LayerTap | ForwardTaps | undefined,
    readback: boolean,
  ): Promise<StepOutputs> | null {
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    const c = this.w.config;
    const V = c.vocabSize;
    const T = batch.tokens.length;
    const R = batch.logitRows.length;
    this.check(batch);
    const D = decodeRowCount(batch);
    // a decode-only step whose logit rows are its tokens in order replays its captured pass
    const graph = !tap && D === batch.numSeqs && D === T && R === D && batch.logitRows.every((r, i) => r === i);
    // sampling: which rows the device samples, which return logits
    const specs = batch.sampling ?? new Array<SampleSpec | null>(R).fill(null);
    if (specs.length !== R) throw new SiftError('INTERNAL', `forward: ${specs.length} sampling specs for ${R} rows`);
    const onDevice: (SampleSpec | null)[] = [];
    const wantLogits: number[] = [];
    let biasLeft = this.inputs.capacity('bias') / 2;
    specs.forEach((s, r) => {
      const n = s?.bias?.ids.length ?? 0;
      const device = s !== null && !s.onHost && n <= biasLeft;
      if (device) biasLeft -= n;
      onDevice.push(device ? s : null);
      if (!device || s?.returnLogits) wantLogits.push(r);
    });
    const sample = onDevice.some((s) => s !== null);
    if (sample || graph) {
      const words = this.inputs.words('specs', R * SAMPLE_SPEC_WORDS);
      const used = packRowSpecs(onDevice, words, this.inputs.view('bias'));
      this.inputs.mark('bias', used); // upload only the entries used
    }
    let reselect = false;
    const attnStep = { ...batch, maxPagesPerSeq: this.maxPagesPerSeq };
    if (graph) {
      this.inputs.words('dTokens', D).set(batch.tokens);
      this.inputs.words('dPositions', D).set(batch.positions);
      reselect = this.attention.prepareDecode(attnStep).reselect;
    } else {
      this.inputs.words('ids', T).set(batch.tokens);
      this.inputs.words('pos', T).set(batch.positions);
      this.inputs.words('seq', T).set(batch.tokenSeq);
      this.inputs.words('logitRows', R).set(batch.logitRows);
      this.attention.prepare(attnStep);
    }
    this.table.update(batch.blockTable);
    this.inputs.flush();
    const g = this.gpu;
    const enc = g.device.createCommandEncoder();
    if (batch.chained) this.copyChained(enc, batch.chained, graph ? 'dTokens' : 'ids');
    const pass = enc.beginComputePass();
    const a = this.arena;
    a.reset();
    if (graph) {
      g.replay(pass, this.graphs.get(D, reselect));
    } else {
      this.encodePrefill(pass, a, T, R, D, sample, typeof tap === 'function' ? { layer: tap } : (tap ?? {}));
    }
    pass.end();
    let readTokens: (() => Promise<ArrayBuffer>) | null = null;
    let readLogits: (() => Promise<ArrayBuffer>) | null = null;
    if (readback && sample) readTokens = this.staging.tokens.copy(enc, this.b.tokens, [{ offset: 0, size: R * 4 }]);
    if (readback && wantLogits.length > 0) {
      const rowBytes = V * 4;
      const parts =
        wantLogits.length === R
          ? [{ offset: 0, size: R * rowBytes }]
          : wantLogits.map((r) => ({ offset: r * rowBytes, size: rowBytes }));
      readLogits = this.staging.logits.copy(enc, this.b.logits, parts);
    }
    if (!graph) a.flush();
    g.submit([enc.finish()]);
    this.attention.finishStep(batch.rows);
    this.sampledRows = onDevice.map((x) => x !== null);
    this.lastEncodeMs = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    this.lastEncodeCpuMs = (cpu.user + cpu.system) / 1000;
    if (!readback) return null;
    return (async () => {
      const tokens = new Int32Array(R).fill(-1);
      const logitsRow = new Int32Array(R).fill(-1);
      const [tb, lb] = await Promise.all([readTokens?.(), readLogits?.()]);
      if (tb) {
        const ids = new Uint32Array(tb);
        onDevice.forEach((s, r) => {
          if (s) tokens[r] = ids[r];
        });
      }
      wantLogits.forEach((r, i) => {
        logitsRow[r] = i;
      });
      return { tokens, logits: lb ? new Float32Array(lb) : new Float32Array(0), logitsRow };
    })();
  }

  /**
   * Copies the previous step's sampled tokens into this step's token slots, on the device, before the pass (runs of
   * consecutive rows in one copy). The step inputs' upload (queue order: before this submit) held placeholders.
   */
  private copyChained(
    enc: GPUCommandEncoder,
    chained: readonly { token: number; row: number }[],
    region: string,
  ): void {
    for (let i = 0; i < chained.length; ) {
      const { token, row } = chained[i];
      if (!this.sampledRows[row]) {
        throw new SiftError(
          'INTERNAL',
          `forward: token ${token} chains on row ${row}, which the last step did not sample`,
        );
      }
      let n = 1;
      while (
        i + n < chained.length &&
        chained[i + n].token === token + n &&
        chained[i + n].row === row + n &&
        this.sampledRows[row + n]
      ) {
        n++;
      }
      enc.copyBufferToBuffer(this.b.tokens, row * 4, this.inputs.buffer, this.inputs.byteOffset(region, token), n * 4);
      i += n;
    }
  }

  /** The batch invariants the kernels rely on (see checkBatchRows) and the sizes this pass holds. */
  private check(batch: ForwardBatch): void {
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
      if (batch.tokens[i] >= c.vocabSize) {
        throw new SiftError(
          'INVALID_ARGUMENT',
          `token id ${batch.tokens[i]} is outside the vocabulary [0, ${c.vocabSize})`,
        );
      }
    }
  }

  /** RoPE + KV write (+ the first numDecode tokens' page digests) of layer `li` for T tokens. */
  private encodeRopeKv(
    pass: GPUComputePassEncoder,
    a: UniformArena,
    li: number,
    T: number,
    numDecode: number,
    seq: Binding,
    pos: Binding,
  ): void {
    const c = this.w.config;
    const layer = this.kv.layers[li];
    const digests = this.attention.digests(li);
    const sparse = this.attention.sparse;
    this.k.ropeKv.encode(pass, a, {
      qkv: this.b.qkv,
      q: this.b.q,
      kCache: layer.k,
      vCache: layer.v,
      blockTable: this.table.buffer,
      tokenSeq: seq,
      positions: pos,
      invFreq: this.invFreq[li],
      T,
      numHeads: c.numHeads,
      numKvHeads: c.numKvHeads,
      headDim: c.headDim,
      pageSize: this.kv.pageSize,
      maxPagesPerSeq: this.maxPagesPerSeq,
      cacheHeads: layer.numRetrievalHeads,
      digest:
        digests && sparse && layer.numRetrievalHeads > 0
          ? { digests, logicalPageSize: sparse.logicalPageSize, numDecode }
          : undefined,
      fresh: this.b.k ? { k: this.b.k, v: this.b.v } : undefined,
    });
  }

  /** qkv (T, heads + 2 kvHeads, headDim) = x @ Wqkv^T (+ bias): one matmul, or one per part of a mixed-format layer. */
  private encodeQkv(
    pass: GPUComputePassEncoder,
    a: UniformArena,
    li: number,
    x: Binding,
    T: number,
    norm?: { weight: Binding; eps: number },
  ): void {
    const L = this.w.layers[li];
    const bias = L.qkvBias ?? undefined;
    if (L.qkv.length === 1) {
      this.k.matmul.encode(pass, a, { x, w: L.qkv[0], bias, out: this.b.qkv, T, norm });
      return;
    }
    const rows = L.qkv.reduce((n, w) => n + w.rows, 0);
    let rowOffset = 0;
    for (const w of L.qkv) {
      this.k.matmul.encode(pass, a, { x, w, bias, out: this.b.qkv, T, norm, into: { rowOffset, rows } });
      rowOffset += w.rows;
    }
  }

  /**
   * Qwen3's per-head RMSNorm of the q and k heads of qkv (T, H + 2 KV, headDim) in place, before RoPE (v untouched):
   * two dispatches, only for models that have it.
   */
  private encodeHeadNorm(pass: GPUComputePassEncoder, a: UniformArena, li: number, T: number): void {
    const c = this.w.config;
    const L = this.w.layers[li];
    const norm = this.k.headNorm;
    if (!norm) return;
    if (!L.qNorm || !L.kNorm) throw new SiftError('INTERNAL', `forward: layer ${li} has no q/k norm weights`);
    const d = { tokens: T, rowHeads: c.numHeads + 2 * c.numKvHeads, headDim: c.headDim, eps: c.rmsNormEps };
    norm.encode(pass, a, { x: this.b.qkv, weight: L.qNorm, firstHead: 0, nHeads: c.numHeads, ...d });
    norm.encode(pass, a, { x: this.b.qkv, weight: L.kNorm, firstHead: c.numHeads, nHeads: c.numKvHeads, ...d });
  }

  /** The decode path: a decode-only step of D rows, every varying size read from the step's inputs (captured). */
  private encodeDecode(pass: GPUComputePassEncoder, a: UniformArena, D: number, reselect: boolean): void {
    const c = this.w.config;
    const b = this.b;
    const k = this.k;
    const eps = c.rmsNormEps;
    const ids = this.inputs.binding('dTokens');
    const pos = this.inputs.binding('dPositions');
    const seq: Binding = { buffer: this.identity, size: D * 4 }; // decode row i holds token i
    k.embed.encode(pass, a, { ids, table: this.w.embed, out: b.h, T: D, scale: this.w.embedScale });
    for (let li = 0; li < c.numLayers; li++) {
      const L = this.w.layers[li];
      this.encodeQkv(pass, a, li, b.h, D, { weight: L.attnNorm, eps });
      this.encodeHeadNorm(pass, a, li, D);
      this.encodeRopeKv(pass, a, li, D, D, seq, pos);
      this.attention.encodeDecodeLayer(
        pass,
        a,
        li,
        { q: b.q, k: b.k ?? null, v: b.v ?? null, out: b.attn, table: this.table.buffer, seq, pos },
        D,
        reselect,
        this.identity,
      );
      this.encodeResidual(pass, a, b.attn, L.o, L.attnOutNorm, D);
      const glu = this.glu;
      k.matmul.encode(pass, a, { x: b.h, w: L.gateUp, out: b.act, T: D, norm: { weight: L.mlpNorm, eps }, glu });
      this.encodeResidual(pass, a, b.act, L.down, L.mlpOutNorm, D);
    }
    k.matmul.encode(pass, a, {
      x: b.h,
      w: this.w.lmHead,
      out: b.logits,
      T: D,
      norm: { weight: this.w.finalNorm, eps },
    });
    this.encodeLogitCap(pass, a, D);
    this.encodeSample(pass, a, D);
  }

  /** The prefill path: any step (T tokens, the first D of them decode rows, R logit rows), encoded for this step. */
  private encodePrefill(
    pass: GPUComputePassEncoder,
    a: UniformArena,
    T: number,
    R: number,
    D: number,
    sample: boolean,
    taps: ForwardTaps,
  ): void {
    const c = this.w.config;
    const b = this.b;
    const k = this.k;
    const eps = c.rmsNormEps;
    const hidden = c.hiddenSize;
    const seq = this.inputs.binding('seq');
    const pos = this.inputs.binding('pos');
    const act = taps.activation;
    k.embed.encode(pass, a, {
      ids: this.inputs.binding('ids'),
      table: this.w.embed,
      out: b.h,
      T,
      scale: this.w.embedScale,
    });
    for (let li = 0; li < c.numLayers; li++) {
      const L = this.w.layers[li];
      k.norm.encode(pass, a, { x: b.h, weight: L.attnNorm, out: b.xn, rows: T, n: hidden, eps });
      act?.(pass, a, 'qkv', li, b.xn, T, hidden);
      this.encodeQkv(pass, a, li, b.xn, T);
      this.encodeHeadNorm(pass, a, li, T);
      this.encodeRopeKv(pass, a, li, T, D, seq, pos);
      const table = this.table.buffer;
      this.attention.encodeLayer(pass, a, li, {
        q: b.q,
        k: b.k ?? null,
        v: b.v ?? null,
        out: b.attn,
        table,
        seq,
        pos,
      });
      const { q } = b;
      taps.layer?.(pass, a, li, {
        q,
        kCache: this.kv.layers[li].k,
        blockTable: table,
        tokenSeq: seq,
        positions: pos,
        T,
      });
      act?.(pass, a, 'o', li, b.attn, T, c.numHeads * c.headDim);
      this.encodeResidual(pass, a, b.attn, L.o, L.attnOutNorm, T);
      k.norm.encode(pass, a, { x: b.h, weight: L.mlpNorm, out: b.xn, rows: T, n: hidden, eps });
      act?.(pass, a, 'gate-up', li, b.xn, T, hidden);
      k.matmul.encode(pass, a, { x: b.xn, w: L.gateUp, out: b.act, T, glu: this.glu });
      act?.(pass, a, 'down', li, b.act, T, c.intermediateSize);
      this.encodeResidual(pass, a, b.act, L.down, L.mlpOutNorm, T);
    }
    if (act) {
      k.norm.encode(pass, a, { x: b.h, weight: this.w.finalNorm, out: b.xn, rows: T, n: hidden, eps });
      act(pass, a, 'lm-head', c.numLayers, b.xn, T, hidden);
    }
    if (R === 0) return; // a prefill chunk whose logits nobody needs
    k.gather.encode(pass, a, {
      x: b.h,
      rowIds: this.inputs.binding('logitRows'),
      out: b.last,
      rows: R,
      n: hidden,
      srcRows: T,
    });
    k.matmul.encode(pass, a, {
      x: b.last,
      w: this.w.lmHead,
      out: b.logits,
      T: R,
      norm: { weight: this.w.finalNorm, eps },
    });
    this.encodeLogitCap(pass, a, R);
    if (sample) this.encodeSample(pass, a, R);
  }

  /** The MLP's gated activation: SwiGLU, or GeGLU for Gemma. */
  private get glu(): true | 'gelu' {
    return this.w.config.hiddenActivation === 'gelu_tanh' ? 'gelu' : true;
  }

  /**
   * h += x @ W^T for T tokens (the attention output's o_proj, the MLP's down_proj), one matmul accumulating into the
   * residual stream; with Gemma's output norm (`norm`): xn = x @ W^T, then h += rmsnorm(xn) * norm.
   */
  private encodeResidual(
    pass: GPUComputePassEncoder,
    a: UniformArena,
    x: Binding,
    w: ModelWeights['layers'][number]['o'],
    norm: GPUBuffer | null,
    T: number,
  ): void {
    const b = this.b;
    if (!norm) {
      this.k.matmul.encode(pass, a, { x, w, out: b.h, T, accumulate: true });
      return;
    }
    const c = this.w.config;
    this.k.matmul.encode(pass, a, { x, w, out: b.xn, T });
    this.k.norm.encode(pass, a, {
      x: b.xn,
      weight: norm,
      out: b.h,
      rows: T,
      n: c.hiddenSize,
      eps: c.rmsNormEps,
      accumulate: true,
    });
  }

  /** Gemma 2's final logit soft-cap over the R logit rows, before sampling or read-back. */
  private encodeLogitCap(pass: GPUComputePassEncoder, a: UniformArena, R: number): void {
    const cap = this.w.config.finalLogitSoftcap;
    if (!this.k.logitCap || !cap) return;
    this.k.logitCap.encode(pass, a, { logits: this.b.logits, n: R * this.w.config.vocabSize, cap });
  }

  private encodeSample(pass: GPUComputePassEncoder, a: UniformArena, R: number): void {
    this.k.sample.encode(pass, a, {
      logits: this.b.logits,
      specs: this.inputs.binding('specs'),
      bias: this.inputs.binding('bias'),
      tokens: this.b.tokens,
      keys: this.b.sampleKeys,
      weights: this.b.sampleWeights,
      rows: R,
      vocab: this.w.config.vocabSize,
    });
  }

  destroy(): void {
    this.graphs.clear();
    for (const buf of Object.values(this.b)) buf.destroy();
    this.attention.destroy();
    for (const buf of new Set(this.invFreq)) buf.destroy();
    this.identity.destroy();
    this.inputs.destroy();
    this.table.destroy();
    this.arena.destroy();
    this.staging.tokens.destroy();
    this.staging.logits.destroy();
  }
}

/** Decode rows at the front of the batch (each holds exactly its one token, checked by checkBatchRows). */
function decodeRowCount(batch: ForwardBatch): number {
  let D = 0;
  while (D < batch.rows.length && batch.rows[D].kind === 'decode') D++;
  return D;
}

/**
 * The invariants the attention relies on: one row per sequence of the block table; decode rows first, decode row i
 * holding exactly one token, token i; every other token in a prefill row.
 */
export function checkBatchRows(batch: ForwardBatch): void {
  if (batch.rows.length !== batch.numSeqs) {
    throw new SiftError('INTERNAL', `forward: ${batch.rows.length} rows described for ${batch.numSeqs} sequences`);
  }
  const D = decodeRowCount(batch);
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
