/** Smoke runs of every bench suite on tiny shapes: the results have their fields and positive times (no thresholds). */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { runAgreement } from '../../bench/agreement.js';
import { attentionTables, runAttentionBench } from '../../bench/attention.js';
import { selectionBytesRows } from '../../bench/attention-prefill.js';
import { startMeta } from '../../bench/common.js';
import { decodeTable, runDecodeBench } from '../../bench/decode.js';
import { forwardTable, runForwardBench } from '../../bench/forward.js';
import { pseudoTokens } from '../../bench/model-steps.js';
import { PHASES, phaseOf, prefillTable, runPrefillBench } from '../../bench/prefill.js';
import { prefillAgreementTable, runPrefillAgreement } from '../../bench/prefill-agreement.js';
import { SYNTHETIC_PRESETS, writeSyntheticCheckpoint } from '../../checkpoint/synthetic.js';
import { attentionConfig } from '../../config/attention.js';
import { engineConfig } from '../../config/engine.js';
import { ModelRunner } from '../../model/runner.js';
import { assertNoGpuErrors, testGpu } from '../helpers/gpu.js';

const root = mkdtempSync(path.join(os.tmpdir(), 'sift-bench-'));
after(() => rmSync(root, { recursive: true, force: true }));

const positive = (s: { median: number; min: number; max: number }) => {
  assert.ok(s.min > 0 && s.median >= s.min && s.max >= s.median, JSON.stringify(s));
};

let engineP: Promise<ModelRunner> | undefined;
function tinyEngine(): Promise<ModelRunner> {
  engineP ??= (async () => {
    const dir = path.join(root, 'tiny');
    writeSyntheticCheckpoint(dir, {
      architecture: 'LlamaForCausalLM',
      dtype: 'f16',
      sharded: false,
      tie: 'untied',
      hidden: 64,
      layers: 2,
      heads: 4,
      kvHeads: 2,
      headDim: 32,
      intermediate: 96,
      vocab: 128,
      maxPositions: 1024,
      seed: 3,
    });
    const cfg = engineConfig({ flags: { maxBatchTokens: 128, kvCacheMib: 4, maxSeqs: 8, maxContext: 1024 } });
    return ModelRunner.load(dir, cfg, { gpu: await testGpu() });
  })();
  return engineP;
}
after(async () => (await engineP)?.destroy());

test('llama3-attn preset: Llama-3-8B attention shape on a small residual stream', () => {
  const p = SYNTHETIC_PRESETS['llama3-attn'];
  assert.ok(p);
  assert.equal(p.heads, 32);
  assert.equal(p.kvHeads, 8);
  assert.equal(p.headDim, 128);
  assert.ok(p.hidden <= 512 && (p.maxPositions ?? 0) >= 131072);
});

test('attention suite: decode and sampled prefill on a tiny shape', async () => {
  const gpu = await testGpu();
  const meta = startMeta(gpu.caps).finish();
  assert.ok(
    meta.date &&
      meta.command &&
      meta.machine.cpus > 0 &&
      meta.loadavgStart.length === 3 &&
      meta.loadavgEnd.length === 3,
  );
  const r = await runAttentionBench(gpu, {
    shapes: [{ name: 'tiny', numHeads: 4, numKvHeads: 2, headDim: 32 }],
    contexts: [256, 512],
    prefillContexts: [320],
    budget: 128,
    reuse: 4,
    repeat: 2,
    prefillSample: 1,
    peakGbps: 100,
    chunk: 128,
    targetMs: 1,
  });
  assert.equal(r.decode.length, 2);
  for (const d of r.decode) {
    for (const s of Object.values(d.ms)) positive(s);
    assert.ok(d.gbps.dense > 0 && d.gbps.sparseAmortized > 0 && d.bytes.digests > 0);
    assert.equal(d.tokensAttended, 128);
  }
  assert.equal(r.prefill.length, 1);
  const p = r.prefill[0];
  assert.equal(p.chunks, 3);
  assert.ok(p.interpolated && p.timedChunks.length === 1);
  for (const s of Object.values(p.ms)) positive(s);
  const t = attentionTables(r);
  assert.ok(t.includes('SAMPLED') && t.includes('% of peak'));
  assert.ok(t.includes('streaming heads (sink 128 + local 256, ring)') && !/old kernel|legacy/i.test(t));
  assert.ok(t.includes('block selection, bytes one layer reads per 512-token chunk'));
  assert.deepEqual(
    r.selectionBytes.map((x) => x.context),
    [320, 4096, 16384, 65536],
  );
  assertNoGpuErrors(gpu);
});

