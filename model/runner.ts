/**
 * ModelRunner: the model on the GPU, as the engine core's ModelExecutor (model/executor.ts). It owns the weights,
 * the KV storage, the forward pass and the per-sequence attention state (sparse page selections); `execute` runs one
 * scheduled step: its entries are flattened by the one batch builder (model/batch.ts), run through ONE
 * ForwardPass call, and the sampling entries' logits are read back.
 *
 * Two named phases drive one sequence by hand for benchmarks and tests, through the same builder: `prefill` (a
 * prompt, in chunks of maxBatchTokens) and `decodeOneToken`. Generation (the server, `sift generate`) runs through
 * the engine core (engine/core.ts), which drives `execute` with many sequences at once.
 */

import path from 'node:path';
import { type Checkpoint, openCheckpoint } from '../checkpoint/checkpoint.js';
import type { ModelConfig } from '../checkpoint/config.js';
import { type AttentionConfig, attentionConfig } from '../config/attention.js';
import type { EngineConfig } from '../config/engine.js';
import { isSiftError, SiftError } from '../config/errors.js';
import { streamingPagesPerSequence } from '../kvcache/index.js';
import { type BlockHierarchy, DEFAULT_BLOCK_HIERARCHY, FLAT_BLOCKS } from '../shaders/block_select.js';
import { FaultCheck } from '../shaders/faults.js';
import { Gpu } from '../shaders/runtime.js';
import { buildForwardBatch } from './batch.js';
import { type ChunkChoice, prefillChunk } from './chunk-size.js';
import type {
  AttentionDefaults,
  DecodeEntry,
  ExecuteInput,
  ExecuteOutput,
  ExecutorLimits,
  ExecutorStats,
  ModelExecutor,
  PrefillEntry,
  SeqId,
  StepEntry,
} from './executor.js';
import { ForwardPass, type KernelChoice } from './forward.js';
import { assertGpuForward } from './gpu-support.js';
import { gramForCheckpoint } from './gram.js';
import { loadHeadPlan } from './head-plan.js';
import { imatrixForCheckpoint } from './imatrix.js';
import { KvStorage } from './kv-storage.js';
import { foldChannelScales, searchChannelScales } from './quant-scales.js';
import {
  destroyModel,
  INT8_ROLES,
  type Int8Role,
  type ModelWeights,
  type QuantizeOption,
  type UploadProgress,
  uploadModel,
} from './weights.js';

export class ModelRunner implements ModelExecutor {
  readonly modelName: string;
  readonly limits: ExecutorLimits;
  readonly attention: AttentionDefaults;
  /** Checks every step for WebGPU validation / out-of-memory errors (shaders/faults.ts). */
  readonly faults: FaultCheck;
  /** How the prefill chunk (maxBatchTokens) was chosen (model/chunk-size.ts); set by `load`. */
  prefillChunk: ChunkChoice | null = null;

  private constructor(
    readonly gpu: Gpu,
    readonly modelDir: string,
    readonly config: ModelConfig,
    readonly weights: ModelWeights,
    readonly kv: KvStorage,
    readonly forwardPass: ForwardPass,
    readonly maxContext: number,
    private readonly ownsGpu: boolean,
    /** Sparse-attention config the model was loaded with (requests may override mode and token budget). */
    readonly attentionConfig: AttentionConfig,
    errorScopeInterval: number,
  ) {
    this.modelName = path.basename(modelDir);
    const fwd = forwardPass;
    const streaming = fwd.attention.hasStreamingHeads;
    this.limits = {
      maxBatchTokens: fwd.maxBatchTokens,
      maxSeqs: Math.min(fwd.maxSeqs, fwd.maxLogitRows),
      maxPagesPerSeq: fwd.maxPagesPerSeq,
      maxContext,
      vocabSize: config.vocabSize,
      kv: {
        numPages: kv.numPages,
        pageSize: kv.pageSize,
        logicalPageSize: attentionConfig.logicalPageSize,
        bytesPerPage: kv.bytesPerPage,
      },
      streaming: streaming
        ? { numPages: kv.numStreamingPages, sinkTokens: attentionConfig.sink, localTokens: attentionConfig.local }
        : null,
      chainsSteps: true,
    };
    this.attention = { mode: attentionConfig.mode as 'dense' | 'sparse', tokenBudget: attentionConfig.tokenBudget };
    this.faults = new FaultCheck(gpu, errorScopeInterval);
  }

