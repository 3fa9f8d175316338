/**
 * The engine loop: continuous batching over one Engine, as the server's EngineClient.
 *
 * An async task runs `step()` while there is work and sleeps until a submit when idle. One step is vLLM's engine
 * core step: schedule() (engine/scheduler.ts: {sequence -> new tokens} within maxBatchTokens / maxSeqs, admission
 * by free KV pages, recompute preemption) -> execute (ONE ForwardPass.forward over every scheduled token, logits
 * only for the sequences that sample) -> update (commit the written tokens to the KV cache manager, sample per
 * request, emit events, finish and free).
 *
 * A GPU device loss ends every live request with finish reason 'error' and makes later submits throw DEVICE_LOST;
 * any other failure of a step ends the live requests with 'error' and the loop goes on.
 */
import path from 'node:path';
import { isSiftError, SiftError } from '../config/errors.js';
import { KvCacheManager } from '../kvcache/index.js';
import type { Engine } from '../model/runner.js';
import { SKIP_SLOT } from '../shaders/kv_write_streaming.js';
import type {
  AttentionUsage,
  EngineClient,
  EngineStats,
  FinishReason,
  GenerationRequest,
  RequestHandle,
} from './client.js';
import { LiveRequest } from './request.js';
import { Sampler, tokenLogprobs } from './sampler.js';
import { type ScheduleOutput, Scheduler } from './scheduler.js';

/**
 * How decode attends, for usage and stats. Dense reads the whole context; the sparse issue plugs its page selection
 * in here (and in the forward pass) without touching the loop.
 */
export interface DecodeAttention {
  /** The mode a request is served with. */
  mode(req: GenerationRequest): AttentionUsage['mode'];
  /** KV tokens one decode step reads (per retrieval head) at context length `contextLen`. */
  tokensAttended(contextLen: number, req: GenerationRequest): number;
}

export const DENSE_ATTENTION: DecodeAttention = Object.freeze({
  mode: () => 'dense' as const,
  tokensAttended: (contextLen: number) => contextLen,
});

/** The engine's sparse attention: per-request mode and token budget over its attention config. */
export function engineAttention(engine: Engine): DecodeAttention {
  return {
    mode: (req) => req.attention?.mode ?? (engine.attention.mode as 'dense' | 'sparse'),
    tokensAttended: (ctx, req) => engine.tokensAttended(ctx, engine.tokenBudget(req.attention)),
  };
}

/** What one step ran (for tests and tracing). */
export interface StepRecord {
  step: number;
  numTokens: number;
  entries: { requestId: string; start: number; numTokens: number; decode: boolean }[];
  preempted: string[];
}

export interface EngineLoopOptions {
  /** Model name as served; default the model directory's name. */
  modelName?: string;
  /** Most requests waiting for admission; submit beyond it throws QUEUE_FULL. Default 256. */
  maxWaiting?: number;
  /** Reuse KV pages of earlier prompts. Default true. */
  enablePrefixCache?: boolean;
  /** KV pages the manager hands out (<= the engine's KV storage pages); default all of them. */
  numPages?: number;
  /** Decode attention accounting; default dense. */
  attention?: DecodeAttention;
  /** Called with every step's schedule before it runs. */
  onStep?: (rec: StepRecord) => void;
}

const PROMPT_PARAM = 'prompt';

export class EngineLoop implements EngineClient {
  readonly modelName: string;
  readonly maxContext: number;
  readonly kv: KvCacheManager;
  readonly scheduler: Scheduler;
  private readonly live = new Map<number, LiveRequest>();
  private readonly liveIds = new Set<string>();
  private readonly attention: DecodeAttention;
  private accepting = true;
  private stopped = false;
  private deadError: SiftError | null = null;
  private wake: (() => void) | null = null;
  private task: Promise<void> = Promise.resolve();
  private shutdownPromise: Promise<void> | null = null;
  private steps = 0;
  /** The schedule being executed (null outside execute/update). */
  private current: ScheduleOutput | null = null;
  private totals = { promptTokens: 0, generationTokens: 0, attended: 0, dense: 0 };

