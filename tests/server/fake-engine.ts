/**
 * A deterministic EngineClient for server tests (no GPU): it "generates" a fixed script of token ids. Greedy
 * requests start at the script's beginning, a seeded request at an offset derived from its seed (same seed,
 * same tokens), an unseeded sampled one at a random offset; a constrained request gets the script's token where
 * its mask allows it, else the lowest allowed id. Like the real engine it checks requests with
 * checkRequest (engine/client.ts) and bounds how many may wait (QUEUE_FULL), keeps KV-page accounting (pages
 * held while a request lives), honours cancel and timeouts at once, and can be told to fail.
 */
import { attentionConfig } from '../../config/attention.js';
import { isSiftError, SiftError } from '../../config/errors.js';
import {
  checkRequest,
  type EngineClient,
  type EngineStats,
  type FinishReason,
  type GenerationEvent,
  type GenerationRequest,
  type RequestHandle,
} from '../../engine/client.js';
import type { TextSide } from '../../text/text.js';
import { STORY } from '../helpers/tiny-text.js';

export { STORY };

export interface FakeOptions {
  modelName?: string;
  maxContext?: number;
  /** Mode of requests that do not choose one; default the attention config's default, as the real engine. */
  attentionMode?: 'dense' | 'sparse';
  /** Token ids are in [0, vocabSize); default 32000 (story(): the text side's vocabulary). */
  vocabSize?: number;
  /** Token ids the fake emits in order (wrapping around). */
  script: number[];
  /** Delay before the first token (a "prefill"), with a progress event every progressMs meanwhile. */
  prefillMs?: number;
  progressMs?: number;
  /** Delay between tokens; 0 = next macrotask. */
  tokenMs?: number;
  /** submit() throws this. */
  submitError?: Error;
  /** After this many tokens, finish with 'error' (and this error). */
  failAfter?: { tokens: number; error: Error };
  /** Requests that may be live at once; one more is QUEUE_FULL (the real engine bounds its waiting queue). */
  maxLive?: number;
  /** Tokens the KV cache holds for one request (EngineClient.kvCacheTokens); default maxContext. */
  kvCacheTokens?: number;
  kvPagesTotal?: number;
  pageSize?: number;
}

const sleep = (ms: number) => new Promise<void>((r) => (ms > 0 ? setTimeout(r, ms) : setImmediate(r)));

export class FakeEngine implements EngineClient {
  readonly modelName: string;
  readonly maxContext: number;
  readonly kvCacheTokens: number;
  readonly maxWaiting: number;
  readonly vocabSize: number;
  readonly submitted: GenerationRequest[] = [];
  readonly cancelled = new Set<string>();
  private readonly live = new Map<string, number>();
  private totals = { prompt: 0, generated: 0 };
  shutdownCalls = 0;
  /** A DEVICE_LOST / DEVICE_FAULT that failAfter delivered: the engine is down from then on, as the real one. */
  private fault: SiftError | null = null;
  private accepting = true;
  private readonly cancels = new Map<string, () => void>();

  constructor(readonly opts: FakeOptions) {
    this.modelName = opts.modelName ?? 'fake-model';
    this.maxContext = opts.maxContext ?? 256;
    this.kvCacheTokens = opts.kvCacheTokens ?? this.maxContext;
    this.maxWaiting = opts.maxLive ?? 1 << 30;
    this.vocabSize = opts.vocabSize ?? 32000;
  }

  static async story(text: TextSide, opts: Partial<FakeOptions> = {}): Promise<FakeEngine> {
    const script = await text.tokenizer.encode(STORY, { addBos: false });
    return new FakeEngine({ script, vocabSize: text.tokenizer.vocabSize, ...opts });
  }

  /** The ids a request with these parameters produces (before stop ids / limits). */
  startOffset(req: GenerationRequest): number {
    if (req.sampling.temperature === 0) return 0;
    const s = req.sampling.seed ?? Math.floor(Math.random() * 1e9);
    return (Math.abs(s) * 7 + 3) % this.opts.script.length;
  }

  deviceFault(): SiftError | null {
    return this.fault;
  }

