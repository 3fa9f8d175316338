import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { loadModelConfig, parseModelConfig } from '../../checkpoint/config.js';
import { isSiftError } from '../../config/errors.js';

const base = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  hidden_size: 64,
  intermediate_size: 172,
  num_hidden_layers: 2,
  num_attention_heads: 8,
  vocab_size: 300,
  rms_norm_eps: 1e-5,
  max_position_embeddings: 4096,
  bos_token_id: 1,
  eos_token_id: 2,
};

function throwsNaming(fn: () => unknown, code: 'CHECKPOINT_INVALID' | 'CHECKPOINT_UNSUPPORTED', parts: string[]) {
  assert.throws(fn, (e: unknown) => {
    assert.ok(isSiftError(e, code), `expected SiftError ${code}, got ${String(e)}`);
    for (const p of parts) assert.ok(e.message.includes(p), `message "${e.message}" should name "${p}"`);
    return true;
  });
}

test('defaults: kv heads = heads, head_dim = hidden/heads, theta 10000, no scaling, frozen', () => {
  const c = parseModelConfig(base);
  assert.equal(c.architecture, 'LlamaForCausalLM');
  assert.equal(c.numKvHeads, 8);
  assert.equal(c.headDim, 8);
  assert.equal(c.ropeTheta, 10000);
  assert.deepEqual(c.ropeScaling, { type: 'none' });
  assert.equal(c.tieWordEmbeddings, false);
  assert.equal(c.attentionBias, false);
  assert.equal(c.bosTokenId, 1);
  assert.deepEqual(c.eosTokenIds, [2]);
  assert.equal(c.slidingWindow, null);
  assert.ok(Object.isFrozen(c) && Object.isFrozen(c.eosTokenIds) && Object.isFrozen(c.ropeScaling));
});

test('GQA, head_dim override, Qwen2 biases, Mistral sliding window', () => {
  const gqa = parseModelConfig({ ...base, num_key_value_heads: 2, head_dim: 32 });
  assert.equal(gqa.numKvHeads, 2);
  assert.equal(gqa.headDim, 32);
  const qwen = parseModelConfig({
    ...base,
    architectures: ['Qwen2ForCausalLM'],
    model_type: 'qwen2',
    sliding_window: 64,
  });
  assert.equal(qwen.attentionBias, true);
  assert.equal(qwen.slidingWindow, null, 'Qwen2 without use_sliding_window');
  const mistral = parseModelConfig({ ...base, architectures: ['MistralForCausalLM'], sliding_window: 4096 });
  assert.equal(mistral.slidingWindow, 4096);
  assert.equal(mistral.attentionBias, false);
  assert.equal(parseModelConfig({ ...base, attention_bias: true }).attentionBias, true);
  // No `architectures`: model_type decides.
  const { architectures: _, ...noArch } = base;
  assert.equal(parseModelConfig({ ...noArch, model_type: 'mistral' }).architecture, 'MistralForCausalLM');
  assert.equal(parseModelConfig({ ...base, head_dim: null }).headDim, 8);
});

