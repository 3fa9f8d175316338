/** Bench statistics and quality metrics: medians and spreads, KL on known distributions, agreement. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { storyDocument, textDocuments } from '../../bench/agreement.js';
import { interpolatedSum, sampleChunks, topBlocksFor } from '../../bench/attention.js';
import {
  agreement,
  argmaxOf,
  klDivergence,
  logSoftmax,
  mapStat,
  mdTable,
  poolAgreement,
  relSpread,
  stat,
} from '../../bench/stats.js';

test('stat: median of odd and even counts, min, max, n; unsorted input left alone', () => {
  const xs = [5, 1, 3];
  assert.deepEqual(stat(xs), { median: 3, min: 1, max: 5, n: 3 });
  assert.deepEqual(xs, [5, 1, 3]);
  assert.deepEqual(stat([4, 1, 3, 2]), { median: 2.5, min: 1, max: 4, n: 4 });
  assert.deepEqual(stat([7]), { median: 7, min: 7, max: 7, n: 1 });
  assert.throws(() => stat([]));
});

test('relSpread and mapStat (a decreasing map swaps min and max)', () => {
  const s = stat([10, 20, 30]);
  assert.equal(relSpread(s), 1);
  assert.equal(relSpread(stat([3])), 0);
  const perS = mapStat(s, (ms) => 1000 / ms);
  assert.equal(perS.median, 50);
  assert.equal(perS.min, 1000 / 30);
  assert.equal(perS.max, 100);
});

test('logSoftmax sums to one and is shift invariant', () => {
  const a = logSoftmax([1, 2, 3]);
  const b = logSoftmax([101, 102, 103]);
  assert.ok(Math.abs(a.reduce((s, x) => s + Math.exp(x), 0) - 1) < 1e-12);
  for (let i = 0; i < 3; i++) assert.ok(Math.abs(a[i] - b[i]) < 1e-9);
});

test('klDivergence on known distributions', () => {
  // identical -> 0; logits are log-probabilities up to a constant
  assert.equal(klDivergence([0.3, -1, 2], [0.3, -1, 2]), 0);
  assert.ok(klDivergence([0, 0], [5, 5]) < 1e-15);
  // P = (1/2, 1/2), Q = (1/4, 3/4): KL = 0.5 ln 2 + 0.5 ln(2/3)
  const kl = klDivergence([Math.log(0.5), Math.log(0.5)], [Math.log(0.25), Math.log(0.75)]);
  assert.ok(Math.abs(kl - (0.5 * Math.log(2) + 0.5 * Math.log(2 / 3))) < 1e-12);
  // asymmetric: KL(Q || P) differs
  const rev = klDivergence([Math.log(0.25), Math.log(0.75)], [Math.log(0.5), Math.log(0.5)]);
  assert.ok(Math.abs(rev - (0.25 * Math.log(0.5) + 0.75 * Math.log(1.5))) < 1e-12);
  assert.notEqual(kl.toFixed(6), rev.toFixed(6));
  assert.throws(() => klDivergence([1, 2], [1, 2, 3]));
});

test('agreement: identical logits give share 1 and KL 0; a flipped argmax counts', () => {
  const rows = [new Float32Array([0.1, 2, -1]), new Float32Array([3, 0, 0]), new Float32Array([0, 0, 1])];
  assert.deepEqual(agreement(rows, rows), { steps: 3, tokenMatch: 1, meanKl: 0, maxKl: 0 });
  const other = [rows[0], new Float32Array([0, 3, 0]), rows[2]];
  const a = agreement(rows, other);
  assert.equal(a.tokenMatch, (1 / 3) * 2);
  assert.ok(a.meanKl > 0 && a.maxKl >= a.meanKl);
  assert.equal(argmaxOf([1, 5, 5]), 1);
  const pooled = poolAgreement([a, agreement(rows, rows)]);
  assert.equal(pooled.steps, 6);
  assert.ok(Math.abs(pooled.tokenMatch - 5 / 6) < 1e-12);
  assert.equal(pooled.maxKl, a.maxKl);
});

test('prefill sampling: chunk choice and interpolation', () => {
  assert.deepEqual(sampleChunks(8, 0), [0, 1, 2, 3, 4, 5, 6, 7]);
  assert.deepEqual(sampleChunks(8, 3), [0, 4, 7]);
  assert.deepEqual(sampleChunks(2, 5), [0, 1]);
  // linear per-chunk time c + 1 is recovered exactly from samples at 0, 4, 7
  assert.equal(interpolatedSum(8, [0, 4, 7], [1, 5, 8]), 36);
  const { top, kept } = topBlocksFor(4096, 1 / 8);
  assert.ok(top > 0 && Math.abs(kept - 1 / 8) < 0.03);
});

test('documents: story concatenation and text windows', () => {
  const doc = storyDocument(
    [
      [5, 6, 7],
      [8, 9],
    ],
    12,
    3,
  );
  assert.equal(doc.length, 12);
  assert.equal(doc[0], 1);
  assert.deepEqual(
    storyDocument(
      [
        [5, 6, 7],
        [8, 9],
      ],
      12,
      3,
    ),
    doc,
  );
  const w = textDocuments([10, 11, 12, 13, 14, 15], 4, 2);
  assert.deepEqual(w, [
    [1, 10, 11, 12],
    [1, 11, 12, 13],
  ]);
  assert.ok(mdTable(['a', 'b'], [[1, 2]]).includes('| 1 | 2 |'));
});
