/**
 * The engine core: continuous batching over one ModelExecutor (model/executor.ts), as the server's EngineClient.
 *
 * An async task runs `step()` while there is work and sleeps until a submit when idle. A step is vLLM's engine core
 * step, three named calls:
 *   schedule()                      the scheduler (engine/scheduler.ts): {sequence -> new tokens} within
 *                                   maxBatchTokens / maxSeqs, each entry a decode or a prefill chunk, admission by
 *                                   free KV pages, recompute preemption (preempted sequences' executor state released)
 *   execute(prepareInputs(output))  the executor runs every scheduled token in one step and returns the sampling
 *                                   entries' logits (engine/prepare-inputs.ts builds its typed input); meanwhile
 *                                   the host computes the token masks of constrained requests (their grammars)
 *   update(output, result)          commit the written tokens to the KV cache manager, sample per request (within
 *                                   its mask), account usage, emit events, finish and free
 *
 * The host does not wait idle in front of the device: while a step runs, the core schedules the next one as if
 * every sequence continued with the token being sampled (a placeholder, PENDING_TOKEN) and hands it to the executor,
 * whose decode entries take those tokens where they were sampled (on the GPU: chained steps, model/executor.ts).
 * Then it waits for the running step's tokens: that wait is the one it cannot avoid, since the tokens decide what
 * is emitted, what stops, what is scheduled after. A sequence that stopped on the token it was waiting for has its
 * entry in the next step ignored (its pages are freed; the KV written there is never read). Steps chain only when
 * every sampled row is sampled by the executor and needs nothing of the token but the token itself (no penalties,
 * no host-side rule): otherwise the next step is scheduled after the update, as before.
 *
 * A device fault (the executor's DEVICE_FAULT: WebGPU reported a validation or out-of-memory error during a step)
 * or a lost device (DEVICE_LOST) ends every live request with finish reason 'error', makes later submits throw it,
 * and calls onDeviceFault (once); the step chained on the failed one is awaited and discarded, so no token computed
 * after a fault is emitted. Any other failure of a step ends the requests of that step (and of the step chained on
 * it) with 'error' and the core goes on.
 */
import { isSiftError, SiftError } from '../config/errors.js';
import { KvCacheManager } from '../kvcache/index.js';
import type { ExecuteInput, ExecuteOutput, ModelExecutor, SampleSpec } from '../model/executor.js';
import {
  type AttentionRequest,
  type AttentionUsage,
  checkRequest,
  type EngineClient,
  type EngineStats,
  type FinishReason,
  type GenerationRequest,
  type RequestHandle,
} from './client.js';
import type { TokenMask } from './logits.js';
import { PENDING_TOKEN, prepareInputs } from './prepare-inputs.js';
import { LiveRequest } from './request.js';
import { Sampler, tokenLogprobs } from './sampler.js';
import { type ScheduledSeq, type ScheduleOutput, Scheduler, type SeqState } from './scheduler.js';

/** What one step ran (for tests and tracing). */
/** A step handed to the executor whose result the core has not processed yet. */
interface Launched {
  out: ScheduleOutput;
  input: ExecuteInput;
  result: Promise<ExecuteOutput>;
  /** Sequence id -> index in its tokens of the placeholder this step's sampled token fills (the next step chained). */
  pending: Map<number, number>;
  /** Sequence id -> the allowed next tokens of each constrained request, computed on the host while the step runs. */
  masks: Promise<Map<number, TokenMask>>;
}

export interface StepRecord {
  step: number;
  numTokens: number;
  entries: { requestId: string; start: number; numTokens: number; kind: ScheduledSeq['kind'] }[];
  preempted: string[];
}

export interface EngineCoreOptions {
  /** Model name as served; default the executor's (the model directory's name). */
  modelName?: string;
  /** Most requests waiting for admission; submit beyond it throws QUEUE_FULL. Default 256. */
  maxWaiting?: number;
  /** Reuse KV pages of earlier prompts. Default true. */
  enablePrefixCache?: boolean;
  /** KV pages the manager hands out (<= the executor's KV storage pages); default all of them. */
  numPages?: number;
  /** Called with every step's schedule before it runs. */
  onStep?: (rec: StepRecord) => void;
  /**
   * Schedule and hand over the next step while one runs, chaining on its sampled tokens (when the executor
   * samples them itself: ExecutorLimits.chainsSteps). Default true.
   */
  overlap?: boolean;
  /**
   * Called once when a device fault (DEVICE_FAULT: a WebGPU validation or out-of-memory error) or the loss of the
   * device (DEVICE_LOST) ends the engine, after every live request was ended with it. `sift serve` exits then, for
   * its supervisor to start a fresh process.
   */
  onDeviceFault?: (err: Error) => void;
}