test('sliding windows per layer: Mistral / Phi-3 every layer, Qwen2/3 from max_window_layers, layer_types first', () => {
  const L = { ...base, num_hidden_layers: 4 };
  const none = parseModelConfig(L);
  assert.deepEqual(none.layerWindows, [0, 0, 0, 0]);
  assert.equal(none.qkNorm, false);
  const mistral = parseModelConfig({ ...L, architectures: ['MistralForCausalLM'], sliding_window: 16 });
  assert.deepEqual(mistral.layerWindows, [16, 16, 16, 16]);
  assert.deepEqual(
    parseModelConfig({ ...L, architectures: ['MistralForCausalLM'], sliding_window: null }).layerWindows,
    [0, 0, 0, 0],
  );
  const phi = parseModelConfig({ ...L, architectures: ['Phi3ForCausalLM'], sliding_window: 2047 });
  assert.deepEqual(phi.layerWindows, [2047, 2047, 2047, 2047]);
  // Llama has no sliding window, whatever the config says.
  assert.deepEqual(parseModelConfig({ ...L, sliding_window: 16 }).layerWindows, [0, 0, 0, 0]);
  for (const arch of ['Qwen2ForCausalLM', 'Qwen3ForCausalLM']) {
    const q = { ...L, architectures: [arch], sliding_window: 8 };
    assert.equal(parseModelConfig(q).slidingWindow, null, `${arch} without use_sliding_window`);
    const from2 = parseModelConfig({ ...q, use_sliding_window: true, max_window_layers: 2 });
    assert.deepEqual(from2.layerWindows, [0, 0, 8, 8], `${arch}: layers i >= max_window_layers slide`);
    assert.equal(from2.slidingWindow, 8);
    // HF's default max_window_layers is 28: a 4-layer model slides nowhere.
    const dflt = parseModelConfig({ ...q, use_sliding_window: true });
    assert.deepEqual(dflt.layerWindows, [0, 0, 0, 0]);
    assert.equal(dflt.slidingWindow, null);
  }
  const types = ['sliding_attention', 'full_attention', 'sliding_attention', 'full_attention'];
  const typed = parseModelConfig({ ...L, architectures: ['Qwen3ForCausalLM'], sliding_window: 32, layer_types: types });
  assert.deepEqual(typed.layerWindows, [32, 0, 32, 0], 'layer_types wins over use_sliding_window');
  throwsNaming(() => parseModelConfig({ ...L, sliding_window: 8, layer_types: types.slice(1) }), 'CHECKPOINT_INVALID', [
    'layer_types',
    '3 layers',
  ]);
  throwsNaming(() => parseModelConfig({ ...L, layer_types: types }), 'CHECKPOINT_INVALID', [
    'layer_types[0]',
    'sliding_window',
  ]);
  throwsNaming(
    () => parseModelConfig({ ...L, sliding_window: 8, layer_types: ['chunked_attention', ...types.slice(1)] }),
    'CHECKPOINT_UNSUPPORTED',
    ['layer_types[0]', 'chunked_attention'],
  );
  throwsNaming(
    () =>
      parseModelConfig({
        ...L,
        architectures: ['Qwen2ForCausalLM'],
        sliding_window: 8,
        use_sliding_window: true,
        max_window_layers: -1,
      }),
    'CHECKPOINT_INVALID',
    ['max_window_layers'],
  );
});

test('Qwen3 (q/k norm, no bias by default) and Phi-3 ("su" is longrope; partial rotary refused)', () => {
  const qwen3 = parseModelConfig({ ...base, architectures: ['Qwen3ForCausalLM'], head_dim: 16 });
  assert.equal(qwen3.qkNorm, true);
  assert.equal(qwen3.attentionBias, false);
  assert.equal(qwen3.headDim, 16);
  assert.equal(
    parseModelConfig({ ...base, model_type: 'qwen3', architectures: undefined }).architecture,
    'Qwen3ForCausalLM',
  );
  const phiRope = { type: 'su', short_factor: [1, 1, 1, 1], long_factor: [1, 2, 3, 4] };
  const phi = parseModelConfig({
    ...base,
    architectures: ['Phi3ForCausalLM'],
    max_position_embeddings: 131072,
    original_max_position_embeddings: 4096,
    rope_scaling: phiRope,
  });
  assert.equal(phi.qkNorm, false);
  assert.equal(phi.ropeScaling.type, 'longrope');
  throwsNaming(
    () => parseModelConfig({ ...base, architectures: ['Phi3ForCausalLM'], partial_rotary_factor: 0.75 }),
    'CHECKPOINT_UNSUPPORTED',
    ['partial_rotary_factor', '0.75'],
  );
});

