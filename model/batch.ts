/**
 * The one place a ForwardBatch is assembled: a step's entries (model/executor.ts) flattened into the per-token
 * arrays and the block table the forward pass uploads. The engine core (through ModelRunner.execute), the warm-up,
 * ModelRunner's prefill / decode phases, the benchmarks and calibration all build their batches here.
 */
import { SiftError } from '../config/errors.js';
import { SKIP_SLOT } from '../shaders/kv_write_streaming.js';
import type { StepEntry } from './executor.js';
import type { ForwardBatch } from './forward.js';

export interface BatchShape {
  /** Block-table row length. */
  maxPagesPerSeq: number;
  /** Entries per streaming-table row (sink pages + ring pages); 0 when the model has no streaming heads. */
  streamingRowLength?: number;
}

/**
 * Flattens `entries` (row r = entry r): tokens, positions start.., the row of each token, the block table
 * (numSeqs, maxPagesPerSeq) with each entry's pages (unused columns 0), the last token of each sampling entry as a
 * logit row with its sampling spec (null: return its logits), and the streaming tables and slots (SKIP_SLOT for a
 * token the ring does not keep) when the entries carry them.
 */
export function buildForwardBatch(entries: readonly StepEntry[], shape: BatchShape): ForwardBatch {
  const M = shape.maxPagesPerSeq;
  const S = shape.streamingRowLength ?? 0;
  let T = 0;
  for (const e of entries) T += e.tokens.length;
  const tokens = new Uint32Array(T); // (T)
  const positions = new Uint32Array(T); // (T)
  const tokenSeq = new Uint32Array(T); // (T) block-table row
  const blockTable = new Uint32Array(entries.length * M); // (numSeqs, maxPagesPerSeq)
  const logitRows: number[] = [];
  const streaming = entries.some((e) => e.streaming)
    ? { table: new Uint32Array(entries.length * S), slots: new Uint32Array(T) } // (numSeqs, S), (T)
    : undefined;
  let t = 0;
  entries.forEach((e, row) => {
    const n = e.tokens.length;
    if (n < 1) throw new SiftError('INTERNAL', `forward batch: entry ${row} (${e.seqId}) has no tokens`);
    if (e.pages.length > M) {
      throw new SiftError('INTERNAL', `forward batch: entry ${row} has ${e.pages.length} pages > ${M} per sequence`);
    }
    blockTable.set(e.pages, row * M);
    if (streaming) {
      const st = e.streaming;
      if (!st) throw new SiftError('INTERNAL', `forward batch: entry ${row} lacks its streaming table`);
      if (st.sinkPages.length + st.ringPages.length !== S || st.slots.length !== n) {
        throw new SiftError('INTERNAL', `forward batch: entry ${row}'s streaming table or slots have the wrong size`);
      }
      streaming.table.set(st.sinkPages, row * S);
      streaming.table.set(st.ringPages, row * S + st.sinkPages.length);
      for (let i = 0; i < n; i++) streaming.slots[t + i] = st.slots[i] ?? SKIP_SLOT;
    }
    for (let i = 0; i < n; i++, t++) {
      tokens[t] = e.tokens[i];
      positions[t] = e.start + i;
      tokenSeq[t] = row;
    }
    if (e.sample) logitRows.push(t - 1);
  });
  return {
    tokens,
    positions,
    tokenSeq,
    blockTable,
    numSeqs: entries.length,
    logitRows: Uint32Array.from(logitRows),
    rows: entries.map((e) =>
      e.kind === 'decode'
        ? { kind: 'decode', seqId: e.seqId, tokenBudget: e.tokenBudget }
        : { kind: 'prefill', seqId: e.seqId },
    ),
    sampling: entries.filter((e) => e.sample).map((e) => e.sampling ?? null),
    chained: chainedTokens(entries),
    streaming,
  };
}

/** The decode entries whose token is the previous step's sampled one: (token index = row, source row) pairs. */
function chainedTokens(entries: readonly StepEntry[]): { token: number; row: number }[] | undefined {
  const out: { token: number; row: number }[] = [];
  entries.forEach((e, i) => {
    if (e.kind === 'decode' && e.chained) out.push({ token: i, row: e.chained.row }); // decode entry i holds token i
  });
  return out.length ? out : undefined;
}
