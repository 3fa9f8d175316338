import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { openCheckpoint } from '../../checkpoint/checkpoint.js';
import { parseModelConfig } from '../../checkpoint/config.js';
import { SafetensorsFile, writeSafetensors } from '../../checkpoint/safetensors.js';
import {
  SYNTHETIC_VARIANTS,
  type SyntheticOptions,
  syntheticConfigJson,
  writeSyntheticCheckpoint,
} from '../../checkpoint/synthetic.js';
import { assertClose } from '../helpers/compare.js';
import { Rng } from '../helpers/rng.js';
import { applyRope, ReferenceModel, referenceForward, ropeInvFreq } from './forward.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-forward-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
let counter = 0;

const base: SyntheticOptions = {
  architecture: 'LlamaForCausalLM',
  dtype: 'f32',
  sharded: false,
  tie: 'untied',
  hidden: 32,
  layers: 2,
  heads: 4,
  kvHeads: 2,
  intermediate: 48,
  vocab: 64,
  seed: 11,
};

/** Logits (T, vocab) of the model `o` for `tokens`. */
function logitsOf(o: Partial<SyntheticOptions>, tokens: number[]): Float32Array {
  const dir = path.join(tmp, `m${counter++}`);
  writeSyntheticCheckpoint(dir, { ...base, ...o });
  const ck = openCheckpoint(dir);
  try {
    return referenceForward(ck, tokens);
  } finally {
    ck.close();
  }
}

function tokensFor(seed: number, n: number, vocab: number): number[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => rng.int(0, vocab - 1));
}

test('whole-sequence and token-by-token (KV cache) paths agree on every synthetic variant', () => {
  for (const v of SYNTHETIC_VARIANTS) {
    const dir = path.join(tmp, v.name);
    writeSyntheticCheckpoint(dir, v);
    const ck = openCheckpoint(dir);
    try {
      const tokens = tokensFor(v.seed, 9, v.vocab);
      const whole = referenceForward(ck, tokens);
      const m = new ReferenceModel(ck);
      const parts = [m.forward(tokens.slice(0, 4)), m.forward(tokens.slice(4, 5)), m.forward(tokens.slice(5))];
      assert.equal(m.position, tokens.length);
      const inc = new Float32Array(whole.length);
      let at = 0;
      for (const p of parts) {
        inc.set(p, at);
        at += p.length;
      }
      assertClose(inc, whole, { atol: 1e-5, rtol: 1e-5 }, `${v.name} incremental vs whole`);

      // Logits are finite and far from flat; positions differ.
      const V = v.vocab;
      for (let t = 0; t < tokens.length; t++) {
        const row = whole.subarray(t * V, (t + 1) * V);
        assert.ok(
          row.every((x) => Number.isFinite(x)),
          `${v.name}: non-finite logits`,
        );
        const mean = row.reduce((a, x) => a + x, 0) / V;
        const std = Math.sqrt(row.reduce((a, x) => a + (x - mean) ** 2, 0) / V);
        assert.ok(std > 0.5 && std < 20, `${v.name} t=${t}: logit std ${std}`);
      }
      m.reset();
      assert.equal(m.position, 0);
      assertClose(m.forward(tokens.slice(0, 2)), whole.subarray(0, 2 * V), { atol: 1e-5, rtol: 1e-5 }, 'after reset');
    } finally {
      ck.close();
    }
  }
});

test('Qwen2 differs from Llama only through the q/k/v biases', () => {
  const tokens = [3, 17, 5, 40, 22, 9];
  const llama = logitsOf({ architecture: 'LlamaForCausalLM' }, tokens);
  const qwenZero = logitsOf({ architecture: 'Qwen2ForCausalLM', biasStd: 0 }, tokens);
  assert.deepEqual(qwenZero, llama, 'zero biases: identical logits');
  const qwen = logitsOf({ architecture: 'Qwen2ForCausalLM' }, tokens);
  const maxDiff = qwen.reduce((m, x, i) => Math.max(m, Math.abs(x - llama[i])), 0);
  assert.ok(maxDiff > 1e-2, `nonzero biases change the logits (max diff ${maxDiff})`);
  // Mistral is Llama's computation under another name.
  assert.deepEqual(logitsOf({ architecture: 'MistralForCausalLM' }, tokens), llama);
});

test('tied embeddings give the same model whichever name stores the matrix', () => {
  const tokens = [1, 2, 30, 31, 7];
  assert.deepEqual(logitsOf({ tie: 'tied-embed' }, tokens), logitsOf({ tie: 'tied-lmhead', sharded: true }, tokens));
});

test('16-bit checkpoints track the f32 model of the same seed', () => {
  const tokens = [4, 8, 15, 16, 23, 42];
  const f32 = logitsOf({}, tokens);
  assertClose(logitsOf({ dtype: 'f16' }, tokens), f32, { atol: 2e-2, rtol: 2e-2 }, 'f16 vs f32');
  assertClose(logitsOf({ dtype: 'bf16' }, tokens), f32, { atol: 1.5e-1, rtol: 1e-1 }, 'bf16 vs f32');
});

