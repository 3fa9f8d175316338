import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  ATTENTION_SPEC,
  attentionConfig,
  MIN_PAGES_KEPT,
  minTokenBudget,
  tokenBudgetProblem,
} from '../../config/attention.js';
import { ENGINE_SPEC, engineConfig } from '../../config/engine.js';
import { knownEnvNames, unknownEnvWarnings } from '../../config/env.js';
import { isSiftError } from '../../config/errors.js';
import { describeSection, toEnvName, toFlagName } from '../../config/schema.js';
import { SERVER_SPEC } from '../../config/server.js';
import { checkRequest } from '../../engine/client.js';
import { pagesKept, tokensAttended } from '../../model/attention/budget.js';

test('defaults < file < env < flags, frozen', () => {
  assert.equal(engineConfig().maxBatchTokens, null, 'auto by default (model/chunk-size.ts)');
  assert.equal(engineConfig({ flags: { maxBatchTokens: 'auto' } }).maxBatchTokens, null);
  const c = engineConfig({
    file: { maxBatchTokens: 100, pageSize: 32 },
    env: { SIFT_ENGINE_MAX_BATCH_TOKENS: '200', SIFT_ENGINE_KV_CACHE_MIB: '7' },
    flags: { maxBatchTokens: '300' },
  });
  assert.equal(c.maxBatchTokens, 300);
  assert.equal(c.pageSize, 32);
  assert.ok(Object.isFrozen(c));
  assert.equal(toEnvName('ENGINE', 'maxBatchTokens'), 'SIFT_ENGINE_MAX_BATCH_TOKENS');
  assert.equal(toFlagName('kvCacheMib'), 'kv-cache-mib');
});

test('unknown keys, bad types and out-of-range values are errors that name the field', () => {
  assert.throws(() => engineConfig({ file: { maxBatchTokenz: 1 } }), /unknown key engine\.maxBatchTokenz/);
  assert.throws(() => engineConfig({ flags: { pageSize: '0' } }), /^SiftError: --page-size must be in \[1, 4096\]/);
  assert.throws(() => engineConfig({ flags: { pageSize: '1.5' } }), /must be an integer/);
  assert.throws(() => engineConfig({ env: { SIFT_ENGINE_PAGE_SIZE: 'x' } }), /SIFT_ENGINE_PAGE_SIZE.*must be a number/);
  assert.equal(engineConfig({ flags: { maxContext: 'null' } }).maxContext, null);
});

test('attention config: defaults, choices and cross-field checks', () => {
  const a = attentionConfig();
  assert.equal(a.tokenBudget, 4096);
  assert.equal(a.reuseInterval, 4);
  assert.equal(a.logicalPageSize, 16);
  assert.throws(() => attentionConfig({ flags: { mode: 'fast' } }), /must be one of dense, sparse/);
  assert.throws(() => attentionConfig({ flags: { logicalPageSize: '24' } }, 64), /must divide the page size/);
  assert.throws(() => attentionConfig({ flags: { tokenBudget: '100' } }, 64), /at least 128 tokens: 2 pages of 64/);
});

test('messages name the value where the user wrote it: flag, environment variable or config file key', () => {
  const msg = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      return (e as Error).message;
    }
    return 'no error';
  };
  // attention.mode's flag is --attention (not --mode), and the accepted values are listed
  assert.equal(
    msg(() => attentionConfig({ flags: { mode: 'medium' } })),
    '--attention must be one of dense, sparse (got "medium")',
  );
  assert.equal(
    msg(() => attentionConfig({ env: { SIFT_ATTENTION_MODE: 'medium' } })),
    'environment variable SIFT_ATTENTION_MODE must be one of dense, sparse (got "medium")',
  );
  assert.equal(
    msg(() => attentionConfig({ file: { mode: 'medium' }, fileName: 'c.json' })),
    'config file c.json: attention.mode must be one of dense, sparse (got "medium")',
  );
  // the cross-field budget check names the layer that set the budget
  assert.match(
    msg(() => attentionConfig({ env: { SIFT_ATTENTION_TOKEN_BUDGET: '64' } })),
    /^environment variable SIFT_ATTENTION_TOKEN_BUDGET must/,
  );
  assert.match(
    msg(() => attentionConfig({ file: { tokenBudget: 64 }, fileName: 'c.json' })),
    /^config file c\.json: attention\.tokenBudget must/,
  );
});

