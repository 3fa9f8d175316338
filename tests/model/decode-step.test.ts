/**
 * What a decode step asks of the device, counted by the runtime's own counters (shaders/runtime.ts), and the
 * warm-up's promise: a steady-state decode step creates no bind group and no pipeline, encodes 7 dispatches per
 * layer (11 on the step that reselects pages, every 4th: the digest hierarchy's update and three levels of
 * hierarchical selection; at most 8 a layer over the reuse interval) plus embedding,
 * lm_head and the sampler, uploads its inputs in one writeBuffer (two when a sequence enters a new page and its
 * block table changes), submits once, and reads back 4 bytes per sequence for greedy sampling. A mixed workload
 * through the engine core (1 to 8 sequences, chunked prefills beside decodes, reselecting steps, every sampling
 * kind, steps long enough for the tiled prefill GEMM) compiles no pipeline after warm-up, with dense and with
 * block-sparse prefill (tiled prefill attention and key-block digests).
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
import { f16ToF32 } from '../../util/dtype.js';
import { collect } from '../engine/core-helpers.js';
import { assertClose } from '../helpers/compare.js';
import { assertNoGpuErrors, testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/rng.js';
import { readPool } from '../helpers/slabs.js';

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
          x.dispatches === 7 * L + 3 || x.dispatches === 11 * L + 3,
          `${what} step ${s + 4}: ${x.dispatches} dispatches, want 7 or 11 per layer + 3`,
        );
      }
      // reselection every 4 steps: 11 a layer once, 7 a layer three times
      const reselecting = steady.filter((x) => x.dispatches === 11 * L + 3).length;
      assert.equal(reselecting, steady.length / 4, `${what}: reselecting steps`);
      const mean = steady.reduce((n, x) => n + x.dispatches - 3, 0) / steady.length / L;
      assert.ok(mean <= 8, `${what}: ${mean} dispatches a layer on average`);
    }
  } finally {
    runner.destroy();
  }
});

test('block-sparse prefill: a decode step keeps the key-block digest of the block it writes (2 dispatches a layer)', async () => {
  const gpu = await testGpu();
  const cfg = engineConfig({
    flags: { pageSize: PAGE, kvCacheMib: 4, maxBatchTokens: 64, maxSeqs: 4, maxContext: 512 },
  });
  const runner = await ModelRunner.load(dir, cfg, { gpu, attention: attention('block-sparse') });
  const c = runner.config;
  const L = c.numLayers;
  const rng = new Rng(11);
  try {
    const table = [9, 4, 17, 2, 30, 11];
    await runner.prefill(
      'b',
      Array.from({ length: 50 }, () => rng.int(3, VARIANT.vocab - 1)),
      table,
    );
    let token = rng.int(3, VARIANT.vocab - 1);
    const dispatches: number[] = [];
    // positions 50..69: block 0 fills up (to 64 keys), block 1 starts (6 keys)
    for (let pos = 50; pos < 70; pos++) {
      const entry: DecodeEntry = {
        kind: 'decode',
        seqId: 'b',
        start: pos,
        tokens: [token],
        pages: table.slice(0, Math.floor(pos / PAGE) + 1),
        sample: true,
        tokenBudget: BUDGET,
        sampling: { temperature: 0, topK: 0, topP: 1, u: 0 },
      };
      const before = gpu.counters();
      const out = await runner.execute({ entries: [entry] });
      dispatches.push(countersDelta(before, gpu.counters()).dispatches);
      token = out.tokens[0];
    }
    assertNoGpuErrors(gpu);
    // a decode step: 7 dispatches a layer plus the block digest and its group's coarse digest (block_group, which
    // writes only when the step fills a group's last block), + embedding, lm_head, sampler; a reselecting step
    // adds the three levels of hierarchical selection, and the digest hierarchy's update when blocks were written
    // since the last one (none while the context fits the budget)
    for (const d of dispatches)
      assert.ok(
        [9, 12, 13].some((n) => d === n * L + 3),
        `${d} dispatches`,
      );
    // every layer's digests of blocks 0 and 1 are the mean of their keys in the cache so far
    const HW = c.headDim / 2;
    for (let li = 0; li < L; li++) {
      const layer = runner.kv.layers[li];
      const nKv = layer.numRetrievalHeads;
      const keys = new Uint32Array((await readPool(gpu, layer.k)).buffer);
      const digests = new Float32Array((await readPool(gpu, runner.forwardPass.attention.blockDigestsOf(li)!)).buffer);
      for (const [block, n] of [
        [0, 64],
        [1, 6],
      ]) {
        const want = new Float32Array(nKv * c.headDim);
        for (let t = 0; t < n; t++) {
          const pos = block * 64 + t;
          const page = table[Math.floor(pos / PAGE)];
          for (let h = 0; h < nKv; h++) {
            for (let w = 0; w < HW; w++) {
              const word = keys[((page * PAGE + (pos % PAGE)) * nKv + h) * HW + w];
              want[h * c.headDim + 2 * w] += f16ToF32(word & 0xffff) / n;
              want[h * c.headDim + 2 * w + 1] += f16ToF32(word >>> 16) / n;
            }
          }
        }
        const slot = table[(block * 64) / PAGE]; // one digest slot per page (page size 16 < block size 64)
        // part 0 of the slot (the means; part 1 holds a group's coarse digest)
        const got = digests.subarray(slot * 2 * nKv * c.headDim, (slot * 2 + 1) * nKv * c.headDim);
        assertClose(got, want, { atol: 1e-5, rtol: 1e-4 }, `layer ${li} block ${block}`);
      }
    }
  } finally {
    runner.destroy();
  }
});

/** A mixed workload through the engine core on a fresh device (no pipeline another test compiled can hide a miss). */
async function mixedWorkload(prefillMode: 'dense' | 'block-sparse'): Promise<void> {
  const gpu = await Gpu.create();
  const cfg = engineConfig({
    flags: { pageSize: PAGE, kvCacheMib: 4, maxBatchTokens: 80, maxSeqs: 8, maxContext: 512 },
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
    // steps of 64 tokens or more run a prefill GEMM (the tiled GEMM on GPUs, register tiles from 16 on CPU adapters)
    const tiled = runner.forwardPass.tiledMinTokens;
    assert.ok(
      steps.some((s) => s.numTokens >= Math.min(tiled, 64)),
      `a step of at least ${Math.min(tiled, 64)} tokens`,
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
