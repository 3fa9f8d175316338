/**
 * The soak run, short: a few seconds of mixed streaming traffic with random client disconnects against the real
 * engine core (CPU executor, no GPU) behind a real port. No errors on the requests the client did not cut, every KV
 * page back once idle, and the report's figures read from the server's /metrics. The 30-minute run on stories15M
 * is recorded in bench/results/soak-*.md with its command.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { calibrate } from '../../loadtest/calibrate.js';
import { metricValue, runSoak, soakTable } from '../../loadtest/soak.js';
import { SseClient } from '../../loadtest/sse-client.js';
import { listen } from '../../server/server.js';
import { CPU_MODEL, cpuApp } from '../helpers/cpu-app.js';

test('metricValue reads unlabelled series only', () => {
  const text = '# HELP x\nsift:kv_cache_pages_used 3\nsift:kv_cache_pages_used_total 9\nfoo{a="b"} 2\n';
  assert.equal(metricValue(text, 'sift:kv_cache_pages_used'), 3);
  assert.equal(metricValue(text, 'foo'), null);
  assert.equal(metricValue(text, 'missing'), null);
});

test('soak smoke: mixed streams with 40% random disconnects, 0 errors, 0 leaked pages, RSS reported', async (t) => {
  const { app, core } = await cpuApp(t, { maxSeqs: 4 });
  const { url } = await listen(app, { host: '127.0.0.1', port: 0 });
  const client = new SseClient({ baseUrl: url, concurrency: 6, timeoutMs: 60_000 });
  t.after(() => client.close());
  // prompt tokens per word on this tokenizer (story words outside its vocab cost bytes)
  const calibration = await calibrate(client, {
    api: 'completions',
    model: CPU_MODEL,
    maxTokens: 1,
    longMaxTokens: 1,
    promptLens: [],
    attention: null,
    calibration: { overhead: 0, perWord: 1, measured: false },
    turns: 1,
    turnTokens: 1,
    conversations: 1,
  });
  assert.ok(calibration.measured);
  const r = await runSoak(
    client,
    url,
    {
      durationMs: 5000,
      warmupMs: 1000,
      concurrency: 6,
      disconnectShare: 0.4,
      promptLens: [20, 60, 120],
      minTokens: 4,
      maxTokens: 24,
      seed: 7,
      sampleMs: 500,
      idleTimeoutMs: 10_000,
    },
    { model: CPU_MODEL, attention: null, calibration },
  );
  const table = soakTable(r);
  assert.ok(r.requests.ok >= 5, table);
  assert.ok(r.requests.cutByClient >= 2, table);
  assert.equal(r.requests.errors, 0, `${table}\n${JSON.stringify(r.errorExamples)}`);
  assert.equal(r.requests.started, r.requests.ok + r.requests.cutByClient + r.requests.errors);
  assert.ok(r.wentIdle, table);
  assert.equal(r.leakedPages, 0, table);
  assert.equal(core.stats().kvPagesUsed, 0);
  assert.equal(core.stats().running + core.stats().waiting, 0);
  assert.ok(r.rss.afterWarmupBytes !== null && r.rss.afterWarmupBytes > 0, table);
  assert.ok(r.rss.endBytes !== null && r.rss.changePct !== null, table);
  assert.ok(r.samples.length >= 5);
  assert.deepEqual(
    Object.keys(r.finishReasons).filter((k) => k !== 'length' && k !== 'stop'),
    [],
  );
});
