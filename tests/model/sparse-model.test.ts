/**
 * Unified sparse attention end to end through the engine core: a head pattern makes some KV heads streaming heads
 * (sink + local window, their K/V in the streaming pool's rings), the rest retrieval heads; block-sparse prefill
 * with every block kept equals dense prefill; greedy tokens equal the reference forward pass with the same mask.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { openCheckpoint } from '../../checkpoint/checkpoint.js';
import { SYNTHETIC_VARIANTS, writeSyntheticCheckpoint } from '../../checkpoint/synthetic.js';
import { attentionConfig } from '../../config/attention.js';
import { engineConfig } from '../../config/engine.js';
import { EngineCore } from '../../engine/core.js';
import { argmax } from '../../engine/sampler.js';
import { loadHeadPlan } from '../../model/head-plan.js';
import { ModelRunner } from '../../model/runner.js';
import { collect, greedy } from '../engine/core-helpers.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/rng.js';
import { referenceForward } from '../reference/forward.js';

const root = mkdtempSync(path.join(os.tmpdir(), 'sift-streaming-'));
after(() => rmSync(root, { recursive: true, force: true }));

const SINK = 16;
const LOCAL = 32;
const PAGE = 16;

function referenceGreedy(
  ckpt: ReturnType<typeof openCheckpoint>,
  prompt: number[],
  n: number,
  streaming: { heads: number[][]; sink: number; local: number },
): number[] {
  const ids = [...prompt];
  const out: number[] = [];
  const V = ckpt.config.vocabSize;
  for (let i = 0; i < n; i++) {
    const logits = referenceForward(ckpt, ids, { kvF16: true, streaming });
    const id = argmax(logits.subarray((ids.length - 1) * V, ids.length * V));
    out.push(id);
    ids.push(id);
  }
  return out;
}

for (const variant of [
  SYNTHETIC_VARIANTS.find((v) => v.kvHeads < v.heads)!,
  SYNTHETIC_VARIANTS.find((v) => v.kvHeads === v.heads && v.heads >= 4)!,
]) {
  // fraction 1: every head streams (StreamingLLM); the main pool then stores nothing but still numbers pages
  for (const [prefillMode, fraction] of [
    ['dense', 0.5],
    ['block-sparse', 0.5],
    ['dense', 1],
  ] as const) {
    test(`streaming heads (fraction ${fraction}) + ${prefillMode} prefill equal the masked reference: ${variant.name}`, async () => {
      const gpu = await testGpu();
      const dir = path.join(root, `${variant.name}-${prefillMode}-${fraction}`);
      writeSyntheticCheckpoint(dir, variant);
      const rng = new Rng(variant.seed + 17);
      // a head pattern: random scores per (layer, kv head); half the heads stream (lowest scores)
      const scores = Array.from({ length: variant.layers }, () =>
        Array.from({ length: variant.kvHeads }, () => rng.next().toFixed(3)),
      );
      const pattern = path.join(dir, 'heads.tsv');
      writeFileSync(pattern, `# test pattern\n${scores.map((r) => r.join('\t')).join('\n')}\n`);
      const attention = attentionConfig(
        // every causal block kept: block-sparse prefill must equal dense
        {
          flags: {
            headPattern: pattern,
            streamingFraction: String(fraction),
            sink: String(SINK),
            local: String(LOCAL),
            prefillMode,
            prefillTopBlocks: '1000',
          },
        },
        PAGE,
      );
      const cfg = engineConfig({
        flags: { pageSize: PAGE, kvCacheMib: 2, maxBatchTokens: 40, maxSeqs: 4, maxContext: 256 },
      });
      const engine = await ModelRunner.load(dir, cfg, { gpu, attention });
      assert.ok(engine.forwardPass.attention.hasStreamingHeads, 'the pattern made some heads streaming heads');
      const loop = EngineCore.create(engine);
      const ckpt = openCheckpoint(dir);
      try {
        const plan = loadHeadPlan(pattern, ckpt.config, { streamingFraction: fraction });
        assert.ok(plan.streaming.some((l) => l.length > 0));
        assert.equal(
          plan.retrieval.every((l) => l.length === 0),
          fraction === 1,
        );
        const streaming = { heads: plan.streaming, sink: SINK, local: LOCAL };
        // prompts longer than sink + local and than one prefill chunk (40): the rings recycle during prefill
        const prompts = [90, 61].map((n) => Array.from({ length: n }, () => rng.int(3, ckpt.config.vocabSize - 1)));
        const got = await Promise.all(prompts.map((p, i) => collect(loop.submit(greedy(`s${i}`, p, 6)))));
        prompts.forEach((p, i) => {
          assert.equal(got[i].done.finishReason, 'length');
          assert.deepEqual(got[i].tokens, referenceGreedy(ckpt, p, 6, streaming), `prompt ${i} (${p.length} tokens)`);
        });
        const st = loop.kv.stats();
        assert.equal(st.pagesUsed, 0, 'main pool pages returned');
        const es = loop.stats();
        const streamingPairs = plan.streaming.reduce((n, l) => n + l.length, 0);
        const pairs = variant.layers * variant.kvHeads;
        assert.equal(es.streamingHeadShare, streamingPairs / pairs);
        assert.equal(es.prefixCacheEnabled, false, 'streaming heads turn the prefix cache off');
        // usage counts every head: retrieval heads read the whole context (it fits the default budget), streaming
        // heads their sink + local window; decode contexts p + 1 .. p + 5
        prompts.forEach((p, i) => {
          const u = got[i].done.attention;
          const ctxs = [1, 2, 3, 4, 5].map((d) => p.length + d);
          const mean =
            ctxs.reduce((s, c) => s + ((pairs - streamingPairs) * c + streamingPairs * (SINK + LOCAL)) / pairs, 0) / 5;
          assert.ok(Math.abs(u.meanTokensAttended - mean) < 1e-9, `prompt ${i}: ${u.meanTokensAttended} vs ${mean}`);
          assert.equal(u.meanContextTokens, p.length + 3);
          assert.equal(u.mode, 'sparse', 'streaming heads read less than the context');
          // every block kept (prefillTopBlocks 1000): block-sparse prefill skipped nothing; dense prefill reports null
          assert.equal(u.prefillKeyBlocksSkippedShare, prefillMode === 'block-sparse' ? 0 : null);
        });
        // 6 tokens each: the first decode step after prefill reselects, later ones reuse until the 4th
        if (fraction < 1)
          assert.ok(es.selectionReuseShare > 0 && es.selectionReuseShare < 1, `reuse share ${es.selectionReuseShare}`);
        else assert.equal(engine.kv.bytesPerPage, 0, 'no retrieval head: the main pool stores nothing');
      } finally {
        ckpt.close();
        await loop.shutdown(1000);
      }
    });
  }
}

test('per-request attention: usage reports what the kernels read and the mode that ran', async () => {
  const gpu = await testGpu();
  const variant = SYNTHETIC_VARIANTS[0];
  const dir = path.join(root, `budget-${variant.name}`);
  writeSyntheticCheckpoint(dir, variant);
  const cfg = engineConfig({
    flags: { pageSize: PAGE, kvCacheMib: 2, maxBatchTokens: 64, maxSeqs: 4, maxContext: 256 },
  });
  const engine = await ModelRunner.load(dir, cfg, {
    gpu,
    attention: attentionConfig({ flags: { tokenBudget: '64' } }, PAGE),
  });
  const loop = EngineCore.create(engine);
  try {
    const rng = new Rng(3);
    const tokens = (n: number) => Array.from({ length: n }, () => rng.int(3, engine.config.vocabSize - 1));
    const prompt = tokens(100);
    const [sparse, dense, crossing, fits] = await Promise.all([
      collect(loop.submit(greedy('sparse', prompt, 5))),
      collect(loop.submit(greedy('dense', prompt, 5, { attention: { mode: 'dense' } }))),
      collect(loop.submit(greedy('crossing', tokens(94), 5))),
      collect(loop.submit(greedy('fits', tokens(30), 5))),
    ]);
    const a = (r: typeof sparse) => r.done.attention;
    // decode steps at contexts 101..104: 4 pages of 16 kept (sink page, newest page, 2 best), selected at the first
    // step and reused for the next three: 3 full pages + the newest page's 5, 6, 7, 8 tokens
    assert.deepEqual(
      { ...a(sparse) },
      {
        mode: 'sparse',
        requestedMode: 'sparse',
        decodeSteps: 4,
        meanTokensAttended: (53 + 54 + 55 + 56) / 4,
        meanContextTokens: (101 + 102 + 103 + 104) / 4,
        prefillKeyBlocksSkippedShare: null,
      },
    );
    assert.equal(a(dense).mode, 'dense');
    assert.equal(a(dense).requestedMode, 'dense');
    assert.equal(a(dense).meanTokensAttended, a(dense).meanContextTokens);
    // contexts 95..98: the selection made at 95 (pages 0..5, newest page 5) is reused after the context crosses into
    // page 6, which the kernel then reads besides the 4 selected pages: 63, 64, then 4 x 16 + 1, + 2
    assert.equal(a(crossing).meanTokensAttended, (63 + 64 + 65 + 66) / 4);
    // sparse asked, but contexts 31..34 fit the budget of 64: every page was read, so it ran dense
    assert.equal(a(fits).mode, 'dense');
    assert.equal(a(fits).requestedMode, 'sparse');
    assert.equal(a(fits).meanTokensAttended, a(fits).meanContextTokens);
    assert.equal(sparse.tokens.length, 5);
    assert.ok(loop.stats().attendedShare < 1);
    assert.equal(loop.stats().prefixCacheEnabled, true);
  } finally {
    await loop.shutdown(1000);
  }
});

test('block-sparse prefill reports the share of key blocks it skipped, per request and in the stats', async () => {
  const gpu = await testGpu();
  const variant = SYNTHETIC_VARIANTS[0];
  const dir = path.join(root, `blocks-${variant.name}`);
  writeSyntheticCheckpoint(dir, variant);
  const cfg = engineConfig({
    flags: { pageSize: PAGE, kvCacheMib: 2, maxBatchTokens: 64, maxSeqs: 2, maxContext: 256 },
  });
  const attention = attentionConfig({ flags: { prefillMode: 'block-sparse', prefillTopBlocks: '1' } }, PAGE);
  const engine = await ModelRunner.load(dir, cfg, { gpu, attention });
  const loop = EngineCore.create(engine);
  try {
    const rng = new Rng(5);
    const prompt = Array.from({ length: 250 }, () => rng.int(3, engine.config.vocabSize - 1));
    const r = await collect(loop.submit(greedy('blocks', prompt, 2)));
    // query blocks 0..3 of 64 tokens (one per 64-token chunk) have 1, 2, 3, 4 causal key blocks; with 1 top block
    // a list keeps the sink, the diagonal and 1 more: 1, 2, 3, 3 kept, so 1 of 10 skipped
    const share = r.done.attention.prefillKeyBlocksSkippedShare;
    assert.ok(share !== null && Math.abs(share - 0.1) < 1e-12, `skipped share ${share}`);
    assert.ok(Math.abs(loop.stats().prefillKeyBlocksSkippedShare - 0.1) < 1e-12);
  } finally {
    await loop.shutdown(1000);
  }
});
