import assert from 'node:assert/strict';
import { test } from 'node:test';
import { applyPenalties, argmax, Sampler, tokenLogprobs } from '../../engine/sampler.js';
import { Rng } from '../helpers/rng.js';

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
  const counts = new Map([
    [0, 3],
    [2, 1],
  ]);
  const out = applyPenalties(logits, counts, { presencePenalty: 0.5, frequencyPenalty: 0.1 });
  assert.deepEqual(Array.from(out), [2 - 0.3 - 0.5, 1.9, 0 - 0.1 - 0.5, -1].map(Math.fround));
  assert.deepEqual(logits, [2, 1.9, 0, -1], 'the input row is untouched');
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
