/**
 * What a decode step asks of the device, counted by the runtime's own counters (shaders/runtime.ts), and the
 * warm-up's promise: a steady-state decode step creates no bind group and no pipeline, encodes 7 dispatches per
 * layer (9 on the step that reselects pages, every 4th: at most 8 a layer over the reuse interval) plus embedding,
 * lm_head and the sampler, uploads its inputs in one writeBuffer (two when a sequence enters a new page and its
 * block table changes), submits once, and reads back 4 bytes per sequence for greedy sampling. A mixed workload
 * through the engine core (1 to 8 sequences, chunked prefills beside decodes, reselecting steps, every sampling
 * kind) compiles no pipeline after warm-up, with dense and with block-sparse prefill.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { SYNTHETIC_VARIANTS, writeSyntheticCheckpoint } from '../../checkpoint/synthetic.js';
import { attentionConfig } from '../../config/attention.js';
import { engineConfig } from '../../config/engine.js';
import type { GenerationRequest } from '../../engine/client.js';
import { EngineCore, type StepRecord } from '../../engine/core.js';
import type { DecodeEntry } from '../../model/executor.js';
import { ModelRunner } from '../../model/runner.js';
import { countersDelta, Gpu } from '../../shaders/runtime.js';
import { collect } from '../engine/core-helpers.js';
import { assertNoGpuErrors, testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/rng.js';

const root = mkdtempSync(path.join(os.tmpdir(), 'sift-decode-step-'));
after(() => rmSync(root, { recursive: true, force: true }));

/** GQA 4:1, 3 layers: every layer has retrieval heads, so every layer selects pages. */
const VARIANT = SYNTHETIC_VARIANTS.find((v) => v.name === 'llama-f16-gqa4-sharded-llama3rope')!;
const dir = path.join(root, VARIANT.name);
writeSyntheticCheckpoint(dir, VARIANT);

const PAGE = 16;
/** Budget of 4 pages: contexts past 64 tokens decode through page selection. */
const BUDGET = 64;
const attention = (prefillMode: 'dense' | 'block-sparse' = 'dense') =>
  attentionConfig({ flags: { tokenBudget: BUDGET, prefillMode } }, PAGE);

test('a steady-state decode step: no bind group or pipeline created, <= 8 dispatches a layer, one upload, 4 bytes back a sequence', async () => {
  const gpu = await testGpu();
  const cfg = engineConfig({
    flags: { pageSize: PAGE, kvCacheMib: 4, maxBatchTokens: 64, maxSeqs: 8, maxContext: 512 },
  });
  const runner = await ModelRunner.load(dir, cfg, { gpu, attention: attention() });
  const L = runner.config.numLayers;
  const rng = new Rng(7);
  try {
    let nextPage = 0;
    for (const D of [1, 3, 8]) {
      const ids = Array.from({ length: D }, (_, i) => `d${D}-${i}`);
      // disjoint pages per sequence; an 80-token prompt each (past the budget: decode selects pages)
      const tables = ids.map(() => Array.from({ length: 8 }, () => nextPage++ % runner.kv.numPages));
      const tokens = ids.map(() => rng.int(3, VARIANT.vocab - 1));
      for (const [i, id] of ids.entries()) {
        await runner.prefill(
          id,
          Array.from({ length: 40 }, () => rng.int(3, VARIANT.vocab - 1)),
          tables[i],
        );
      }
      const per: {
        dispatches: number;
        bindGroups: number;
        calls: number;
        submits: number;
        back: number;
        reads: number;
        pipes: number;
        newPage: boolean;
      }[] = [];
      for (let s = 0; s < 12; s++) {
        const start = 80 + s;
        const entries = ids.map(
          (seqId, i): DecodeEntry => ({
            kind: 'decode',
            seqId,
            start,
            tokens: [tokens[i]],
            pages: tables[i].slice(0, Math.floor(start / PAGE) + 1),
            sample: true,
            tokenBudget: BUDGET,
            sampling: { temperature: 0, topK: 0, topP: 1, u: 0 },
          }),
        );
        const before = gpu.counters();
        const out = await runner.execute({ entries });
        const d = countersDelta(before, gpu.counters());
        assert.equal(out.logits.length, 0, 'a greedy step returns no logits');
        for (let i = 0; i < D; i++) {
          assert.ok(out.tokens[i] >= 0 && out.tokens[i] < VARIANT.vocab);
          tokens[i] = out.tokens[i];
        }
        per.push({
          dispatches: d.dispatches,
          bindGroups: d.bindGroups,
          calls: d.writeBufferCalls,
          submits: d.submits,
          back: d.readbackBytes,
          reads: d.readbacks,
          pipes: d.pipelines,
          newPage: start % PAGE === 0, // this step's token opens a page: the block tables grow by a column
        });
      }
      assertNoGpuErrors(gpu);
      for (const id of ids) runner.release(id);
      const what = `D=${D}`;
      const steady = per.slice(4); // after the first reselection and a reuse interval
      for (const [s, x] of steady.entries()) {
        assert.equal(x.bindGroups, 0, `${what} step ${s + 4}: bind groups created`);
        assert.equal(x.pipes, 0, `${what} step ${s + 4}: pipelines created`);
        assert.equal(x.submits, 1, `${what} step ${s + 4}: submits`);
        assert.equal(x.reads, 1, `${what} step ${s + 4}: read-backs`);
        assert.equal(x.back, 4 * D, `${what} step ${s + 4}: bytes read back (4 a sequence)`);
        assert.ok(x.back / D <= 64);
        assert.equal(x.calls, x.newPage ? 2 : 1, `${what} step ${s + 4}: writeBuffer calls (new page: ${x.newPage})`);
        assert.ok(
          x.dispatches === 7 * L + 3 || x.dispatches === 9 * L + 3,
          `${what} step ${s + 4}: ${x.dispatches} dispatches, want 7 or 9 per layer + 3`,
        );
      }
      // reselection every 4 steps: 9 a layer once, 7 a layer three times
      const reselecting = steady.filter((x) => x.dispatches === 9 * L + 3).length;
      assert.equal(reselecting, steady.length / 4, `${what}: reselecting steps`);
      const mean = steady.reduce((n, x) => n + x.dispatches - 3, 0) / steady.length / L;
      assert.ok(mean <= 8, `${what}: ${mean} dispatches a layer on average`);
    }
  } finally {
    runner.destroy();
  }
});