  /** Share of (layer, KV head) pairs that are streaming heads (0 without a head pattern). */
  get streamingHeadShare(): number {
    const layers = this.kv.layers;
    const streaming = layers.reduce((n, l) => n + l.numStreamingHeads, 0);
    return streaming / (layers.length * this.config.numKvHeads);
  }

  /** Decode token budget of a request: dense mode reads every page (Infinity); else its budget or the default. */
  tokenBudget(req?: { mode?: 'dense' | 'sparse'; tokenBudget?: number }): number {
    const mode = req?.mode ?? this.attention.mode;
    return mode === 'dense' ? Number.POSITIVE_INFINITY : (req?.tokenBudget ?? this.attention.tokenBudget);
  }

  static async load(
    modelDir: string,
    cfg: EngineConfig,
    opts: {
      gpu?: Gpu;
      onProgress?: (p: UploadProgress) => void;
      maxLogitRows?: number;
      attention?: AttentionConfig;
      /** Kernel variants (default per adapter); tests run the GPU variants on lavapipe too. */
      kernels?: KernelChoice;
      /**
       * Bytes one slab of a KV pool, digest pool or digest hierarchy may take (default the adapter's binding limit):
       * tests force small slabs so every pool spans several (model/kv-storage.ts).
       */
      kvSlabBytes?: number;
      /** Block-sparse prefill's selection hierarchy (benchmarks; default from attention.prefillSelect). */
      prefillHierarchy?: BlockHierarchy;
    } = {},
  ): Promise<ModelRunner> {
    const attention = opts.attention ?? attentionConfig({}, cfg.pageSize);
    const ckpt: Checkpoint = openCheckpoint(modelDir);
    const gpu = opts.gpu ?? (await Gpu.create({ adapter: cfg.adapter || undefined }));
    try {
      const c = ckpt.config;
      const maxContext = cfg.maxContext ?? c.maxPositionEmbeddings;
      assertGpuForward(c, maxContext, ckpt.dir);
      const headPlan = attention.headPattern
        ? loadHeadPlan(attention.headPattern, c, { streamingFraction: attention.streamingFraction ?? undefined })
        : undefined;
      const streaming = headPlan?.streaming.some((l) => l.length > 0)
        ? {
            sinkTokens: attention.sink,
            localTokens: attention.local,
            sinkPages: Math.ceil(attention.sink / cfg.pageSize),
            ringPages: Math.ceil(attention.local / cfg.pageSize) + 1,
          }
        : undefined;
      // every running sequence holds its sink and ring pages for its whole life
      const numStreamingPages = streaming
        ? streamingPagesPerSequence(attention.sink, attention.local, cfg.pageSize) * cfg.maxSeqs
        : 0;
      const { quantize, source } = withImatrix(quantizeOption(cfg), cfg, ckpt);
      const weights = uploadModel(gpu, source, { onProgress: opts.onProgress, headPlan, quantize });
      const maxPagesPerSeq = Math.ceil(maxContext / cfg.pageSize);
      const kvOpts = {
        headPlan,
        numStreamingPages,
        pagesWhenAllStreaming: cfg.maxSeqs * maxPagesPerSeq,
        maxSlabBytes: opts.kvSlabBytes,
      };
      const pages = KvStorage.pagesFor(gpu, c, cfg.pageSize, cfg.kvCacheMib, kvOpts);
      const kv = new KvStorage(gpu, c, pages, cfg.pageSize, kvOpts);
      const chunk = prefillChunk(c, gpu.caps, { ...cfg, maxContext });
      const fwd = new ForwardPass(gpu, weights, kv, {
        maxBatchTokens: chunk.tokens,
        maxSeqs: cfg.maxSeqs,
        maxPagesPerSeq,
        maxLogitRows: opts.maxLogitRows,
        attention: {
          sparse: { logicalPageSize: attention.logicalPageSize, reuseInterval: attention.reuseInterval },
          blockSparsePrefill:
            attention.prefillMode === 'block-sparse'
              ? {
                  topBlocks: attention.prefillTopBlocks,
                  hierarchy:
                    opts.prefillHierarchy ??
                    (attention.prefillSelect === 'flat' ? FLAT_BLOCKS : DEFAULT_BLOCK_HIERARCHY),
                }
              : undefined,
          streaming,
        },
        kernels: opts.kernels,
      });
      const runner = new ModelRunner(
        gpu,
        modelDir,
        c,
        weights,
        kv,
        fwd,
        maxContext,
        !opts.gpu,
        attention,
        cfg.errorScopeInterval,
      );
      runner.prefillChunk = chunk;
      await runner.warmUp();
      return runner;
    } finally {
      ckpt.close();
    }
  }