test('selection bytes per chunk: flat grows with the prompt, hierarchical is a fixed part plus its coarse digests', () => {
  const shape = { name: 'stories15M', numHeads: 6, numKvHeads: 6, headDim: 48 };
  const [r4, r16, r64, r256] = selectionBytesRows(shape, [4096, 16384, 65536, 262144]);
  // the first chunk reads the same either way; at 4k the coarse level drops nothing
  assert.equal(r4.hierarchical.firstChunk, r4.flat.firstChunk);
  assert.equal(r4.hierarchical.lastChunk, r4.flat.lastChunk);
  assert.ok(r64.flat.lastChunk > 3 * r16.flat.lastChunk);
  // past the coarse level's reach the last chunk reads the same but for one coarse digest per 8 blocks
  const fixed = (r: typeof r16) => r.hierarchical.lastChunk - r.hierarchical.coarseLast;
  assert.equal(fixed(r64), fixed(r16));
  assert.equal(fixed(r256), fixed(r16));
  const ratio = r256.hierarchical.coarseLast / r64.hierarchical.coarseLast;
  assert.ok(ratio > 3.99 && ratio < 4.03, `coarse digests 256k / 64k: ${ratio}`);
  assert.ok(r256.hierarchical.coarseLast < r256.flat.lastChunk / 7);
});

test('forward suite with --batch on a tiny synthetic model', async () => {
  const engine = await tinyEngine();
  const r = await runForwardBench(engine, {
    promptLens: [32],
    contexts: [16],
    decodeTokens: 2,
    repeat: 1,
    batches: [1, 4],
  });
  assert.equal(r.prefill.length, 1);
  assert.equal(r.decode.length, 1);
  assert.deepEqual(
    r.batch.map((b) => b.batch),
    [1, 4],
  );
  for (const b of r.batch) {
    positive(b.msPerStep);
    positive(b.tokensPerS);
  }
  positive(r.prefill[0].tokensPerS);
  positive(r.decode[0].msPerToken);
  assert.ok(forwardTable(r).includes('decode batch 4 @16'));
});

test('prefill suite: end to end and by phase, each phase timed, the chunks of the prompt summed', async () => {
  const engine = await tinyEngine();
  const chunk = engine.forwardPass.maxBatchTokens;
  const len = Math.min(2 * chunk + 5, engine.maxContext);
  const r = await runPrefillBench(engine, { promptLens: [len], sample: 0, repeat: 1 });
  assert.equal(r.rows.length, 1);
  const row = r.rows[0];
  assert.equal(row.chunks, Math.ceil(len / chunk));
  assert.deepEqual(
    row.timedChunks,
    Array.from({ length: row.chunks }, (_, i) => i),
  );
  positive(row.ms);
  for (const p of ['matmul', 'attention', 'other'] as const) assert.ok(row.phaseMs[p] > 0, `${p}: ${row.phaseMs[p]}`);
  assert.ok(row.topKernels.some((k) => k.kernel.startsWith('matmul')));
  assert.ok(Math.abs(row.hostMs + PHASES.reduce((a, p) => a + row.phaseMs[p], 0) - row.ms.median) < 1e-6);
  assert.ok(prefillTable(r).includes('| matmul | attention | selection | other | host |'));
  assert.deepEqual(
    [
      'matmul_tiled',
      'prefill_attention',
      'kv_write',
      'sparse_decode_lanes',
      'block_select',
      'page_digest',
      'rmsnorm',
    ].map(phaseOf),
    ['matmul', 'attention', 'attention', 'attention', 'selection', 'selection', 'other'],
  );
  assertNoGpuErrors(engine.gpu);
});

