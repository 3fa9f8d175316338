/** `sift calibrate` end to end on a synthetic model and random tokens: a TSV of the right shape that loads as a plan. */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { openCheckpoint } from '../../checkpoint/checkpoint.js';
import { SYNTHETIC_VARIANTS, writeSyntheticCheckpoint } from '../../checkpoint/synthetic.js';
import { calibrateToFile } from '../../cli/calibrate.js';
import { loadHeadPlan } from '../../model/head-plan.js';
import { assertNoGpuErrors, testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/rng.js';
import { referenceForward } from '../reference/forward.js';

const root = mkdtempSync(path.join(os.tmpdir(), 'sift-calibrate-'));
after(() => rmSync(root, { recursive: true, force: true }));

test('calibrating a synthetic GQA model on random tokens writes a TSV the head-plan parser loads', async () => {
  const gpu = await testGpu();
  const variant = SYNTHETIC_VARIANTS.find((v) => v.name === 'llama-f16-gqa4-sharded-llama3rope')!;
  const dir = path.join(root, 'model');
  writeSyntheticCheckpoint(dir, variant);
  const rng = new Rng(5);
  const ids = Array.from({ length: 150 }, () => rng.int(0, variant.vocab - 1));
  const out = path.join(root, 'heads.tsv');
  const scores = await calibrateToFile({
    dir,
    ids,
    out,
    sinkTokens: 4,
    localTokens: 32,
    windowTokens: 96,
    chunkTokens: 40,
    source: 'random',
    gpu,
  });
  assertNoGpuErrors(gpu);
  const text = readFileSync(out, 'utf8');
  const lines = text.trimEnd().split('\n');
  assert.match(lines[0], /^# sift calibrate: model=model text=random tokens=150 .*sink=4 local=32/);
  assert.equal(lines.length, 1 + variant.layers);
  assert.equal(scores.length, variant.layers);
  for (const row of scores) {
    assert.equal(row.length, variant.kvHeads);
    for (const x of row) assert.ok(x >= 0 && x <= 1, `score ${x} is a share of mass`);
  }
  const plan = loadHeadPlan(out, { numLayers: variant.layers, numKvHeads: variant.kvHeads, numHeads: variant.heads });
  assert.equal(plan.streaming.flat().length, Math.round(variant.layers * variant.kvHeads * 0.5));
  await assert.rejects(
    calibrateToFile({ dir, ids: ids.slice(0, 20), out, sinkTokens: 4, localTokens: 32, source: 'short', gpu }),
    /no token past the window/,
  );
});

test("calibration scores equal the reference forward pass's outside-window mass on a YaRN model", async () => {
  // YaRN (attention factor 1.3) scales attention logits by 1.69: a calibration that used plain 1/sqrt(headDim)
  // would measure flatter attention than the model has
  const gpu = await testGpu();
  const variant = SYNTHETIC_VARIANTS.find((v) => v.name === 'qwen2-f32-gqa-yarn')!;
  const dir = path.join(root, 'yarn');
  writeSyntheticCheckpoint(dir, variant);
  const rng = new Rng(11);
  const ids = Array.from({ length: 72 }, () => rng.int(0, variant.vocab - 1));
  const sink = 4;
  const local = 16;
  const scores = await calibrateToFile({
    dir,
    ids,
    out: path.join(root, 'yarn.tsv'),
    sinkTokens: sink,
    localTokens: local,
    windowTokens: ids.length,
    chunkTokens: 40,
    source: 'random',
    gpu,
  });
  assertNoGpuErrors(gpu);
  const group = variant.heads / variant.kvHeads;
  const sums = Array.from({ length: variant.layers }, () => new Float64Array(variant.kvHeads));
  let counted = 0;
  referenceForward(openCheckpoint(dir), ids, {
    kvF16: true,
    onAttention: (layer, head, t, p) => {
      if (t < sink + local) return;
      if (layer === 0 && head === 0) counted++;
      for (let s = sink; s + local <= t; s++) sums[layer][Math.floor(head / group)] += p[s];
    },
  });
  assert.equal(counted, ids.length - sink - local);
  for (let l = 0; l < variant.layers; l++) {
    for (let kv = 0; kv < variant.kvHeads; kv++) {
      const want = sums[l][kv] / group / counted;
      assert.ok(
        Math.abs(scores[l][kv] - want) < 2e-3,
        `layer ${l} kv head ${kv}: ${scores[l][kv]} vs reference ${want}`,
      );
    }
  }
});
