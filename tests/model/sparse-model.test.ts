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
        assert.equal(es.streamingHeadShare, streamingPairs / (variant.layers * variant.kvHeads));
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

test('per-request attention: sparse decode reads only the budget, dense reads the whole context', async () => {
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
    const prompt = Array.from({ length: 100 }, () => rng.int(3, engine.config.vocabSize - 1));
    const [sparse, dense] = await Promise.all([
      collect(loop.submit(greedy('sparse', prompt, 5))),
      collect(loop.submit(greedy('dense', prompt, 5, { attention: { mode: 'dense' } }))),
    ]);
    assert.equal(sparse.done.attention.mode, 'sparse');
    assert.equal(dense.done.attention.mode, 'dense');
    // decode steps at contexts 101..104: dense reads all of it, sparse 4 pages of 16 (sink page, newest page, 2 best)
    assert.ok(dense.done.attention.meanTokensAttended > 100);
    assert.ok(
      sparse.done.attention.meanTokensAttended <= 64,
      `sparse attended ${sparse.done.attention.meanTokensAttended}`,
    );
    assert.equal(sparse.tokens.length, 5);
    assert.ok(loop.stats().attendedShare < 1);
  } finally {
    await loop.shutdown(1000);
  }
});
