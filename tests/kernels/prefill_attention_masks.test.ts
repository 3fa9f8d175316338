/**
 * Prefill attention's masks beyond dense causal and block lists (shaders/prefill_attention.wgsl, both variants)
 * against the token-by-token reference: Lambda (sink + local window) token-exact at both edges, with LServe's
 * defaults, local = 1 and no sink; block-sparse, Lambda and dense heads mixed in one dispatch with a head range, NaN
 * padding and a 2-D grid. Sliding windows and soft-capping: prefill_attention_window.test.ts. Apart from
 * prefill_attention.test.ts to keep each file's pipeline builds short.
 */
import { test } from 'node:test';
import { runCase } from '../helpers/prefill-attention-case.js';

test('Lambda (sink + local window) equals the reference, token-exact at both edges', async () => {
  await runCase({
    seed: 30,
    group: 4,
    numKvHeads: 2,
    headDim: 64,
    pageSize: 16,
    seqs: [{ ctx: 150, fresh: 130 }],
    modes: [2, 2],
    sink: 5,
    local: 40,
    maxKeyTile: 16,
  });
  // LServe defaults over a prefix that crosses both edges; a second sequence shorter than the sink.
  await runCase({
    seed: 31,
    group: 1,
    numKvHeads: 2,
    headDim: 48,
    pageSize: 64,
    seqs: [
      { ctx: 300, fresh: 65 },
      { ctx: 0, fresh: 63 },
    ],
    modes: [2, 2],
    sink: 128,
    local: 256,
  });
  // local = 1: each token sees the sinks and itself; no sink at all.
  await runCase({
    seed: 32,
    group: 8,
    numKvHeads: 1,
    headDim: 32,
    pageSize: 32,
    seqs: [{ ctx: 10, fresh: 63 }],
    modes: [2],
    sink: 3,
    local: 1,
  });
  await runCase({
    seed: 33,
    group: 2,
    numKvHeads: 1,
    headDim: 32,
    pageSize: 32,
    seqs: [{ ctx: 77, fresh: 50 }],
    modes: [2],
    sink: 0,
    local: 20,
  });
});

test('mixed per-head modes in one dispatch, a head range, NaN padding and a 2-D grid', async () => {
  await runCase({
    seed: 40,
    group: 2,
    numKvHeads: 3,
    headDim: 64,
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
  });
  // The last page of the sequence is mostly NaN past the chunk (makePrefillCache): every mode must stay finite.
  await runCase({
    seed: 41,
    group: 4,
    numKvHeads: 3,
    headDim: 96,
    pageSize: 64,
    seqs: [{ ctx: 5, fresh: 66 }],
    modes: [0, 1, 2],
    sink: 2,
    local: 7,
    maxKeyTile: 16,
  });
});
