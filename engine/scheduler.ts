/**
 * The continuous-batching scheduler: pure bookkeeping over the KV cache manager (no GPU), so tests drive it alone.
 *
 * As in vLLM's v1 engine core there is no prefill or decode phase: every sequence has `tokens` (prompt + output so
 * far) of which `numComputed` have their K/V in the cache, and a step gives each scheduled sequence
 * `numTokens = min(tokens.length - numComputed, budget left)` new tokens. `schedule()` returns {sequence ->
 * numTokens} within `maxBatchTokens` tokens and `maxSeqs` sequences; the engine runs them in one step, then calls
 * `commit` for each. The scheduler also decides, once, each entry's kind (see model/executor.ts): a DECODE is the one
 * token left of a sequence whose prompt is computed (its newest sampled token); every other entry is a PREFILL chunk
 * (prompt tokens, or prompt + output recomputed after a preemption), whatever its length.
 *
 * Policy, in order, per step:
 *  1. Running sequences, decodes first, then the others (mid-prefill or recomputing), each in admission order: a decode never waits behind a long prefill, and a prefill chunk gets what the decodes left of the
 *     budget. Slots beyond those reserved come from `appendSlots`; when it returns null the NEWEST running sequence
 *     is preempted (pages freed, put back at the FRONT of the waiting queue to be recomputed from its tokens, vLLM's
 *     recompute preemption), repeatedly, down to the sequence being scheduled itself.
 *  2. If nothing was preempted this step, waiting sequences in FCFS order while the budget and `maxSeqs` allow:
 *     `allocate` (prefix-cache hits come back as numCachedTokens and are skipped) or stop at the first that does not
 *     fit (head-of-line: no request overtakes an older one).
 */
import { SiftError } from '../config/errors.js';
import type { KvCacheManager } from '../kvcache/index.js';
import type { StepEntry } from '../model/executor.js';

/** One sequence as the scheduler sees it. The engine owns `tokens` and appends each sampled token to it. */
export interface SeqState {
  /** KV cache sequence id (unique for the scheduler's lifetime). */
  readonly seqId: number;
  /** Prompt + output so far. The K/V of every token but possibly the last is computed before the next sample. */
  tokens: number[];
  readonly promptLen: number;
  /** Leading tokens whose K/V is in the cache (prefix hits included); 0 while waiting. */
  numComputed: number;
  /** Prefix-cache hits at the latest admission. */
  numCached: number;
  status: 'waiting' | 'running' | 'finished';
  /** Times this sequence was preempted. */
  preemptions: number;
}

export interface ScheduledSeq {
  seq: SeqState;
  /** Decided here, once: one new token past the prompt (decode) or a chunk of prompt / recomputed tokens. */
  kind: StepEntry['kind'];
  /** First position computed this step (== seq.numComputed when scheduled). */
  start: number;
  numTokens: number;
  /** True when this chunk reaches the end of `tokens`: its last row's logits give the next token. */
  sample: boolean;
}

export interface ScheduleOutput {
  /** Sequences of this step, in the order of their rows in the step: every decode before every prefill. */
  scheduled: ScheduledSeq[];
  numTokens: number;
  /** Sequences preempted this step (now at the front of the waiting queue). */
  preempted: SeqState[];
  /** Sequences admitted this step, with their prefix-cache hits in `numCached`. */
  admitted: SeqState[];
}

export interface SchedulerOptions {
  /** Most tokens per step (forward pass). */
  maxBatchTokens: number;
  /** Most running sequences. */
  maxSeqs: number;
  /** Most waiting sequences; `add` beyond it throws QUEUE_FULL. */
  maxWaiting: number;
}

export class Scheduler {
  /** FCFS queue; preempted sequences go back to its front. */
  readonly waiting: SeqState[] = [];
  /** Admission order (oldest first). */
  readonly running: SeqState[] = [];
  preemptions = 0;
  private nextSeqId = 0;

  constructor(
    readonly kv: KvCacheManager,
    readonly opts: SchedulerOptions,
  ) {
    for (const k of ['maxBatchTokens', 'maxSeqs', 'maxWaiting'] as const) {
      if (!Number.isInteger(opts[k]) || opts[k] < 1)
        throw new SiftError('CONFIG_INVALID', `scheduler: ${k} must be an integer >= 1`);
    }
  }

  /** A new sequence for `tokens` (the prompt), not yet queued. */
  newSeq(tokens: number[]): SeqState {
    return {
      seqId: this.nextSeqId++,
      tokens,
      promptLen: tokens.length,
      numComputed: 0,
      numCached: 0,
      status: 'waiting',
      preemptions: 0,
    };
  }

