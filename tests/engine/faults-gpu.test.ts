/**
 * GPU faults never turn into tokens, on a real WebGPU device: a validation error forced mid-stream (a weight buffer
 * destroyed, so Dawn drops every later submit and the read-back would return the previous step's logits) ends the
 * request with DEVICE_FAULT and no token after the fault, whether the error scopes run every step or only the
 * per-step uncaptured-error check does; the engine then refuses submits and reports the fault once. Storage buffers
 * beyond the adapter's binding limit are refused when created.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { isSiftError } from '../../config/errors.js';
import type { ModelRunner } from '../../model/runner.js';
import { BufferUsage, Gpu } from '../../shaders/runtime.js';
import { checkpointDir, collect, greedy, makeGpuCore, Rng, randomPrompt } from './core-helpers.js';

let dir = '';
let cleanup = () => {};
before(() => {
  ({ dir, cleanup } = checkpointDir());
});
after(() => cleanup());

for (const errorScopeInterval of [1, 0]) {
  const scopes = errorScopeInterval ? 'error scopes every step' : 'uncaptured errors only';
  test(`a validation error mid-stream ends the request with DEVICE_FAULT, no wrong token (${scopes})`, async () => {
    const rng = new Rng(61 + errorScopeInterval);
    const prompt = randomPrompt(rng, 9);
    const gpu = await Gpu.create();
    const faults: Error[] = [];
    const core = await makeGpuCore(dir, { gpu, errorScopeInterval }, { onDeviceFault: (e) => faults.push(e) });
    try {
      const clean = await collect(core.submit(greedy('clean', prompt, 12)));
      assert.equal(clean.tokens.length, 12);
      const runner = core.executor as ModelRunner;
      let n = 0;
      const faulted = await collect(core.submit(greedy('faulted', prompt, 12)), (ev) => {
        // after the 3rd token: every later step's submit is invalid
        if (ev.type === 'token' && ++n === 3) runner.weights.layers[0].attnNorm.destroy();
      });
      assert.equal(faulted.done.finishReason, 'error');
      assert.ok(isSiftError(faulted.done.error, 'DEVICE_FAULT'), String(faulted.done.error));
      assert.match(String(faulted.done.error?.message), /used in submit while destroyed/);
      // The engine may have run a step ahead of this reader when it destroyed the buffer: every token sent is the
      // clean run's (none computed from stale logits), and the request ended at the fault.
      assert.ok(faulted.tokens.length >= 3 && faulted.tokens.length < 12, `${faulted.tokens.length} tokens`);
      assert.deepEqual(faulted.tokens, clean.tokens.slice(0, faulted.tokens.length), 'only correct tokens');
      assert.throws(
        () => core.submit(greedy('after', [5], 2)),
        (e: unknown) => isSiftError(e, 'DEVICE_FAULT'),
      );
      assert.ok(isSiftError(core.deviceFault(), 'DEVICE_FAULT'));
      assert.equal(faults.length, 1, 'onDeviceFault called once');
      assert.equal(runner.faults.scopedSteps > 0, errorScopeInterval > 0);
    } finally {
      await core.shutdown(0);
    }
  });
}

test('a device destroyed mid-stream: DEVICE_LOST, reported once through onDeviceFault', async () => {
  const rng = new Rng(63);
  const gpu = await Gpu.create();
  const faults: Error[] = [];
  const core = await makeGpuCore(dir, { gpu }, { onDeviceFault: (e) => faults.push(e) });
  try {
    const prompt = randomPrompt(rng, 8);
    const clean = await collect(core.submit(greedy('clean', prompt, 50)));
    let n = 0;
    const g = await collect(core.submit(greedy('doomed', prompt, 50)), (ev) => {
      if (ev.type === 'token' && ++n === 2) gpu.device.destroy();
    });
    assert.equal(g.done.finishReason, 'error');
    // Steps chain: the step after the 2nd token's was submitted before the device was destroyed, and Dawn finishes
    // the work in flight before it destroys a device, so that step's token may still come; none after it does, and
    // every token sent is the clean run's.
    assert.ok(g.tokens.length === 2 || g.tokens.length === 3, `${g.tokens.length} tokens`);
    assert.deepEqual(g.tokens, clean.tokens.slice(0, g.tokens.length), 'only correct tokens');
    assert.ok(isSiftError(g.done.error, 'DEVICE_LOST'), String(g.done.error));
    assert.equal(faults.length, 1);
    assert.ok(isSiftError(core.deviceFault(), 'DEVICE_LOST'));
  } finally {
    await core.shutdown(0);
  }
});

test('storage buffers beyond maxStorageBufferBindingSize are refused with the limit named', async () => {
  const gpu = await Gpu.create();
  try {
    const limit = gpu.caps.maxStorageBufferBindingSize;
    assert.throws(
      () => gpu.createBuffer('too-big', limit + 16),
      (e: unknown) =>
        isSiftError(e, 'GPU_LIMIT') && /maxStorageBufferBindingSize/.test(e.message) && /too-big/.test(e.message),
    );
    gpu.createBuffer('at-limit', limit).destroy();
    if (limit + 16 <= gpu.caps.maxBufferSize) {
      // a buffer that is never bound as storage may be larger
      gpu.createBuffer('staging', limit + 16, BufferUsage.MAP_READ | BufferUsage.COPY_DST).destroy();
    }
    assert.deepEqual(gpu.takeErrors(), []);
  } finally {
    gpu.destroy();
  }
});
