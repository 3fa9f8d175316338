/**
 * The engine loop's edges on the GPU: submit-time errors (context length, vocabulary, queue bound), the context cap
 * on completions, stop ids, timeouts, shutdown with and without grace, and a lost GPU device.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { isSiftError } from '../../config/errors.js';
import { Gpu } from '../../shaders/runtime.js';
import { checkpointDir, collect, greedy, makeLoop, Rng, randomPrompt } from './loop-helpers.js';

let dir = '';
let cleanup = () => {};
before(() => {
  ({ dir, cleanup } = checkpointDir());
});
after(() => cleanup());

const code = (c: Parameters<typeof isSiftError>[1]) => (e: unknown) => isSiftError(e, c);

test('submit rejects what cannot be served: context length, vocabulary, arguments, a full queue', async () => {
  const rng = new Rng(21);
  const loop = await makeLoop(dir, { maxContext: 64 }, { maxWaiting: 2 });
  try {
    assert.equal(loop.maxContext, 64);
    assert.throws(() => loop.submit(greedy('a', randomPrompt(rng, 64), 4)), code('CONTEXT_LENGTH_EXCEEDED'));
    assert.throws(() => loop.submit(greedy('b', [5, 256, 7], 4)), code('INVALID_ARGUMENT'));
    assert.throws(() => loop.submit(greedy('c', [5, -1], 4)), code('INVALID_ARGUMENT'));
    assert.throws(() => loop.submit(greedy('d', [], 4)), code('INVALID_ARGUMENT'));
    assert.throws(() => loop.submit(greedy('e', [5], 0)), code('INVALID_ARGUMENT'));
    assert.throws(() => loop.submit(greedy('f', [5], 4, { presencePenalty: 3 })), code('INVALID_ARGUMENT'));
    assert.throws(() => loop.submit(greedy('g', [5], 4, { topLogprobs: 21 })), code('INVALID_ARGUMENT'));
    // the queue bound: submits in one tick all wait (the loop has not stepped yet)
    const hs = [loop.submit(greedy('q1', [5, 6], 2)), loop.submit(greedy('q2', [5, 7], 2))];
    assert.throws(() => loop.submit(greedy('q3', [5, 8], 2)), code('QUEUE_FULL'));
    assert.throws(() => loop.submit(greedy('q1', [5, 8], 2)), code('INVALID_ARGUMENT'), 'duplicate live id');
    for (const h of hs) assert.equal((await collect(h)).done.finishReason, 'length');
  } finally {
    await loop.shutdown(0);
  }
});

test('completions are capped at the context limit; stop ids end a request without being emitted', async () => {
  const rng = new Rng(22);
  const loop = await makeLoop(dir, { maxContext: 64 });
  try {
    const capped = await collect(loop.submit(greedy('cap', randomPrompt(rng, 60), 50)));
    assert.equal(capped.tokens.length, 4);
    assert.equal(capped.done.finishReason, 'length');
    const prompt = randomPrompt(rng, 9);
    const free = await collect(loop.submit(greedy('free', prompt, 8)));
    const stopAt = free.tokens[3];
    const first = free.tokens.indexOf(stopAt);
    const stopped = await collect(loop.submit(greedy('stop', prompt, 8, { stopIds: [stopAt] })));
    assert.equal(stopped.done.finishReason, 'stop');
    assert.deepEqual(stopped.tokens, free.tokens.slice(0, first));
    assert.equal(stopped.done.usage.completionTokens, first);
  } finally {
    await loop.shutdown(0);
  }
});

test('a request past its timeout ends with finish reason timeout and frees its pages', async () => {
  const rng = new Rng(23);
  const loop = await makeLoop(dir);
  try {
    const slow = loop.submit(greedy('slow', randomPrompt(rng, 8), 200, { timeoutMs: 30 }));
    const g = await collect(slow);
    assert.equal(g.done.finishReason, 'timeout');
    assert.ok(g.tokens.length < 200);
    assert.ok(g.done.timings.durationMs >= 30);
    assert.equal(loop.stats().kvPagesUsed, 0);
  } finally {
    await loop.shutdown(0);
  }
});

test('shutdown lets running requests finish within the grace, cancels the rest, then refuses submits', async () => {
  const rng = new Rng(24);
  const loop = await makeLoop(dir);
  const short = loop.submit(greedy('short', randomPrompt(rng, 4), 3));
  const long = loop.submit(greedy('long', randomPrompt(rng, 4), 240));
  const runs = Promise.all([collect(short), collect(long)]);
  await loop.shutdown(40);
  const [s, l] = await runs;
  assert.equal(s.done.finishReason, 'length');
  assert.equal(l.done.finishReason, 'cancelled');
  assert.throws(() => loop.submit(greedy('late', [5], 2)), code('NOT_READY'));
});

test('a lost GPU device ends live requests with an error and later submits throw DEVICE_LOST', async () => {
  const rng = new Rng(25);
  const gpu = await Gpu.create();
  const loop = await makeLoop(dir, { gpu });
  try {
    const h = loop.submit(greedy('doomed', randomPrompt(rng, 8), 200));
    let n = 0;
    const g = await collect(h, (ev) => {
      if (ev.type === 'token' && ++n === 2) gpu.device.destroy();
    });
    assert.equal(g.done.finishReason, 'error');
    assert.ok(isSiftError(g.done.error, 'DEVICE_LOST'), String(g.done.error));
    assert.throws(() => loop.submit(greedy('after', [5], 2)), code('DEVICE_LOST'));
  } finally {
    await loop.shutdown(0);
  }
});