test('decode suite: dense vs sparse at two contexts (tiled fill)', async () => {
  const engine = await tinyEngine();
  const r = await runDecodeBench(engine, { contexts: [256, 512], budget: 128, steps: 4, repeat: 1, fillTokens: 256 });
  assert.equal(r.rows.length, 2);
  assert.ok(r.filled.tiled);
  for (const x of r.rows) {
    assert.ok(x.msPerStep.dense && x.speedup !== undefined, 'dense measured');
    positive(x.msPerStep.dense);
    positive(x.msPerStep.sparse);
    assert.ok(x.speedup > 0);
    // pages of 64, budget 128: the sink page and the newest page, which holds 1 token at contexts 256 + 1, 512 + 1
    assert.equal(x.tokensAttended.sparse, 65);
  }
  assert.ok(decodeTable(r).includes('| 512 |'));
  const so = await runDecodeBench(engine, {
    contexts: [512],
    budget: 128,
    steps: 4,
    repeat: 1,
    fillTokens: 256,
    sparseOnly: true,
  });
  assert.equal(so.rows[0].msPerStep.dense, undefined);
  assert.equal(so.rows[0].speedup, undefined);
  positive(so.rows[0].msPerStep.sparse);
  assert.ok(decodeTable(so).includes('| 512 | - |'), 'sparse only: no dense column values');
});

test('prefill agreement: block-sparse keeping every block agrees with dense; a small budget runs', async () => {
  const dense = await tinyEngine();
  const dir = path.join(root, 'tiny');
  const cfg = engineConfig({ flags: { maxBatchTokens: 128, kvCacheMib: 4, maxSeqs: 8, maxContext: 1024 } });
  const load = (top: string, hierarchy = { groupBlocks: 2, margin: 0 }) =>
    ModelRunner.load(dir, cfg, {
      gpu: dense.gpu,
      attention: attentionConfig({ flags: { prefillMode: 'block-sparse', prefillTopBlocks: top } }),
      prefillHierarchy: hierarchy,
    });
  const all = await load('1000');
  const small = await load('1');
  try {
    const r = await runPrefillAgreement(
      dense,
      [
        { name: 'all blocks', engine: all },
        { name: 'top 1', engine: small },
      ],
      { lengths: [400], docs: 1, steps: 2 },
      (L) => [pseudoTokens(L, dense.config.vocabSize, 5)],
      'pseudo-random tokens',
    );
    assert.equal(r.rows.length, 2);
    const [a, b] = r.rows;
    // the prompt's last position, 24 needle tokens, 2 greedy tokens
    assert.equal(a.pooled.steps, 27);
    assert.equal(a.pooled.tokenMatch, 1);
    assert.ok(a.pooled.meanKl < 1e-6, `KL ${a.pooled.meanKl}`);
    assert.equal(a.needle.variant, a.needle.dense);
    assert.equal(a.needle.of, 24);
    assert.ok(b.pooled.meanKl > 0 && b.pooled.tokenMatch >= 0 && b.pooled.tokenMatch <= 1);
    assert.ok(prefillAgreementTable(r).includes('needle tokens: dense / this'));
  } finally {
    all.destroy();
    small.destroy();
  }
});

test('agreement suite: a budget covering the context agrees exactly with dense; a small one runs', async () => {
  const engine = await tinyEngine();
  const r = await runAgreement(
    engine,
    { budgets: [128, 4096], lengths: [200], docs: 1, steps: 3 },
    (L) => [pseudoTokens(L, engine.config.vocabSize, 9)],
    'pseudo-random tokens',
  );
  assert.equal(r.rows.length, 2);
  const full = r.rows.find((x) => x.budget === 4096)!;
  assert.equal(full.pooled.tokenMatch, 1);
  assert.ok(full.pooled.meanKl < 1e-9, `KL ${full.pooled.meanKl}`);
  const small = r.rows.find((x) => x.budget === 128)!;
  assert.equal(small.pooled.steps, 3);
  assert.ok(small.pooled.meanKl >= 0 && small.pooled.tokenMatch >= 0 && small.pooled.tokenMatch <= 1);
});
