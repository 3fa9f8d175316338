/**
 * FlashAttention-2-style prefill attention (shaders/prefill_attention.wgsl: both variants, the online softmax of
 * lib/softmax.wgsl, keys through lib/block_table.wgsl, lib/paged.wgsl and lib/grid.wgsl) against the token-by-token
 * references: dense causal (also against tests/reference/attention.ts) and block-sparse over given key-block lists;
 * GQA 1/4/8; chunks and prefixes that are not multiples of the query tile, key tile, key block or page; several
 * sequences per step; NaN in every cache slot no sequence owns; small key tiles to cross many tile edges; K/V pools
 * split into slabs of a few pages (shaders/lib/slabs.ts). Layouts: 'workgroup' and 'lanes' as it runs small steps
 * (one row per invocation, pair loops). Lambda and mixed masks: prefill_attention_masks.test.ts; the register block
 * 'lanes' takes for large steps: prefill_attention_block.test.ts.
 */
// run-tests: timeout 900
import { test } from 'node:test';
import { runCase } from '../helpers/prefill-attention-case.js';

const CHUNKS = [1, 63, 65, 130];
const PREFIXES = [0, 37, 64, 200];

test('dense causal equals the dense references: GQA 1/4/8, chunk and prefix edges, key tiles of 8 and the device', async () => {
  let seed = 1;
  for (const group of [1, 4, 8]) {
    for (let i = 0; i < CHUNKS.length; i++) {
      const seqs = [{ ctx: PREFIXES[(i + group) % 4], fresh: CHUNKS[i] }];
      if (i === 3) seqs.push({ ctx: 90, fresh: 65 }); // two sequences in one step
      await runCase({
        seed,
        group,
        headDim: [48, 64, 128, 80][seed % 4],
        pageSize: [16, 64][seed % 2],
        seqs,
        dense: true,
        maxKeyTile: seed % 3 === 0 ? 8 : undefined,
      });
      seed++;
    }
  }
});

test('K/V pools split into 3 and 5 slabs of whole pages: dense, block-sparse and Lambda heads equal the references', async () => {
  await runCase({
    seed: 60,
    group: 4,
    headDim: 16,
    pageSize: 16,
    seqs: [{ ctx: 70, fresh: 50 }],
    dense: true,
    slabs: 3,
  });
  await runCase({
    seed: 61,
    group: 2,
    numKvHeads: 3,
    headDim: 12,
    pageSize: 16,
    blockSize: 16,
    seqs: [
      { ctx: 40, fresh: 33 },
      { ctx: 0, fresh: 20 },
    ],
    modes: [0, 1, 2],
    sink: 4,
    local: 20,
    slabs: 5,
  });
  await runCase({
    seed: 62,
    group: 4,
    headDim: 16,
    pageSize: 16,
    seqs: [{ ctx: 90, fresh: 40 }],
    window: 50,
    softcap: 3,
    slabs: 4,
  });
});

test('block-sparse over given key-block lists, token-exact in the diagonal block', async () => {
  await runCase({
    seed: 20,
    group: 4,
    numKvHeads: 2,
    headDim: 64,
    pageSize: 32,
    seqs: [
      { ctx: 300, fresh: 130 },
      { ctx: 0, fresh: 70 },
    ],
    modes: [1, 1],
  });
  await runCase({
    seed: 21,
    group: 1,
    numKvHeads: 3,
    headDim: 48,
    pageSize: 64,
    blockSize: 16,
    seqs: [{ ctx: 150, fresh: 97 }],
    modes: [1, 1, 1],
    maxKeyTile: 8,
  });
  await runCase({
    seed: 22,
    group: 8,
    numKvHeads: 1,
    headDim: 128,
    pageSize: 16,
    seqs: [{ ctx: 513, fresh: 64 }],
    modes: [1],
  });
});
