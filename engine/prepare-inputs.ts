/**
 * prepareInputs: the schedule of one step -> the executor's typed input (model/executor.ts). Per scheduled sequence,
 * in the schedule's row order (decodes first): its kind as the scheduler decided it, the new tokens and their first
 * position, its block table from the KV cache manager, whether it samples (and whether on the host, from the
 * logits row), a decode's token budget, and with
 * streaming heads its sink + ring pages and each new token's ring slot.
 */

import { SiftError } from '../config/errors.js';
import type { KvCacheManager } from '../kvcache/index.js';
import type { ExecuteInput, SampleSpec, StepEntry, StreamingEntry } from '../model/executor.js';
import type { ScheduleOutput, SeqState } from './scheduler.js';

/** What prepareInputs asks the core about a scheduled sequence's request. */
export interface EntryPolicy {
  /** A decoding sequence's token budget (its request's attention: Infinity for dense mode). */
  tokenBudgetOf(seq: SeqState): number;
  /** A sampling entry's SampleSpec for this step (its request's sampler draws the step's uniform number). */
  samplingOf(seq: SeqState): SampleSpec;
  /**
   * The previous step's sampling row of a sequence whose newest token is still PENDING_TOKEN (the step was
   * scheduled before that token came back: its decode entry chains on it, model/executor.ts DecodeEntry.chained).
   */
  chainedRow?(seq: SeqState): number | undefined;
}

/**
 * An entry needs its logits row back (`needsLogits`) when its spec samples on the host or returns the row (logprobs).
 * Streaming slots are judged at the end of the chunk being written (StreamingPool.slotFor with upTo = chunk end): a
 * token the ring recycles before then gets null, so a chunk longer than the ring never overwrites keys its own
 * earlier tokens still need.
 */
export function prepareInputs(out: ScheduleOutput, kv: KvCacheManager, policy: EntryPolicy): ExecuteInput {
  const entries = out.scheduled.map((e): StepEntry => {
    const seqId = e.seq.seqId;
    const end = e.start + e.numTokens;
    const tokens = e.seq.tokens.slice(e.start, end);
    let chained: { row: number } | undefined;
    if (tokens.includes(PENDING_TOKEN)) {
      const row = policy.chainedRow?.(e.seq);
      if (e.kind !== 'decode' || tokens.length !== 1 || row === undefined) {
        throw new SiftError(
          'INTERNAL',
          `sequence ${seqId}: a token not yet sampled is scheduled outside a chained decode`,
        );
      }
      chained = { row };
      tokens[0] = 0; // placeholder: the executor takes the token where it was sampled
    }
    const sampling = e.sample ? policy.samplingOf(e.seq) : undefined;
    const base = {
      seqId,
      start: e.start,
      tokens,
      pages: kv.blockTable(seqId),
      sample: e.sample,
      sampling,
      needsLogits: sampling !== undefined && (sampling.onHost === true || sampling.returnLogits === true),
      streaming: kv.streaming ? streamingEntry(kv, seqId, e.start, end) : undefined,
    };
    return e.kind === 'decode'
      ? { ...base, kind: 'decode', tokenBudget: policy.tokenBudgetOf(e.seq), ...(chained ? { chained } : {}) }
      : { ...base, kind: 'prefill' };
  });
  return { entries };
}

function streamingEntry(kv: KvCacheManager, seqId: number, start: number, end: number): StreamingEntry {
  const st = kv.streamingTable(seqId);
  const slots: (number | null)[] = [];
  for (let pos = start; pos < end; pos++) slots.push(kv.slotFor(seqId, pos, end)?.slot ?? null);
  return { sinkPages: st.sinkPages, ringPages: st.ringPages, slots };
}

/** A sequence's newest token while the step that samples it still runs (the next step was scheduled meanwhile). */
export const PENDING_TOKEN = -1;
