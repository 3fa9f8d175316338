/**
 * attention_mass (calibration, shaders/attention_mass.wgsl on lib/lanes.wgsl): the share of dense causal softmax mass outside sink + local, against the
 * table-walking reference on a mixed paged batch (NaN in every unowned slot); and a planted strongly local head
 * (its queries align with the keys of the recent window) that scores lowest through HeadMassAccumulator, writes a
 * TSV the head-plan parser loads, and is chosen as the streaming head.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatHeadPattern, HeadMassAccumulator } from '../../model/calibration.js';
import { chooseHeadPlan, parseHeadPattern } from '../../model/head-plan.js';
import { AttentionMassKernel } from '../../shaders/attention_mass.js';
import { KvWriteKernel } from '../../shaders/kv_write.js';
import { UniformArena } from '../../shaders/runtime.js';
import { assertClose } from '../helpers/compare.js';
import { assertNoGpuErrors, f32Buffer, testGpu, u32Buffer } from '../helpers/gpu.js';
import { makePagedBatch, type PagedBatch } from '../helpers/paged.js';
import { Rng } from '../helpers/rng.js';
import { poolOf } from '../helpers/slabs.js';
import { kvWriteRef } from '../reference/attention.js';
import { attentionMassRef } from '../reference/attention_mass.js';

async function runMass(
  b: PagedBatch,
  q: Float32Array,
  numHeads: number,
  sink: number,
  local: number,
  lanes: number,
  mods: { window?: number; softcap?: number } = {},
  slabs = 1,
): Promise<{ got: Float32Array; want: Float32Array }> {
  const gpu = await testGpu();
  const pageBytes = b.pageSize * b.numKvHeads * b.headDim * 2;
  const kCache = poolOf(gpu, 'kCache', b.kCache, pageBytes, slabs);
  const vCache = poolOf(gpu, 'vCache', b.vCache, pageBytes, slabs);
  const mass = gpu.createBuffer('mass', b.T * numHeads * 4);
  const common = {
    blockTable: u32Buffer(gpu, b.blockTable),
    tokenSeq: u32Buffer(gpu, b.tokenSeq),
    positions: u32Buffer(gpu, b.positions),
    T: b.T,
    numKvHeads: b.numKvHeads,
    headDim: b.headDim,
    pageSize: b.pageSize,
    maxPagesPerSeq: b.maxPagesPerSeq,
  };
  const scale = 1 / Math.sqrt(b.headDim);
  const arena = new UniformArena(gpu);
  gpu.run((pass) => {
    new KvWriteKernel(gpu).encode(pass, arena, {
      ...common,
      k: f32Buffer(gpu, b.k),
      v: f32Buffer(gpu, b.v),
      kCache,
      vCache,
    });
    new AttentionMassKernel(gpu, { lanes, maxWorkgroupsPerDim: 9 }).encode(pass, arena, {
      ...common,
      q: f32Buffer(gpu, q),
      kCache,
      mass,
      numHeads,
      scale,
      sinkTokens: sink,
      localTokens: local,
      ...mods,
    });
  }, arena);
  const got = await gpu.readF32(mass, b.T * numHeads);
  assertNoGpuErrors(gpu);
  arena.destroy();
  const cache = kvWriteRef(b.k, b.v, b.kCache, b.vCache, b.blockTable, b.tokenSeq, b.positions, b);
  const want = attentionMassRef({
    ...b,
    q,
    kCache: cache.kCache,
    numHeads,
    scale,
    sinkTokens: sink,
    localTokens: local,
    ...mods,
  });
  return { got, want };
}

test('attention mass outside sink + local matches the reference (GQA 1 and 4, lanes 8 and 32; K in 1 or 3 slabs)', async () => {
  for (const [seed, group, lanes, slabs] of [
    [1, 1, 8, 1],
    [2, 4, 32, 1],
    [4, 2, 8, 3],
  ]) {
    const rng = new Rng(seed);
    const b = makePagedBatch(
      rng,
      [
        { ctx: 0, fresh: 30 },
        { ctx: 70, fresh: 1 },
        { ctx: 45, fresh: 12 },
      ],
      { numKvHeads: 2, headDim: 32, pageSize: 16 },
      { exactF16: true },
    );
    const numHeads = 2 * group;
    const q = rng.normalArray(b.T * numHeads * 32, 2);
    const { got, want } = await runMass(b, q, numHeads, 4, 16, lanes, {}, slabs);
    assert.ok(
      want.some((x) => x > 0.05),
      'some mass lies outside the window',
    );
    assertClose(got, want, { atol: 1e-5, rtol: 1e-4 }, `attention_mass seed ${seed} slabs ${slabs}`);
  }
});

test('attention mass in a sliding-window layer with soft-capped scores matches the reference', async () => {
  const rng = new Rng(4);
  const b = makePagedBatch(
    rng,
    [
      { ctx: 60, fresh: 9 },
      { ctx: 0, fresh: 40 },
    ],
    { numKvHeads: 2, headDim: 32, pageSize: 16 },
    { exactF16: true, window: 30 },
  );
  const q = rng.normalArray(b.T * 4 * 32, 3);
  const { got, want } = await runMass(b, q, 4, 4, 8, 8, { window: 30, softcap: 2 });
  assert.ok(
    want.some((x) => x > 0.05),
    'some mass lies between the window start and the local window',
  );
  assertClose(got, want, { atol: 1e-5, rtol: 1e-4 }, 'attention_mass window + softcap');
});

test('a planted local head scores lowest, and the calibrated TSV makes it the streaming head', async () => {
  const rng = new Rng(3);
  const hd = 32;
  const sink = 4;
  const local = 16;
  const b = makePagedBatch(
    rng,
    [{ ctx: 0, fresh: 80 }],
    { numKvHeads: 3, headDim: hd, pageSize: 16 },
    { exactF16: true },
  );
  // KV head 1: keys carry a "recency" direction e0 scaled by position, queries point along e0 strongly, so softmax
  // mass concentrates on the newest keys (inside the local window).
  for (let t = 0; t < b.T; t++) {
    const o = (t * 3 + 1) * hd;
    b.k[o] = Math.round((b.positions[t] / 8) * 16) / 16; // f16-exact
  }
  const numHeads = 3;
  const q = rng.normalArray(b.T * numHeads * hd);
  for (let t = 0; t < b.T; t++) q[(t * numHeads + 1) * hd] = 40;
  const { got, want } = await runMass(b, q, numHeads, sink, local, 8);
  assertClose(got, want, { atol: 1e-5, rtol: 1e-4 }, 'planted');
  const acc = new HeadMassAccumulator(2, numHeads, 3, sink, local);
  acc.add(0, got, b.positions);
  acc.add(1, got, b.positions);
  const scores = acc.scores();
  assert.equal(acc.tokensCounted, 80 - sink - local);
  assert.ok(scores[0][1] < 0.01 && scores[0][0] > 0.2 && scores[0][2] > 0.2, `scores ${scores[0]}`);
  const tsv = formatHeadPattern(scores, 'planted test');
  assert.ok(tsv.startsWith('# planted test\n'));
  const parsed = parseHeadPattern(tsv, 'planted.tsv', { numLayers: 2, numKvHeads: 3 });
  const plan = chooseHeadPlan(
    parsed,
    { numLayers: 2, numKvHeads: 3, numHeads: 3 },
    { streamingFraction: 1 / 3, scope: 'per-layer' },
  );
  assert.deepEqual(plan.streaming, [[1], [1]]);
});
