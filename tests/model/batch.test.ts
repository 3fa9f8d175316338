/**
 * The one ForwardBatch builder (model/batch.ts) and the invariants the forward pass asserts on every batch
 * (decode rows first, one token each, token i of decode row i), without a GPU.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isSiftError } from '../../config/errors.js';
import { buildForwardBatch } from '../../model/batch.js';
import type { StepEntry } from '../../model/executor.js';
import { checkBatchRows } from '../../model/forward.js';
import { SKIP_SLOT } from '../../shaders/kv_write_streaming.js';

const internal = (e: unknown) => isSiftError(e, 'INTERNAL');

test('entries flatten into tokens, positions, rows, a block table and the sampling rows, decode rows first', () => {
  const entries: StepEntry[] = [
    { kind: 'decode', seqId: 7, start: 20, tokens: [11], pages: [4, 2], sample: true, tokenBudget: 64 },
    { kind: 'decode', seqId: 'x', start: 3, tokens: [12], pages: [9], sample: true, tokenBudget: Infinity },
    { kind: 'prefill', seqId: 8, start: 0, tokens: [1, 2, 3], pages: [5], sample: false },
    { kind: 'prefill', seqId: 9, start: 16, tokens: [4, 5], pages: [6, 1], sample: true },
  ];
  const b = buildForwardBatch(entries, { maxPagesPerSeq: 3 });
  assert.deepEqual(Array.from(b.tokens), [11, 12, 1, 2, 3, 4, 5]);
  assert.deepEqual(Array.from(b.positions), [20, 3, 0, 1, 2, 16, 17]);
  assert.deepEqual(Array.from(b.tokenSeq), [0, 1, 2, 2, 2, 3, 3]);
  assert.deepEqual(Array.from(b.blockTable), [4, 2, 0, 9, 0, 0, 5, 0, 0, 6, 1, 0]);
  assert.equal(b.numSeqs, 4);
  assert.deepEqual(Array.from(b.logitRows), [0, 1, 6], 'the last token of each sampling entry');
  assert.deepEqual(b.rows, [
    { kind: 'decode', seqId: 7, tokenBudget: 64 },
    { kind: 'decode', seqId: 'x', tokenBudget: Infinity },
    { kind: 'prefill', seqId: 8 },
    { kind: 'prefill', seqId: 9 },
  ]);
  assert.equal(b.streaming, undefined);
  checkBatchRows(b);
  assert.throws(() => buildForwardBatch(entries, { maxPagesPerSeq: 1 }), internal, 'pages past the row length');
});

test('streaming tables and slots: sink then ring pages per row, SKIP_SLOT where the ring does not keep a token', () => {
  const entries: StepEntry[] = [
    {
      kind: 'prefill',
      seqId: 1,
      start: 0,
      tokens: [1, 2, 3],
      pages: [0],
      sample: true,
      streaming: { sinkPages: [3], ringPages: [4, 5], slots: [12, null, 20] },
    },
  ];
  const b = buildForwardBatch(entries, { maxPagesPerSeq: 1, streamingRowLength: 3 });
  assert.deepEqual(Array.from(b.streaming?.table ?? []), [3, 4, 5]);
  assert.deepEqual(Array.from(b.streaming?.slots ?? []), [12, SKIP_SLOT, 20]);
  const bad = [{ ...entries[0], streaming: { sinkPages: [3], ringPages: [4], slots: [1, 2, 3] } }];
  assert.throws(() => buildForwardBatch(bad, { maxPagesPerSeq: 1, streamingRowLength: 3 }), internal);
});

test('the forward pass refuses a decode row after a prefill row, or holding other than exactly its one token', () => {
  const decode = (seqId: number, start: number, tokens: number[]): StepEntry => ({
    kind: 'decode',
    seqId,
    start,
    tokens,
    pages: [0],
    sample: true,
    tokenBudget: 64,
  });
  const prefill = (seqId: number): StepEntry => ({
    kind: 'prefill',
    seqId,
    start: 0,
    tokens: [1, 2],
    pages: [1],
    sample: true,
  });
  const shape = { maxPagesPerSeq: 1 };
  checkBatchRows(buildForwardBatch([decode(0, 5, [1]), prefill(1)], shape));
  assert.throws(() => checkBatchRows(buildForwardBatch([prefill(1), decode(0, 5, [1])], shape)), internal);
  assert.throws(() => checkBatchRows(buildForwardBatch([decode(0, 5, [1, 2]), prefill(1)], shape)), internal);
  // a hand-made batch whose decode row's token sits elsewhere
  const b = buildForwardBatch([decode(0, 5, [1]), prefill(1)], shape);
  b.tokenSeq.set([1, 0, 1]);
  assert.throws(() => checkBatchRows(b), internal);
});