  private constructor(
    readonly engine: Engine,
    private readonly opts: EngineLoopOptions,
  ) {
    const storagePages = engine.kv.numPages;
    const numPages = opts.numPages ?? storagePages;
    if (!Number.isInteger(numPages) || numPages < 1 || numPages > storagePages) {
      throw new SiftError('CONFIG_INVALID', `engine loop: numPages must be in [1, ${storagePages}], got ${numPages}`);
    }
    const pageSize = engine.kv.pageSize;
    // Streaming heads keep their sink + ring pages in a second pool; their prefill cannot be skipped, so the prefix
    // cache is off for such models (kvcache rejects the combination).
    const streaming = engine.forwardPass.attention.hasStreamingHeads;
    this.kv = new KvCacheManager({
      numPages,
      pageSize,
      logicalPageSize: engine.attention.logicalPageSize,
      enablePrefixCache: streaming ? false : (opts.enablePrefixCache ?? true),
      bytesPerPage: engine.kv.bytesPerPage,
      streaming: streaming
        ? {
            numPages: engine.kv.numStreamingPages,
            pageSize,
            sinkTokens: engine.attention.sink,
            localTokens: engine.attention.local,
          }
        : undefined,
    });
    const fwd = engine.forwardPass;
    this.scheduler = new Scheduler(this.kv, {
      maxBatchTokens: fwd.maxBatchTokens,
      maxSeqs: Math.min(fwd.maxSeqs, fwd.maxLogitRows),
      maxWaiting: opts.maxWaiting ?? 256,
    });
    this.modelName = opts.modelName ?? path.basename(engine.modelDir);
    this.maxContext = engine.maxContext;
    this.attention = opts.attention ?? engineAttention(engine);
  }

  /** Wraps a loaded engine and starts the loop task. The loop owns the engine from here on (shutdown destroys it). */
  static create(engine: Engine, opts: EngineLoopOptions = {}): EngineLoop {
    const loop = new EngineLoop(engine, opts);
    loop.task = loop.run();
    return loop;
  }

  submit(req: GenerationRequest): RequestHandle {
    if (this.deadError) throw new SiftError('DEVICE_LOST', this.deadError.message);
    if (this.engine.gpu.lostReason !== null) throw this.engine.gpu.lostError();
    if (!this.accepting) throw new SiftError('NOT_READY', 'the engine is shutting down');
    const prompt = req.promptIds;
    if (typeof req.id !== 'string' || this.liveIds.has(req.id)) {
      throw new SiftError('INVALID_ARGUMENT', `request id ${String(req.id)} is already in use`);
    }
    if (!Array.isArray(prompt) || prompt.length === 0) {
      throw new SiftError('INVALID_ARGUMENT', 'the prompt has no tokens', { param: PROMPT_PARAM });
    }
    const V = this.engine.config.vocabSize;
    for (const id of prompt) {
      if (!Number.isInteger(id) || id < 0 || id >= V) {
        throw new SiftError('INVALID_ARGUMENT', `token id ${id} is outside the vocabulary [0, ${V})`, {
          param: PROMPT_PARAM,
        });
      }
    }
    if (!Number.isInteger(req.maxTokens) || req.maxTokens < 1) {
      throw new SiftError('INVALID_ARGUMENT', 'max_tokens must be an integer >= 1', { param: 'max_tokens' });
    }
    if (prompt.length + 1 > this.maxContext) {
      throw new SiftError(
        'CONTEXT_LENGTH_EXCEEDED',
        `the prompt has ${prompt.length} tokens; with at least one completion token that exceeds this model's context limit of ${this.maxContext} tokens`,
        { param: 'messages' },
      );
    }
    const poolTokens = this.kv.config.numPages * this.kv.pageSize;
    if (prompt.length + 1 > poolTokens) {
      throw new SiftError(
        'KV_POOL_EXHAUSTED',
        `the prompt needs ${prompt.length + 1} KV slots; the cache holds ${poolTokens} (raise --kv-cache-mib)`,
      );
    }
    if (
      req.topLogprobs !== undefined &&
      (!Number.isInteger(req.topLogprobs) || req.topLogprobs < 0 || req.topLogprobs > 20)
    ) {
      throw new SiftError('INVALID_ARGUMENT', 'top_logprobs must be an integer in [0, 20]', { param: 'top_logprobs' });
    }
    if (req.timeoutMs !== undefined && !(req.timeoutMs >= 0)) {
      throw new SiftError('INVALID_ARGUMENT', 'timeout must be >= 0 ms', { param: 'timeout' });
    }
    const sampler = new Sampler(req.sampling, {
      presencePenalty: req.presencePenalty ?? 0,
      frequencyPenalty: req.frequencyPenalty ?? 0,
    });
    const seq = this.scheduler.newSeq([...prompt]);
    const maxLen = Math.min(prompt.length + req.maxTokens, this.maxContext, poolTokens);
    const r = new LiveRequest(req, seq, sampler, maxLen, (x) => this.finish(x, 'cancelled'));
    this.scheduler.add(seq); // throws QUEUE_FULL
    this.live.set(seq.seqId, r);
    this.liveIds.add(req.id);
    if (req.timeoutMs !== undefined) {
      r.timer = setTimeout(() => this.finish(r, 'timeout'), req.timeoutMs);
      r.timer.unref();
    }
    this.notify();
    return r;
  }

