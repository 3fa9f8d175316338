/**
 * The engine core over the GPU executor (ModelRunner): the CPU executor the other engine-core tests run on is a
 * faithful stand-in (same greedy tokens, same usage, through batching, chunked prefill, prefix-cache hits and
 * preemption on a small synthetic checkpoint; the GPU kernel variants: core-gpu-kernels.test.ts); the device
 * sampler gives the host rule's tokens for seeded
 * temperature / top-k / top-p sampling with penalties and logprobs; and a lost GPU device ends live requests with an
 * error.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { isSiftError } from '../../config/errors.js';
import type { GenerationRequest } from '../../engine/client.js';
import type { EngineCore } from '../../engine/core.js';
import { Gpu } from '../../shaders/runtime.js';
import { checkpointDir, collect, greedy, makeCore, makeGpuCore, Rng, randomPrompt } from './core-helpers.js';
import { checkStandIn } from './stand-in.js';

let dir = '';
let cleanup = () => {};
before(() => {
  ({ dir, cleanup } = checkpointDir());
});
after(() => cleanup());

test('the CPU executor gives the GPU executor greedy tokens and usage: batching, chunks, prefix hits, preemption', async () => {
  await checkStandIn(dir);
});

test('seeded sampling on the device gives the host rule tokens: temperature, top-k, top-p, penalties, logprobs', async () => {
  const rng = new Rng(44);
  const sampled = (id: string, seed: number, s: Partial<GenerationRequest['sampling']>, extra = {}) =>
    greedy(id, randomPrompt(rng, 5 + seed), 12, {
      sampling: { temperature: 1, topK: 0, topP: 1, seed, ...s },
      ...extra,
    });
  const reqs = [
    sampled('temperature', 1, { temperature: 0.8 }),
    sampled('top-k', 2, { topK: 5 }),
    sampled('top-p', 3, { topP: 0.9 }),
    sampled('both', 4, { topK: 20, topP: 0.7, temperature: 1.3 }),
    sampled('penalties', 5, { topP: 0.95 }, { presencePenalty: 1.5, frequencyPenalty: 0.5 }),
    sampled('logprobs', 6, { temperature: 0.7 }, { topLogprobs: 2 }),
  ];
  const run = async (core: EngineCore) => {
    try {
      return await Promise.all(reqs.map((r) => collect(core.submit(r))));
    } finally {
      await core.shutdown(0);
    }
  };
  const gpu = await run(await makeGpuCore(dir));
  const cpu = await run(makeCore(dir));
  for (const [i, g] of gpu.entries()) {
    assert.deepEqual(g.tokens, cpu[i].tokens, `${reqs[i].id}: device tokens == host tokens`);
    assert.equal(g.tokens.length, 12);
  }
  const lp = gpu[5].events.filter((e) => e.type === 'token');
  assert.ok(lp.every((e) => e.type === 'token' && e.logprob !== undefined && e.topLogprobs?.length === 2));
});

test('a lost GPU device ends live requests with an error and later submits throw DEVICE_LOST', async () => {
  const rng = new Rng(25);
  const gpu = await Gpu.create();
  const core = await makeGpuCore(dir, { gpu });
  try {
    const h = core.submit(greedy('doomed', randomPrompt(rng, 8), 200));
    let n = 0;
    const g = await collect(h, (ev) => {
      if (ev.type === 'token' && ++n === 2) gpu.device.destroy();
    });
    assert.equal(g.done.finishReason, 'error');
    assert.ok(isSiftError(g.done.error, 'DEVICE_LOST'), String(g.done.error));
    assert.throws(
      () => core.submit(greedy('after', [5], 2)),
      (e: unknown) => isSiftError(e, 'DEVICE_LOST'),
    );
  } finally {
    await core.shutdown(0);
  }
});