  /** Queues `seq`; throws QUEUE_FULL when `maxWaiting` sequences already wait. */
  add(seq: SeqState): void {
    if (this.waiting.length >= this.opts.maxWaiting) {
      throw new SiftError(
        'QUEUE_FULL',
        `the engine queue is full (${this.opts.maxWaiting} requests waiting); retry later`,
      );
    }
    seq.status = 'waiting';
    this.waiting.push(seq);
  }

  get hasWork(): boolean {
    return this.waiting.length > 0 || this.running.length > 0;
  }

  schedule(): ScheduleOutput {
    let budget = this.opts.maxBatchTokens;
    const scheduled: ScheduledSeq[] = [];
    const preempted: SeqState[] = [];
    const admitted: SeqState[] = [];

    // 1. running: decodes first, then prefill chunks, each in admission order.
    const order = [...this.running.filter(isDecode), ...this.running.filter((s) => !isDecode(s))];
    for (const seq of order) {
      if (budget === 0) break;
      if (seq.status !== 'running') continue; // preempted earlier in this loop
      const left = seq.tokens.length - seq.numComputed;
      if (left <= 0) continue;
      const n = Math.min(left, budget);
      const grow = seq.numComputed + n - this.kv.numReserved(seq.seqId);
      let ok = true;
      if (grow > 0) {
        for (;;) {
          if (this.kv.appendSlots(seq.seqId, grow)) break;
          const victim = this.running[this.running.length - 1];
          this.preempt(victim);
          preempted.push(victim);
          // (decodes are visited oldest first, so the newest is never one scheduled already; stay safe anyway)
          const done = scheduled.findIndex((e) => e.seq === victim);
          if (done >= 0) budget += scheduled.splice(done, 1)[0].numTokens;
          if (victim === seq) {
            ok = false;
            break;
          }
        }
      }
      if (!ok) continue;
      scheduled.push({
        seq,
        kind: isDecode(seq) ? 'decode' : 'prefill',
        start: seq.numComputed,
        numTokens: n,
        sample: n === left,
      });
      budget -= n;
    }

    // 2. waiting, FCFS, only when nobody had to give pages back this step.
    if (preempted.length === 0) {
      while (this.waiting.length > 0 && budget > 0 && this.running.length < this.opts.maxSeqs) {
        const seq = this.waiting[0];
        const r = this.kv.allocate(seq.seqId, seq.tokens);
        if (!r) break;
        this.waiting.shift();
        seq.status = 'running';
        seq.numCached = r.numCachedTokens;
        seq.numComputed = r.numCachedTokens;
        this.running.push(seq);
        admitted.push(seq);
        const left = seq.tokens.length - seq.numComputed;
        const n = Math.min(left, budget);
        scheduled.push({ seq, kind: 'prefill', start: seq.numComputed, numTokens: n, sample: n === left });
        budget -= n;
      }
    }
    return { scheduled, numTokens: this.opts.maxBatchTokens - budget, preempted, admitted };
  }

  /** Records that the forward pass wrote the K/V of `entry` (commits its tokens to the KV cache manager). */
  commit(entry: ScheduledSeq): void {
    const { seq, start, numTokens } = entry;
    if (seq.status !== 'running' || seq.numComputed !== start) return; // finished or preempted meanwhile
    this.kv.commitTokens(seq.seqId, seq.tokens.slice(start, start + numTokens));
    seq.numComputed = start + numTokens;
  }

  /** Removes `seq` wherever it is (finished, cancelled, failed) and frees its pages at once. */
  finish(seq: SeqState): void {
    if (seq.status === 'finished') return;
    if (seq.status === 'running') {
      this.running.splice(this.running.indexOf(seq), 1);
      this.kv.free(seq.seqId);
    } else {
      const i = this.waiting.indexOf(seq);
      if (i >= 0) this.waiting.splice(i, 1);
    }
    seq.status = 'finished';
  }

  /** Recompute preemption: drop the pages, keep the tokens, queue at the front. */
  private preempt(seq: SeqState): void {
    this.running.splice(this.running.indexOf(seq), 1);
    this.kv.free(seq.seqId);
    seq.numComputed = 0;
    seq.numCached = 0;
    seq.status = 'waiting';
    seq.preemptions++;
    this.preemptions++;
    this.waiting.unshift(seq);
  }
}

/** A decode: the one token left of a sequence whose prompt is computed (the token it sampled last). */
function isDecode(seq: SeqState): boolean {
  return seq.numComputed >= seq.promptLen && seq.tokens.length - seq.numComputed === 1;
}