test('rope scaling: type and rope_type keys; default / null -> none; linear; llama3', () => {
  assert.deepEqual(parseModelConfig({ ...base, rope_scaling: null }).ropeScaling, { type: 'none' });
  assert.deepEqual(parseModelConfig({ ...base, rope_scaling: { rope_type: 'default' } }).ropeScaling, { type: 'none' });
  assert.deepEqual(parseModelConfig({ ...base, rope_scaling: { type: 'linear', factor: 4 } }).ropeScaling, {
    type: 'linear',
    factor: 4,
  });
  assert.deepEqual(parseModelConfig({ ...base, rope_scaling: { rope_type: 'linear', factor: 2 } }).ropeScaling, {
    type: 'linear',
    factor: 2,
  });
  const llama3 = {
    factor: 8.0,
    low_freq_factor: 1.0,
    high_freq_factor: 4.0,
    original_max_position_embeddings: 8192,
    rope_type: 'llama3',
  };
  assert.deepEqual(parseModelConfig({ ...base, rope_theta: 500000, rope_scaling: llama3 }).ropeScaling, {
    type: 'llama3',
    factor: 8,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositionEmbeddings: 8192,
  });
  throwsNaming(
    () => parseModelConfig({ ...base, rope_scaling: { type: 'mrope', factor: 4 } }),
    'CHECKPOINT_UNSUPPORTED',
    ['config.json', 'rope_scaling', 'mrope'],
  );
  throwsNaming(() => parseModelConfig({ ...base, rope_scaling: { type: 'linear' } }), 'CHECKPOINT_INVALID', [
    'rope_scaling.factor',
  ]);
  const { original_max_position_embeddings: _, ...noOrig } = llama3;
  throwsNaming(() => parseModelConfig({ ...base, rope_scaling: noOrig }), 'CHECKPOINT_INVALID', [
    'original_max_position_embeddings',
  ]);
});

test('rope scaling yarn, dynamic, longrope: HF defaults resolved (beta 32/1, attention factors)', () => {
  // Qwen2.5 long context: yarn factor 4 over 32768.
  const yarn = parseModelConfig({
    ...base,
    max_position_embeddings: 32768,
    rope_scaling: { type: 'yarn', factor: 4, original_max_position_embeddings: 32768 },
  }).ropeScaling;
  assert.deepEqual(yarn, {
    type: 'yarn',
    factor: 4,
    originalMaxPositionEmbeddings: 32768,
    betaFast: 32,
    betaSlow: 1,
    attentionFactor: 0.1 * Math.log(4) + 1,
    truncate: true,
  });
  const ds = parseModelConfig({
    ...base,
    rope_scaling: { rope_type: 'yarn', factor: 40, mscale: 1, mscale_all_dim: 0.5, beta_fast: 16, truncate: false },
  }).ropeScaling;
  assert.ok(ds.type === 'yarn' && ds.betaFast === 16 && !ds.truncate);
  assert.ok(
    Math.abs(
      (ds as { attentionFactor: number }).attentionFactor - (0.1 * Math.log(40) + 1) / (0.05 * Math.log(40) + 1),
    ) < 1e-12,
  );
  assert.deepEqual(parseModelConfig({ ...base, rope_scaling: { type: 'dynamic', factor: 2 } }).ropeScaling, {
    type: 'dynamic',
    factor: 2,
  });
  // Phi-3 128k: original_max_position_embeddings beside rope_scaling, short/long factors of head_dim / 2.
  const half = 4; // base: head_dim 8
  const phi = parseModelConfig({
    ...base,
    max_position_embeddings: 131072,
    original_max_position_embeddings: 4096,
    rope_scaling: { type: 'longrope', short_factor: [1, 1, 1.5, 2], long_factor: [1, 2, 4, 8] },
  }).ropeScaling;
  assert.ok(phi.type === 'longrope');
  assert.equal(phi.originalMaxPositionEmbeddings, 4096);
  assert.ok(Math.abs(phi.attentionFactor - Math.sqrt(1 + Math.log(32) / Math.log(4096))) < 1e-12);
  throwsNaming(
    () =>
      parseModelConfig({
        ...base,
        rope_scaling: { type: 'longrope', short_factor: [1], long_factor: new Array(half).fill(1) },
      }),
    'CHECKPOINT_INVALID',
    ['rope_scaling.short_factor', String(half)],
  );
  throwsNaming(
    () => parseModelConfig({ ...base, rope_scaling: { type: 'yarn', factor: 4, beta_fast: 1, beta_slow: 2 } }),
    'CHECKPOINT_INVALID',
    ['beta_fast'],
  );
});