  /**
   * Runs one scheduled step (ModelExecutor.execute): the sampling entries with a spec are sampled on the device and
   * come back as token ids; logits come back only for the entries that ask for them (or have no spec). WebGPU errors
   * during it throw DEVICE_FAULT (FaultCheck, whose scopes bracket this step's GPU calls alone: the next step may be
   * encoded while this one runs).
   */
  async execute(input: ExecuteInput): Promise<ExecuteOutput> {
    const fwd = this.forwardPass;
    const batch = this.batch(input.entries);
    let out: { tokens: Int32Array; logits: Float32Array; logitsRow: Int32Array };
    // what this step's kernels read (LayerAttention.lastReport), taken at submission: a step chained on this one is
    // prepared before this one's tokens come back
    const taken: { report: typeof fwd.attention.lastReport | null } = { report: null };
    try {
      out = await this.faults.run(() => {
        if (batch.logitRows.length > 0) {
          const pending = fwd.step(batch);
          taken.report = fwd.attention.lastReport;
          return pending;
        }
        // only prefill chunks that sample nothing: no logits to read, but wait for the GPU (pacing, device loss)
        fwd.encode(batch);
        taken.report = fwd.attention.lastReport;
        return this.gpu.sync().then(() => ({
          tokens: new Int32Array(0),
          logits: new Float32Array(0),
          logitsRow: new Int32Array(0),
        }));
      });
    } catch (e) {
      throw await this.deviceError(e);
    }
    const report = taken.report;
    if (!report) throw new SiftError('INTERNAL', 'execute: the step was never submitted');
    // per entry, decode entries first (as the batch rows)
    return { ...out, tokensAttended: report.decodeTokens, prefillKeyBlocks: report.prefillKeyBlocks };
  }

  release(seqId: SeqId): void {
    this.forwardPass.release(seqId);
  }

  stats(): ExecutorStats {
    const st = this.forwardPass.attention.sparse?.schedule.stats() ?? { reselects: 0, reuses: 0 };
    return {
      selectionReselects: st.reselects,
      selectionReuses: st.reuses,
      streamingHeadShare: this.streamingHeadShare,
    };
  }

  lostError(): Error | null {
    return this.gpu.lostReason === null ? null : this.gpu.lostError();
  }

