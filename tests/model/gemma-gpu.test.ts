/**
 * Gemma 2 and Gemma 3 end to end on the GPU: greedy generation through the engine core (captured decode steps,
 * tokens sampled on the device from soft-capped logits) over a context several times the sliding window, against
 * the reference forward pass's greedy tokens and logits. (Every synthetic Gemma variant's prefill and decode logits:
 * tests/model/forward-gpu.test.ts; the kernels: tests/kernels.)
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { openCheckpoint } from '../../checkpoint/checkpoint.js';
import { SYNTHETIC_VARIANTS, writeSyntheticCheckpoint } from '../../checkpoint/synthetic.js';
import { engineConfig } from '../../config/engine.js';
import { EngineCore } from '../../engine/core.js';
import { argmax } from '../../engine/sampler.js';
import { ModelRunner } from '../../model/runner.js';
import { collect, greedy } from '../engine/core-helpers.js';
import { assertClose } from '../helpers/compare.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/rng.js';
import { ReferenceModel } from '../reference/forward.js';
import { KV_F16, TOL, tableFor } from './forward-check.js';

const root = mkdtempSync(path.join(os.tmpdir(), 'sift-gemma-gpu-'));
after(() => rmSync(root, { recursive: true, force: true }));

const NAMES = ['gemma2-f32-gqa-softcap-window', 'gemma3-f16-gqa-qknorm-local-rope'];
const FLAGS = { pageSize: 16, kvCacheMib: 4, maxBatchTokens: 32, maxSeqs: 4, maxContext: 256 };

for (const name of NAMES) {
  const variant = SYNTHETIC_VARIANTS.find((v) => v.name === name);
  if (!variant) throw new Error(`no synthetic variant ${name}`);

  test(`${name}: GPU greedy tokens through the engine core equal the reference's, past the window`, async () => {
    const dir = path.join(root, name);
    writeSyntheticCheckpoint(dir, variant);
    const gpu = await testGpu();
    const loop = EngineCore.create(await ModelRunner.load(dir, engineConfig({ flags: FLAGS }), { gpu }));
    const ckpt = openCheckpoint(dir);
    try {
      const rng = new Rng(variant.seed);
      const prompt = Array.from({ length: 9 }, () => rng.int(3, variant.vocab - 1));
      const N = 30; // 39 tokens: more than 5 windows of the variants' 6 / 7
      const res = await collect(loop.submit(greedy(name, prompt, N)));
      const ref = new ReferenceModel(ckpt, KV_F16);
      const want: number[] = [];
      let logits: Float32Array = ref.forward(prompt).slice(-variant.vocab); // the last prompt row
      for (let i = 0; i < N; i++) {
        want.push(argmax(logits));
        logits = ref.forward([want[i]]);
      }
      assert.deepEqual(res.tokens, want, 'GPU greedy tokens == reference greedy tokens');
    } finally {
      ckpt.close();
      await loop.shutdown(0);
    }
  });
}

test('Gemma 2 decode logits stay close to the reference over 40 steps (soft-capped, windowed, GeGLU)', async () => {
  const variant = SYNTHETIC_VARIANTS.find((v) => v.name === NAMES[0]);
  if (!variant) throw new Error(`no synthetic variant ${NAMES[0]}`);
  const dir = path.join(root, 'logits');
  writeSyntheticCheckpoint(dir, variant);
  const gpu = await testGpu();
  const runner = await ModelRunner.load(dir, engineConfig({ flags: FLAGS }), { gpu });
  const ckpt = openCheckpoint(dir);
  try {
    const rng = new Rng(5);
    const table = tableFor([3, 0, 2, 1], runner.forwardPass.maxPagesPerSeq);
    const prompt = Array.from({ length: 5 }, () => rng.int(0, variant.vocab - 1));
    const ref = new ReferenceModel(ckpt, KV_F16);
    assertClose(await runner.prefill(0, prompt, table), ref.forward(prompt).slice(-variant.vocab), TOL, 'prefill');
    const cap = variant.finalLogitSoftcap as number;
    for (let s = 0; s < 40; s++) {
      const id = rng.int(0, variant.vocab - 1);
      const got = await runner.decodeOneToken(id, prompt.length + s, table);
      assertClose(got, ref.forward([id]), TOL, `decode step ${s}`);
      assert.ok(
        got.every((x) => Math.abs(x) < cap),
        'logits inside the soft-cap',
      );
    }
  } finally {
    ckpt.close();
    runner.destroy();
  }
});
