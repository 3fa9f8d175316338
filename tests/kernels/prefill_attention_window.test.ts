/**
 * Prefill attention (shaders/prefill_attention.wgsl) in a layer with a sliding window and / or Gemma 2's logit
 * soft-cap, against the token-by-token reference (and the dense one where every head is dense): windows that are not
 * multiples of the query tile, key tile, key block or page, in every mode, with every cached key older than the
 * chunk's windows NaN (a read outside the window shows); mixed modes and soft-capping also through the 'lanes'
 * register block. Apart from the other prefill_attention tests to keep each file's pipeline builds short.
 */
// run-tests: timeout 900
import { test } from 'node:test';
import { runCase } from '../helpers/prefill-attention-case.js';
import type { PrefillSeq } from '../helpers/prefill-cache.js';

test('sliding window in every mode: keys older than the window masked (NaN, never read), fully masked tiles skipped', async () => {
  // Windows not multiples of the query tile, key tile, key block or page; chunks and prefixes on both sides of them.
  const cases: [group: number, window: number, seqs: PrefillSeq[], pageSize: number][] = [
    [1, 5, [{ ctx: 0, fresh: 70 }], 16],
    [4, 37, [{ ctx: 130, fresh: 65 }], 32],
    [
      8,
      100,
      [
        { ctx: 300, fresh: 130 },
        { ctx: 20, fresh: 33 },
      ],
      64,
    ],
  ];
  for (const [i, [group, window, seqs, pageSize]] of cases.entries()) {
    await runCase({ seed: 50 + i, group, headDim: 64, pageSize, seqs, window, dense: true, maxKeyTile: 8 << i });
  }
  // block-sparse and Lambda heads under a window, mixed in one dispatch
  await runCase({
    seed: 60,
    group: 2,
    numKvHeads: 3,
    headDim: 64,
    pageSize: 32,
    blockSize: 16,
    seqs: [{ ctx: 200, fresh: 97 }],
    modes: [1, 2, 0],
    sink: 6,
    local: 30,
    window: 45,
    block: true,
  });
});

test('attention logit soft-capping (Gemma 2), with and without a window', async () => {
  await runCase({ seed: 70, group: 4, headDim: 64, pageSize: 16, seqs: [{ ctx: 90, fresh: 70 }], softcap: 1.5 });
  await runCase({
    seed: 71,
    group: 1,
    numKvHeads: 2,
    headDim: 48,
    pageSize: 32,
    seqs: [{ ctx: 40, fresh: 65 }],
    modes: [0, 2],
    sink: 4,
    local: 20,
    window: 33,
    softcap: 0.5,
    dense: false,
    block: true,
  });
});
