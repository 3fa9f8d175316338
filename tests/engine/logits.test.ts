/**
 * The host logits processors (engine/logits.ts) inside the sampler, against the plain reference of
 * tests/reference/sampling.ts: the sampler only draws tokens the reference gives nonzero probability, greedy picks
 * the reference's one-hot token, and the draw frequencies follow the reference distribution, over seeded random
 * rows and parameters. Plus the request checks and the seeded stream with masks.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkRequest, type GenerationRequest, needsLogits } from '../../engine/client.js';
import { applyMask, maskAllows, maskCount, type TokenMask } from '../../engine/logits.js';
import { Sampler } from '../../engine/sampler.js';
import { Rng } from '../helpers/rng.js';
import { type ReferenceSampling, referenceDistribution } from '../reference/sampling.js';

function maskOf(allowed: Set<number>, V: number): TokenMask {
  const m = new Int32Array(Math.ceil(V / 32));
  for (const id of allowed) m[id >> 5] |= 1 << (id & 31);
  return m;
}

function randomParams(rng: Rng, V: number): ReferenceSampling {
  const pick = <T>(xs: T[]) => xs[Math.floor(rng.next() * xs.length)];
  const bias = new Map<number, number>();
  for (let i = 0; i < pick([0, 1, 3]); i++) bias.set(Math.floor(rng.next() * V), pick([-100, -2, 1.5, 5, 100]));
  let allowed: Set<number> | null = null;
  if (rng.next() < 0.5) {
    allowed = new Set();
    for (let i = 0; i < V; i++) if (rng.next() < 0.3) allowed.add(i);
    if (allowed.size === 0) allowed.add(V - 1);
  }
  return {
    temperature: pick([0, 0.7, 1, 1.6]),
    topK: pick([0, 0, 3, 12]),
    topP: pick([1, 1, 0.9, 0.6]),
    minP: pick([0, 0, 0.05, 0.3]),
    logitBias: bias,
    repetitionPenalty: pick([1, 1.3, 0.8]),
    presencePenalty: pick([0, 0.5]),
    frequencyPenalty: pick([0, -0.4]),
    allowed,
  };
}

function samplerOf(p: ReferenceSampling, prompt: number[], generated: number[], seed: number): Sampler {
  const s = new Sampler(
    { temperature: p.temperature, topK: p.topK, topP: p.topP, seed },
    { presencePenalty: p.presencePenalty, frequencyPenalty: p.frequencyPenalty },
    { logitBias: p.logitBias, repetitionPenalty: p.repetitionPenalty, minP: p.minP },
    prompt,
  );
  for (const id of generated) s.accept(id);
  return s;
}

test('the sampler draws from the reference distribution (bias, repetition, penalties, mask, min_p, top-k/p)', () => {
  const rng = new Rng(2024);
  const V = 37; // not a multiple of 32: the mask's last word is partial
  for (let trial = 0; trial < 40; trial++) {
    const p = randomParams(rng, V);
    const row = Float32Array.from(rng.normalArray(V).map((v) => v * 2));
    const prompt = Array.from({ length: 5 }, () => Math.floor(rng.next() * V));
    const generated = Array.from({ length: 4 }, () => Math.floor(rng.next() * V));
    const want = referenceDistribution(row, p, prompt, generated);
    const mask = p.allowed ? maskOf(p.allowed, V) : undefined;
    const s = samplerOf(p, prompt, generated, trial);
    const n = p.temperature === 0 ? 20 : 6000;
    const counts = new Float64Array(V);
    for (let i = 0; i < n; i++) counts[s.sample(row, mask)]++;
    for (let id = 0; id < V; id++) {
      const got = counts[id] / n;
      if (want[id] === 0) assert.equal(counts[id], 0, `trial ${trial}: token ${id} has reference probability 0`);
      else assert.ok(Math.abs(got - want[id]) < 0.03, `trial ${trial}: token ${id} ${got} vs ${want[id]}`);
    }
  }
});

test('a seeded sampler gives the same tokens with and without a mask that allows them all', () => {
  const rng = new Rng(5);
  const V = 100;
  const rows = Array.from({ length: 30 }, () => Float32Array.from(rng.normalArray(V)));
  const all = maskOf(new Set([...Array(V).keys()]), V);
  const a = new Sampler({ temperature: 1, topK: 0, topP: 0.9, seed: 11 });
  const b = new Sampler({ temperature: 1, topK: 0, topP: 0.9, seed: 11 });
  assert.deepEqual(
    rows.map((r) => a.sample(r)),
    rows.map((r) => b.sample(r, all)),
  );
  // a mask with one token forces it, and still consumes one draw: the stream after it is unchanged
  const c = new Sampler({ temperature: 1, topK: 0, topP: 1, seed: 3 });
  const d = new Sampler({ temperature: 1, topK: 0, topP: 1, seed: 3 });
  assert.equal(c.sample(rows[0], maskOf(new Set([42]), V)), 42);
  d.sample(rows[0]);
  assert.equal(c.sample(rows[1]), d.sample(rows[1]));
});

test('mask helpers: bits, counts, and an empty mask is an error', () => {
  const m = maskOf(new Set([0, 31, 32, 36]), 37);
  assert.ok(maskAllows(m, 31) && maskAllows(m, 32) && !maskAllows(m, 1));
  assert.equal(maskCount(m, 37), 4);
  assert.throws(() => applyMask(new Float32Array(37), new Int32Array(2)), /allows no next token/);
});

test('checkRequest names logit_bias ids, repetition penalty and min_p; needsLogits marks host sampling', () => {
  const base: GenerationRequest = {
    id: 'x',
    promptIds: [1, 2],
    maxTokens: 4,
    sampling: { temperature: 1, topK: 0, topP: 1, seed: 1 },
    stopIds: [],
  };
  const lim = { maxContext: 64, vocabSize: 50, pageSize: 16 };
  checkRequest({ ...base, logitBias: new Map([[3, -100]]), repetitionPenalty: 1.2, minP: 0.1 }, lim);
  const err = (r: Partial<GenerationRequest>) => {
    try {
      checkRequest({ ...base, ...r }, lim);
    } catch (e) {
      return (e as { param: string }).param;
    }
    return null;
  };
  assert.equal(err({ logitBias: new Map([[50, 1]]) }), 'logitBias[50]');
  assert.equal(err({ logitBias: new Map([[3, 101]]) }), 'logitBias[3]');
  assert.equal(err({ repetitionPenalty: 0 }), 'repetitionPenalty');
  assert.equal(err({ minP: 1.5 }), 'minP');
  assert.equal(needsLogits(base), false);
  assert.equal(needsLogits({ ...base, minP: 0.1 }), true);
  assert.equal(needsLogits({ ...base, repetitionPenalty: 1.2 }), true);
  // additive biases go to the device sampler with the step's spec (engine/sampler.ts Sampler.bias)
  assert.equal(needsLogits({ ...base, logitBias: new Map([[1, 1]]) }), false);
  assert.equal(needsLogits({ ...base, presencePenalty: 1, frequencyPenalty: 0.5 }), false);
  assert.equal(needsLogits({ ...base, repetitionPenalty: 1 }), false);
  assert.equal(needsLogits({ ...base, topLogprobs: 0 }), true);
});