/** A mixed workload through the engine core on a fresh device (no pipeline another test compiled can hide a miss). */
async function mixedWorkload(prefillMode: 'dense' | 'block-sparse'): Promise<void> {
  const gpu = await Gpu.create();
  const cfg = engineConfig({
    flags: { pageSize: PAGE, kvCacheMib: 4, maxBatchTokens: 40, maxSeqs: 8, maxContext: 512 },
  });
  const runner = await ModelRunner.load(dir, cfg, { gpu, attention: attention(prefillMode) });
  const steps: StepRecord[] = [];
  const core = EngineCore.create(runner, { onStep: (s) => steps.push(s) });
  const rng = new Rng(prefillMode.length);
  const samplings: GenerationRequest['sampling'][] = [
    { temperature: 0, topK: 0, topP: 1, seed: null },
    { temperature: 1, topK: 0, topP: 0.9, seed: 1 },
    { temperature: 0.7, topK: 8, topP: 1, seed: 2 },
    { temperature: 1.2, topK: 30, topP: 0.5, seed: 3 },
  ];
  const request = (i: number, n: number, maxTokens: number): GenerationRequest => ({
    id: `m${i}`,
    promptIds: Array.from({ length: n }, () => rng.int(3, VARIANT.vocab - 1)),
    maxTokens,
    sampling: samplings[i % samplings.length],
    stopIds: [],
    ...(i % 5 === 4 ? { presencePenalty: 1, topLogprobs: 2 } : {}),
  });
  try {
    // submitted at once (before the core's first step): 8 run, 3 wait; the lengths differ, so as requests finish
    // and waiting ones join, decode batches shrink from 8 to 1 with prefill chunks beside them
    const lens = [1, 5, 20, 70, 3, 33, 100, 9, 45, 12, 64];
    await Promise.all(lens.map((n, i) => collect(core.submit(request(i, n, 4 + ((i * 7) % 30))))));
    const decodeSizes = new Set(steps.map((s) => s.entries.filter((e) => e.kind === 'decode').length));
    const sizes = [...decodeSizes].filter((n) => n > 0);
    assert.ok(decodeSizes.has(1) && decodeSizes.has(8) && sizes.length >= 6, `decode batch sizes ${sizes}`);
    assert.ok(
      steps.some((s) => s.entries.some((e) => e.kind === 'decode') && s.entries.some((e) => e.kind === 'prefill')),
    );
    assert.ok(runner.stats().selectionReselects > 0, 'some decode steps reselected pages');
    assert.deepEqual(gpu.pipelinesAfterWarm(), [], `${prefillMode} prefill: pipelines compiled after warm-up`);
    assertNoGpuErrors(gpu);
  } finally {
    await core.shutdown(0);
    gpu.destroy();
  }
}

test('a mixed workload (1-8 sequences, chunked prefills, reselecting steps, every sampling kind) compiles no pipeline after warm-up', async () => {
  await mixedWorkload('dense');
});

test('the same with block-sparse prefill', async () => {
  await mixedWorkload('block-sparse');
});
