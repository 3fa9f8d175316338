/**
 * The engine: a model loaded on the GPU with its KV cache, and the two named phases of generation,
 * `prefill` (the prompt, in chunks of maxBatchTokens) and `decodeOneToken`. The server's scheduler (continuous
 * batching) drives ForwardPass directly with many sequences; `generate` here runs one sequence end to end.
 */
import { SiftError } from '../config/errors.js';
import type { EngineConfig } from '../config/engine.js';
import { Gpu } from '../shaders/runtime.js';
import { ForwardPass } from './forward.js';
import { KvStorage } from './kv-storage.js';
import { type Checkpoint, openCheckpoint } from './model/checkpoint.js';
import type { ModelConfig } from './model/config.js';
import { type ModelWeights, type UploadProgress, destroyModel, uploadModel } from './model/weights.js';
import { Sampler, type SamplingParams } from './sampler.js';

export interface GenerateOptions {
  maxTokens: number;
  sampling: SamplingParams;
  /** Token ids that end generation (the eos ids); the stop token is not part of the output. */
  stopIds?: readonly number[];
  /** Called with each generated token id as soon as it is sampled. */
  onToken?: (id: number) => void;
  signal?: AbortSignal;
}

export interface GenerateResult {
  promptIds: number[];
  outputIds: number[];
  finishReason: 'stop' | 'length' | 'abort';
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
  ) {}

  static async load(
    modelDir: string,
    cfg: EngineConfig,
    opts: { gpu?: Gpu; onProgress?: (p: UploadProgress) => void; maxLogitRows?: number } = {},
  ): Promise<Engine> {
    const ckpt: Checkpoint = openCheckpoint(modelDir);
    const gpu = opts.gpu ?? (await Gpu.create({ adapter: cfg.adapter || undefined }));
    try {
      const weights = uploadModel(gpu, ckpt, { onProgress: opts.onProgress });
      const c = ckpt.config;
      const maxContext = cfg.maxContext ?? c.maxPositionEmbeddings;
      const pages = KvStorage.pagesFor(gpu, c, cfg.pageSize, cfg.kvCacheMib);
      const kv = new KvStorage(gpu, c, pages, cfg.pageSize);
      const maxPagesPerSeq = Math.ceil(maxContext / cfg.pageSize);
      const fwd = new ForwardPass(gpu, weights, kv, {
        maxBatchTokens: cfg.maxBatchTokens,
        maxSeqs: cfg.maxSeqs,
        maxPagesPerSeq,
        maxLogitRows: opts.maxLogitRows,
      });
      await gpu.sync();
      return new Engine(gpu, modelDir, c, weights, kv, fwd, maxContext, !opts.gpu);
    } finally {
      ckpt.close();
    }
  }

  /** Runs one sequence: prefill the prompt, then decode up to maxTokens. */
  async generate(promptIds: number[], opts: GenerateOptions): Promise<GenerateResult> {
    if (promptIds.length === 0) throw new SiftError('INVALID_ARGUMENT', 'the prompt has no tokens', { param: 'prompt' });
    if (!Number.isInteger(opts.maxTokens) || opts.maxTokens < 1) {
      throw new SiftError('INVALID_ARGUMENT', 'max_tokens must be an integer >= 1', { param: 'max_tokens' });
    }
    const total = promptIds.length + opts.maxTokens;
    if (promptIds.length > this.maxContext) {
      throw new SiftError('CONTEXT_LENGTH_EXCEEDED', `the prompt has ${promptIds.length} tokens; this model's context limit is ${this.maxContext}`, { param: 'messages' });
    }
    const maxLen = Math.min(total, this.maxContext);
    const pagesNeeded = Math.ceil(maxLen / this.kv.pageSize);
    if (pagesNeeded > this.kv.numPages) {
      throw new SiftError('KV_POOL_EXHAUSTED', `the sequence needs ${pagesNeeded} KV pages; the cache holds ${this.kv.numPages} (raise --kv-cache-mib)`);
    }
    // One sequence owns pages 0..pagesNeeded-1 of the pool for its lifetime.
    const table = new Uint32Array(this.forwardPass.maxPagesPerSeq);
    for (let i = 0; i < pagesNeeded; i++) table[i] = i;
    const sampler = new Sampler(opts.sampling);
    const stop = new Set(opts.stopIds ?? []);
    const out: number[] = [];

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
      logits = await this.decodeOneToken(id, pos, table);
      pos++;
    }
    const t2 = performance.now();
    const decodeSteps = Math.max(0, out.length - 1);
    return {
      promptIds,
      outputIds: out,
      finishReason: finish,
      timings: {
        prefillMs: t1 - t0,
        decodeMs: t2 - t1,
        prefillTokensPerS: promptIds.length / ((t1 - t0) / 1000),
        decodeTokensPerS: decodeSteps > 0 ? decodeSteps / ((t2 - t1) / 1000) : 0,
      },
    };
  }

  /** Prefills `ids` at positions start.. of the sequence in block-table row 0; returns the last token's logits. */
  async prefill(ids: number[], table: Uint32Array, start = 0): Promise<Float32Array> {
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
      };
      if (last) logits = await this.forwardPass.forward(batch);
      else this.forwardPass.encode(batch);
    }
    return logits as Float32Array;
  }

  /** Runs one token at position `pos`; returns its logits (vocab). */
  decodeOneToken(id: number, pos: number, table: Uint32Array): Promise<Float32Array> {
    return this.forwardPass.forward({
      tokens: [id],
      positions: [pos],
      tokenSeq: [0],
      blockTable: table,
      numSeqs: 1,
      logitRows: [0],
    });
  }

  destroy(): void {
    this.forwardPass.destroy();
    this.kv.destroy();
    destroyModel(this.weights);
    if (this.ownsGpu) this.gpu.destroy();
  }
}