test('GQA: a 4:1 model equals the MHA model whose k/v heads repeat each group', () => {
  const o: SyntheticOptions = { ...base, heads: 8, kvHeads: 2, hidden: 32, headDim: 8 };
  const dir = path.join(tmp, 'gqa');
  writeSyntheticCheckpoint(dir, o);
  const tokens = [5, 6, 7, 50, 51, 2, 9];
  const ck = openCheckpoint(dir);
  const want = referenceForward(ck, tokens);
  ck.close();
  // Rebuild as MHA: kv head g's rows copied to query heads 4g..4g+3 (HF repeat_kv semantics).
  const mha = path.join(tmp, 'gqa-as-mha');
  fs.mkdirSync(mha);
  fs.writeFileSync(path.join(mha, 'config.json'), JSON.stringify(syntheticConfigJson({ ...o, kvHeads: 8 })));
  const f = SafetensorsFile.open(path.join(dir, 'model.safetensors'));
  const rowBytes = o.hidden * 4;
  const headBytes = 8 * rowBytes;
  const tensors = [...f.entries.values()].map((e) => {
    const data = f.read(e.name);
    if (!/(k|v)_proj\.weight$/.test(e.name)) return { name: e.name, dtype: 'f32' as const, shape: e.shape, data };
    const out = new Uint8Array(8 * headBytes);
    for (let j = 0; j < 8; j++) out.set(data.subarray((j >> 2) * headBytes, ((j >> 2) + 1) * headBytes), j * headBytes);
    return { name: e.name, dtype: 'f32' as const, shape: [64, o.hidden], data: out };
  });
  f.close();
  writeSafetensors(path.join(mha, 'model.safetensors'), tensors);
  const ck2 = openCheckpoint(mha);
  assertClose(referenceForward(ck2, tokens), want, { atol: 1e-6, rtol: 1e-6 }, 'GQA vs repeated-kv MHA');
  ck2.close();
});

test('RoPE: rotate_half pairs (i, i + d/2); inverse frequencies for none / linear / llama3', () => {
  const x = new Float64Array([1, 0, 0, 0, 0, 2, 0, 0]);
  const inv = new Float64Array([1, 0.5]);
  applyRope(x, 0, 4, 3, inv); // head 0: (x0, x2) rotated by 3 rad, (x1, x3) by 1.5 rad
  applyRope(x, 4, 4, 2, inv); // head 1: (x5, x7) = (2, 0) rotated by 1 rad
  const want = [Math.cos(3), 0, Math.sin(3), 0, 0, 2 * Math.cos(1), 0, 2 * Math.sin(1)];
  assertClose(x, want, { atol: 1e-12, rtol: 0 }, 'applyRope');

  const cfg = (rope_scaling: unknown) =>
    parseModelConfig({
      architectures: ['LlamaForCausalLM'],
      hidden_size: 128,
      intermediate_size: 8,
      num_hidden_layers: 1,
      num_attention_heads: 1,
      vocab_size: 8,
      rope_theta: 500000,
      rope_scaling,
    });
  const plain = ropeInvFreq(cfg(null));
  assert.equal(plain.length, 64);
  assert.equal(plain[0], 1);
  assert.ok(Math.abs(plain[32] - 500000 ** -0.5) < 1e-15);
  const linear = ropeInvFreq(cfg({ type: 'linear', factor: 4 }));
  for (let i = 0; i < plain.length; i++) assert.ok(Math.abs(linear[i] - plain[i] / 4) <= 1e-15 * plain[i]);

  const l3 = ropeInvFreq(
    cfg({
      rope_type: 'llama3',
      factor: 8,
      low_freq_factor: 1,
      high_freq_factor: 4,
      original_max_position_embeddings: 8192,
    }),
  );
  let sawHigh = false;
  let sawLow = false;
  let sawMid = false;
  plain.forEach((p, i) => {
    const wavelen = (2 * Math.PI) / p;
    if (wavelen < 8192 / 4) {
      sawHigh = true;
      assert.equal(l3[i], p, `high frequency ${i} kept`);
    } else if (wavelen > 8192) {
      sawLow = true;
      assert.ok(Math.abs(l3[i] - p / 8) <= 1e-12 * p, `low frequency ${i} divided by the factor`);
    } else {
      sawMid = true;
      const s = (8192 / wavelen - 1) / (4 - 1);
      assert.ok(l3[i] > p / 8 && l3[i] <= p && Math.abs(l3[i] - ((1 - s) * p) / 8 - s * p) < 1e-15);
    }
  });
  assert.ok(sawHigh && sawLow && sawMid, 'all three llama3 bands exercised');
});

test('token ids outside the vocabulary are rejected', () => {
  const dir = path.join(tmp, 'oov');
  writeSyntheticCheckpoint(dir, base);
  const ck = openCheckpoint(dir);
  assert.throws(() => referenceForward(ck, [1, 64]), /64/);
  ck.close();
});
