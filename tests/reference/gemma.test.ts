// Gemma 2 and Gemma 3 in the reference forward pass (tests/reference/forward-layer.ts, checkpoint/gemma.ts): the
// reference against a second, independent transcription of HF transformers' Gemma2/Gemma3 modules written here in
// whole-sequence matrix form (embedding scale, (1 + w) norms, the four norms' order, GeGLU, query_pre_attn_scalar,
// soft-capping, alternating windows, Gemma 3's q/k norms and local RoPE); properties only the intended semantics
// satisfy (soft-capped logits inside the cap, a window as long as the sequence masking nothing, a huge cap changing
// nothing); the three reference paths agreeing; and a multimodal Gemma 3 checkpoint read as its text model.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { type Checkpoint, layerTensorNames, openCheckpoint } from '../../checkpoint/checkpoint.js';
import { embeddingScale } from '../../checkpoint/gemma.js';
import { type SyntheticOptions, writeSyntheticCheckpoint } from '../../checkpoint/synthetic.js';
import { assertClose } from '../helpers/compare.js';
import { Rng } from '../helpers/rng.js';
import { loadReferenceWeights, PagedReferenceModel, ReferenceModel, referenceForward } from './forward.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-gemma-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
let counter = 0;

const GEMMA2: SyntheticOptions = {
  architecture: 'Gemma2ForCausalLM',
  dtype: 'f32',
  sharded: false,
  tie: 'tied-embed',
  hidden: 32,
  layers: 3,
  heads: 4,
  kvHeads: 2,
  headDim: 8,
  intermediate: 48,
  vocab: 64,
  slidingWindow: 4,
  queryPreAttnScalar: 12,
  attnLogitSoftcap: 1.2,
  finalLogitSoftcap: 2.5,
  seed: 31,
};

const GEMMA3: SyntheticOptions = {
  ...GEMMA2,
  architecture: 'Gemma3ForCausalLM',
  attnLogitSoftcap: undefined,
  finalLogitSoftcap: undefined,
  slidingWindowPattern: 3,
  ropeTheta: 1000000,
  ropeLocalTheta: 10000,
  ropeScaling: { type: 'linear', factor: 4 },
  seed: 32,
};

function write(o: SyntheticOptions): string {
  const dir = path.join(tmp, `m${counter++}`);
  writeSyntheticCheckpoint(dir, o);
  return dir;
}

function withCk<T>(dir: string, fn: (ck: Checkpoint) => T): T {
  const ck = openCheckpoint(dir);
  try {
    return fn(ck);
  } finally {
    ck.close();
  }
}

const logits = (dir: string, tokens: readonly number[]) => withCk(dir, (ck) => referenceForward(ck, tokens));

const tokensFor = (seed: number, n: number, vocab: number) => {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => rng.int(0, vocab - 1));
};

function maxDiff(a: Float32Array, b: Float32Array): number {
  return a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0);
}

// ---- an independent transcription of HF's Gemma2/Gemma3 modules, whole sequence, matrix form ------------------

type Mat = Float64Array[]; // rows

/** X (T, in) @ W^T with W (out, in) row-major -> (T, out). */
function linear(x: Mat, w: Float32Array, out: number): Mat {
  const inn = w.length / out;
  return x.map((row) => {
    const y = new Float64Array(out);
    for (let o = 0; o < out; o++) {
      let s = 0;
      for (let i = 0; i < inn; i++) s += row[i] * w[o * inn + i];
      y[o] = s;
    }
    return y;
  });
}

/** Gemma2RMSNorm over the last dim of width `n` (rows may hold several heads): x / rms * (1 + w). */
function gemmaNorm(x: Mat, w: Float32Array, eps: number): Mat {
  const n = w.length;
  return x.map((row) => {
    const y = new Float64Array(row.length);
    for (let o = 0; o < row.length; o += n) {
      let ss = 0;
      for (let i = 0; i < n; i++) ss += row[o + i] ** 2;
      const r = 1 / Math.sqrt(ss / n + eps);
      for (let i = 0; i < n; i++) y[o + i] = row[o + i] * r * (1 + w[i]);
    }
    return y;
  });
}

