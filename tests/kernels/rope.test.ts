import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RopeKernel, type RopeScaling, ropeInvFreq } from '../../shaders/rope.js';
import { UniformArena } from '../../shaders/runtime.js';
import { assertClose, compareArrays } from '../helpers/compare.js';
import { assertNoGpuErrors, f32Buffer, testGpu, u32Buffer } from '../helpers/gpu.js';
import { Rng } from '../helpers/rng.js';
import { ropeRef } from '../reference/rope.js';

// Positions up to ~131k, x ~ N(0, 1). The kernel forms pos * invFreq exactly and reduces it mod 2*pi in pieces
// (shaders/rope.wgsl), so the angle is within ~1e-6 rad of the exact one; what remains is sin/cos and the f32
// rotation. Tolerance: |err| <= 2e-5 + 2e-5 * |want|. (WGSL itself only promises 2^-11 absolute for sin/cos on
// [-pi, pi]; lavapipe and the GPU drivers we use are far better.) A kernel that rounds pos * invFreq to f32
// first is off by up to ~4e-3 rad at pos 1e5: the test checks that such output would fail this tolerance.
const TOL = { atol: 2e-5, rtol: 2e-5 };

const SCALINGS: RopeScaling[] = [
  { type: 'none' },
  { type: 'linear', factor: 4 },
  { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 },
];

test('rope rotates q and k like the reference at positions up to 131071', async () => {
  const gpu = await testGpu();
  const arena = new UniformArena(gpu);
  for (let seed = 1; seed <= 10; seed++) {
    const rng = new Rng(seed);
    const [nHeads, nKvHeads] = rng.pick([
      [6, 6],
      [8, 2],
      [4, 1],
      [32, 8],
    ]);
    const headDim = rng.pick([2, 36, 48, 64, 80, 128, 256]);
    const tokens = rng.int(1, 9);
    const theta = rng.pick([10_000, 500_000, 1_000_000]);
    const invFreq = ropeInvFreq(headDim, theta, rng.pick(SCALINGS));
    const positions = new Uint32Array(tokens);
    for (let t = 0; t < tokens; t++) positions[t] = rng.pick([0, 1, rng.int(0, 5000), rng.int(0, 100_000), 131_071]);
    const q = rng.normalArray(tokens * nHeads * headDim);
    const k = rng.normalArray(tokens * nKvHeads * headDim);
    const qBuf = f32Buffer(gpu, q);
    const kBuf = f32Buffer(gpu, k);
    const kernel = new RopeKernel(gpu, { maxWorkgroupsPerDim: seed % 3 === 0 ? 2 : undefined });
    arena.reset();
    gpu.run(
      (pass) =>
        kernel.encode(pass, arena, {
          q: qBuf,
          k: kBuf,
          positions: u32Buffer(gpu, positions),
          invFreq: f32Buffer(gpu, invFreq),
          tokens,
          nHeads,
          nKvHeads,
          headDim,
        }),
      arena,
    );
    const gotQ = await gpu.readF32(qBuf, q.length);
    const gotK = await gpu.readF32(kBuf, k.length);
    assertNoGpuErrors(gpu);
    const what = `rope seed=${seed} T=${tokens} heads=${nHeads}/${nKvHeads} headDim=${headDim} pos=${positions.join(',')}`;
    const wantQ = ropeRef(q, positions, invFreq, tokens, nHeads, headDim);
    if (process.env.SIFT_TEST_VERBOSE) {
      console.log(what, compareArrays(gotQ, wantQ, TOL));
    }
    assertClose(gotQ, wantQ, TOL, `${what} q`);
    assertClose(gotK, ropeRef(k, positions, invFreq, tokens, nKvHeads, headDim), TOL, `${what} k`);
  }
});

test('rope tolerance would catch an f32-rounded angle at position 100000', () => {
  const rng = new Rng(99);
  const headDim = 128;
  const invFreq = ropeInvFreq(headDim, 10_000, { type: 'none' });
  const positions = new Uint32Array([100_000, 99_991]);
  const x = rng.normalArray(2 * headDim);
  const naive = ropeRef(x, positions, invFreq, 2, 1, headDim, true);
  const exact = ropeRef(x, positions, invFreq, 2, 1, headDim);
  assert.ok(compareArrays(naive, exact, TOL).fails > 0, 'an f32-rounded angle should fail the rope tolerance');
});

test('ropeInvFreq follows HF transformers for none, linear and llama3 scaling', () => {
  const close = (got: number, want: number, what: string) =>
    assert.ok(Math.abs(got - want) <= 1e-7 * Math.abs(want), `${what}: got ${got} want ${want}`);

  // Default: 1 / theta^(2i/d). Llama-2 style theta 10000, d 64.
  const plain = ropeInvFreq(64, 10_000, { type: 'none' });
  assert.equal(plain.length, 32);
  close(plain[0], 1, 'none i=0');
  close(plain[1], 10_000 ** (-2 / 64), 'none i=1');
  close(plain[31], 10_000 ** (-62 / 64), 'none i=31');

  // Linear: inv_freq / factor.
  const lin = ropeInvFreq(64, 10_000, { type: 'linear', factor: 4 });
  for (const i of [0, 7, 31]) close(lin[i], plain[i] / 4, `linear i=${i}`);

  // Llama-3.1-8B: theta 500000, head_dim 128, factor 8, low 1, high 4, original 8192.
  // Wavelength 2*pi/f: < 8192/4 = 2048 -> unchanged; > 8192/1 -> f / 8; between -> smoothed.
  const l3 = ropeInvFreq(128, 500_000, {
    type: 'llama3',
    factor: 8,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositionEmbeddings: 8192,
  });
  const base = (i: number) => 500_000 ** (-(2 * i) / 128);
  assert.equal(l3.length, 64);
  // High-frequency dims: i = 0..28 have wavelength < 2048 (i = 28: 2*pi / 500000^(-56/128) ~ 1956.5).
  for (const i of [0, 1, 10, 28]) close(l3[i], base(i), `llama3 high-frequency i=${i}`);
  // Low-frequency dims: i = 35..63 have wavelength > 8192 (i = 35: ~ 8218.7).
  for (const i of [35, 40, 63]) close(l3[i], base(i) / 8, `llama3 low-frequency i=${i}`);
  // Medium: i = 30, wavelength 2*pi * 500000^(60/128) ~ 2948.3, so the ramp is s = (8192/2948.3 - 1) / 3 ~ 0.5928
  // and the value interpolates between f/8 and f: f * (1/8 + s * 7/8).
  const f30 = base(30);
  const wl30 = (2 * Math.PI) / f30;
  assert.ok(wl30 > 2048 && wl30 < 8192, `i=30 is medium frequency (wavelength ${wl30})`);
  const s30 = (8192 / wl30 - 1) / 3;
  assert.ok(Math.abs(s30 - 0.5928) < 1e-4, `smooth factor ${s30}`);
  close(l3[30], f30 * (1 / 8 + (s30 * 7) / 8), 'llama3 smoothed i=30');
  // Every value lies between f/8 and f, and the transition is monotone in i.
  for (let i = 0; i < 64; i++) {
    assert.ok(l3[i] <= Math.fround(base(i)) && l3[i] >= Math.fround(base(i) / 8), `llama3 range i=${i}`);
    if (i > 0) assert.ok(l3[i] < l3[i - 1], `llama3 decreasing at i=${i}`);
  }
});
