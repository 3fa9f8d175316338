/**
 * Model-level steps the bench suites drive through ModelRunner: prefill one sequence into its own block-table
 * row (in chunks of maxBatchTokens) and decode one token for each of B sequences in one step. Both go through the
 * runner's batch builder like the engine core's steps. Sequence ids are the bench's own, so every sequence gets its
 * own sparse-selection slot and schedule.
 */
import { SiftError } from '../config/errors.js';
import type { DecodeEntry } from '../model/executor.js';
import type { ModelRunner } from '../model/runner.js';

/** A block table of `rows` rows of maxPagesPerSeq columns with disjoint pages: `pagesPerRow` pages each. */
export function disjointTable(engine: ModelRunner, rows: number, pagesPerRow: number): Uint32Array {
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
export function tableRow(engine: ModelRunner, table: Uint32Array, row: number): Uint32Array {
  const M = engine.forwardPass.maxPagesPerSeq;
  return table.subarray(row * M, (row + 1) * M);
}

/** Prefills `ids` at positions start.. into the sequence with block-table row `rowTable`; the last token's logits. */
export async function prefillSeq(
  engine: ModelRunner,
  seqId: string | number,
  ids: readonly number[],
  rowTable: Uint32Array,
  start = 0,
): Promise<Float32Array> {
  if (ids.length === 0) throw new SiftError('INTERNAL', 'prefillSeq: no tokens');
  return engine.prefill(seqId, ids, rowTable, start);
}

/** One decode step of B sequences (row i of `table` holds seqIds[i]) in one step; logits (B, vocab). */
export async function decodeBatch(
  engine: ModelRunner,
  seqIds: readonly (string | number)[],
  tokens: readonly number[],
  positions: readonly number[],
  table: Uint32Array,
  tokenBudget: number,
): Promise<Float32Array> {
  const entries = seqIds.map(
    (seqId, i): DecodeEntry => ({
      kind: 'decode',
      seqId,
      start: positions[i],
      tokens: [tokens[i]],
      pages: tableRow(engine, table, i),
      sample: true,
      tokenBudget,
    }),
  );
  return (await engine.execute({ entries })).logits;
}

/** Deterministic pseudo-random token ids in [3, vocab). */
export function pseudoTokens(n: number, vocab: number, seed: number): number[] {
  return Array.from({ length: n }, (_, i) => 3 + ((i * 2654435761 + seed * 40503) % (vocab - 3)));
}