  /**
   * Prefills `ids` at positions start.. of sequence `seqId` whose block table is `pages`, in chunks of
   * maxBatchTokens (submitted back to back; only the last chunk is waited for); returns the last token's logits.
   */
  async prefill(seqId: SeqId, ids: readonly number[], pages: ArrayLike<number>, start = 0): Promise<Float32Array> {
    const chunk = this.forwardPass.maxBatchTokens;
    let logits: Float32Array | null = null;
    for (let s = 0; s < ids.length; s += chunk) {
      const last = s + chunk >= ids.length;
      const entry: PrefillEntry = {
        kind: 'prefill',
        seqId,
        start: start + s,
        tokens: ids.slice(s, s + chunk),
        pages,
        sample: last,
      };
      const batch = this.batch([entry]);
      if (last) logits = await this.forwardPass.forward(batch);
      else this.forwardPass.encode(batch);
    }
    if (!logits) throw new Error('prefill: no tokens');
    return logits;
  }

  /**
   * Runs one decode token `id` at position `pos` of sequence `seqId` (block table `pages`); returns its logits.
   * Attention reads the pages selected within `tokenBudget` (Infinity = all pages, i.e. dense).
   */
  decodeOneToken(
    id: number,
    pos: number,
    pages: ArrayLike<number>,
    tokenBudget = this.tokenBudget(),
    seqId: SeqId = 0,
  ): Promise<Float32Array> {
    const entry: DecodeEntry = { kind: 'decode', seqId, start: pos, tokens: [id], pages, sample: true, tokenBudget };
    return this.forwardPass.forward(this.batch([entry]));
  }

  /**
   * Copies main-pool pages with their digests, every layer (page dst[i] gets page src[i]'s K, V and digests), and
   * waits: benchmarks fill a long context from a short prefill with distinct physical pages this way.
   */
  async copyPages(src: readonly number[], dst: readonly number[]): Promise<void> {
    // copies within one slab go through a scratch buffer, at most 16 MiB a piece
    const scratch = this.gpu.createBuffer('page-copy', Math.min(16 * 2 ** 20, src.length * this.kv.bytesPerPage + 16));
    try {
      const enc = this.gpu.device.createCommandEncoder();
      this.kv.encodeCopyPages(enc, src, dst, scratch);
      this.forwardPass.attention.encodeCopyDigests(enc, src, dst, scratch);
      this.gpu.submit([enc.finish()]);
      await this.gpu.sync();
    } finally {
      scratch.destroy();
    }
  }

  destroy(): void {
    this.forwardPass.destroy();
    this.kv.destroy();
    destroyModel(this.weights);
    if (this.ownsGpu) this.gpu.destroy();
  }

  private batch(entries: readonly StepEntry[]) {
    const fwd = this.forwardPass;
    return buildForwardBatch(entries, {
      maxPagesPerSeq: fwd.maxPagesPerSeq,
      streamingRowLength: fwd.attention.streamingRowLength,
    });
  }

