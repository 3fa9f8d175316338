/**
 * Model-level steps the bench suites drive through ForwardPass's public API: prefill one sequence into its own
 * block-table row (in chunks of maxBatchTokens) and decode one token for each of B sequences in one forward call.
 * Sequence ids are the bench's own, so every sequence gets its own sparse-selection slot and schedule.
 */
import { SiftError } from '../config/errors.js';
import type { Engine } from '../model/runner.js';

/** A block table of `rows` rows of maxPagesPerSeq columns with disjoint pages: `pagesPerRow` pages each. */
export function disjointTable(engine: Engine, rows: number, pagesPerRow: number): Uint32Array {
  const M = engine.forwardPass.maxPagesPerSeq;
  if (pagesPerRow > M) {
    throw new SiftError(
      'INVALID_ARGUMENT',
      `a sequence needs ${pagesPerRow} pages; the engine allows ${M} per sequence (raise --max-context)`,
    );
  }
  if (rows * pagesPerRow > engine.kv.numPages) {
    throw new SiftError(
      'INVALID_ARGUMENT',
      `${rows} sequences x ${pagesPerRow} pages exceed the KV cache's ${engine.kv.numPages} pages (raise --kv-cache-mib)`,
    );
  }
  const t = new Uint32Array(rows * M);
  for (let r = 0; r < rows; r++) for (let j = 0; j < M; j++) t[r * M + j] = r * pagesPerRow + (j < pagesPerRow ? j : 0);
  return t;
}

/** Row `row` of a block table. */
export function tableRow(engine: Engine, table: Uint32Array, row: number): Uint32Array {
  const M = engine.forwardPass.maxPagesPerSeq;
  return table.subarray(row * M, (row + 1) * M);
}

/** Prefills `ids` at positions start.. into the sequence with block-table row `rowTable`; the last token's logits. */
export async function prefillSeq(
  engine: Engine,
  seqId: string | number,
  ids: readonly number[],
  rowTable: Uint32Array,
  start = 0,
): Promise<Float32Array> {
  if (ids.length === 0) throw new SiftError('INTERNAL', 'prefillSeq: no tokens');
  return engine.prefill(ids, rowTable, start, seqId);
}

/** One decode step of B sequences (row i of `table` holds seqIds[i]) in one forward call; logits (B, vocab). */
export function decodeBatch(
  engine: Engine,
  seqIds: readonly (string | number)[],
  tokens: readonly number[],
  positions: readonly number[],
  table: Uint32Array,
  tokenBudget: number,
): Promise<Float32Array> {
  const B = seqIds.length;
  return engine.forwardPass.forward({
    tokens,
    positions,
    tokenSeq: Uint32Array.from({ length: B }, (_, i) => i),
    blockTable: table,
    numSeqs: B,
    logitRows: Array.from({ length: B }, (_, i) => i),
    decode: seqIds.map((seqId) => ({ seqId, tokenBudget })),
  });
}

/** Deterministic pseudo-random token ids in [3, vocab). */
export function pseudoTokens(n: number, vocab: number, seed: number): number[] {
  return Array.from({ length: n }, (_, i) => 3 + ((i * 2654435761 + seed * 40503) % (vocab - 3)));
}