function hfGemma(ck: Checkpoint, tokens: readonly number[]): Float32Array {
  const c = ck.config;
  const H = c.hiddenSize;
  const d = c.headDim;
  const T = tokens.length;
  const gemma3 = c.architecture === 'Gemma3ForCausalLM';
  const embed = ck.readF32(ck.embeddingName);
  const scale = Math.fround(Math.sqrt(H)); // f32 checkpoints: the scale tensor is f32
  let x: Mat = tokens.map((t) => Float64Array.from(embed.subarray(t * H, (t + 1) * H), (v) => v * scale));
  const gelu = (v: number) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
  for (let l = 0; l < c.numLayers; l++) {
    const n = layerTensorNames(l);
    const sliding = gemma3 ? (l + 1) % 3 !== 0 : l % 2 === 0; // the test configs' patterns
    const window = sliding ? (c.slidingWindow ?? 0) : 0;
    const h = gemmaNorm(x, ck.readF32(n.inputNorm), c.rmsNormEps);
    let q = linear(h, ck.readF32(n.q), c.numHeads * d);
    let k = linear(h, ck.readF32(n.k), c.numKvHeads * d);
    const v = linear(h, ck.readF32(n.v), c.numKvHeads * d);
    if (gemma3) {
      q = gemmaNorm(q, ck.readF32(n.qNorm), c.rmsNormEps);
      k = gemmaNorm(k, ck.readF32(n.kNorm), c.rmsNormEps);
    }
    // rotary: local layers of Gemma 3 use rope_local_base_freq, unscaled; global ones rope_theta / linear factor
    const theta = gemma3 && sliding ? (c.localRopeTheta as number) : c.ropeTheta;
    const factor = c.ropeScaling.type === 'linear' && !(gemma3 && sliding) ? c.ropeScaling.factor : 1;
    const rotate = (m: Mat) =>
      m.forEach((row, t) => {
        for (let o = 0; o < row.length; o += d) {
          for (let i = 0; i < d / 2; i++) {
            const a = (t / factor) * theta ** ((-2 * i) / d);
            const [x0, x1] = [row[o + i], row[o + i + d / 2]];
            row[o + i] = x0 * Math.cos(a) - x1 * Math.sin(a);
            row[o + i + d / 2] = x1 * Math.cos(a) + x0 * Math.sin(a);
          }
        }
      });
    rotate(q);
    rotate(k);
    const attn: Mat = tokens.map(() => new Float64Array(c.numHeads * d));
    for (let hd = 0; hd < c.numHeads; hd++) {
      const kv = Math.floor(hd / (c.numHeads / c.numKvHeads));
      for (let t = 0; t < T; t++) {
        const w = new Float64Array(T);
        for (let s = 0; s < T; s++) {
          let dot = 0;
          for (let i = 0; i < d; i++) dot += q[t][hd * d + i] * k[s][kv * d + i];
          let sc = dot * c.queryPreAttnScalar ** -0.5;
          if (c.attnLogitSoftcap) sc = Math.tanh(sc / c.attnLogitSoftcap) * c.attnLogitSoftcap;
          const masked = s > t || (window > 0 && s <= t - window);
          w[s] = masked ? Number.NEGATIVE_INFINITY : sc;
        }
        const m = Math.max(...w);
        const e = w.map((z) => Math.exp(z - m));
        const sum = e.reduce((a, b) => a + b, 0);
        for (let s = 0; s < T; s++) {
          for (let i = 0; i < d; i++) attn[t][hd * d + i] += (e[s] / sum) * v[s][kv * d + i];
        }
      }
    }
    const o = gemmaNorm(linear(attn, ck.readF32(n.o), H), ck.readF32(n.postNorm), c.rmsNormEps);
    x = x.map((row, t) => row.map((z, i) => z + o[t][i]));
    const hf = gemmaNorm(x, ck.readF32(n.preFfnNorm), c.rmsNormEps);
    const g = linear(hf, ck.readF32(n.gate), c.intermediateSize);
    const u = linear(hf, ck.readF32(n.up), c.intermediateSize);
    const mid = g.map((row, t) => row.map((z, i) => gelu(z) * u[t][i]));
    const dn = gemmaNorm(linear(mid, ck.readF32(n.down), H), ck.readF32(n.postFfnNorm), c.rmsNormEps);
    x = x.map((row, t) => row.map((z, i) => z + dn[t][i]));
  }
  const out = linear(gemmaNorm(x, ck.readF32('model.norm.weight'), c.rmsNormEps), embed, c.vocabSize);
  const cap = c.finalLogitSoftcap;
  return Float32Array.from(out.flatMap((row) => Array.from(row, (z) => (cap ? Math.tanh(z / cap) * cap : z))));
}

// ---- tests ------------------------------------------------------------------------------------------------------

test('Gemma 2 and 3: the reference equals an independent transcription of HF modules (windows, caps, local RoPE)', () => {
  const tokens = tokensFor(3, 11, GEMMA2.vocab);
  for (const o of [GEMMA2, GEMMA3, { ...GEMMA2, heads: 2, kvHeads: 2, layers: 2 }]) {
    const dir = write(o);
    withCk(dir, (ck) => {
      assertClose(referenceForward(ck, tokens), hfGemma(ck, tokens), { atol: 1e-6, rtol: 1e-6 }, o.architecture);
    });
  }
});

test('Gemma configs: alternating windows (Gemma 2), 5:1 style pattern (Gemma 3), caps and scalars parsed', () => {
  withCk(write(GEMMA2), (ck) => {
    const c = ck.config;
    assert.deepEqual(c.layerWindows, [4, 0, 4]);
    assert.equal(c.attnLogitSoftcap, 1.2);
    assert.equal(c.finalLogitSoftcap, 2.5);
    assert.equal(c.queryPreAttnScalar, 12);
    assert.ok(c.normUnitOffset && c.sandwichNorms && c.scaleEmbeddings && !c.qkNorm);
    assert.equal(c.hiddenActivation, 'gelu_tanh');
    assert.equal(c.localRopeTheta, null);
  });
  withCk(write(GEMMA3), (ck) => {
    const c = ck.config;
    assert.deepEqual(c.layerWindows, [4, 4, 0]);
    assert.ok(c.qkNorm);
    assert.equal(c.localRopeTheta, 10000);
    assert.equal(c.attnLogitSoftcap, null);
  });
});

