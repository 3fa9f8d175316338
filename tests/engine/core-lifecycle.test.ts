/**
 * The engine core's edges, over the CPU executor (no GPU): submit-time errors (context length, vocabulary, queue
 * bound), the context cap on completions, stop ids, timeouts, shutdown with and without grace. A lost GPU device:
 * tests/engine/core-gpu.test.ts.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { isSiftError } from '../../config/errors.js';
import { checkpointDir, collect, greedy, makeCore, Rng, randomPrompt } from './core-helpers.js';

let dir = '';
let cleanup = () => {};
before(() => {
  ({ dir, cleanup } = checkpointDir());
});
after(() => cleanup());

const code =
  (c: Parameters<typeof isSiftError>[1], param?: string) =>
  (e: unknown): boolean =>
    isSiftError(e, c) && (param === undefined || e.param === param);

test('submit rejects what cannot be served: context length, vocabulary, arguments, a full queue', async () => {
  const rng = new Rng(21);
  const core = makeCore(dir, { maxContext: 64 }, { maxWaiting: 2 });
  try {
    assert.equal(core.maxContext, 64);
    const ctx = 'CONTEXT_LENGTH_EXCEEDED';
    assert.throws(() => core.submit(greedy('a', randomPrompt(rng, 64), 4)), code(ctx, 'promptIds'));
    assert.throws(() => core.submit(greedy('a2', randomPrompt(rng, 60), 5)), code(ctx, 'maxTokens'));
    assert.throws(() => core.submit(greedy('b', [5, 256, 7], 4)), code('INVALID_ARGUMENT', 'promptIds[1]'));
    assert.throws(() => core.submit(greedy('c', [5, -1], 4)), code('INVALID_ARGUMENT', 'promptIds[1]'));
    assert.throws(() => core.submit(greedy('d', [], 4)), code('INVALID_ARGUMENT', 'promptIds'));
    assert.throws(() => core.submit(greedy('e', [5], 0)), code('INVALID_ARGUMENT', 'maxTokens'));
    assert.throws(() => core.submit(greedy('f', [5], 4, { presencePenalty: 3 })), code('INVALID_ARGUMENT'));
    assert.throws(() => core.submit(greedy('g', [5], 4, { topLogprobs: 21 })), code('INVALID_ARGUMENT', 'topLogprobs'));
    // the queue bound: submits in one tick all wait (the core has not stepped yet)
    const hs = [core.submit(greedy('q1', [5, 6], 2)), core.submit(greedy('q2', [5, 7], 2))];
    assert.throws(() => core.submit(greedy('q3', [5, 8], 2)), code('QUEUE_FULL'));
    assert.throws(() => core.submit(greedy('q1', [5, 8], 2)), code('INVALID_ARGUMENT'), 'duplicate live id');
    for (const h of hs) assert.equal((await collect(h)).done.finishReason, 'length');
  } finally {
    await core.shutdown(0);
  }
});

test('a KV cache smaller than the context: what cannot fit is refused at submit, what fits runs to its length', async () => {
  const rng = new Rng(25);
  // 8 pages of 16 = 128 KV tokens under a 256-token context (the issue's --kv-cache-mib 1 on stories15M)
  const core = makeCore(dir, { maxContext: 256, pageSize: 16 }, { numPages: 8 });
  try {
    assert.equal(core.maxContext, 256);
    assert.equal(core.kvCacheTokens, 128);
    const ctx = 'CONTEXT_LENGTH_EXCEEDED';
    const prompt = randomPrompt(rng, 100);
    let message = '';
    assert.throws(
      () => core.submit(greedy('big', prompt, 100)),
      (e: unknown) => {
        message = e instanceof Error ? e.message : '';
        return code(ctx, 'maxTokens')(e);
      },
    );
    assert.match(message, /KV cache of this server holds 128 tokens per request/);
    assert.match(message, /context of 256/);
    assert.throws(() => core.submit(greedy('p', randomPrompt(rng, 128), 1)), code(ctx, 'promptIds'));
    assert.throws(() => core.submit(greedy('one-over', prompt, 29)), code(ctx, 'maxTokens'));
    // Two that fit alone but not together: the second waits (or is preempted and recomputed); both run in full.
    const a = core.submit(greedy('a', prompt, 28));
    const b = core.submit(greedy('b', randomPrompt(rng, 100), 28));
    const [ra, rb] = await Promise.all([collect(a), collect(b)]);
    for (const r of [ra, rb]) {
      assert.equal(r.done.finishReason, 'length');
      assert.equal(r.tokens.length, 28);
    }
    assert.equal(core.stats().kvPagesUsed, 0);
  } finally {
    await core.shutdown(0);
  }
});

test('a completion may fill the context to its last position; stop ids end a request unemitted', async () => {
  const rng = new Rng(22);
  const core = makeCore(dir, { maxContext: 64 });
  try {
    const full = await collect(core.submit(greedy('full', randomPrompt(rng, 60), 4)));
    assert.equal(full.tokens.length, 4);
    assert.equal(full.done.finishReason, 'length');
    const prompt = randomPrompt(rng, 9);
    const free = await collect(core.submit(greedy('free', prompt, 8)));
    const stopAt = free.tokens[3];
    const first = free.tokens.indexOf(stopAt);
    const stopped = await collect(core.submit(greedy('stop', prompt, 8, { stopIds: [stopAt] })));
    assert.equal(stopped.done.finishReason, 'stop');
    assert.deepEqual(stopped.tokens, free.tokens.slice(0, first));
    assert.equal(stopped.done.usage.completionTokens, first);
  } finally {
    await core.shutdown(0);
  }
});

test('a request past its timeout ends with finish reason timeout and frees its pages', async () => {
  const rng = new Rng(23);
  const core = makeCore(dir, { stepDelayMs: 1 }); // 200 steps take >= 200 ms: the timeout comes first
  try {
    const slow = core.submit(greedy('slow', randomPrompt(rng, 8), 200, { timeoutMs: 30 }));
    const g = await collect(slow);
    assert.equal(g.done.finishReason, 'timeout');
    assert.ok(g.tokens.length < 200);
    assert.ok(g.done.timings.durationMs >= 29); // node timers may fire a fraction of a ms early
    assert.equal(core.stats().kvPagesUsed, 0);
  } finally {
    await core.shutdown(0);
  }
});

test('shutdown lets running requests finish within the grace, ends the rest with shutdown, then refuses submits', async () => {
  const rng = new Rng(24);
  // 240 steps take >= 9.6 s, far past the grace; 3 steps fit in it even on a loaded machine
  const core = makeCore(dir, { stepDelayMs: 40 });
  const short = core.submit(greedy('short', randomPrompt(rng, 4), 3));
  const long = core.submit(greedy('long', randomPrompt(rng, 4), 240));
  const runs = Promise.all([collect(short), collect(long)]);
  await core.shutdown(2000);
  const [s, l] = await runs;
  assert.equal(s.done.finishReason, 'length');
  assert.equal(l.done.finishReason, 'shutdown');
  assert.ok(l.tokens.length < 240);
  assert.throws(() => core.submit(greedy('late', [5], 2)), code('SHUTTING_DOWN'));
});
