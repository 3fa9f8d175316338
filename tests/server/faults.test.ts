/**
 * A GPU fault through the whole server, on a real WebGPU device (the story-vocab model on the test adapter): a
 * validation error forced mid-generation answers the stream with an SSE error event (no finish_reason, no text
 * after it) and the non-streamed request with a 503, /health says 503 from then on, and exitAfterFault (what
 * sift serve calls on the fault) closes the server and exits with FAULT_EXIT_CODE for the supervisor.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { engineConfig } from '../../config/engine.js';
import { EngineCore } from '../../engine/core.js';
import { ModelRunner } from '../../model/runner.js';
import { buildApp } from '../../server/app.js';
import { exitAfterFault, FAULT_EXIT_CODE } from '../../server/server.js';
import { Gpu } from '../../shaders/runtime.js';
import { loadText } from '../../text/text.js';
import { CPU_MODEL, storyModelDir } from '../helpers/cpu-app.js';
import { cfg, parseSse } from './helpers.js';

test('a validation error mid-generation: SSE error event and 503, /health 503, exit for the supervisor', async () => {
  const dir = storyModelDir();
  const gpu = await Gpu.create();
  const runner = await ModelRunner.load(
    dir,
    engineConfig({
      flags: { pageSize: 16, kvCacheMib: 4, maxBatchTokens: 64, maxSeqs: 4, maxContext: 256, errorScopeInterval: 1 },
    }),
    { gpu },
  );
  let steps = 0;
  const faults: Error[] = [];
  const core: EngineCore = EngineCore.create(runner, {
    modelName: CPU_MODEL,
    onStep: () => {
      // the prefill and a few decode steps run clean; from the 6th step on every submit is invalid
      if (++steps === 6) runner.weights.layers[0].attnNorm.destroy();
    },
    onDeviceFault: (err) => faults.push(err),
  });
  const app = await buildApp({ engine: core, text: loadText(dir), config: cfg(), modelName: CPU_MODEL });
  try {
    const body = { model: CPU_MODEL, prompt: 'Once upon a time', max_tokens: 40, temperature: 0 };
    const [streamed, whole] = await Promise.all([
      app.inject({ method: 'POST', url: '/v1/completions', payload: { ...body, stream: true } }),
      app.inject({ method: 'POST', url: '/v1/completions', payload: body }),
    ]);
    assert.equal(streamed.statusCode, 200);
    const s = parseSse(streamed.body);
    assert.ok(s.done, 'the stream still ends with [DONE]');
    const last = s.events.at(-1) as { error?: { code: string; type: string; message: string } };
    assert.equal(last.error?.code, 'device_fault');
    assert.equal(last.error?.type, 'server_error');
    assert.doesNotMatch(String(last.error?.message), /destroyed|Buffer/, '5xx bodies hide internals');
    for (const e of s.events.slice(0, -1)) {
      assert.equal((e.choices as Array<{ finish_reason: string | null }>)[0].finish_reason, null, 'no finish');
    }
    assert.equal(whole.statusCode, 503);
    assert.equal(whole.json().error.code, 'device_fault');
    const h = await app.inject({ method: 'GET', url: '/health' });
    assert.equal(h.statusCode, 503);
    assert.equal(h.json().error.code, 'device_fault');
    // what sift serve does on the fault (cli/serve.ts), with the exit recorded instead of taken
    assert.equal(faults.length, 1);
    const exits: number[] = [];
    await exitAfterFault(app, core, faults[0], { graceMs: 2000, exit: (c) => exits.push(c) });
    assert.deepEqual(exits, [FAULT_EXIT_CODE]);
    await assert.rejects(app.inject({ method: 'GET', url: '/health' }), /closed/);
  } finally {
    await app.close();
    await core.shutdown(0);
    gpu.destroy();
  }
});
