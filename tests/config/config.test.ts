import assert from 'node:assert/strict';
import { test } from 'node:test';
import { attentionConfig } from '../../config/attention.js';
import { engineConfig } from '../../config/engine.js';
import { toEnvName, toFlagName } from '../../config/schema.js';

test('defaults < file < env < flags, frozen', () => {
  assert.equal(engineConfig().maxBatchTokens, 512);
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
  assert.throws(() => engineConfig({ file: { maxBatchTokenz: 1 } }), /unknown key ENGINE\.maxBatchTokenz/);
  assert.throws(() => engineConfig({ flags: { pageSize: '0' } }), /pageSize must be in \[1, 4096\]/);
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
  assert.throws(() => attentionConfig({ flags: { tokenBudget: '100' } }, 64), /at least two pages/);
});
