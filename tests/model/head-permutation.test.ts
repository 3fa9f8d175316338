/**
 * Head order by permutation: retrieval heads first, then streaming heads, by permuting q/k/v rows (+ biases) and
 * o_proj columns at upload. The permutation must be invisible when every head attends densely: the permuted model's
 * logits equal the original's (up to f32 summation order in o_proj).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { openCheckpoint } from '../../checkpoint/checkpoint.js';
import { SYNTHETIC_VARIANTS, writeSyntheticCheckpoint } from '../../checkpoint/synthetic.js';
import { modelWeightBytes } from '../../checkpoint/weight-bytes.js';
import { isSiftError } from '../../config/errors.js';
import { ForwardPass } from '../../model/forward.js';
import {
  headPermutation,
  isIdentityPermutation,
  permuteColumnBlocks,
  permuteRowBlocks,
  permuteTensor,
} from '../../model/head-permutation.js';
import type { HeadPlan } from '../../model/head-plan.js';
import { KvStorage } from '../../model/kv-storage.js';
import { destroyModel, uploadModel } from '../../model/weights.js';
import { assertClose } from '../helpers/compare.js';
import { assertNoGpuErrors, testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/rng.js';

const root = mkdtempSync(path.join(os.tmpdir(), 'sift-headperm-'));
after(() => rmSync(root, { recursive: true, force: true }));

test('permutations: retrieval heads first; q groups follow their KV head; rows and column blocks move whole', () => {
  const plan: HeadPlan = {
    retrieval: [
      [1, 3],
      [0, 1, 2, 3],
    ],
    streaming: [[0, 2], []],
  };
  const [p0, p1] = headPermutation(plan, { numLayers: 2, numHeads: 8, numKvHeads: 4 });
  assert.deepEqual(p0.kvOrder, [1, 3, 0, 2]);
  assert.deepEqual(p0.qOrder, [2, 3, 6, 7, 0, 1, 4, 5]);
  assert.deepEqual(p1.kvOrder, [0, 1, 2, 3]);
  const rows = Uint8Array.from([10, 11, 20, 21, 30, 31]);
  assert.deepEqual([...permuteRowBlocks(rows, [2, 0, 1])], [30, 31, 10, 11, 20, 21]);
  const cols = Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]); // 2 rows of 3 blocks of 2
  assert.deepEqual([...permuteColumnBlocks(cols, 2, [1, 2, 0])], [3, 4, 5, 6, 1, 2, 9, 10, 11, 12, 7, 8]);
  const other = Uint8Array.from([1, 2]);
  assert.equal(permuteTensor('model.layers.0.mlp.up_proj.weight', other, 1, [p0]), other);
  assert.throws(
    () => headPermutation({ retrieval: [[0]], streaming: [[0]] }, { numLayers: 1, numHeads: 2, numKvHeads: 2 }),
    /exactly once/,
  );
});

/** A plan that streams a subset of each layer's KV heads (some layers none, some all). */
function randomPlan(rng: Rng, layers: number, kvHeads: number): HeadPlan {
  const plan: HeadPlan = { retrieval: [], streaming: [] };
  // layer 0 streams head 0 only (a non-identity order for sure), layer 1 every head, the rest random
  plan.streaming.push([0]);
  plan.retrieval.push(Array.from({ length: kvHeads - 1 }, (_, h) => h + 1));
  for (let l = 1; l < layers; l++) {
    const order = Array.from({ length: kvHeads }, (_, h) => h).sort(() => rng.next() - 0.5);
    const s = l === 1 ? kvHeads : rng.int(0, kvHeads - 1);
    plan.streaming.push(order.slice(0, s).sort((a, b) => a - b));
    plan.retrieval.push(order.slice(s).sort((a, b) => a - b));
  }
  return plan;
}

