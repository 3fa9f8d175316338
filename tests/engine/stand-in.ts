/** The CPU executor as the GPU executor's stand-in: the comparison shared by the core-gpu tests. */
import assert from 'node:assert/strict';
import type { EngineCore, StepRecord } from '../../engine/core.js';
import type { KernelChoice } from '../../model/forward.js';
import {
  type Collected,
  type CoreSetup,
  collect,
  greedy,
  makeCore,
  makeGpuCore,
  Rng,
  randomPrompt,
} from './core-helpers.js';

/** Submits `reqs` all at once (then a repeat of the third, for prefix-cache hits) and collects every request. */
async function serveAll(core: EngineCore, reqs: ReturnType<typeof greedy>[]): Promise<Collected[]> {
  try {
    const got = await Promise.all(reqs.map((r) => collect(core.submit(r))));
    got.push(await collect(core.submit({ ...reqs[2], id: 'repeat' })));
    assert.equal(core.stats().kvPagesUsed, 0);
    return got;
  } finally {
    await core.shutdown(0);
  }
}

/** CPU and GPU executors, same requests: same tokens, usage and schedule (kernels: the GPU executor's variants). */
export async function checkStandIn(dir: string, kernels?: KernelChoice): Promise<void> {
  const rng = new Rng(31);
  const lens = [1, 7, 40, 33, 90, 17];
  const reqs = lens.map((n, i) => greedy(`r${i}`, randomPrompt(rng, n), 10 + 3 * i));
  // chunks of 32 tokens; 14 pages of 16 tokens for prompts + completions of up to 115 tokens: some wait, some are
  // preempted and recomputed
  const setup: CoreSetup = { maxBatchTokens: 32 };
  const opts = { numPages: 14 };
  const stepsGpu: StepRecord[] = [];
  const stepsCpu: StepRecord[] = [];
  const gpu = await serveAll(
    await makeGpuCore(dir, { ...setup, kernels }, { ...opts, onStep: (s) => stepsGpu.push(s) }),
    reqs,
  );
  const cpu = await serveAll(makeCore(dir, setup, { ...opts, onStep: (s) => stepsCpu.push(s) }), reqs);
  for (const [i, g] of gpu.entries()) {
    const c = cpu[i];
    assert.deepEqual(c.tokens, g.tokens, `request ${i}: CPU tokens == GPU tokens`);
    assert.equal(c.done.finishReason, g.done.finishReason);
    assert.deepEqual(c.done.usage, g.done.usage, `request ${i} usage`);
    assert.equal(c.done.attention.meanTokensAttended, g.done.attention.meanTokensAttended);
  }
  assert.ok(gpu[gpu.length - 1].done.usage.cachedTokens > 0, 'the repeated prompt reused cached pages');
  assert.deepEqual(stepsCpu, stepsGpu, 'the same schedule, step by step');
  assert.ok(
    stepsGpu.some((s) => s.preempted.length > 0),
    'the load preempted',
  );
  assert.ok(
    stepsGpu.some((s) => s.entries.some((e) => e.kind === 'decode') && s.entries.some((e) => e.kind === 'prefill')),
  );
}