test('eos: number or list, merged with generation_config.json', () => {
  assert.deepEqual(parseModelConfig({ ...base, eos_token_id: [2, 7] }).eosTokenIds, [2, 7]);
  assert.deepEqual(
    parseModelConfig({ ...base, eos_token_id: 2 }, 'config.json', { eos_token_id: [7, 2, 9] }).eosTokenIds,
    [2, 7, 9],
  );
  assert.deepEqual(
    parseModelConfig({ ...base, eos_token_id: null }, 'config.json', { eos_token_id: 5 }).eosTokenIds,
    [5],
  );
  assert.equal(parseModelConfig({ ...base, bos_token_id: null }).bosTokenId, null);
  throwsNaming(() => parseModelConfig({ ...base, eos_token_id: 'x' }), 'CHECKPOINT_INVALID', ['eos_token_id']);
});

test('invalid fields: errors name the file and the field', () => {
  const f = '/m/config.json';
  throwsNaming(() => parseModelConfig({ ...base, num_key_value_heads: 3 }, f), 'CHECKPOINT_INVALID', [
    f,
    'num_attention_heads (8)',
    'num_key_value_heads (3)',
  ]);
  throwsNaming(() => parseModelConfig({ ...base, num_attention_heads: 7 }, f), 'CHECKPOINT_INVALID', [
    f,
    'hidden_size (64)',
    'num_attention_heads (7)',
  ]);
  throwsNaming(() => parseModelConfig({ ...base, hidden_size: 0 }, f), 'CHECKPOINT_INVALID', [f, 'hidden_size (0)']);
  throwsNaming(() => parseModelConfig({ ...base, num_hidden_layers: 2.5 }, f), 'CHECKPOINT_INVALID', [
    'num_hidden_layers (2.5)',
  ]);
  throwsNaming(() => parseModelConfig({ ...base, vocab_size: '300' }, f), 'CHECKPOINT_INVALID', ['vocab_size']);
  const { intermediate_size: _, ...noInter } = base;
  throwsNaming(() => parseModelConfig(noInter, f), 'CHECKPOINT_INVALID', [f, 'intermediate_size missing']);
  throwsNaming(() => parseModelConfig({ ...base, head_dim: 7 }, f), 'CHECKPOINT_INVALID', ['head_dim (7)']);
  throwsNaming(() => parseModelConfig({ ...base, rms_norm_eps: -1 }, f), 'CHECKPOINT_INVALID', ['rms_norm_eps']);
  throwsNaming(
    () => parseModelConfig({ ...base, architectures: ['GPT2LMHeadModel'], model_type: 'gpt2' }, f),
    'CHECKPOINT_UNSUPPORTED',
    [f, 'GPT2LMHeadModel', 'LlamaForCausalLM', 'MistralForCausalLM', 'Qwen2ForCausalLM'],
  );
  throwsNaming(() => parseModelConfig([], f), 'CHECKPOINT_INVALID', [f]);
});

test('loadModelConfig reads config.json and generation_config.json from a directory', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-config-'));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(base));
  fs.writeFileSync(path.join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: [2, 3] }));
  assert.deepEqual(loadModelConfig(dir).eosTokenIds, [2, 3]);
  fs.writeFileSync(path.join(dir, 'config.json'), '{ nope');
  throwsNaming(() => loadModelConfig(dir), 'CHECKPOINT_INVALID', [path.join(dir, 'config.json'), 'JSON']);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(base));
  fs.writeFileSync(path.join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: -1 }));
  throwsNaming(() => loadModelConfig(dir), 'CHECKPOINT_INVALID', ['generation_config.json', 'eos_token_id']);
});

