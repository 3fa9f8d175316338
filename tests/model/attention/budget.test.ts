/** The one token-budget rule (model/attention/budget.ts) on hand-worked cases. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isSiftError } from '../../../config/errors.js';
import { pagesKept, tokensAttended } from '../../../model/attention/budget.js';

test('pages kept: every page when the context fits the budget, else budget / pageSize whole pages, at least two', () => {
  // [contextLen, tokenBudget, pageSize, pages kept, tokens attended]
  const cases: [number, number, number, number, number][] = [
    [1, 4096, 64, 1, 1], // one token
    [1000, 1024, 64, 16, 1000], // fits: all 16 pages
    [1024, 1024, 64, 16, 1024], // exactly the budget: still dense
    [4096, 1024, 64, 16, 1024], // 64 pages, 16 kept, newest page full
    [4097, 1024, 64, 16, 961], // 65 pages: 15 full pages + the newest holding 1 token
    [101, 64, 16, 4, 53], // 7 pages: sink + 2 best + newest (5 tokens) = 3 * 16 + 5
    [101, 70, 16, 4, 53], // a budget between page multiples rounds down
    [300, 0, 16, 2, 28], // budget below two pages: sink + newest (12 tokens)
    [20, 16, 16, 2, 20], // 2 pages: both kept
    [100, Number.POSITIVE_INFINITY, 16, 7, 100], // dense
  ];
  for (const [ctx, budget, ps, keep, tokens] of cases) {
    assert.equal(pagesKept(ctx, budget, ps), keep, `pagesKept(${ctx}, ${budget}, ${ps})`);
    assert.equal(tokensAttended(ctx, budget, ps), tokens, `tokensAttended(${ctx}, ${budget}, ${ps})`);
  }
});

test('the rule rejects impossible arguments', () => {
  const internal = (e: unknown) => isSiftError(e, 'INTERNAL');
  assert.throws(() => pagesKept(0, 64, 16), internal);
  assert.throws(() => pagesKept(10, -1, 16), internal);
  assert.throws(() => pagesKept(10, Number.NaN, 16), internal);
  assert.throws(() => pagesKept(10, 64, 0), internal);
});