for (const name of [
  'llama-f16-gqa4-sharded-llama3rope',
  'qwen2-f32-mha-tied-embed',
  'mistral-bf16-mha-linear-sharded',
]) {
  test(`permuted weights give the same logits on the dense path: ${name}`, async () => {
    const variant = SYNTHETIC_VARIANTS.find((v) => v.name === name)!;
    const gpu = await testGpu();
    const dir = path.join(root, name);
    writeSyntheticCheckpoint(dir, variant);
    const ckpt = openCheckpoint(dir);
    const c = ckpt.config;
    const rng = new Rng(variant.seed);
    const plan = randomPlan(rng, c.numLayers, c.numKvHeads);
    assert.ok(!isIdentityPermutation(headPermutation(plan, c)), 'the plan must move some head');
    const prompt = Array.from({ length: 19 }, () => rng.int(0, c.vocabSize - 1));
    const logits: Float32Array[] = [];
    for (const headPlan of [undefined, plan]) {
      const w = uploadModel(gpu, ckpt, { headPlan });
      assert.equal(w.headPlan, headPlan ?? null);
      const kv = new KvStorage(gpu, c, 4, 16); // dense: every head in the main pool
      const fwd = new ForwardPass(gpu, w, kv, { maxBatchTokens: 32, maxSeqs: 1, maxPagesPerSeq: 4, maxLogitRows: 32 });
      try {
        logits.push(
          await fwd.forward({
            tokens: Uint32Array.from(prompt),
            positions: Uint32Array.from(prompt, (_, i) => i),
            tokenSeq: new Uint32Array(prompt.length),
            blockTable: Uint32Array.from([2, 0, 3, 1]),
            numSeqs: 1,
            logitRows: Uint32Array.from(prompt, (_, i) => i),
            rows: [{ kind: 'prefill', seqId: 0 }],
          }),
        );
      } finally {
        fwd.destroy();
        kv.destroy();
        destroyModel(w);
      }
    }
    ckpt.close();
    assertNoGpuErrors(gpu);
    assertClose(logits[1], logits[0], { atol: 1e-4, rtol: 1e-4 }, `${name} permuted vs original logits`);
  });
}

test('quantized weights (int8, q4 groups of 8) permute with their scales; logits equal; bytes as weight-bytes.ts says', async () => {
  const name = 'llama-f16-gqa4-sharded-llama3rope';
  const variant = SYNTHETIC_VARIANTS.find((v) => v.name === name)!;
  const gpu = await testGpu();
  const dir = path.join(root, `quant-${name}`);
  writeSyntheticCheckpoint(dir, variant);
  const ckpt = openCheckpoint(dir);
  const c = ckpt.config;
  const rng = new Rng(variant.seed + 1);
  const plan = randomPlan(rng, c.numLayers, c.numKvHeads);
  const prompt = Array.from({ length: 13 }, () => rng.int(0, c.vocabSize - 1));
  for (const quantize of [{ format: 'int8' }, { format: 'q4', group: 8 }] as const) {
    const logits: Float32Array[] = [];
    for (const headPlan of [undefined, plan]) {
      const w = uploadModel(gpu, ckpt, { headPlan, quantize });
      if (quantize.format === 'int8') assert.equal(w.bytes, modelWeightBytes(c, 'int8').total, 'int8 bytes');
      const kv = new KvStorage(gpu, c, 4, 16);
      const fwd = new ForwardPass(gpu, w, kv, { maxBatchTokens: 32, maxSeqs: 1, maxPagesPerSeq: 4, maxLogitRows: 32 });
      try {
        logits.push(
          await fwd.forward({
            tokens: Uint32Array.from(prompt),
            positions: Uint32Array.from(prompt, (_, i) => i),
            tokenSeq: new Uint32Array(prompt.length),
            blockTable: Uint32Array.from([2, 0, 3, 1]),
            numSeqs: 1,
            logitRows: Uint32Array.from(prompt, (_, i) => i),
            rows: [{ kind: 'prefill', seqId: 0 }],
          }),
        );
      } finally {
        fwd.destroy();
        kv.destroy();
        destroyModel(w);
      }
    }
    assertClose(logits[1], logits[0], { atol: 1e-4, rtol: 1e-4 }, `${quantize.format} permuted vs original logits`);
  }
  const q4 = uploadModel(gpu, ckpt, { quantize: { format: 'q4', group: 32 } });
  assert.equal(q4.bytes, modelWeightBytes(c, 'q4g32').total, 'q4 g32 bytes');
  destroyModel(q4);
  // Groups of 32 straddle this model's 8-wide heads: o_proj cannot be reordered by head.
  assert.throws(
    () => uploadModel(gpu, ckpt, { headPlan: plan, quantize: { format: 'q4', group: 32 } }),
    (e: unknown) => isSiftError(e, 'CHECKPOINT_UNSUPPORTED') && e.message.includes('o_proj'),
  );
  ckpt.close();
  assertNoGpuErrors(gpu);
});
