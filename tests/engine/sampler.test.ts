import assert from 'node:assert/strict';
import { test } from 'node:test';
import { argmax, Sampler, sampleLogits, tokenLogprobs } from '../../engine/sampler.js';
import type { SampleSpec } from '../../model/executor.js';
import { Rng } from '../helpers/rng.js';
import { atBoundary, sampleRef } from '../reference/sampler.js';

const logitsOf = (probs: number[]) => probs.map((p) => Math.log(p));

test('temperature 0 is argmax (ties -> lowest id)', () => {
  const rng = new Rng(3);
  for (let i = 0; i < 20; i++) {
    const l = rng.normalArray(257);
    assert.equal(new Sampler({ temperature: 0, topK: 0, topP: 1, seed: i }).sample(l), argmax(l));
  }
  assert.equal(argmax([1, 5, 5, 2]), 1);
});

test('same seed -> same tokens; different seeds differ', () => {
  const l = new Rng(9).normalArray(1000);
  const run = (seed: number) => {
    const s = new Sampler({ temperature: 1, topK: 0, topP: 0.95, seed });
    return Array.from({ length: 50 }, () => s.sample(l));
  };
  assert.deepEqual(run(42), run(42));
  assert.notDeepEqual(run(42), run(43));
});

test('sampling frequencies follow softmax(logits / T)', () => {
  const probs = [0.5, 0.25, 0.15, 0.1];
  const s = new Sampler({ temperature: 1, topK: 0, topP: 1, seed: 7 });
  const counts = [0, 0, 0, 0];
  const n = 20000;
  for (let i = 0; i < n; i++) counts[s.sample(logitsOf(probs))]++;
  for (let i = 0; i < 4; i++)
    assert.ok(Math.abs(counts[i] / n - probs[i]) < 0.015, `token ${i}: ${counts[i] / n} vs ${probs[i]}`);
  // temperature 0.5 squares the odds: p ~ p^2 normalised
  const s2 = new Sampler({ temperature: 0.5, topK: 0, topP: 1, seed: 7 });
  const sq = probs.map((p) => p * p);
  const z = sq.reduce((a, b) => a + b);
  const c2 = [0, 0, 0, 0];
  for (let i = 0; i < n; i++) c2[s2.sample(logitsOf(probs))]++;
  for (let i = 0; i < 4; i++) assert.ok(Math.abs(c2[i] / n - sq[i] / z) < 0.015, `T=0.5 token ${i}`);
});

test('top-k and top-p restrict the support', () => {
  const probs = [0.4, 0.3, 0.2, 0.05, 0.05];
  const topk = new Sampler({ temperature: 1, topK: 2, topP: 1, seed: 1 });
  const topp = new Sampler({ temperature: 1, topK: 0, topP: 0.85, seed: 1 });
  const seenK = new Set<number>();
  const seenP = new Set<number>();
  for (let i = 0; i < 3000; i++) {
    seenK.add(topk.sample(logitsOf(probs)));
    seenP.add(topp.sample(logitsOf(probs)));
  }
  assert.deepEqual([...seenK].sort(), [0, 1]);
  assert.deepEqual([...seenP].sort(), [0, 1, 2]);
  assert.equal(new Sampler({ temperature: 1, topK: 1, topP: 1, seed: 5 }).sample(logitsOf(probs)), 0);
});

test('invalid parameters are rejected naming the field', () => {
  assert.throws(() => new Sampler({ temperature: -1, topK: 0, topP: 1, seed: null }), /temperature/);
  assert.throws(() => new Sampler({ temperature: 1, topK: 1.5, topP: 1, seed: null }), /top_k/);
  assert.throws(() => new Sampler({ temperature: 1, topK: 0, topP: 0, seed: null }), /top_p/);
});

