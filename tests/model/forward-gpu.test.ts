/**
 * The whole GPU forward pass against the plain-TS reference forward pass, on every synthetic checkpoint variant
 * (architectures, dtypes, sharding, tied embeddings both ways, GQA 1:1 and 4:1, head_dim override, odd sizes,
 * rope scaling none / linear / llama3): prefill logits of every token, then decode steps, then several sequences
 * of different lengths in one batched call through a shuffled block table, and chunked prefill.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { openCheckpoint } from '../../checkpoint/checkpoint.js';
import { SYNTHETIC_VARIANTS, writeSyntheticCheckpoint } from '../../checkpoint/synthetic.js';
import { engineConfig } from '../../config/engine.js';
import { isSiftError } from '../../config/errors.js';
import type { ForwardBatch } from '../../model/forward.js';
import { gpuForwardGap } from '../../model/gpu-support.js';
import { ModelRunner } from '../../model/runner.js';
import { assertClose } from '../helpers/compare.js';
import { assertNoGpuErrors, testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/rng.js';
import { ReferenceModel, referenceForward } from '../reference/forward.js';

/** GPU f32 accumulation vs the f64 reference over the same (decoded) weights, both with an f16 KV cache. */
const TOL = { atol: 2e-3, rtol: 2e-3 };
/**
 * The GPU's KV cache is f16: the reference rounds its K and V the same way (the tolerance stays f32's). The context
 * length that fixes dynamic / longrope scaling is the block table's reach (maxContext 256 below).
 */
const KV_F16 = { kvF16: true, contextLength: 256 };

const root = mkdtempSync(path.join(os.tmpdir(), 'sift-forward-'));
after(() => rmSync(root, { recursive: true, force: true }));

/** A batch whose rows are all prefill rows (plain causal attention), logits for any rows asked. */
function prefillBatch(b: {
  tokens: ArrayLike<number>;
  positions: ArrayLike<number>;
  tokenSeq: ArrayLike<number>;
  blockTable: Uint32Array;
  numSeqs: number;
  logitRows: ArrayLike<number>;
}): ForwardBatch {
  return {
    tokens: Uint32Array.from(b.tokens),
    positions: Uint32Array.from(b.positions),
    tokenSeq: Uint32Array.from(b.tokenSeq),
    blockTable: b.blockTable,
    numSeqs: b.numSeqs,
    logitRows: Uint32Array.from(b.logitRows),
    rows: Array.from({ length: b.numSeqs }, (_, r) => ({ kind: 'prefill' as const, seqId: `row${r}` })),
  };
}

function tableFor(pages: number[], maxPagesPerSeq: number): Uint32Array {
  const t = new Uint32Array(maxPagesPerSeq);
  t.set(pages);
  return t;
}

for (const variant of SYNTHETIC_VARIANTS) {
  test(`forward pass equals the reference: ${variant.name}`, async () => {
    const gpu = await testGpu();
    const dir = path.join(root, variant.name);
    writeSyntheticCheckpoint(dir, variant);
    const cfg = engineConfig({
      flags: { pageSize: 16, kvCacheMib: 4, maxBatchTokens: 32, maxSeqs: 4, maxContext: 256 },
    });
    const ckConfig = openCheckpoint(dir);
    const gap = gpuForwardGap(ckConfig.config, 256);
    ckConfig.close();
    if (gap) {
      // Not on the GPU yet (model/gpu-support.ts): the load must refuse it by name rather than run without it.
      await assert.rejects(ModelRunner.load(dir, cfg, { gpu }), (e: unknown) => {
        assert.ok(isSiftError(e, 'CHECKPOINT_UNSUPPORTED') && e.message.includes(gap), String(e));
        return true;
      });
      return;
    }
    const engine = await ModelRunner.load(dir, cfg, { gpu, maxLogitRows: 32 });
    const ckpt = openCheckpoint(dir);
    try {
      const rng = new Rng(variant.seed);
      const V = engine.config.vocabSize;
      const fwd = engine.forwardPass;
      // 1. prefill of one sequence, logits of every token; pages deliberately non-contiguous
      const prompt = Array.from({ length: 21 }, () => rng.int(0, V - 1));
      const table = tableFor([5, 2], fwd.maxPagesPerSeq);
      const got = await fwd.forward(
        prefillBatch({
          tokens: prompt,
          positions: prompt.map((_, i) => i),
          tokenSeq: prompt.map(() => 0),
          blockTable: table,
          numSeqs: 1,
          logitRows: prompt.map((_, i) => i),
        }),
      );
      assertNoGpuErrors(gpu);
      assertClose(got, referenceForward(ckpt, prompt, KV_F16), TOL, `${variant.name} prefill logits`);

      // 2. decode 4 tokens one at a time after that prompt
      const ref = new ReferenceModel(ckpt, KV_F16);
      ref.forward(prompt);
      for (let s = 0; s < 4; s++) {
        const id = rng.int(0, V - 1);
        const pos = prompt.length + s;
        const g = await engine.decodeOneToken(id, pos, table);
        const w = ref.forward([id]);
        assertClose(g, w, TOL, `${variant.name} decode step ${s}`);
      }
    } finally {
      ckpt.close();
      engine.destroy();
    }
  });
}