export class EngineCore implements EngineClient {
  readonly modelName: string;
  readonly maxContext: number;
  readonly kvCacheTokens: number;
  readonly maxWaiting: number;
  readonly kv: KvCacheManager;
  readonly scheduler: Scheduler;
  private readonly live = new Map<number, LiveRequest>();
  private readonly liveIds = new Set<string>();
  private accepting = true;
  private stopped = false;
  /** The device fault (DEVICE_FAULT) or loss (DEVICE_LOST) that ended the engine. */
  private deadError: Error | null = null;
  private wake: (() => void) | null = null;
  private task: Promise<void> = Promise.resolve();
  private shutdownPromise: Promise<void> | null = null;
  private steps = 0;
  private totals = { promptTokens: 0, generationTokens: 0, attended: 0, dense: 0, blocksTotal: 0, blocksKept: 0 };

  private constructor(
    readonly executor: ModelExecutor,
    private readonly opts: EngineCoreOptions,
  ) {
    const lim = executor.limits;
    const storagePages = lim.kv.numPages;
    const numPages = opts.numPages ?? storagePages;
    if (!Number.isInteger(numPages) || numPages < 1 || numPages > storagePages) {
      throw new SiftError('CONFIG_INVALID', `engine core: numPages must be in [1, ${storagePages}], got ${numPages}`);
    }
    const pageSize = lim.kv.pageSize;
    // Streaming heads keep their sink + ring pages in a second pool; their prefill cannot be skipped, so the prefix
    // cache is off for such models (kvcache rejects the combination).
    const streaming = lim.streaming;
    this.kv = new KvCacheManager({
      numPages,
      pageSize,
      logicalPageSize: lim.kv.logicalPageSize,
      enablePrefixCache: streaming ? false : (opts.enablePrefixCache ?? true),
      bytesPerPage: lim.kv.bytesPerPage,
      streaming: streaming
        ? {
            numPages: streaming.numPages,
            pageSize,
            sinkTokens: streaming.sinkTokens,
            localTokens: streaming.localTokens,
          }
        : undefined,
    });
    this.maxWaiting = opts.maxWaiting ?? 256;
    this.scheduler = new Scheduler(this.kv, {
      maxBatchTokens: lim.maxBatchTokens,
      maxSeqs: lim.maxSeqs,
      maxWaiting: this.maxWaiting,
    });
    this.modelName = opts.modelName ?? executor.modelName;
    this.maxContext = lim.maxContext;
    this.kvCacheTokens = numPages * pageSize;
  }

  /** Wraps an executor and starts the core's task. The core owns the executor from here on (shutdown destroys it). */
  static create(executor: ModelExecutor, opts: EngineCoreOptions = {}): EngineCore {
    const core = new EngineCore(executor, opts);
    core.task = core.run();
    return core;
  }