  stats(): EngineStats {
    const s = this.kv.stats();
    return {
      running: this.scheduler.running.length,
      waiting: this.scheduler.waiting.length,
      kvPagesTotal: s.pagesTotal,
      kvPagesUsed: s.pagesUsed,
      kvPagesCached: s.pagesCached,
      kvUsage: s.usage,
      preemptions: this.scheduler.preemptions,
      prefixQueries: s.prefixQueries,
      prefixHits: s.prefixHits,
      promptTokens: this.totals.promptTokens,
      generationTokens: this.totals.generationTokens,
      attendedShare: this.totals.dense > 0 ? this.totals.attended / this.totals.dense : 1,
      selectionReuseShare: this.selectionReuseShare(),
      streamingHeadShare: this.engine.streamingHeadShare,
    };
  }

  shutdown(graceMs: number): Promise<void> {
    this.shutdownPromise ??= this.close(graceMs);
    return this.shutdownPromise;
  }

  private async close(graceMs: number): Promise<void> {
    this.accepting = false;
    const deadline = performance.now() + Math.max(0, graceMs);
    while (this.live.size > 0 && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, Math.min(10, Math.max(1, deadline - performance.now()))));
    }
    for (const r of [...this.live.values()]) this.finish(r, 'cancelled');
    this.stopped = true;
    this.notify();
    await this.task;
    this.engine.destroy();
  }

  /** One engine step; resolves with the number of tokens it ran (0: nothing was schedulable). */
  async step(): Promise<number> {
    this.current = null;
    const out = this.scheduler.schedule();
    this.current = out;
    for (const seq of out.admitted) {
      const r = this.live.get(seq.seqId);
      if (r && r.admittedAt === null) {
        r.admittedAt = performance.now();
        r.cachedTokens = seq.numCached;
      }
    }
    if (out.scheduled.length === 0) {
      this.current = null;
      return 0;
    }
    this.steps++;
    this.opts.onStep?.(this.record(out));

    const fwd = this.engine.forwardPass;
    const M = fwd.maxPagesPerSeq;
    const n = out.numTokens;
    const tokens = new Uint32Array(n);
    const positions = new Uint32Array(n);
    const tokenSeq = new Uint32Array(n);
    const blockTable = new Uint32Array(out.scheduled.length * M); // (numSeqs, maxPagesPerSeq)
    const logitRows: number[] = [];
    let t = 0;
    out.scheduled.forEach((e, row) => {
      blockTable.set(this.kv.blockTable(e.seq.seqId), row * M);
      for (let i = 0; i < e.numTokens; i++, t++) {
        tokens[t] = e.seq.tokens[e.start + i];
        positions[t] = e.start + i;
        tokenSeq[t] = row;
      }
      if (e.sample) logitRows.push(t - 1);
    });
    // The scheduler puts single-token entries (decodes) first: they go through page selection within the
    // request's token budget; sequences prefilling several tokens reselect on their next decode step.
    const decode: { seqId: string | number; tokenBudget: number }[] = [];
    for (const e of out.scheduled) {
      if (e.numTokens !== 1) break;
      decode.push({
        seqId: e.seq.seqId,
        tokenBudget: this.engine.tokenBudget(this.live.get(e.seq.seqId)?.req.attention),
      });
    }
    const prefillSeqIds = out.scheduled.filter((e) => e.numTokens > 1).map((e) => e.seq.seqId);
    for (const s of out.preempted) fwd.release(s.seqId);
    const batch = {
      tokens,
      positions,
      tokenSeq,
      blockTable,
      numSeqs: out.scheduled.length,
      logitRows,
      decode,
      prefillSeqIds,
      streaming: fwd.attention.hasStreamingHeads ? this.streamingInputs(out, positions) : undefined,
    };
    let logits: Float32Array;
    if (logitRows.length > 0) {
      logits = await fwd.forward(batch);
    } else {
      // only prefill chunks that sample nothing: no logits to read, but wait for the GPU (pacing, device loss)
      fwd.encode(batch);
      await this.engine.gpu.sync();
      logits = new Float32Array(0);
    }
    this.update(out, logits);
    this.current = null;
    return n;
  }

  private update(out: ScheduleOutput, logits: Float32Array): void {
    const V = this.engine.config.vocabSize;
    let row = 0;
    for (const e of out.scheduled) {
      const rowLogits = e.sample ? logits.subarray(row * V, (row + 1) * V) : null;
      if (e.sample) row++;
      const r = this.live.get(e.seq.seqId);
      if (!r || r.finished) continue; // cancelled or timed out while the step ran: its pages are already free
      this.scheduler.commit(e);
      const seq = e.seq;
      if (!rowLogits) {
        if (r.output.length === 0 && seq.numComputed < seq.promptLen) {
          r.emit({ type: 'progress', promptTokensDone: seq.numComputed, promptTokens: seq.promptLen });
        }
        continue;
      }
      if (!r.promptCounted) {
        r.promptCounted = true;
        this.totals.promptTokens += seq.promptLen;
      }
      if (e.numTokens === 1 && e.start >= seq.promptLen) {
        const ctx = e.start + 1; // positions 0..start
        const attended = this.attention.tokensAttended(ctx, r.req);
        r.decodeSteps++;
        r.attendedSum += attended;
        this.totals.attended += attended;
        this.totals.dense += ctx;
      }
      const id = r.sampler.sample(rowLogits);
      if (r.stop.has(id)) {
        this.finish(r, 'stop');
        continue;
      }
      r.sampler.accept(id);
      r.output.push(id);
      seq.tokens.push(id);
      this.totals.generationTokens++;
      r.firstTokenAt ??= performance.now();
      if (r.req.topLogprobs !== undefined) {
        const lp = tokenLogprobs(rowLogits, id, r.req.topLogprobs);
        r.emit({ type: 'token', id, logprob: lp.logprob, topLogprobs: lp.top });
      } else {
        r.emit({ type: 'token', id });
      }
      if (seq.tokens.length >= r.maxLen) this.finish(r, 'length');
    }
  }

  private record(out: ScheduleOutput): StepRecord {
    const idOf = (seqId: number) => this.live.get(seqId)?.id ?? `#${seqId}`;
    return {
      step: this.steps,
      numTokens: out.numTokens,
      entries: out.scheduled.map((e) => ({
        requestId: idOf(e.seq.seqId),
        start: e.start,
        numTokens: e.numTokens,
        decode: e.numTokens === 1 && e.start >= e.seq.promptLen,
      })),
      preempted: out.preempted.map((s) => idOf(s.seqId)),
    };
  }

  /** Share of sparse decode steps (per sequence) that reused a page selection. */
  private selectionReuseShare(): number {
    const st = this.engine.forwardPass.attention.sparse?.schedule.stats();
    if (!st || st.reselects + st.reuses === 0) return 0;
    return st.reuses / (st.reselects + st.reuses);
  }

  /**
   * Streaming tables (sink pages then ring pages per scheduled row) and each token's ring slot, or SKIP_SLOT for a
   * token the ring recycles before this step's chunk ends (residency judged at the chunk end, not at the whole
   * reserved prompt).
   */
  private streamingInputs(out: ScheduleOutput, positions: Uint32Array): { table: Uint32Array; slots: Uint32Array } {
    const pool = this.kv.streaming!;
    const rowLen = pool.numSinkPages + pool.numRingPages;
    const table = new Uint32Array(out.scheduled.length * rowLen);
    const slots = new Uint32Array(positions.length);
    let t = 0;
    out.scheduled.forEach((e, row) => {
      const st = this.kv.streamingTable(e.seq.seqId);
      table.set(st.sinkPages, row * rowLen);
      table.set(st.ringPages, row * rowLen + pool.numSinkPages);
      const end = e.start + e.numTokens;
      for (let i = 0; i < e.numTokens; i++, t++) {
        slots[t] = this.kv.slotFor(e.seq.seqId, positions[t], end)?.slot ?? SKIP_SLOT;
      }
    });
    return { table, slots };
  }

  /** Ends `r`: frees its pages at once and sends 'done'. */
  private finish(r: LiveRequest, reason: FinishReason, error?: Error): void {
    if (r.finished) return;
    try {
      this.scheduler.finish(r.seq);
    } catch {
      // a failed step may have left the KV bookkeeping inconsistent; the request ends regardless
    }
    this.live.delete(r.seq.seqId);
    this.liveIds.delete(r.id);
    this.engine.forwardPass.release(r.seq.seqId);
    r.end(reason, this.attention.mode(r.req), error);
    this.notify();
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  /** Sleeps until notify() (submit, cancel, finish, shutdown) or `ms`. */
  private idle(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = ms > 0 ? setTimeout(() => this.notify(), ms) : null;
      this.wake = () => {
        if (timer) clearTimeout(timer);
        resolve();
      };
    });
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      if (!this.scheduler.hasWork) {
        await this.idle(0);
        continue;
      }
      let ran = 0;
      try {
        ran = await this.step();
      } catch (e) {
        await this.onStepError(e);
      }
      // Nothing fitted (cannot happen with an idle pool, kept as a guard): wait for a change, do not spin.
      if (ran === 0 && this.scheduler.hasWork && !this.stopped) await this.idle(5);
    }
  }

  private async onStepError(e: unknown): Promise<void> {
    const gpu = this.engine.gpu;
    if (!isSiftError(e) && gpu.lostReason === null) {
      // A dead device can fail a read (mapAsync) before its `lost` promise settles: give it a moment to.
      await Promise.race([gpu.device.lost.catch(() => {}), new Promise((r) => setTimeout(r, 100).unref())]);
      await new Promise((r) => setImmediate(r));
    }
    const lost = isSiftError(e, 'DEVICE_LOST') || gpu.lostReason !== null;
    const err = e instanceof Error ? e : new SiftError('INTERNAL', `engine step failed: ${String(e)}`);
    if (lost) {
      this.deadError = isSiftError(e, 'DEVICE_LOST') ? e : this.engine.gpu.lostError();
      this.accepting = false;
    }
    // A lost device ends everyone; any other failure ends the requests of the failed step (or everyone when the
    // schedule itself failed, since the KV bookkeeping may then be inconsistent).
    const victims =
      lost || !this.current
        ? [...this.live.values()]
        : this.current.scheduled.flatMap((x) => this.live.get(x.seq.seqId) ?? []);
    this.current = null;
    for (const r of victims) this.finish(r, 'error', lost ? (this.deadError ?? err) : err);
  }
}