  submit(req: GenerationRequest): RequestHandle {
    if (this.opts.submitError) throw this.opts.submitError;
    if (this.fault) throw this.fault;
    if (!this.accepting) throw new SiftError('SHUTTING_DOWN', 'shutting down');
    checkRequest(req, {
      maxContext: this.maxContext,
      kvCacheTokens: this.kvCacheTokens,
      vocabSize: this.vocabSize,
      pageSize: 64,
    });
    if (this.opts.maxLive !== undefined && this.live.size >= this.opts.maxLive) {
      throw new SiftError('QUEUE_FULL', `the engine queue is full (${this.opts.maxLive} requests); retry later`);
    }
    this.submitted.push(req);
    let cancelled: FinishReason | null = null;
    const self = this;
    const pageSize = this.opts.pageSize ?? 16;
    const t0 = performance.now();
    this.live.set(req.id, Math.ceil(req.promptIds.length / pageSize));
    async function* run(): AsyncGenerator<GenerationEvent> {
      const script = self.opts.script;
      let off = self.startOffset(req);
      let n = 0;
      let ttft: number | null = null;
      const requested =
        req.attention?.mode ?? self.opts.attentionMode ?? (attentionConfig().mode as 'dense' | 'sparse');
      const done = (finishReason: FinishReason, error?: Error): GenerationEvent => {
        req.constraint?.dispose();
        self.live.delete(req.id);
        self.cancels.delete(req.id);
        self.totals.prompt += req.promptIds.length;
        self.totals.generated += n;
        return {
          type: 'done',
          finishReason,
          usage: { promptTokens: req.promptIds.length, completionTokens: n, cachedTokens: 0 },
          attention: {
            mode: requested,
            requestedMode: requested,
            decodeSteps: Math.max(0, n - 1),
            meanTokensAttended: req.promptIds.length + n / 2,
            meanContextTokens: req.promptIds.length + n / 2,
            prefillKeyBlocksSkippedShare: null,
          },
          timings: { queuedMs: 0, ttftMs: ttft, durationMs: performance.now() - t0 },
          ...(error ? { error } : {}),
        };
      };
      const prefill = self.opts.prefillMs ?? 0;
      const step = self.opts.progressMs ?? prefill;
      for (let t = 0; t < prefill && cancelled === null; t += step) {
        await sleep(Math.min(step, prefill - t));
        yield {
          type: 'progress',
          promptTokensDone: Math.min(req.promptIds.length, Math.round(((t + step) / prefill) * req.promptIds.length)),
          promptTokens: req.promptIds.length,
        };
      }
      for (;;) {
        if (cancelled !== null) return yield done(cancelled);
        if (req.timeoutMs !== undefined && performance.now() - t0 > req.timeoutMs) return yield done('timeout');
        if (self.opts.failAfter && n >= self.opts.failAfter.tokens) {
          const e = self.opts.failAfter.error;
          if (isSiftError(e, 'DEVICE_LOST') || isSiftError(e, 'DEVICE_FAULT')) self.fault ??= e;
          return yield done('error', e);
        }
        if (n >= req.maxTokens || req.promptIds.length + n >= self.maxContext) return yield done('length');
        let id = script[off++ % script.length];
        if (req.constraint) {
          // as the engine: sample within the mask (here: the script's token if allowed, else the lowest allowed id)
          const remaining = Math.min(req.maxTokens - n, self.maxContext - req.promptIds.length - n);
          const mask = await req.constraint.nextMask(remaining);
          const ok = (t: number) => ((mask[t >> 5] >>> (t & 31)) & 1) === 1;
          if (!ok(id)) id = [...Array(self.vocabSize).keys()].find(ok) ?? id;
          id = await req.constraint.take(id, remaining);
        }
        if (req.stopIds.includes(id)) return yield done('stop');
        n++;
        ttft ??= performance.now() - t0;
        self.live.set(req.id, Math.ceil((req.promptIds.length + n) / pageSize));
        const ev: GenerationEvent = { type: 'token', id };
        if (req.topLogprobs !== undefined) {
          ev.logprob = -0.25 * (n % 4);
          ev.topLogprobs = Array.from({ length: req.topLogprobs }, (_, k) => ({
            id: k === 0 ? id : (id + k) % self.vocabSize,
            logprob: -0.25 * (n % 4) - k,
          }));
        }
        yield ev;
        await sleep(self.opts.tokenMs ?? 0);
      }
    }
    const events = run();
    // As in the real engine, a cancelled request leaves at once (its pages and its queue place are free).
    const end = (reason: FinishReason) => {
      if (cancelled === null) this.cancelled.add(req.id);
      cancelled ??= reason;
      this.live.delete(req.id);
    };
    this.cancels.set(req.id, () => end('shutdown'));
    return { id: req.id, cancel: () => end('cancelled'), [Symbol.asyncIterator]: () => events };
  }

  stats(): EngineStats {
    let used = 0;
    for (const p of this.live.values()) used += p;
    const total = this.opts.kvPagesTotal ?? 1024;
    return {
      running: this.live.size,
      waiting: 0,
      kvPagesTotal: total,
      kvPagesUsed: used,
      kvPagesCached: 0,
      kvUsage: used / total,
      preemptions: 0,
      prefixQueries: 0,
      prefixHits: 0,
      promptTokens: this.totals.prompt,
      generationTokens: this.totals.generated,
      attendedShare: 1,
      prefillKeyBlocksSkippedShare: 0,
      prefixCacheEnabled: true,
      selectionReuseShare: 0,
      streamingHeadShare: 0,
    };
  }

  /** As the real loop: stop admitting, wait up to graceMs for live requests, end the rest with 'shutdown'. */
  async shutdown(graceMs: number): Promise<void> {
    this.shutdownCalls++;
    this.accepting = false;
    const t0 = performance.now();
    while (this.live.size && performance.now() - t0 < graceMs) await sleep(5);
    for (const c of [...this.cancels.values()]) c();
    while (this.live.size) await sleep(1);
  }
}
