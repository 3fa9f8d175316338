// The architectures beyond Llama in the reference forward pass, each checked through a property that holds only when
// the feature is implemented as HF transformers defines it: Qwen3's per-head q/k RMSNorm (scale invariance per
// head), Phi-3's fused qkv_proj / gate_up_proj (equal to the Llama model of the same weights), and sliding-window
// attention (a window of w keys equals the full model run on the last w tokens, RoPE being relative).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { openCheckpoint } from '../../checkpoint/checkpoint.js';
import { SafetensorsFile, writeSafetensors } from '../../checkpoint/safetensors.js';
import { type SyntheticOptions, writeSyntheticCheckpoint } from '../../checkpoint/synthetic.js';
import { isSiftError } from '../../config/errors.js';
import { assertClose } from '../helpers/compare.js';
import { Rng } from '../helpers/rng.js';
import { PagedReferenceModel, ReferenceModel, referenceForward } from './forward.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-arch-'));
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
  seed: 17,
};

function write(o: Partial<SyntheticOptions>): string {
  const dir = path.join(tmp, `m${counter++}`);
  writeSyntheticCheckpoint(dir, { ...base, ...o });
  return dir;
}

function logits(dir: string, tokens: readonly number[]): Float32Array {
  const ck = openCheckpoint(dir);
  try {
    return referenceForward(ck, tokens);
  } finally {
    ck.close();
  }
}

/** Rewrites an f32 single-file checkpoint in place, each tensor through `edit` (name, values, shape). */
function rewrite(dir: string, edit: (name: string, x: Float32Array, shape: readonly number[]) => Float32Array) {
  const file = path.join(dir, 'model.safetensors');
  const f = SafetensorsFile.open(file);
  const tensors = [...f.entries.values()].map((e) => {
    const b = f.read(e.name);
    const x = new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
    const y = edit(e.name, x, e.shape);
    return {
      name: e.name,
      dtype: 'f32' as const,
      shape: y === x ? e.shape : [y.length / e.shape[1], e.shape[1]],
      data: new Uint8Array(y.buffer),
    };
  });
  f.close();
  writeSafetensors(file, tensors);
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  return a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0);
}

const tokensFor = (seed: number, n: number, vocab: number) => {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => rng.int(0, vocab - 1));
};

test('Qwen3: q and k are RMS-normalized per head (scaling one head of q_proj / all of k_proj changes nothing)', () => {
  const o: Partial<SyntheticOptions> = { architecture: 'Qwen3ForCausalLM', headDim: 16, heads: 4, kvHeads: 2 };
  const tokens = [3, 9, 27, 17, 51, 40, 2];
  const dir = write(o);
  const want = logits(dir, tokens);
  const headRows = 16 * 32; // one head of q_proj: headDim rows of hidden columns
  const scaleHeads = (name: string, x: Float32Array) => {
    if (name.endsWith('q_proj.weight')) for (let i = 0; i < headRows; i++) x[headRows + i] *= 3; // head 1 only
    if (name.endsWith('k_proj.weight')) for (let i = 0; i < x.length; i++) x[i] *= 0.5;
    return x;
  };
  rewrite(dir, scaleHeads);
  // rsqrt(mean(x²) + eps) absorbs a scale but for eps (1e-5 against mean squares of O(1)).
  assertClose(logits(dir, tokens), want, { atol: 1e-4, rtol: 1e-4 }, 'scaled heads');
  // The same edit moves a Llama model's logits: the invariance is the norm's doing.
  const llama = write({ ...o, architecture: 'LlamaForCausalLM' });
  const before = logits(llama, tokens);
  rewrite(llama, scaleHeads);
  assert.ok(maxDiff(logits(llama, tokens), before) > 1e-2, 'without q/k norm the scales matter');
  // And q_norm's weight acts per channel: doubling one channel of q_norm changes the logits.
  rewrite(dir, (name, x) => {
    if (name === 'model.layers.0.self_attn.q_norm.weight') x[3] *= 2;
    return x;
  });
  assert.ok(maxDiff(logits(dir, tokens), want) > 1e-3, 'q_norm weight is applied');
});

test("Phi-3: fused qkv_proj / gate_up_proj are read as q/k/v and gate/up; the model equals Llama's of the same weights", () => {
  const tokens = [1, 5, 33, 8, 60, 12, 7, 7];
  for (const o of [{}, { heads: 8, kvHeads: 2, headDim: 4 }, { dtype: 'bf16', tie: 'tied-embed' }] as const) {
    const phiDir = write({ ...o, architecture: 'Phi3ForCausalLM' });
    const ck = openCheckpoint(phiDir);
    assert.ok(ck.tensorNames.includes('model.layers.1.self_attn.qkv_proj.weight'));
    assert.ok(ck.tensorNames.includes('model.layers.1.mlp.gate_up_proj.weight'));
    assert.ok(!ck.tensorNames.includes('model.layers.1.self_attn.k_proj.weight'), 'stored fused only');
    assert.deepEqual(ck.info('model.layers.1.self_attn.k_proj.weight').shape, [
      ck.config.numKvHeads * ck.config.headDim,
      32,
    ]);
    ck.close();
    assert.deepEqual(logits(phiDir, tokens), logits(write({ ...o }), tokens), JSON.stringify(o));
  }
});