  /**
   * Compiles every pipeline a step can need before the first request (a cold WGSL compile costs 0.1-6 s on lavapipe
   * and would stall every running request): captures the decode step of every batch size (with and without page
   * selection, sampling included), then runs prefill-path steps covering every token tile of the matmuls (1 .. 10
   * tokens, 1 .. 8 logit rows) with decode rows beside prefill chunks, and the tiled GEMM of longer steps (prefill
   * attention's pipelines come with them), on page 0 of a pool that holds no sequence yet, and compiles the
   * pipelines that depend on the context length (block-sparse prefill's selection). Then marks the device warm: a
   * pipeline created later is reported by gpu.pipelinesAfterWarm().
   */
  private async warmUp(): Promise<void> {
    const fwd = this.forwardPass;
    fwd.captureDecodeSteps();
    fwd.attention.compileContextPipelines();
    const pages = new Array(Math.min(fwd.maxPagesPerSeq, Math.ceil(16 / this.kv.pageSize))).fill(0);
    const cap = pages.length * this.kv.pageSize; // positions the warm-up block table covers
    const streaming = (n: number) => {
      const len = fwd.attention.streamingRowLength;
      if (len === 0) return undefined;
      return { sinkPages: new Uint32Array(len), ringPages: [], slots: new Array<null>(n).fill(null) };
    };
    const sampling = { temperature: 1, topK: 40, topP: 0.9, u: 0.5 };
    const ids: string[] = [];
    const prefill = (i: number, n: number, withSpec: boolean): PrefillEntry => {
      ids.push(`__warmup_${i}__`);
      return {
        kind: 'prefill',
        seqId: `__warmup_${i}__`,
        start: 0,
        tokens: new Array(n).fill(0),
        pages,
        sample: true,
        sampling: withSpec ? sampling : undefined,
        streaming: streaming(n),
      };
    };
    const decode: DecodeEntry = {
      kind: 'decode',
      seqId: '__warmup_d__',
      start: 1,
      tokens: [0],
      pages,
      sample: true,
      tokenBudget: this.attention.tokenBudget,
      sampling,
      streaming: streaming(1),
    };
    const rows = Math.min(8, fwd.maxSeqs, fwd.maxLogitRows);
    // 1 .. rows logit rows of one token each
    for (let m = 1; m <= rows && m <= fwd.maxBatchTokens; m++) {
      await this.execute({ entries: Array.from({ length: m }, (_, i) => prefill(i, 1, i % 2 === 0)) });
    }
    // a decode row beside prefill chunks of 1 .. 9 tokens: T = 2 .. 10
    for (let n = 1; n <= 9 && n + 1 <= fwd.maxBatchTokens && n < cap && fwd.maxSeqs > 1; n++) {
      await this.execute({ entries: [decode, prefill(100 + n, n, n % 2 === 1)] });
    }
    await this.execute({ entries: [{ ...decode, start: 2 }] });
    // the prefill GEMM of prefill steps (tiled, or register tiles; from tiledMinTokens tokens on): one such step, its tokens spread over as few
    // sequences as the block table allows; as many one-token sequences when that many logit rows fit (lm_head tiled)
    const tiled = fwd.tiledMinTokens;
    if (tiled <= fwd.maxBatchTokens) {
      const big = new Array(Math.min(fwd.maxPagesPerSeq, Math.ceil(tiled / this.kv.pageSize))).fill(0);
      const bigCap = big.length * this.kv.pageSize;
      const n = Math.ceil(tiled / bigCap);
      if (n <= fwd.maxSeqs) {
        await this.execute({
          entries: Array.from({ length: n }, (_, i) => ({
            ...prefill(200 + i, Math.min(bigCap, tiled - i * bigCap), true),
            pages: big,
          })),
        });
      }
      if (tiled <= this.limits.maxSeqs) {
        await this.execute({ entries: Array.from({ length: tiled }, (_, i) => prefill(300 + i, 1, i % 2 === 0)) });
      }
    }
    for (const id of new Set([...ids, '__warmup_d__'])) this.release(id);
    this.gpu.markWarm();
  }

  /** A failed step's error, as DEVICE_LOST when the device is gone (it may report the loss a moment late). */
  private async deviceError(e: unknown): Promise<unknown> {
    const gpu = this.gpu;
    if (isSiftError(e, 'DEVICE_FAULT') && gpu.lostReason === null) return e;
    if (!isSiftError(e) && gpu.lostReason === null) {
      // A dead device can fail a read (mapAsync) before its `lost` promise settles: give it a moment to.
      await Promise.race([gpu.device.lost.catch(() => {}), new Promise((r) => setTimeout(r, 100).unref())]);
      await new Promise((r) => setImmediate(r));
    }
    if (isSiftError(e, 'DEVICE_LOST') || gpu.lostReason === null) return e;
    return gpu.lostError();
  }
}