  submit(req: GenerationRequest): RequestHandle {
    const fault = this.deviceFault();
    if (fault) throw new SiftError(fault.code, fault.message, { cause: fault });
    if (!this.accepting) throw new SiftError('SHUTTING_DOWN', 'the engine is shutting down');
    if (typeof req.id !== 'string' || this.liveIds.has(req.id)) {
      throw new SiftError('INVALID_ARGUMENT', `request id ${String(req.id)} is already in use`);
    }
    const lim = this.executor.limits;
    checkRequest(req, {
      maxContext: this.maxContext,
      kvCacheTokens: this.kvCacheTokens,
      vocabSize: lim.vocabSize,
      pageSize: lim.kv.pageSize,
    });
    const prompt = req.promptIds;
    const sampler = new Sampler(
      req.sampling,
      { presencePenalty: req.presencePenalty ?? 0, frequencyPenalty: req.frequencyPenalty ?? 0 },
      { logitBias: req.logitBias, repetitionPenalty: req.repetitionPenalty, minP: req.minP },
      prompt,
    );
    const seq = this.scheduler.newSeq([...prompt]);
    // checkRequest saw that prompt + maxTokens fits the context and the KV cache: only the request's own limit ends
    // it with 'length'.
    const maxLen = prompt.length + req.maxTokens;
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

  deviceFault(): SiftError | null {
    const e = this.deadError ?? this.executor.lostError();
    if (e === null) return null;
    return isSiftError(e) ? e : new SiftError('DEVICE_LOST', e.message, { cause: e });
  }

  stats(): EngineStats {
    const s = this.kv.stats();
    const x = this.executor.stats();
    const decodes = x.selectionReselects + x.selectionReuses;
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
      prefillKeyBlocksSkippedShare:
        this.totals.blocksTotal > 0 ? 1 - this.totals.blocksKept / this.totals.blocksTotal : 0,
      prefixCacheEnabled: this.kv.config.enablePrefixCache,
      selectionReuseShare: decodes > 0 ? x.selectionReuses / decodes : 0,
      streamingHeadShare: x.streamingHeadShare,
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
    for (const r of [...this.live.values()]) this.finish(r, 'shutdown');
    this.stopped = true;
    this.notify();
    await this.task;
    this.executor.destroy();
  }

  /** Prepares a scheduled step's input and hands it to the executor (not awaited); null when nothing was scheduled. */
  private launch(out: ScheduleOutput, chainedRow?: (seq: SeqState) => number | undefined): Launched | null {
    if (out.scheduled.length === 0) return null;
    const input = prepareInputs(out, this.kv, {
      tokenBudgetOf: (seq) => this.tokenBudgetOf(seq),
      samplingOf: (seq) => this.samplingOf(seq),
      chainedRow,
    });
    const result = this.executor.execute(input);
    result.catch(() => {}); // observed where the step is awaited
    // the masks of constrained requests are computed on the host while the executor runs the step
    const masks = this.constraintMasks(out);
    masks.catch(() => {});
    return { out, input, result, pending: new Map(), masks };
  }

  /**
   * While `step` runs: commits its written tokens, appends a placeholder for the token it samples to every
   * sequence that continues past it, schedules the next step on them and hands it to the executor, chained on the
   * running step's tokens. Null when the step cannot chain (a row sampled on the host or with penalties, which need
   * the token first; an executor that does not sample) or nothing continues.
   */
  private chain(step: Launched): Launched | null {
    if (this.opts.overlap === false || !this.executor.limits.chainsSteps) return null;
    const entries = step.input.entries;
    for (const e of entries) {
      if (e.sample && (!e.sampling || e.sampling.onHost || e.sampling.bias)) return null;
    }
    for (const e of step.out.scheduled) {
      const r = this.live.get(e.seq.seqId);
      if (r && !r.finished) this.scheduler.commit(e); // the step's input tokens are known: commit them now
    }
    const rows = new Map<number, number>();
    let row = 0;
    for (const e of step.out.scheduled) {
      if (!e.sample) continue;
      const sampleRow = row++;
      const r = this.live.get(e.seq.seqId);
      const seq = e.seq;
      if (!r || r.finished || seq.status !== 'running' || seq.tokens.length + 1 >= r.maxLen) continue; // ends on it
      step.pending.set(seq.seqId, seq.tokens.length);
      rows.set(seq.seqId, sampleRow);
      seq.tokens.push(PENDING_TOKEN);
    }
    if (step.pending.size === 0) return null;
    return this.launch(this.schedule(), (seq) => rows.get(seq.seqId));
  }

  /** The scheduler's step plus the core's bookkeeping of it: admissions, preempted sequences, the step record. */
  private schedule(): ScheduleOutput {
    const out = this.scheduler.schedule();
    for (const seq of out.admitted) {
      const r = this.live.get(seq.seqId);
      if (r && r.admittedAt === null) {
        r.admittedAt = performance.now();
        r.cachedTokens = seq.numCached;
      }
    }
    // a preempted sequence is recomputed from its tokens: its page selection starts over too
    for (const s of out.preempted) this.executor.release(s.seqId);
    if (out.scheduled.length > 0) {
      this.steps++;
      this.opts.onStep?.(this.record(out));
    }
    return out;
  }

  /** seqId -> the allowed next tokens of each sampling entry whose request has a constraint. */
  private async constraintMasks(out: ScheduleOutput): Promise<Map<number, TokenMask>> {
    const masks = new Map<number, TokenMask>();
    const pending: Promise<void>[] = [];
    for (const e of out.scheduled) {
      const r = this.live.get(e.seq.seqId);
      const c = r?.req.constraint;
      if (!e.sample || !r || !c) continue;
      const remaining = r.maxLen - e.seq.tokens.length;
      pending.push(c.nextMask(remaining).then((m) => void masks.set(e.seq.seqId, m)));
    }
    await Promise.all(pending);
    return masks;
  }

  /**
   * seqId -> the token of each constrained request: sampled on the host within its mask with the step's draw, then
   * as its constraint takes it.
   */
  private async sampleConstrained(
    step: Launched,
    result: ExecuteOutput,
    masks: ReadonlyMap<number, TokenMask>,
  ): Promise<Map<number, number>> {
    const V = this.executor.limits.vocabSize;
    const chosen = new Map<number, number>();
    let row = 0;
    for (const [i, e] of step.out.scheduled.entries()) {
      if (!e.sample) continue;
      const sampleRow = row++;
      const r = this.live.get(e.seq.seqId);
      const mask = masks.get(e.seq.seqId);
      if (!r || r.finished || !r.req.constraint || !mask) continue;
      const lr = result.logitsRow[sampleRow];
      const spec = step.input.entries[i].sampling;
      if (lr < 0 || !spec) throw new SiftError('INTERNAL', `step ${this.steps}: a constrained row has no logits`);
      const sampled = r.sampler.sampleWith(result.logits.subarray(lr * V, (lr + 1) * V), spec, mask);
      chosen.set(e.seq.seqId, await r.req.constraint.take(sampled, r.maxLen - e.seq.tokens.length));
    }
    return chosen;
  }

  /** `chosen`: the tokens of constrained requests (sampleConstrained); the rest come from the device or the host. */
  private update(step: Launched, result: ExecuteOutput, chosen: ReadonlyMap<number, number>): void {
    const { out, input, pending } = step;
    const V = this.executor.limits.vocabSize;
    let row = 0;
    const numDecode = out.scheduled.filter((e) => e.kind === 'decode').length;
    out.scheduled.forEach((e, i) => {
      const sampleRow = e.sample ? row++ : -1;
      const r = this.live.get(e.seq.seqId);
      if (!r || r.finished) return; // cancelled or timed out while the step ran: its pages are already free
      this.scheduler.commit(e);
      const seq = e.seq;
      if (e.kind === 'prefill') {
        const b = result.prefillKeyBlocks[i - numDecode]; // prefill entries follow the decode entries
        if (b) {
          r.prefillBlocksTotal += b.total;
          r.prefillBlocksKept += b.kept;
          this.totals.blocksTotal += b.total;
          this.totals.blocksKept += b.kept;
        }
      }
      if (sampleRow < 0) {
        if (r.output.length === 0 && seq.numComputed < seq.promptLen) {
          r.emit({ type: 'progress', promptTokensDone: seq.numComputed, promptTokens: seq.promptLen });
        }
        return;
      }
      if (!r.promptCounted) {
        r.promptCounted = true;
        this.totals.promptTokens += seq.promptLen;
      }
      if (e.kind === 'decode') {
        const attended = result.tokensAttended[i]; // decode entries come first: entry i is decode entry i
        const context = e.start + 1; // a dense step reads positions 0..start
        r.decodeSteps++;
        r.attendedSum += attended;
        r.denseSum += context;
        if (attended < context) r.sparseSteps++;
        this.totals.attended += attended;
        this.totals.dense += context;
      }
      const lr = result.logitsRow[sampleRow];
      const rowLogits = lr >= 0 ? result.logits.subarray(lr * V, (lr + 1) * V) : null;
      let id = chosen.get(seq.seqId) ?? result.tokens[sampleRow];
      if (id < 0) {
        // the executor left this row to the host (a host-side rule): the same rule and draw, on the raw logits
        const spec = input.entries[i].sampling;
        if (!rowLogits || !spec) throw new SiftError('INTERNAL', `step ${this.steps}: row ${sampleRow} has no token`);
        id = r.sampler.sampleWith(rowLogits, spec);
      }
      const at = pending.get(seq.seqId);
      if (r.stop.has(id)) {
        if (at !== undefined) seq.tokens.splice(at, 1); // the placeholder of a token that is not kept
        this.finish(r, 'stop');
        return;
      }
      r.sampler.accept(id);
      r.output.push(id);
      if (at !== undefined) seq.tokens[at] = id;
      else seq.tokens.push(id);
      this.totals.generationTokens++;
      r.firstTokenAt ??= performance.now();
      if (r.req.topLogprobs !== undefined) {
        if (!rowLogits) throw new SiftError('INTERNAL', `step ${this.steps}: logprobs asked but no logits returned`);
        const lp = tokenLogprobs(rowLogits, id, r.req.topLogprobs);
        r.emit({ type: 'token', id, logprob: lp.logprob, topLogprobs: lp.top });
      } else {
        r.emit({ type: 'token', id });
      }
      if (seq.tokens.length >= r.maxLen) this.finish(r, 'length');
    });
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
        kind: e.kind,
      })),
      preempted: out.preempted.map((s) => idOf(s.seqId)),
    };
  }

  /** The attention mode a request is served with: its own, else the executor's default. */
  private modeOf(req: GenerationRequest): AttentionUsage['mode'] {
    return req.attention?.mode ?? this.executor.attention.mode;
  }

  /** A sampling entry's spec this step: its sampler's draw and bias; logits back when the request wants logprobs. */
  private samplingOf(seq: SeqState): SampleSpec {
    const r = this.live.get(seq.seqId);
    if (!r) throw new SiftError('INTERNAL', `sequence ${seq.seqId} is scheduled but not live`);
    const spec = r.sampler.nextStep();
    if (r.req.constraint) spec.onHost = true; // its mask is applied on the host (sampleConstrained)
    if (r.req.topLogprobs !== undefined) spec.returnLogits = true;
    return spec;
  }

  /** A decoding sequence's token budget: Infinity (every page) in dense mode, else its request's or the default. */
  private tokenBudgetOf(seq: SeqState): number {
    const a: AttentionRequest | undefined = this.live.get(seq.seqId)?.req.attention;
    const mode = a?.mode ?? this.executor.attention.mode;
    return mode === 'dense' ? Number.POSITIVE_INFINITY : (a?.tokenBudget ?? this.executor.attention.tokenBudget);
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
    this.executor.release(r.seq.seqId);
    r.req.constraint?.dispose();
    r.end(reason, this.modeOf(r.req), error);
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
    let step: Launched | null = null;
    while (!this.stopped) {
      if (!step) {
        if (!this.scheduler.hasWork) {
          await this.idle(0);
          continue;
        }
        try {
          step = this.launch(this.schedule());
        } catch (e) {
          this.onStepError(e, null);
        }
        // Nothing fitted (cannot happen with an idle pool, kept as a guard): wait for a change, do not spin.
        if (!step) {
          if (this.scheduler.hasWork && !this.stopped) await this.idle(5);
          continue;
        }
      }
      // While the device runs `step`, the next one is scheduled and handed over, chained on its tokens.
      let next: Launched | null = null;
      try {
        next = this.chain(step);
      } catch (e) {
        this.onStepError(e, null); // the schedule failed: the KV bookkeeping may be inconsistent (ends everyone)
      }
      try {
        // The wait the host cannot avoid: the step's tokens decide what is emitted, stops and runs after it.
        const [result, masks] = await Promise.all([step.result, step.masks]);
        this.update(step, result, await this.sampleConstrained(step, result, masks));
      } catch (e) {
        this.onStepError(e, step);
        if (next) {
          // the chained step ran on this one's tokens: it fails with it
          await next.result.catch(() => {});
          this.onStepError(e, next);
          next = null;
        }
      }
      step = next;
    }
    if (step) await step.result.catch(() => {});
  }

  /** Ends the requests of a failed `step` (everyone when the device is lost or no step is known). */
  private onStepError(e: unknown, step: Launched | null): void {
    const lostError = this.executor.lostError();
    const deviceError = isSiftError(e, 'DEVICE_LOST') || isSiftError(e, 'DEVICE_FAULT') ? e : null;
    const fatal = deviceError ?? lostError;
    const err = e instanceof Error ? e : new SiftError('INTERNAL', `engine step failed: ${String(e)}`);
    const first = fatal !== null && this.deadError === null;
    if (fatal) {
      this.deadError = fatal;
      this.accepting = false;
    }
    // A device fault or a lost device ends everyone (nothing the GPU holds can be trusted any more); any other
    // failure ends the requests of the failed step (or everyone when the schedule itself failed, since the KV
    // bookkeeping may then be inconsistent).
    const victims =
      fatal || !step ? [...this.live.values()] : step.out.scheduled.flatMap((x) => this.live.get(x.seq.seqId) ?? []);
    for (const r of victims) this.finish(r, 'error', fatal ? (this.deadError ?? err) : err);
    if (first && this.deadError) this.opts.onDeviceFault?.(this.deadError);
  }
}