test('presence and frequency penalties lower the logits of generated tokens (OpenAI formula)', () => {
  const logits = [2, 1.9, 0, -1];
  const pen = new Sampler(
    { temperature: 0, topK: 0, topP: 1, seed: 1 },
    { presencePenalty: 0.5, frequencyPenalty: 0.1 },
  );
  for (const id of [0, 0, 2, 0]) pen.accept(id);
  const bias = pen.bias();
  assert.deepEqual(Array.from(bias?.ids ?? []), [0, 2]);
  assert.deepEqual(Array.from(bias?.deltas ?? []), [-0.3 - 0.5, -0.1 - 0.5].map(Math.fround));
  // greedy with a presence penalty moves off a repeated token; without it, it stays
  const s = new Sampler({ temperature: 0, topK: 0, topP: 1, seed: 1 }, { presencePenalty: 0.2 });
  assert.equal(s.sample(logits), 0);
  s.accept(0);
  assert.equal(s.sample(logits), 1);
  const plain = new Sampler({ temperature: 0, topK: 0, topP: 1, seed: 1 });
  plain.accept(0);
  assert.equal(plain.sample(logits), 0);
  assert.throws(
    () => new Sampler({ temperature: 0, topK: 0, topP: 1, seed: 1 }, { frequencyPenalty: 2.5 }),
    /frequency_penalty/,
  );
});

test('logprobs are the log-softmax of the raw logits, top alternatives most likely first', () => {
  const probs = [0.1, 0.6, 0.3];
  const { logprob, top } = tokenLogprobs(
    logitsOf(probs).map((x) => x + 5),
    2,
    2,
  );
  assert.ok(Math.abs(logprob - Math.log(0.3)) < 1e-12);
  assert.deepEqual(
    top.map((t) => t.id),
    [1, 2],
  );
  assert.ok(Math.abs(top[0].logprob - Math.log(0.6)) < 1e-12);
  assert.deepEqual(tokenLogprobs([1, 2], 0, 0).top, []);
});

/** sampleLogits against the full-sort reference: the same token for the same draw but at boundaries. */
test('sampleLogits equals the full-sort reference (temperature, top-k, top-p, bias) without sorting the vocabulary', () => {
  const rng = new Rng(77);
  let boundary = 0;
  let n = 0;
  for (const V of [1, 2, 7, 300, 5000, 32000]) {
    for (let trial = 0; trial < (V > 1000 ? 12 : 40); trial++) {
      const scale = rng.pick([0.1, 1, 3, 10]);
      const logits = rng.normalArray(V, scale);
      if (trial % 5 === 0) for (let i = 0; i < V; i += 3) logits[i] = logits[0]; // many ties
      if (trial % 7 === 0) logits.fill(1.5); // flat: every bucket in one
      const spec: SampleSpec = {
        temperature: rng.pick([0, 0.3, 0.7, 1, 1.5]),
        topK: rng.pick([0, 0, 1, 2, 40, V + 3]),
        topP: rng.pick([1, 1, 0.9, 0.5, 0.999, 0.01]),
        u: rng.next(),
      };
      if (trial % 3 === 0) {
        const ids = new Uint32Array(Math.min(V, 5)).map(() => rng.int(0, V - 1));
        const uniq = [...new Set(ids)];
        spec.bias = { ids: uniq, deltas: Float32Array.from(uniq, () => rng.normal() * 2) };
      }
      const got = sampleLogits(logits, spec);
      const want = sampleRef(logits, spec);
      n++;
      if (got !== want) {
        const near = atBoundary(logits, spec, got);
        assert.ok(near, `V=${V} ${JSON.stringify({ ...spec, bias: undefined })}: got ${got}, reference ${want}`);
        boundary++;
      }
    }
  }
  assert.ok(boundary <= n / 100, `${boundary} of ${n} draws at a boundary`);
});

test('the step spec: one draw per sampled token (none for greedy), penalties as a sparse bias', () => {
  const s = new Sampler(
    { temperature: 1, topK: 0, topP: 1, seed: 3 },
    { presencePenalty: 0.5, frequencyPenalty: 0.25 },
  );
  const t = new Sampler({ temperature: 1, topK: 0, topP: 1, seed: 3 });
  const a = s.nextStep();
  assert.equal(a.bias, undefined);
  assert.equal(a.u, t.nextStep().u);
  s.accept(4);
  s.accept(4);
  s.accept(9);
  const b = s.nextStep();
  assert.equal(b.u, t.nextStep().u, 'the stream advances once per step whatever the penalties');
  assert.deepEqual(Array.from(b.bias?.ids ?? []), [4, 9]);
  assert.deepEqual(Array.from(b.bias?.deltas ?? []), [-1, -0.75]);
  const g = new Sampler({ temperature: 0, topK: 0, topP: 1, seed: 3 });
  assert.equal(g.nextStep().u, 0);
  // a greedy request's draws do not move: the next sampled request of the same seed starts where it would have
  assert.equal(new Sampler({ temperature: 0.5, topK: 0, topP: 1, seed: 3 }).nextStep().u, a.u);
});
