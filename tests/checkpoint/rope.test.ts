// RoPE scalings (checkpoint/rope.ts) against the reference (tests/reference/forward.ts) and against values worked
// out by hand from HF transformers' definitions.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ModelConfig, RopeScaling } from '../../checkpoint/config.js';
import { attentionSoftmaxScale, ropeFrequencies } from '../../checkpoint/rope.js';
import { Rng } from '../../util/rng.js';
import { ropeCosSinScale, ropeInvFreq } from '../reference/forward.js';

type RopeConfig = Pick<ModelConfig, 'headDim' | 'ropeTheta' | 'ropeScaling' | 'maxPositionEmbeddings'>;

function close(a: ArrayLike<number>, b: ArrayLike<number>, what: string, rtol = 1e-12): void {
  assert.equal(a.length, b.length);
  for (let i = 0; i < a.length; i++) {
    assert.ok(Math.abs(a[i] - b[i]) <= rtol * Math.abs(b[i]), `${what}[${i}]: ${a[i]} vs ${b[i]}`);
  }
}

test('every scaling equals the reference on random configs and context lengths', () => {
  const rng = new Rng(17);
  for (let trial = 0; trial < 200; trial++) {
    const headDim = 2 * rng.int(2, 80);
    const half = headDim / 2;
    const maxPos = rng.pick([256, 4096, 32768, 131072]);
    const orig = rng.pick([64, 2048, 4096, 32768]);
    const factors = () => Array.from({ length: half }, () => 1 + 10 * rng.next());
    const scalings: RopeScaling[] = [
      { type: 'none' },
      { type: 'linear', factor: 1 + 7 * rng.next() },
      { type: 'dynamic', factor: 1 + 7 * rng.next() },
      { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: orig },
      {
        type: 'yarn',
        factor: 1 + 15 * rng.next(),
        originalMaxPositionEmbeddings: orig,
        betaFast: rng.pick([32, 16]),
        betaSlow: rng.pick([1, 2]),
        attentionFactor: 1 + rng.next(),
        truncate: rng.next() < 0.5,
      },
      {
        type: 'longrope',
        shortFactor: factors(),
        longFactor: factors(),
        originalMaxPositionEmbeddings: orig,
        attentionFactor: 1.2,
      },
    ];
    const c: RopeConfig = {
      headDim,
      ropeTheta: rng.pick([10000, 500000, 1e6]),
      ropeScaling: rng.pick(scalings),
      maxPositionEmbeddings: maxPos,
    };
    const ctx = rng.pick([128, orig, orig + 1, maxPos, 2 * maxPos]);
    const got = ropeFrequencies(c, ctx);
    close(got.invFreq, ropeInvFreq(c, ctx), `${c.ropeScaling.type} d=${headDim} ctx=${ctx}`, 1e-12);
    assert.equal(got.attentionFactor, ropeCosSinScale(c));
    const f = got.attentionFactor;
    assert.ok(Math.abs(attentionSoftmaxScale(c) - (f * f) / Math.sqrt(headDim)) < 1e-15);
  }
});

test('yarn for Qwen2.5 (d 128, theta 1e6, factor 4 over 32768): dims <= 23 kept, >= 40 divided by 4, a ramp between', () => {
  // corrDim(r) = 128 ln(32768 / (2 pi r)) / (2 ln 1e6): r = 32 -> 23.59 (floor 23), r = 1 -> 39.65 (ceil 40).
  const c: RopeConfig = {
    headDim: 128,
    ropeTheta: 1e6,
    maxPositionEmbeddings: 131072,
    ropeScaling: {
      type: 'yarn',
      factor: 4,
      originalMaxPositionEmbeddings: 32768,
      betaFast: 32,
      betaSlow: 1,
      attentionFactor: 0.1 * Math.log(4) + 1,
      truncate: true,
    },
  };
  const { invFreq, attentionFactor } = ropeFrequencies(c, 131072);
  for (let i = 0; i < 64; i++) {
    const base = 1 / 1e6 ** ((2 * i) / 128);
    const r = Math.min(1, Math.max(0, (i - 23) / (40 - 23)));
    const want = (base / 4) * r + base * (1 - r);
    assert.ok(Math.abs(invFreq[i] - want) <= 1e-15 * want + 1e-300, `dim ${i}`);
    if (i <= 23) assert.equal(invFreq[i], base);
  }
  assert.ok(Math.abs(attentionFactor - 1.1386294361119891) < 1e-12);
});

test('dynamic NTK is plain RoPE up to max positions, a larger base beyond; longrope switches factors past the original', () => {
  const dyn: RopeConfig = {
    headDim: 64,
    ropeTheta: 10000,
    maxPositionEmbeddings: 4096,
    ropeScaling: { type: 'dynamic', factor: 2 },
  };
  const plain = ropeFrequencies({ ...dyn, ropeScaling: { type: 'none' } }, 4096).invFreq;
  assert.deepEqual(ropeFrequencies(dyn, 2048).invFreq, plain);
  assert.deepEqual(ropeFrequencies(dyn, 4096).invFreq, plain);
  const long = ropeFrequencies(dyn, 16384).invFreq;
  // base' = 10000 (2 * 16384 / 4096 - 1)^(64 / 62) = 10000 * 7^(32/31)
  const base = 10000 * 7 ** (64 / 62);
  for (let i = 0; i < 32; i++) assert.ok(Math.abs(long[i] - 1 / base ** ((2 * i) / 64)) < 1e-15);
  const lr: RopeConfig = {
    headDim: 4,
    ropeTheta: 10000,
    maxPositionEmbeddings: 131072,
    ropeScaling: {
      type: 'longrope',
      shortFactor: [1, 2],
      longFactor: [3, 5],
      originalMaxPositionEmbeddings: 4096,
      attentionFactor: 1.19,
    },
  };
  assert.deepEqual(Array.from(ropeFrequencies(lr, 4096).invFreq), [1, 1 / 2 / 100]);
  assert.deepEqual(Array.from(ropeFrequencies(lr, 4097).invFreq), [1 / 3, 1 / 5 / 100]);
  assert.equal(ropeFrequencies(lr, 4097).attentionFactor, 1.19);
});