test('Gemma 2: HF defaults for omitted keys (head_dim 256, caps 50 / 30, alternating 4096 windows, tied)', () => {
  const g = parseModelConfig({
    architectures: ['Gemma2ForCausalLM'],
    hidden_size: 64,
    intermediate_size: 128,
    num_hidden_layers: 4,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: 300,
  });
  assert.equal(g.headDim, 256);
  assert.equal(g.queryPreAttnScalar, 256);
  assert.equal(g.attnLogitSoftcap, 50);
  assert.equal(g.finalLogitSoftcap, 30);
  assert.deepEqual(g.layerWindows, [4096, 0, 4096, 0]);
  assert.equal(g.slidingWindow, 4096);
  assert.equal(g.tieWordEmbeddings, true);
  assert.equal(g.rmsNormEps, 1e-6);
  assert.equal(g.maxPositionEmbeddings, 8192);
  assert.deepEqual([g.bosTokenId, g.eosTokenIds], [2, [1]]);
  assert.ok(g.normUnitOffset && g.sandwichNorms && g.scaleEmbeddings && !g.qkNorm);
  assert.equal(g.hiddenActivation, 'gelu_tanh');
  // explicit nulls stay (HF: None); layer_types wins over the alternation; the 27B's scalar
  const h = parseModelConfig({
    ...base,
    architectures: ['Gemma2ForCausalLM'],
    attn_logit_softcapping: null,
    final_logit_softcapping: null,
    query_pre_attn_scalar: 144,
    sliding_window: 8,
    layer_types: ['full_attention', 'sliding_attention'],
  });
  assert.deepEqual([h.attnLogitSoftcap, h.finalLogitSoftcap, h.queryPreAttnScalar], [null, null, 144]);
  assert.deepEqual(h.layerWindows, [0, 8]);
  // Llama-family configs keep their own: 1/sqrt(headDim), SiLU, plain norms
  const l = parseModelConfig(base);
  assert.equal(l.queryPreAttnScalar, l.headDim);
  assert.ok(!l.normUnitOffset && !l.sandwichNorms && !l.scaleEmbeddings && l.hiddenActivation === 'silu');
  throwsNaming(
    () => parseModelConfig({ ...base, architectures: ['Gemma2ForCausalLM'], hidden_activation: 'relu' }),
    'CHECKPOINT_UNSUPPORTED',
    ['config.json', 'hidden_activation', 'relu'],
  );
  throwsNaming(
    () => parseModelConfig({ ...base, architectures: ['Gemma2ForCausalLM'], final_logit_softcapping: -1 }),
    'CHECKPOINT_INVALID',
    ['final_logit_softcapping'],
  );
});

test('Gemma 3: sliding_window_pattern 6, rope_local_base_freq, and a multimodal config read as its text_config', () => {
  const t = parseModelConfig({ ...base, architectures: ['Gemma3ForCausalLM'], num_hidden_layers: 12 });
  assert.deepEqual(
    t.layerWindows.map((w) => (w ? 1 : 0)),
    [1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 0],
  );
  assert.equal(t.slidingWindow, 4096);
  assert.deepEqual([t.ropeTheta, t.localRopeTheta], [1_000_000, 10000]);
  assert.ok(t.qkNorm);
  assert.deepEqual([t.attnLogitSoftcap, t.finalLogitSoftcap], [null, null]);
  assert.equal(
    parseModelConfig({ ...base, model_type: 'gemma3_text', architectures: undefined }).architecture,
    'Gemma3ForCausalLM',
  );
  // google/gemma-3-4b-it's config.json: most of the text config left to Gemma3TextConfig's defaults
  const mm = parseModelConfig({
    architectures: ['Gemma3ForConditionalGeneration'],
    model_type: 'gemma3',
    eos_token_id: [1, 106],
    text_config: {
      hidden_size: 2560,
      intermediate_size: 10240,
      model_type: 'gemma3_text',
      num_hidden_layers: 34,
      rope_scaling: { factor: 8.0, rope_type: 'linear' },
      sliding_window: 1024,
    },
    vision_config: { model_type: 'siglip_vision_model' },
  });
  assert.equal(mm.architecture, 'Gemma3ForCausalLM');
  assert.deepEqual([mm.numHeads, mm.numKvHeads, mm.headDim, mm.vocabSize], [8, 4, 256, 262208]);
  assert.deepEqual(mm.ropeScaling, { type: 'linear', factor: 8 });
  assert.deepEqual(mm.eosTokenIds, [1, 106]);
  assert.equal(mm.bosTokenId, 2);
  assert.equal(mm.layerWindows.filter((w) => w === 1024).length, 34 - 5); // layers 5, 11, 17, 23, 29 global
  assert.equal(mm.maxPositionEmbeddings, 131072);
});