test('Phi-3: a fused tensor of the wrong shape, or missing, is named in the error', () => {
  const dir = write({ architecture: 'Phi3ForCausalLM' });
  rewrite(dir, (name, x, shape) =>
    name === 'model.layers.0.self_attn.qkv_proj.weight' ? x.slice(0, (shape[0] - 1) * shape[1]) : x,
  );
  assert.throws(
    () => openCheckpoint(dir),
    (e: unknown) =>
      isSiftError(e, 'CHECKPOINT_INVALID') &&
      /qkv_proj\.weight has shape \(63, 32\), expected \(64, 32\)/.test(e.message),
  );
  const dir2 = write({ architecture: 'Phi3ForCausalLM' });
  const f = SafetensorsFile.open(path.join(dir2, 'model.safetensors'));
  const kept = [...f.entries.values()]
    .filter((e) => e.name !== 'model.layers.1.mlp.gate_up_proj.weight')
    .map((e) => ({ name: e.name, dtype: 'f32' as const, shape: e.shape, data: f.read(e.name) }));
  f.close();
  writeSafetensors(path.join(dir2, 'model.safetensors'), kept);
  assert.throws(
    () => openCheckpoint(dir2),
    (e: unknown) =>
      isSiftError(e, 'CHECKPOINT_INVALID') &&
      e.message.includes(
        'tensor model.layers.1.mlp.gate_up_proj.weight missing (holds model.layers.1.mlp.gate_proj.weight)',
      ),
  );
});

test('sliding window (1 layer): each query sees its last w keys; equal to the full model over the last w tokens', () => {
  const w = 4;
  const tokens = tokensFor(5, 11, base.vocab);
  const V = base.vocab;
  for (const arch of ['MistralForCausalLM', 'Phi3ForCausalLM', 'Qwen3ForCausalLM'] as const) {
    const o = { architecture: arch, layers: 1, headDim: 8 };
    const full = write(o);
    const windowed = write({ ...o, slidingWindow: w });
    const got = logits(windowed, tokens);
    const all = logits(full, tokens);
    for (let t = 0; t < tokens.length; t++) {
      const row = got.subarray(t * V, (t + 1) * V);
      if (t < w) {
        assert.deepEqual(row, all.subarray(t * V, (t + 1) * V), `${arch} t=${t}: inside the window nothing is masked`);
        continue;
      }
      const lastW = logits(full, tokens.slice(t - w + 1, t + 1));
      assertClose(row, lastW.subarray((w - 1) * V), { atol: 1e-4, rtol: 1e-4 }, `${arch} t=${t}: the last ${w} tokens`);
      assert.ok(maxDiff(row, all.subarray(t * V, (t + 1) * V)) > 1e-3, `${arch} t=${t}: the window masks something`);
    }
    // A window as long as the sequence masks nothing.
    assert.deepEqual(logits(write({ ...o, slidingWindow: tokens.length }), tokens), all);
  }
});

test('sliding window over layers: Qwen max_window_layers; whole, incremental and paged paths agree', () => {
  const tokens = tokensFor(8, 12, base.vocab);
  const o: Partial<SyntheticOptions> = { architecture: 'Qwen2ForCausalLM', layers: 3, slidingWindow: 3 };
  const full = logits(write({ ...o, slidingWindow: undefined }), tokens);
  assert.deepEqual(logits(write({ ...o, windowFromLayer: 3 }), tokens), full, 'no layer past max_window_layers');
  const fromOne = logits(write({ ...o, windowFromLayer: 1 }), tokens);
  const every = logits(write({ ...o, windowFromLayer: 0 }), tokens);
  assert.ok(maxDiff(fromOne, full) > 1e-3 && maxDiff(fromOne, every) > 1e-3, 'layer 0 full, layers 1-2 windowed');

  const dir = write({ ...o, windowFromLayer: 1 });
  const ck = openCheckpoint(dir);
  try {
    assert.deepEqual(ck.config.layerWindows, [0, 3, 3]);
    const inc = new ReferenceModel(ck);
    const parts = [inc.forward(tokens.slice(0, 5)), inc.forward(tokens.slice(5))];
    const joined = new Float32Array(fromOne.length);
    joined.set(parts[0]);
    joined.set(parts[1], parts[0].length);
    assertClose(joined, fromOne, { atol: 1e-5, rtol: 1e-5 }, 'incremental');
    // Paged: pages of 4 in scrambled order; the window's earlier pages are never read.
    const paged = new PagedReferenceModel(ck, 8, 4);
    const table = [5, 2, 7];
    const T = tokens.length;
    const pos = Uint32Array.from(tokens, (_, i) => i);
    const out = paged.forward(tokens, pos, new Uint32Array(T), [table], pos);
    assertClose(out, fromOne, { atol: 1e-5, rtol: 1e-5 }, 'paged');
  } finally {
    ck.close();
  }
});
