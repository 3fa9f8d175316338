/**
 * The engine: a model loaded on the GPU with its KV cache, and the two named phases of generation,
 * `prefill` (the prompt, in chunks of maxBatchTokens) and `decodeOneToken`, for benchmarks and tests that drive
 * one sequence by hand. Generation (the server, `sift generate`) runs through the engine loop (engine/loop.ts),
 * which drives ForwardPass with many sequences at once.
 */

import { type Checkpoint, openCheckpoint } from '../checkpoint/checkpoint.js';
import type { ModelConfig } from '../checkpoint/config.js';
import { type AttentionConfig, attentionConfig } from '../config/attention.js';
import type { EngineConfig } from '../config/engine.js';
import { streamingPagesPerSequence } from '../kvcache/config.js';
import { Gpu } from '../shaders/runtime.js';
import { tokensAttended } from './attention/budget.js';
import { ForwardPass } from './forward.js';
import { loadHeadPlan } from './head-plan.js';
import { KvStorage } from './kv-storage.js';
import { destroyModel, type ModelWeights, type UploadProgress, uploadModel } from './weights.js';

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

  /** KV tokens one decode step reads per retrieval head at context length `ctx` with `budget` (the budget rule). */
  tokensAttended(ctx: number, budget: number): number {
    return tokensAttended(ctx, budget, this.kv.pageSize);
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