/** The upload's quantization from --quantize / --quantize-group (INVALID_ARGUMENT naming the flag). */
export function quantizeOption(
  cfg: Pick<EngineConfig, 'quantize' | 'quantizeGroup' | 'quantizeInt8'>,
): QuantizeOption | undefined {
  if (cfg.quantize === 'none') return undefined;
  if (cfg.quantize === 'int8') return { format: 'int8' };
  if (cfg.quantizeGroup % 8 !== 0) {
    throw new SiftError('INVALID_ARGUMENT', `quantizeGroup (${cfg.quantizeGroup}) must be a multiple of 8`, {
      param: 'quantizeGroup',
    });
  }
  const int8 = cfg.quantizeInt8
    .split(',')
    .map((r) => r.trim())
    .filter((r) => r !== '' && r !== 'none');
  for (const r of int8) {
    if (!(INT8_ROLES as readonly string[]).includes(r)) {
      throw new SiftError(
        'INVALID_ARGUMENT',
        `quantizeInt8: unknown matrix role ${JSON.stringify(r)}; roles: ${INT8_ROLES.join(', ')}`,
        { param: 'quantizeInt8' },
      );
    }
  }
  return { format: 'q4', group: cfg.quantizeGroup, int8: int8 as Int8Role[] };
}

/**
 * The q4 option with the GPTQ statistics of --quantize-gptq FILE (model/gram.ts), or the importance matrix of
 * --quantize-imatrix FILE, read and checked against the checkpoint's
 * matrices (INVALID_ARGUMENT naming the file and the tensor at fault), and the checkpoint to upload: with
 * quantizeChannelScales (off by default), a view with per-input-channel scales folded in (model/quant-scales.ts). Unchanged when no
 * file is given.
 */
export function withImatrix(
  option: QuantizeOption | undefined,
  cfg: Pick<EngineConfig, 'quantizeImatrix' | 'quantizeChannelScales' | 'quantizeGptq' | 'quantizeGptqActOrder'>,
  ckpt: Checkpoint,
): { quantize: QuantizeOption | undefined; source: Checkpoint } {
  const gptq = cfg.quantizeGptq;
  if (gptq) {
    const param = { param: 'quantizeGptq' };
    if (option?.format !== 'q4') {
      throw new SiftError('INVALID_ARGUMENT', `quantizeGptq (${gptq}) needs --quantize q4 (it calibrates q4)`, param);
    }
    if (cfg.quantizeImatrix || cfg.quantizeChannelScales) {
      throw new SiftError(
        'INVALID_ARGUMENT',
        `quantizeGptq replaces ${cfg.quantizeImatrix ? 'quantizeImatrix' : 'quantizeChannelScales'} (its statistics hold the importance matrix as their diagonal): give one`,
        param,
      );
    }
    const gram = gramForCheckpoint(gptq, ckpt);
    // the importances (diag) serve a tied embedding, which GPTQ leaves to the weighted fit (weights.ts)
    const importance = new Map<string, Float32Array>();
    for (const [name, g] of gram) {
      const n = Math.round(Math.sqrt(g.length));
      importance.set(
        name,
        Float32Array.from({ length: n }, (_, i) => g[i * n + i]),
      );
    }
    return { quantize: { ...option, gram, importance, gptqActOrder: cfg.quantizeGptqActOrder }, source: ckpt };
  }
  const file = cfg.quantizeImatrix;
  if (!file) return { quantize: option, source: ckpt };
  if (option?.format !== 'q4') {
    throw new SiftError('INVALID_ARGUMENT', `quantizeImatrix (${file}) needs --quantize q4 (it calibrates q4 groups)`, {
      param: 'quantizeImatrix',
    });
  }
  const importance = imatrixForCheckpoint(file, ckpt);
  if (!cfg.quantizeChannelScales) return { quantize: { ...option, importance }, source: ckpt };
  const c = ckpt.config;
  const int8 = new Set<string>();
  for (let li = 0; li < c.numLayers; li++) {
    if (option.int8?.includes('attn-v')) int8.add(`model.layers.${li}.self_attn.v_proj.weight`);
    if (option.int8?.includes('ffn-down')) int8.add(`model.layers.${li}.mlp.down_proj.weight`);
  }
  const scales = searchChannelScales(ckpt, { group: option.group, importance, int8 });
  const folded = foldChannelScales(ckpt, scales, importance);
  return { quantize: { ...option, importance: folded.importance }, source: folded.ckpt };
}
