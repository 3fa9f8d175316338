/**
 * The engine: a model loaded on the GPU with its KV cache, and the two named phases of generation,
 * `prefill` (the prompt, in chunks of maxBatchTokens) and `decodeOneToken`. The server's scheduler (continuous
 * batching) drives ForwardPass directly with many sequences; `generate` here runs one sequence end to end.
 */

import { type AttentionConfig, attentionConfig } from '../config/attention.js';
import type { EngineConfig } from '../config/engine.js';
import { SiftError } from '../config/errors.js';
import { streamingPagesPerSequence } from '../kvcache/config.js';
import { Gpu } from '../shaders/runtime.js';
import { ForwardPass } from './forward.js';
import { loadHeadPlan } from './head-plan.js';
import { KvStorage } from './kv-storage.js';
import { type Checkpoint, openCheckpoint } from './model/checkpoint.js';
import type { ModelConfig } from './model/config.js';
import { destroyModel, type ModelWeights, type UploadProgress, uploadModel } from './model/weights.js';
import { Sampler, type SamplingParams } from './sampler.js';

export interface GenerateOptions {
  maxTokens: number;
  sampling: SamplingParams;
  /** Token ids that end generation (the eos ids); the stop token is not part of the output. */
  stopIds?: readonly number[];
  /** Called with each generated token id as soon as it is sampled. */
  onToken?: (id: number) => void;
  signal?: AbortSignal;
  /** Per-call attention override (default: the engine's attention config). */
  attention?: { mode?: 'dense' | 'sparse'; tokenBudget?: number };
}

export interface GenerateResult {
  promptIds: number[];
  outputIds: number[];
  finishReason: 'stop' | 'length' | 'abort';
  /** Mean KV tokens attended per decode step (per retrieval head). */
  meanTokensAttended: number;
  timings: {
    prefillMs: number;
    decodeMs: number;
    prefillTokensPerS: number;
    decodeTokensPerS: number;
  };
}

export class Engine {
  private constructor(
    readonly gpu: Gpu,
    readonly modelDir: string,
    readonly config: ModelConfig,
    readonly weights: ModelWeights,
    readonly kv: KvStorage,
    readonly forwardPass: ForwardPass,
    readonly maxContext: number,
    private readonly ownsGpu: boolean,
    /** Sparse-attention defaults (requests may override mode and token budget). */
    readonly attention: AttentionConfig,
  ) {}

  /** Share of (layer, KV head) pairs that are streaming heads (0 without a head pattern). */
  get streamingHeadShare(): number {
    const layers = this.kv.layers;
    const streaming = layers.reduce((n, l) => n + l.numStreamingHeads, 0);
    return streaming / (layers.length * this.config.numKvHeads);
  }

  /** Decode token budget of a request: dense mode (or a budget that covers the context) reads every page. */
  tokenBudget(req?: { mode?: 'dense' | 'sparse'; tokenBudget?: number }): number {
    const mode = req?.mode ?? this.attention.mode;
    return mode === 'dense' ? Number.POSITIVE_INFINITY : (req?.tokenBudget ?? this.attention.tokenBudget);
  }

  /** KV tokens one decode step reads per retrieval head at context length `ctx` with `budget` (whole pages). */
  tokensAttended(ctx: number, budget: number): number {
    if (ctx <= budget) return ctx;
    const ps = this.kv.pageSize;
    const pages = Math.ceil(ctx / ps);
    const keep = Math.min(pages, Math.max(2, Math.floor(budget / ps)));
    // the newest page is partly filled: count its real tokens
    const newest = ctx - (pages - 1) * ps;
    return (keep - 1) * ps + newest;
  }

