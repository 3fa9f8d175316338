/**
 * Sliding-window models on the GPU beyond the token budget: with the context longer than the budget, decode page
 * selection keeps the pages holding each layer's window (the local set) and the attention masks the rest, so a
 * window that fits the budget decodes exactly as the dense windowed reference, selections reused across steps
 * included; prefill runs in chunks across the window's edge.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { openCheckpoint } from '../../checkpoint/checkpoint.js';
import { type SyntheticOptions, writeSyntheticCheckpoint } from '../../checkpoint/synthetic.js';
import { engineConfig } from '../../config/engine.js';
import { ModelRunner } from '../../model/runner.js';
import { assertClose } from '../helpers/compare.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/rng.js';
import { ReferenceModel } from '../reference/forward.js';

const root = mkdtempSync(path.join(os.tmpdir(), 'sift-window-'));
after(() => rmSync(root, { recursive: true, force: true }));

// GPU f32 sums vs the f64 reference on the same f16 K/V (the reference rounds them as the cache stores them).
const TOL = { atol: 2e-3, rtol: 2e-3 };
const KV_F16 = { kvF16: true, contextLength: 256 };

const MISTRAL: SyntheticOptions = {
  architecture: 'MistralForCausalLM',
  dtype: 'f32',
  sharded: false,
  tie: 'untied',
  hidden: 48,
  layers: 2,
  heads: 4,
  kvHeads: 2,
  intermediate: 96,
  vocab: 120,
  slidingWindow: 21,
  seed: 41,
};

test('a window inside the token budget decodes exactly past the budget: the window pages are the local set', async () => {
  const dir = path.join(root, 'mistral');
  writeSyntheticCheckpoint(dir, MISTRAL);
  const gpu = await testGpu();
  const flags = { pageSize: 16, kvCacheMib: 4, maxBatchTokens: 32, maxSeqs: 2, maxContext: 256 };
  const runner = await ModelRunner.load(dir, engineConfig({ flags }), { gpu });
  const ckpt = openCheckpoint(dir);
  try {
    const rng = new Rng(3);
    const V = MISTRAL.vocab;
    // 75 prompt tokens in 3 chunks on scrambled pages; budget 64 tokens = 4 pages >= the 3 pages a 21-token window
    // can touch, while the context (75..95 tokens) needs 5-6 pages
    const table = new Uint32Array(runner.forwardPass.maxPagesPerSeq);
    table.set([9, 2, 7, 0, 5, 11, 3]);
    const prompt = Array.from({ length: 75 }, () => rng.int(0, V - 1));
    const ref = new ReferenceModel(ckpt, KV_F16);
    const want = ref.forward(prompt);
    assertClose(await runner.prefill('w', prompt, table), want.subarray(want.length - V), TOL, 'prefill');
    for (let s = 0; s < 20; s++) {
      const id = rng.int(0, V - 1);
      const got = await runner.decodeOneToken(id, prompt.length + s, table, 64, 'w');
      assertClose(got, ref.forward([id]), TOL, `decode step ${s} (selection reused 4 steps at a time)`);
    }
  } finally {
    ckpt.close();
    runner.destroy();
  }
});
