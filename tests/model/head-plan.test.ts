/** Head-pattern TSV parsing (errors name file and line), the streaming-head choice, and agreement with kvcache/bytes.ts. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { headSplit, kvBytesPerToken } from '../../kvcache/bytes.js';
import {
  allRetrievalPlan,
  chooseHeadPlan,
  defaultStreamingFraction,
  headCounts,
  parseHeadPattern,
} from '../../model/head-plan.js';

const SHAPE = { numLayers: 3, numKvHeads: 4, numHeads: 8 };
const TSV = '# model=x sink=4 local=32\n0.9\t0.1\t0.5\t0.7\n\n0.2 0.3  0.8\t0.05\n# comment\n1 1 1 0\n';

test('parseHeadPattern skips # and blank lines and reads tab- or space-separated scores', () => {
  assert.deepEqual(parseHeadPattern(TSV, 'h.tsv', SHAPE), [
    [0.9, 0.1, 0.5, 0.7],
    [0.2, 0.3, 0.8, 0.05],
    [1, 1, 1, 0],
  ]);
});

test('parseHeadPattern errors name the file, the line and the problem', () => {
  assert.throws(
    () => parseHeadPattern('1 2 3 4\n1 2 3\n1 2 3 4\n', 'a.tsv', SHAPE),
    /a\.tsv:2: layer 1 has 3 scores; the model has 4 KV heads/,
  );
  assert.throws(
    () => parseHeadPattern('1 2 3 4\n1 x 3 4\n1 2 3 4\n', 'b.tsv', SHAPE),
    /b\.tsv:2: score 2 \("x"\) is not a finite number/,
  );
  assert.throws(() => parseHeadPattern('1 2 3 4\n', 'c.tsv', SHAPE), /c\.tsv: 1 layers of scores; the model has 3/);
  assert.throws(
    () => parseHeadPattern('1 2 3 4\n'.repeat(4), 'd.tsv', SHAPE),
    /d\.tsv:4: more layers than the model's 3/,
  );
  assert.throws(() => parseHeadPattern('1 2 3 4\n1 2 3 NaN\n1 2 3 4\n', 'e.tsv', SHAPE), /e\.tsv:2/);
});

test('global choice streams the lowest-scoring fraction across layers; per-layer the same count per layer', () => {
  const scores = parseHeadPattern(TSV, 'h.tsv', SHAPE);
  const g = chooseHeadPlan(scores, SHAPE, { streamingFraction: 0.25 }); // 3 of 12: 0.0, 0.05, 0.1
  assert.deepEqual(g.streaming, [[1], [3], [3]]);
  assert.deepEqual(g.retrieval, [
    [0, 2, 3],
    [0, 1, 2],
    [0, 1, 2],
  ]);
  const p = chooseHeadPlan(scores, SHAPE, { streamingFraction: 0.5, scope: 'per-layer' });
  assert.deepEqual(p.streaming, [
    [1, 2],
    [0, 3],
    [0, 3],
  ]); // ties (layer 2: 1 1 1) rank the earlier head lower
  assert.deepEqual(headCounts(p).retrieval, [2, 2, 2]);
  assert.equal(defaultStreamingFraction(SHAPE), 0.5);
  assert.equal(defaultStreamingFraction({ ...SHAPE, numHeads: 4 }), 0.25);
  assert.equal(chooseHeadPlan(scores, SHAPE).streaming.flat().length, 6); // GQA default 0.5
  assert.deepEqual(allRetrievalPlan(SHAPE).retrieval, [
    [0, 1, 2, 3],
    [0, 1, 2, 3],
    [0, 1, 2, 3],
  ]);
  assert.throws(() => chooseHeadPlan(scores, SHAPE, { streamingFraction: 1.5 }), /streamingFraction/);
});

test('a global plan streams exactly the heads kvcache/bytes.ts accounts for', () => {
  for (const f of [0, 0.25, 0.3, 0.5, 0.77, 1]) {
    const shape = { numLayers: 5, numKvHeads: 6, numHeads: 6 };
    const scores = Array.from({ length: 5 }, (_, l) => Array.from({ length: 6 }, (_, h) => Math.sin(l * 7 + h * 3)));
    const plan = chooseHeadPlan(scores, shape, { streamingFraction: f });
    const split = headSplit({ numLayers: 5, numKvHeads: 6, headDim: 8, bytesPerElement: 2, streamingFraction: f });
    assert.equal(plan.streaming.flat().length, split.streaming, `fraction ${f}`);
    assert.equal(
      2 * plan.retrieval.flat().length * 8 * 2,
      kvBytesPerToken({ numLayers: 5, numKvHeads: 6, headDim: 8, bytesPerElement: 2, streamingFraction: f }),
    );
  }
});