  static async load(
    modelDir: string,
    cfg: EngineConfig,
    opts: {
      gpu?: Gpu;
      onProgress?: (p: UploadProgress) => void;
      maxLogitRows?: number;
      attention?: AttentionConfig;
    } = {},
  ): Promise<Engine> {
    const attention = opts.attention ?? attentionConfig({}, cfg.pageSize);
    const ckpt: Checkpoint = openCheckpoint(modelDir);
    const gpu = opts.gpu ?? (await Gpu.create({ adapter: cfg.adapter || undefined }));
    try {
      const c = ckpt.config;
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
      const weights = uploadModel(gpu, ckpt, { onProgress: opts.onProgress, headPlan });
      const maxContext = cfg.maxContext ?? c.maxPositionEmbeddings;
      const kvOpts = { headPlan, numStreamingPages };
      const pages = KvStorage.pagesFor(gpu, c, cfg.pageSize, cfg.kvCacheMib, kvOpts);
      const kv = new KvStorage(gpu, c, pages, cfg.pageSize, kvOpts);
      const maxPagesPerSeq = Math.ceil(maxContext / cfg.pageSize);
      const fwd = new ForwardPass(gpu, weights, kv, {
        maxBatchTokens: cfg.maxBatchTokens,
        maxSeqs: cfg.maxSeqs,
        maxPagesPerSeq,
        maxLogitRows: opts.maxLogitRows,
        attention: {
          sparse: { logicalPageSize: attention.logicalPageSize, reuseInterval: attention.reuseInterval },
          blockSparsePrefill:
            attention.prefillMode === 'block-sparse' ? { topBlocks: attention.prefillTopBlocks } : undefined,
          streaming,
        },
      });
      const engine = new Engine(gpu, modelDir, c, weights, kv, fwd, maxContext, !opts.gpu, attention);
      await engine.warmUp();
      return engine;
    } finally {
      ckpt.close();
    }
  }

  /**
   * Compiles the step's pipelines before the first request (a cold WGSL compile costs 0.1-6 s on lavapipe) by
   * running a two-token prefill and one decode step on page 0 of a pool that holds no sequence yet.
   */
  private async warmUp(): Promise<void> {
    const fwd = this.forwardPass;
    const table = new Uint32Array(fwd.maxPagesPerSeq);
    const streaming = (n: number) =>
      fwd.attention.hasStreamingHeads
        ? { table: new Uint32Array(fwd.attention.streamingRowLength), slots: new Uint32Array(n).fill(0xffffffff) }
        : undefined;
    const seqId = '__warmup__';
    await fwd.forward({
      tokens: [0, 0],
      positions: [0, 1],
      tokenSeq: [0, 0],
      blockTable: table,
      numSeqs: 1,
      logitRows: [1],
      prefillSeqIds: [seqId],
      streaming: streaming(2),
    });
    await fwd.forward({
      tokens: [0],
      positions: [2],
      tokenSeq: [0],
      blockTable: table,
      numSeqs: 1,
      logitRows: [0],
      decode: [{ seqId, tokenBudget: this.attention.tokenBudget }],
      streaming: streaming(1),
    });
    fwd.release(seqId);
  }