test('soft-capping: logits stay inside the final cap and a huge attention cap changes nothing', () => {
  const tokens = tokensFor(4, 9, GEMMA2.vocab);
  const capped = logits(write(GEMMA2), tokens);
  const cap = GEMMA2.finalLogitSoftcap as number;
  const peak = capped.reduce((m, z) => Math.max(m, Math.abs(z)), 0);
  assert.ok(peak < cap && peak > 0.6 * cap, `|logit| max ${peak} must approach but stay under the cap ${cap}`);
  const uncapped = logits(write({ ...GEMMA2, finalLogitSoftcap: undefined }), tokens);
  assert.ok(
    uncapped.some((z) => Math.abs(z) > cap),
    'without the cap some logit passes it',
  );
  const bigAttn = logits(write({ ...GEMMA2, attnLogitSoftcap: 1e9 }), tokens);
  const noAttn = logits(write({ ...GEMMA2, attnLogitSoftcap: undefined }), tokens);
  assertClose(bigAttn, noAttn, { atol: 1e-9, rtol: 1e-9 }, 'a cap of 1e9 is no cap');
  assert.ok(maxDiff(capped, logits(write({ ...GEMMA2, attnLogitSoftcap: undefined }), tokens)) > 1e-3);
});

test('Gemma windows: a window as long as the sequence masks nothing; a shorter one masks', () => {
  const tokens = tokensFor(5, 10, GEMMA2.vocab);
  for (const o of [GEMMA2, GEMMA3]) {
    const wide = logits(write({ ...o, slidingWindow: tokens.length }), tokens);
    const wider = logits(write({ ...o, slidingWindow: 1000 }), tokens);
    assert.deepEqual(wide, wider, `${o.architecture}: window >= T`);
    assert.ok(maxDiff(logits(write(o), tokens), wide) > 1e-3, `${o.architecture}: window 4 < T masks`);
  }
});

test('Gemma: whole-sequence, incremental and paged reference paths agree', () => {
  const tokens = tokensFor(6, 13, GEMMA2.vocab);
  for (const o of [GEMMA2, GEMMA3]) {
    withCk(write(o), (ck) => {
      const whole = referenceForward(ck, tokens);
      const inc = new ReferenceModel(ck);
      const a = inc.forward(tokens.slice(0, 6));
      const b = inc.forward(tokens.slice(6));
      const joined = new Float32Array(whole.length);
      joined.set(a);
      joined.set(b, a.length);
      assertClose(joined, whole, { atol: 1e-6, rtol: 1e-6 }, `${o.architecture} incremental`);
      const paged = new PagedReferenceModel(ck, 8, 4);
      const pos = Uint32Array.from(tokens, (_, i) => i);
      const out = paged.forward(tokens, pos, new Uint32Array(tokens.length), [[6, 1, 3, 0]], pos);
      assertClose(out, whole, { atol: 1e-6, rtol: 1e-6 }, `${o.architecture} paged`);
    });
  }
});

test('a multimodal Gemma 3 checkpoint (text_config, language_model.*) is read as its text model', () => {
  const tokens = tokensFor(7, 8, GEMMA3.vocab);
  const text = write(GEMMA3);
  const mm = write({ ...GEMMA3, multimodal: true, sharded: true });
  const raw = JSON.parse(fs.readFileSync(path.join(mm, 'config.json'), 'utf8'));
  assert.deepEqual(raw.architectures, ['Gemma3ForConditionalGeneration']);
  withCk(mm, (ck) => {
    assert.equal(ck.config.architecture, 'Gemma3ForCausalLM');
    assert.ok(!ck.tensorNames.some((n) => n.includes('vision')), 'the vision tower is left out');
  });
  assert.deepEqual(logits(mm, tokens), logits(text, tokens));
});

test('the embedding scale is rounded to the embedding dtype as HF casts it', () => {
  assert.equal(embeddingScale(3072, 'bf16'), 55.5); // HF's own example: sqrt(3072) = 55.4256 -> 55.5
  assert.equal(embeddingScale(2304, 'bf16'), 48);
  assert.equal(embeddingScale(3584, 'f16'), 59.875);
  assert.equal(embeddingScale(3584, 'f32'), Math.fround(Math.sqrt(3584)));
  // the reference takes the scale of the checkpoint's embedding dtype: sqrt(40) = 6.3246 is 6.3125 in bf16
  for (const [dtype, want] of [
    ['bf16', 6.3125],
    ['f32', Math.fround(Math.sqrt(40))],
  ] as const) {
    withCk(write({ ...GEMMA2, dtype, hidden: 40, headDim: 10 }), (ck) => {
      assert.equal(loadReferenceWeights(ck).embedScale, want, dtype);
    });
  }
});