test('one token-budget rule: at least MIN_PAGES_KEPT pages, for the config and for a request alike', () => {
  assert.equal(MIN_PAGES_KEPT, 2);
  for (const pageSize of [16, 64]) {
    const min = minTokenBudget(pageSize);
    assert.equal(min, 2 * pageSize);
    assert.equal(attentionConfig({ flags: { tokenBudget: String(min) } }, pageSize).tokenBudget, min);
    assert.throws(() => attentionConfig({ flags: { tokenBudget: String(min - 1) } }, pageSize), /at least/);
    assert.equal(tokenBudgetProblem(min, pageSize), null);
    assert.match(tokenBudgetProblem(min - 1, pageSize) ?? '', new RegExp(`at least ${min} tokens`));
    // the budget rule never keeps fewer pages than the minimum budget holds
    assert.equal(pagesKept(10 * pageSize, min, pageSize), MIN_PAGES_KEPT);
    assert.equal(tokensAttended(10 * pageSize, min, pageSize), min);
  }
  // a request below the minimum is INVALID_ARGUMENT naming attention.tokenBudget (the server says attention.token_budget)
  const req = (tokenBudget: number) => ({
    id: 'r',
    promptIds: [1, 2, 3],
    maxTokens: 4,
    sampling: { temperature: 0, topK: 0, topP: 1, seed: null },
    stopIds: [],
    attention: { mode: 'sparse' as const, tokenBudget },
  });
  const limits = { maxContext: 256, vocabSize: 100, pageSize: 64 };
  for (const bad of [10, 64, 127, 128.5]) {
    assert.throws(
      () => checkRequest(req(bad), limits),
      (e: unknown) => isSiftError(e, 'INVALID_ARGUMENT') && e.param === 'attention.tokenBudget',
    );
  }
  checkRequest(req(128), limits);
});

test('help: each option once, its default once and in words, the budget rule stated', () => {
  for (const [name, spec] of [
    ['ENGINE', ENGINE_SPEC],
    ['ATTENTION', ATTENTION_SPEC],
    ['SERVER', SERVER_SPEC],
  ] as const) {
    const lines = describeSection(name, spec);
    for (const l of lines) {
      assert.equal(l.match(/\(default /g)?.length, 1, l);
      assert.doesNotMatch(l, /default (null|""|undefined)/, l);
    }
  }
  const help = describeSection('ATTENTION', ATTENTION_SPEC).join('\n');
  assert.match(help, /--attention .*one of dense, sparse/);
  assert.match(help, /--token-budget .*at least 2 pages/);
  assert.match(help, /--head-pattern .*prefix cache is off/);
});

test('unknown SIFT_* environment variables are warned about, with the closest known name', () => {
  const w = unknownEnvWarnings({
    SIFT_ATENTION_MODE: 'dense',
    SIFT_ADAPTER: 'x',
    SIFT_ENGINE_ADAPTER: 'y',
    SIFT_MODELS_DIR: '/tmp',
    PATH: '/bin',
  });
  assert.equal(w.length, 2, w.join('\n'));
  assert.match(w[0], /SIFT_ADAPTER is no longer read; use SIFT_ENGINE_ADAPTER/);
  assert.match(w[1], /unknown environment variable SIFT_ATENTION_MODE .*did you mean SIFT_ATTENTION_MODE\?/);
  assert.ok(knownEnvNames().includes('SIFT_SERVER_PORT'));
  assert.deepEqual(unknownEnvWarnings(Object.fromEntries(knownEnvNames().map((n) => [n, '1']))), []);
});