test('one batched call serves several sequences (prefill and decode mixed) through shuffled pages', async () => {
  const gpu = await testGpu();
  const variant = SYNTHETIC_VARIANTS.find((v) => v.kvHeads < v.heads) ?? SYNTHETIC_VARIANTS[0];
  const dir = path.join(root, `batch-${variant.name}`);
  writeSyntheticCheckpoint(dir, variant);
  const cfg = engineConfig({ flags: { pageSize: 16, kvCacheMib: 4, maxBatchTokens: 64, maxSeqs: 4, maxContext: 128 } });
  const engine = await ModelRunner.load(dir, cfg, { gpu, maxLogitRows: 32 });
  const ckpt = openCheckpoint(dir);
  try {
    const rng = new Rng(99);
    const V = engine.config.vocabSize;
    const fwd = engine.forwardPass;
    const M = fwd.maxPagesPerSeq;
    // seq 0: 20-token history, decodes 1 token; seq 1: fresh 9-token prompt; seq 2: 3-token history + 17 new tokens
    const hist = [
      Array.from({ length: 20 }, () => rng.int(0, V - 1)),
      [] as number[],
      Array.from({ length: 3 }, () => rng.int(0, V - 1)),
    ];
    const fresh = [
      [rng.int(0, V - 1)],
      Array.from({ length: 9 }, () => rng.int(0, V - 1)),
      Array.from({ length: 17 }, () => rng.int(0, V - 1)),
    ];
    const pages = [
      [7, 3],
      [1, 8],
      [4, 0],
    ];
    const blockTable = new Uint32Array(3 * M);
    pages.forEach((p, s) => {
      blockTable.set(p, s * M);
    });
    // write the histories first, one sequence per call
    for (let s = 0; s < 3; s++) {
      if (!hist[s].length) continue;
      await fwd.forward(
        prefillBatch({
          tokens: hist[s],
          positions: hist[s].map((_, i) => i),
          tokenSeq: hist[s].map(() => s),
          blockTable,
          numSeqs: 3,
          logitRows: [0],
        }),
      );
    }
    const tokens: number[] = [];
    const positions: number[] = [];
    const tokenSeq: number[] = [];
    const lastRow: number[] = [];
    for (let s = 0; s < 3; s++) {
      fresh[s].forEach((id, i) => {
        tokens.push(id);
        positions.push(hist[s].length + i);
        tokenSeq.push(s);
      });
      lastRow.push(tokens.length - 1);
    }
    const got = await fwd.forward(
      prefillBatch({ tokens, positions, tokenSeq, blockTable, numSeqs: 3, logitRows: lastRow }),
    );
    assertNoGpuErrors(gpu);
    for (let s = 0; s < 3; s++) {
      const all = referenceForward(ckpt, [...hist[s], ...fresh[s]], KV_F16);
      const want = all.subarray(all.length - V);
      assertClose(got.subarray(s * V, (s + 1) * V), want, TOL, `batched sequence ${s}`);
    }
  } finally {
    ckpt.close();
    engine.destroy();
  }
});

test('chunked prefill (prompt longer than maxBatchTokens) gives the same last logits', async () => {
  const gpu = await testGpu();
  const variant = SYNTHETIC_VARIANTS[0];
  const dir = path.join(root, `chunk-${variant.name}`);
  writeSyntheticCheckpoint(dir, variant);
  const cfg = engineConfig({ flags: { pageSize: 16, kvCacheMib: 4, maxBatchTokens: 7, maxSeqs: 1, maxContext: 128 } });
  const engine = await ModelRunner.load(dir, cfg, { gpu, maxLogitRows: 32 });
  const ckpt = openCheckpoint(dir);
  try {
    const rng = new Rng(5);
    const prompt = Array.from({ length: 30 }, () => rng.int(0, engine.config.vocabSize - 1));
    const table = tableFor([2, 0], engine.forwardPass.maxPagesPerSeq);
    const got = await engine.prefill(0, prompt, table);
    const all = referenceForward(ckpt, prompt, KV_F16);
    assertClose(got, all.subarray(all.length - engine.config.vocabSize), TOL, 'chunked prefill');
  } finally {
    ckpt.close();
    engine.destroy();
  }
});