  /** Runs one sequence: prefill the prompt, then decode up to maxTokens. */
  async generate(promptIds: number[], opts: GenerateOptions): Promise<GenerateResult> {
    if (this.forwardPass.attention.hasStreamingHeads) {
      throw new SiftError(
        'INTERNAL',
        'Engine.generate runs retrieval heads only; a model with streaming heads runs through the engine loop',
      );
    }
    if (promptIds.length === 0)
      throw new SiftError('INVALID_ARGUMENT', 'the prompt has no tokens', { param: 'prompt' });
    if (!Number.isInteger(opts.maxTokens) || opts.maxTokens < 1) {
      throw new SiftError('INVALID_ARGUMENT', 'max_tokens must be an integer >= 1', { param: 'max_tokens' });
    }
    const total = promptIds.length + opts.maxTokens;
    if (promptIds.length > this.maxContext) {
      throw new SiftError(
        'CONTEXT_LENGTH_EXCEEDED',
        `the prompt has ${promptIds.length} tokens; this model's context limit is ${this.maxContext}`,
        { param: 'messages' },
      );
    }
    const maxLen = Math.min(total, this.maxContext);
    const pagesNeeded = Math.ceil(maxLen / this.kv.pageSize);
    if (pagesNeeded > this.kv.numPages) {
      throw new SiftError(
        'KV_POOL_EXHAUSTED',
        `the sequence needs ${pagesNeeded} KV pages; the cache holds ${this.kv.numPages} (raise --kv-cache-mib)`,
      );
    }
    // One sequence owns pages 0..pagesNeeded-1 of the pool for its lifetime.
    const table = new Uint32Array(this.forwardPass.maxPagesPerSeq);
    for (let i = 0; i < pagesNeeded; i++) table[i] = i;
    const sampler = new Sampler(opts.sampling);
    const stop = new Set(opts.stopIds ?? []);
    const out: number[] = [];

    const budget = this.tokenBudget(opts.attention);
    let attended = 0;
    const t0 = performance.now();
    let logits = await this.prefill(promptIds, table);
    const t1 = performance.now();
    let finish: GenerateResult['finishReason'] = 'length';
    let pos = promptIds.length;
    for (;;) {
      if (opts.signal?.aborted) {
        finish = 'abort';
        break;
      }
      const id = sampler.sample(logits);
      if (stop.has(id)) {
        finish = 'stop';
        break;
      }
      out.push(id);
      opts.onToken?.(id);
      if (out.length >= opts.maxTokens || pos >= maxLen) break;
      logits = await this.decodeOneToken(id, pos, table, budget);
      attended += this.tokensAttended(pos + 1, budget);
      pos++;
    }
    const t2 = performance.now();
    const decodeSteps = Math.max(0, out.length - 1);
    return {
      promptIds,
      outputIds: out,
      finishReason: finish,
      meanTokensAttended: decodeSteps > 0 ? attended / decodeSteps : 0,
      timings: {
        prefillMs: t1 - t0,
        decodeMs: t2 - t1,
        prefillTokensPerS: promptIds.length / ((t1 - t0) / 1000),
        decodeTokensPerS: decodeSteps > 0 ? decodeSteps / ((t2 - t1) / 1000) : 0,
      },
    };
  }

  /**
   * Prefills `ids` at positions start.. of sequence `seqId` whose block-table row is `table`, in chunks of
   * maxBatchTokens; returns the last token's logits.
   */
  async prefill(
    ids: readonly number[],
    table: Uint32Array,
    start = 0,
    seqId: string | number = 0,
  ): Promise<Float32Array> {
    const chunk = this.forwardPass.maxBatchTokens;
    let logits: Float32Array | null = null;
    for (let s = 0; s < ids.length; s += chunk) {
      const part = ids.slice(s, s + chunk);
      const last = s + chunk >= ids.length;
      const batch = {
        tokens: part,
        positions: part.map((_, i) => start + s + i),
        tokenSeq: new Uint32Array(part.length),
        blockTable: table,
        numSeqs: 1,
        logitRows: last ? [part.length - 1] : [],
        prefillSeqIds: [seqId],
      };
      if (last) logits = await this.forwardPass.forward(batch);
      else this.forwardPass.encode(batch);
    }
    return logits as Float32Array;
  }

  /**
   * Runs one token at position `pos` of the sequence in block-table row 0 (sequence id 0); returns its logits.
   * Attention reads the pages selected within `tokenBudget` (Infinity = all pages, i.e. dense).
   */
  decodeOneToken(id: number, pos: number, table: Uint32Array, tokenBudget = this.tokenBudget()): Promise<Float32Array> {
    return this.forwardPass.forward({
      tokens: [id],
      positions: [pos],
      tokenSeq: [0],
      blockTable: table,
      numSeqs: 1,
      logitRows: [0],
      decode: [{ seqId: 0, tokenBudget }],
    });
  }

  destroy(): void {
    this.forwardPass.destroy();
    this.kv.destroy();
    destroyModel(this.weights);
    if (this.ownsGpu) this.gpu.destroy();
  }
}
