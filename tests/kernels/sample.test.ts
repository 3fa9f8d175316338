/**
 * The device sampler (shaders/sample.wgsl) against the host rule (engine/sampler.ts sampleLogits) and the full-sort
 * reference: greedy exactly; with temperature, top-k, top-p and a logit bias the same token for the same draw but
 * where the draw or the top-p cut sits on a cumulative-weight boundary within f32 rounding (rare, counted); the same
 * rows twice give the same tokens; disabled rows are left alone; the frequencies over many draws follow the
 * kept set's softmax.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sampleLogits } from '../../engine/sampler.js';
import type { SampleSpec } from '../../model/executor.js';
import { UniformArena } from '../../shaders/runtime.js';
import { packRowSpecs, SAMPLE_SPEC_WORDS, SampleKernel } from '../../shaders/sample.js';
import { assertNoGpuErrors, f32Buffer, testGpu, u32Buffer } from '../helpers/gpu.js';
import { Rng } from '../helpers/rng.js';
import { atBoundary } from '../reference/sampler.js';

const UNTOUCHED = 0xabcdef;

async function sampleOnGpu(rows: (SampleSpec | null)[], logits: Float32Array, V: number): Promise<Uint32Array> {
  const gpu = await testGpu();
  const R = rows.length;
  const specs = new Uint32Array(R * SAMPLE_SPEC_WORDS);
  const bias = new Uint32Array(2 * (1 + rows.reduce((n, r) => n + (r?.bias?.ids.length ?? 0), 0)));
  packRowSpecs(rows, specs, bias);
  const tokens = u32Buffer(gpu, new Uint32Array(R).fill(UNTOUCHED));
  const scratchK = gpu.createBuffer('keys', R * V * 4);
  const scratchW = gpu.createBuffer('weights', R * V * 4);
  const arena = new UniformArena(gpu);
  const buffers = [f32Buffer(gpu, logits), u32Buffer(gpu, specs), u32Buffer(gpu, bias)];
  gpu.run(
    (pass) =>
      new SampleKernel(gpu).encode(pass, arena, {
        logits: buffers[0],
        specs: buffers[1],
        bias: buffers[2],
        tokens,
        keys: scratchK,
        weights: scratchW,
        rows: R,
        vocab: V,
      }),
    arena,
  );
  const got = await gpu.readU32(tokens, R);
  assertNoGpuErrors(gpu);
  for (const b of [tokens, scratchK, scratchW, ...buffers]) b.destroy();
  arena.destroy();
  return got;
}

function randomSpec(rng: Rng, V: number): SampleSpec {
  const spec: SampleSpec = {
    temperature: rng.pick([0, 0.3, 0.7, 1, 1.5]),
    topK: rng.pick([0, 0, 1, 2, 40, V + 3]),
    topP: rng.pick([1, 1, 0.9, 0.5, 0.999, 0.01]),
    u: rng.next(),
  };
  if (rng.next() < 0.3) {
    const ids = [...new Set(Array.from({ length: Math.min(V, 6) }, () => rng.int(0, V - 1)))];
    spec.bias = { ids, deltas: Float32Array.from(ids, () => rng.normal() * 3) };
  }
  return spec;
}

test('device sampling equals the host rule: greedy exactly, sampled tokens but at f32 boundaries', async () => {
  const rng = new Rng(2024);
  let boundary = 0;
  let sampled = 0;
  for (const [V, R] of [
    [1, 3],
    [5, 16],
    [300, 24],
    [4097, 12],
    [32000, 8],
    [128256, 2],
  ]) {
    const logits = new Float32Array(R * V);
    const rows: (SampleSpec | null)[] = [];
    for (let r = 0; r < R; r++) {
      const row = rng.normalArray(V, rng.pick([0.5, 2, 6]));
      if (r % 4 === 1) for (let i = 0; i < V; i += 2) row[i] = row[0]; // long runs of equal logits
      if (r % 6 === 5) row.fill(-0.25); // flat
      logits.set(row, r * V);
      rows.push(r % 7 === 3 ? null : randomSpec(rng, V));
    }
    const got = await sampleOnGpu(rows, logits, V);
    rows.forEach((spec, r) => {
      const row = logits.subarray(r * V, (r + 1) * V);
      if (!spec) {
        assert.equal(got[r], UNTOUCHED, `V=${V} row ${r}: a disabled row was written`);
        return;
      }
      const want = sampleLogits(row, spec);
      const what = `V=${V} row ${r} ${JSON.stringify({ ...spec, bias: spec.bias?.ids.length })}`;
      if (spec.temperature === 0) {
        assert.equal(got[r], want, `${what}: greedy`);
        return;
      }
      sampled++;
      if (got[r] !== want) {
        assert.ok(atBoundary(row, spec, got[r], 2e-5), `${what}: device ${got[r]}, host ${want}`);
        boundary++;
      }
    });
  }
  assert.ok(boundary <= Math.max(1, sampled / 20), `${boundary} of ${sampled} sampled rows at a boundary`);
});

test('device sampling is deterministic and its frequencies follow the kept set', async () => {
  const V = 6;
  const probs = [0.35, 0.25, 0.15, 0.12, 0.08, 0.05];
  const logits1 = probs.map((p) => Math.log(p));
  const R = 2000;
  const rng = new Rng(5);
  for (const [topK, topP, support] of [
    [0, 1, [0, 1, 2, 3, 4, 5]],
    [3, 1, [0, 1, 2]],
    [0, 0.7, [0, 1, 2]],
    [4, 0.5, [0, 1]],
  ] as [number, number, number[]][]) {
    const logits = new Float32Array(R * V);
    for (let r = 0; r < R; r++) logits.set(logits1, r * V);
    const rows = Array.from({ length: R }, (): SampleSpec => ({ temperature: 1, topK, topP, u: rng.next() }));
    const a = await sampleOnGpu(rows, logits, V);
    const b = await sampleOnGpu(rows, logits, V);
    assert.deepEqual(Array.from(a), Array.from(b), 'same rows and draws, same tokens');
    const counts = new Array(V).fill(0);
    for (const t of a) counts[t]++;
    const z = support.reduce((s, i) => s + probs[i], 0);
    for (let i = 0; i < V; i++) {
      const want = support.includes(i) ? probs[i] / z : 0;
      assert.ok(
        Math.abs(counts[i] / R - want) < 0.035,
        `topK=${topK} topP=${topP} token ${i}: ${counts[i] / R} vs ${want}`,
      );
    }
  }
});
