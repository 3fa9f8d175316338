/**
 * The register block of prefill_attention's 'lanes' layout (4 query rows per invocation, vec4 head-dim loops: the
 * CPU adapters' layout for large steps) against the token-by-token references, on shapes that are not tile multiples
 * with NaN in every cache slot no sequence owns: dense causal over two sequences; block-sparse, Lambda and dense heads
 * mixed in one dispatch with a head range and a 2-D grid; 2 rows per invocation with pair loops and 4 rows at a head
 * dim that is not a multiple of 4. Small head dims: the block's pipelines build in minutes on a loaded lavapipe. Apart from prefill_attention.test.ts: each pipeline of the block takes a minute or
 * more to build on a loaded lavapipe.
 */
// run-tests: timeout 1800
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LANES_BLOCK_MIN_PAIRS, PrefillAttentionKernel } from '../../shaders/prefill_attention.js';
import { testGpu } from '../helpers/gpu.js';
import { LANES_BLOCK, runCase } from '../helpers/prefill-attention-case.js';

test("'lanes' takes the register block for large steps only; 'workgroup' keeps one row per thread", async () => {
  const gpu = await testGpu();
  const lanes = new PrefillAttentionKernel(gpu, { variant: 'lanes' });
  assert.equal(lanes.rowsPerThread(64, LANES_BLOCK_MIN_PAIRS), 4);
  assert.equal(lanes.rowsPerThread(64, LANES_BLOCK_MIN_PAIRS - 1), 1);
  assert.equal(lanes.rowsPerThread(36, LANES_BLOCK_MIN_PAIRS), 4);
  assert.equal(lanes.rowsPerThread(34, LANES_BLOCK_MIN_PAIRS), 2, 'the largest of 4, 2, 1 dividing the rows');
  assert.equal(new PrefillAttentionKernel(gpu, { variant: 'workgroup' }).rowsPerThread(64, 1e12), 1);
  lanes.destroy();
});

test('register block: dense causal over two sequences equals both references', async () => {
  await runCase({
    seed: 50,
    group: 1,
    numKvHeads: 2,
    headDim: 48,
    pageSize: 64,
    seqs: [
      { ctx: 200, fresh: 130 },
      { ctx: 37, fresh: 65 },
    ],
    dense: true,
    layouts: [LANES_BLOCK],
  });
});

test('register block: block-sparse, Lambda and dense heads in one dispatch, a head range, a 2-D grid', async () => {
  await runCase({
    seed: 51,
    group: 2,
    numKvHeads: 3,
    headDim: 32,
    pageSize: 32,
    blockSize: 32,
    seqs: [
      { ctx: 400, fresh: 130 },
      { ctx: 33, fresh: 1 },
    ],
    modes: [1, 2, 0],
    sink: 20,
    local: 50,
    extraHeads: 3,
    maxWorkgroupsPerDim: 7,
    layouts: [LANES_BLOCK],
  });
});

test('register block: 2 rows per invocation with pair loops; 4 rows at head dim 18 (no vec4 loops)', async () => {
  await runCase({
    seed: 52,
    group: 2,
    numKvHeads: 2,
    headDim: 18,
    pageSize: 32,
    blockSize: 32,
    seqs: [
      { ctx: 70, fresh: 45 },
      { ctx: 0, fresh: 33 },
    ],
    modes: [1, 2],
    sink: 3,
    local: 21,
    layouts: [{ variant: 'lanes', rowsPerThread: 2, quad: false }, LANES_BLOCK],
  });
});
