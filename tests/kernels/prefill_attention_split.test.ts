/**
 * The register block of prefill_attention's 'lanes' layout split over 8 subgroup lanes per query row (each lane an
 * eighth of the head dim of the invocation's 4 rows, scores summed with subgroupShuffleXor): the layout CPU adapters
 * with subgroups take for large steps at head dim 128 (Llama-3-8B: 32 q / 8 KV heads, GQA 4). Against the
 * token-by-token references at head dim 128 with GQA, on shapes that are not tile multiples, NaN in every cache slot
 * no sequence owns: dense causal (also against the dense reference), block-sparse + Lambda + dense heads in one
 * dispatch with a head range and a 2-D grid, a sliding window with soft-capped scores, and K/V in slabs. The
 * streaming pool through this layout: streaming_attention.test.ts.
 */
// run-tests: timeout 900
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  LANES_BLOCK_MIN_PAIRS,
  LANES_SPLIT,
  LANES_SPLIT_MIN_HEAD_DIM,
  PrefillAttentionKernel,
} from '../../shaders/prefill_attention.js';
import { testGpu } from '../helpers/gpu.js';
import { LANES_SPLIT_BLOCK, runCase } from '../helpers/prefill-attention-case.js';

test("'lanes' splits the register block's rows over subgroup lanes at head dim 128 and keeps whole rows below", async () => {
  const gpu = await testGpu();
  assert.ok(gpu.caps.subgroups, `the test adapter (${gpu.caps.adapterName}) has no subgroups`);
  assert.ok(gpu.caps.subgroupMinSize >= LANES_SPLIT, `subgroups of ${gpu.caps.subgroupMinSize} lanes`);
  const lanes = new PrefillAttentionKernel(gpu, { variant: 'lanes' });
  const qb = lanes.rowsPerThread(64, LANES_BLOCK_MIN_PAIRS);
  assert.equal(LANES_SPLIT_MIN_HEAD_DIM, 128);
  assert.equal(lanes.split(128, 64, qb), LANES_SPLIT, 'head dim 128, large step: split');
  assert.equal(lanes.split(256, 64, qb), LANES_SPLIT);
  assert.equal(lanes.split(128, 64, 1), 1, 'small steps (one row per invocation): whole rows');
  assert.equal(lanes.split(64, 64, qb), 1, 'below LANES_SPLIT_MIN_HEAD_DIM: whole rows');
  assert.equal(lanes.split(48, 64, qb), 1);
  const forced = new PrefillAttentionKernel(gpu, { variant: 'lanes', split: 8 });
  assert.equal(forced.split(136, 64, 4), 4, 'halved until it divides headDim / 2');
  assert.equal(forced.split(18, 64, 4), 1);
  assert.equal(new PrefillAttentionKernel(gpu, { variant: 'workgroup' }).split(128, 64, 1), 4, 'the GPU layout stays');
  lanes.destroy();
  forced.destroy();
});

test('split register block, head dim 128, GQA 4: dense causal over two sequences equals both references', async () => {
  await runCase({
    seed: 80,
    group: 4,
    numKvHeads: 2,
    headDim: 128,
    pageSize: 64,
    seqs: [
      { ctx: 200, fresh: 130 },
      { ctx: 37, fresh: 65 },
    ],
    dense: true,
    layouts: [LANES_SPLIT_BLOCK],
  });
});

test('split register block, head dim 128: block-sparse, Lambda and dense heads in one dispatch, head range, 2-D grid', async () => {
  await runCase({
    seed: 81,
    group: 4,
    numKvHeads: 3,
    headDim: 128,
    pageSize: 32,
    blockSize: 32,
    seqs: [
      { ctx: 300, fresh: 97 },
      { ctx: 33, fresh: 1 },
    ],
    modes: [1, 2, 0],
    sink: 20,
    local: 50,
    extraHeads: 3,
    maxWorkgroupsPerDim: 7,
    maxKeyTile: 16,
    layouts: [LANES_SPLIT_BLOCK],
  });
});

test('split register block, head dim 128, GQA 8: sliding window and soft-cap in every mode; K/V in slabs', async () => {
  await runCase({
    seed: 82,
    group: 8,
    numKvHeads: 3,
    headDim: 128,
    pageSize: 32,
    blockSize: 16,
    seqs: [{ ctx: 150, fresh: 70 }],
    modes: [1, 2, 0],
    sink: 5,
    local: 30,
    window: 45,
    softcap: 2,
    layouts: [LANES_SPLIT_BLOCK],
  });
  await runCase({
    seed: 83,
    group: 4,
    numKvHeads: 2,
    headDim: 128,
    pageSize: 16,
    seqs: [{ ctx: 70, fresh: 50 }],
    dense: true,
    slabs: 3,
    layouts: [LANES_SPLIT_BLOCK],
  });
});
