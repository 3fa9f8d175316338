// GGUF model loading: a GGUF twin of a synthetic HF checkpoint (written by tests/helpers/gguf-writer.ts) gives the
// same config, the same tensors (F32 twin: bit for bit, llama q/k permutation undone) and the same reference logits;
// quantized twins stay within their quantization error; the text side comes from the metadata; bad files get
// errors naming the key or tensor.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { checkpointLayout, openCheckpoint } from '../../checkpoint/checkpoint.js';
import { GgufFile } from '../../checkpoint/gguf.js';
import { prepareGgufModel } from '../../checkpoint/gguf-import.js';
import { resolveModel } from '../../checkpoint/pull.js';
import { type SyntheticOptions, writeSyntheticCheckpoint } from '../../checkpoint/synthetic.js';
import { isSiftError } from '../../config/errors.js';
import { loadText } from '../../text/text.js';
import { assertClose } from '../helpers/compare.js';
import {
  encodeGgml,
  type GgufKv,
  type GgufWriteType,
  ggufBytes,
  ggufTwin,
  kv,
  sentencePieceKeys,
  writeGguf,
} from '../helpers/gguf-writer.js';
import { STORY, scratchDir, storyTextDir, wordPieces } from '../helpers/tiny-text.js';
import { referenceForward } from '../reference/forward.js';

const base: SyntheticOptions = {
  architecture: 'LlamaForCausalLM',
  dtype: 'f32',
  sharded: false,
  tie: 'untied',
  hidden: 256,
  layers: 2,
  heads: 4,
  kvHeads: 2,
  intermediate: 512,
  vocab: 300,
  seed: 21,
};

/** An HF checkpoint of `o` and the path of its GGUF twin with tensor types from `typeOf`. */
function twin(
  o: Partial<SyntheticOptions>,
  typeOf: (hf: string) => GgufWriteType,
  arch = 'llama',
  extra: Record<string, GgufKv> = {},
) {
  const dir = scratchDir('gguf-hf');
  const opts = { ...base, ...o };
  writeSyntheticCheckpoint(dir, opts);
  const hf = openCheckpoint(dir);
  const pieces = wordPieces(STORY).slice(0, opts.vocab - 3);
  const tok = sentencePieceKeys(pieces, false);
  const { metadata, tensors } = ggufTwin(hf, { arch, typeOf, tokenizer: tok, metadata: extra });
  hf.close();
  const file = path.join(scratchDir('gguf-file'), 'twin.gguf');
  writeGguf(file, metadata, tensors);
  return { hfDir: dir, file, metadata, tensors };
}

function rejects(p: Promise<unknown>, code: Parameters<typeof isSiftError>[1], parts: string[]) {
  return assert.rejects(p, (e: unknown) => {
    assert.ok(isSiftError(e, code), `expected SiftError ${code}, got ${String(e)}`);
    for (const s of parts) assert.ok(e.message.includes(s), `message "${e.message}" should name "${s}"`);
    return true;
  });
}

test('an F32 GGUF twin loads to the same config and the same tensors, bit for bit (llama q/k permutation undone)', async () => {
  for (const [o, arch] of [
    [{}, 'llama'],
    [{ architecture: 'Qwen2ForCausalLM', tie: 'tied-embed', kvHeads: 1 }, 'qwen2'],
    // Qwen3: head_dim beside hidden / heads, attn_q_norm / attn_k_norm per layer, no biases
    [{ architecture: 'Qwen3ForCausalLM', tie: 'tied-embed', headDim: 96 }, 'qwen3'],
  ] as const) {
    const t = twin(o, () => 'F32', arch);
    const dir = await prepareGgufModel(t.file, { modelsDir: scratchDir('models') });
    const g = openCheckpoint(dir);
    const h = openCheckpoint(t.hfDir);
    // GGUF stores the norm epsilon as f32.
    assert.deepEqual(
      { ...g.config, eosTokenIds: [...g.config.eosTokenIds] },
      { ...h.config, eosTokenIds: [2], rmsNormEps: Math.fround(h.config.rmsNormEps) },
    );
    for (const spec of checkpointLayout(h.config)) {
      assert.deepEqual(g.info(spec.name).shape, spec.shape, spec.name);
      assert.deepEqual(g.readF32(spec.name), h.readF32(spec.name), spec.name);
    }
    assert.equal(g.lmHeadName === g.embeddingName, h.config.tieWordEmbeddings);
    const ids = [1, 5, 9, 40, 7];
    // Equal tensors; the logits differ only through the f32-rounded norm epsilon.
    assertClose(referenceForward(g, ids), referenceForward(h, ids), { atol: 1e-5, rtol: 1e-5 }, 'logits');
    g.close();
    h.close();
  }
});

test('Gemma 2 / 3 GGUF twins: norms stored as 1 + w come back as w; caps, windows and local RoPE as the HF twin', async () => {
  // Sizes where llama.cpp's query_pre_attn_scalar rule (head size below the 27B models) equals the HF config's.
  const gemma: Partial<SyntheticOptions> = {
    tie: 'tied-embed',
    hidden: 64,
    layers: 3,
    heads: 4,
    kvHeads: 2,
    headDim: 32,
    intermediate: 96,
    vocab: 300,
    slidingWindow: 5,
  };
  for (const [o, arch] of [
    [{ ...gemma, architecture: 'Gemma2ForCausalLM', attnLogitSoftcap: 1.5, finalLogitSoftcap: 4 }, 'gemma2'],
    [
      {
        ...gemma,
        architecture: 'Gemma3ForCausalLM',
        slidingWindowPattern: 6,
        ropeTheta: 1000000,
        ropeScaling: { type: 'linear', factor: 8 },
      },
      'gemma3',
    ],
  ] as const) {
    const extra: Record<string, GgufKv> =
      arch === 'gemma3'
        ? { 'gemma3.rope.scaling.type': kv.str('linear'), 'gemma3.rope.scaling.factor': kv.f32(8) }
        : {};
    const t = twin(o, () => 'F32', arch, extra);
    assert.ok(t.tensors.some((x) => x.name === 'blk.0.post_ffw_norm.weight'));
    assert.ok(t.tensors.some((x) => x.name === 'blk.1.post_attention_norm.weight'));
    const dir = await prepareGgufModel(t.file, { modelsDir: scratchDir('models') });
    const g = openCheckpoint(dir);
    const h = openCheckpoint(t.hfDir);
    assert.deepEqual(
      { ...g.config, eosTokenIds: [...g.config.eosTokenIds] },
      {
        ...h.config,
        eosTokenIds: [2],
        rmsNormEps: Math.fround(h.config.rmsNormEps),
        attnLogitSoftcap: h.config.attnLogitSoftcap === null ? null : Math.fround(h.config.attnLogitSoftcap),
      },
      arch,
    );
    for (const spec of checkpointLayout(h.config)) {
      // (1 + w) - 1 in f32: w back to within one rounding of 1 + w
      assertClose(g.readF32(spec.name), h.readF32(spec.name), { atol: 1e-7, rtol: 0 }, `${arch} ${spec.name}`);
    }
    const ids = [1, 5, 9, 40, 7, 8, 120];
    assertClose(referenceForward(g, ids), referenceForward(h, ids), { atol: 1e-5, rtol: 1e-5 }, `${arch} logits`);
    g.close();
    h.close();
  }
});

test('quantized GGUF twins (Q8_0, Q4_0, Q5_0, Q4_K + Q6_K) load as q8/q4 and stay within quantization error', async () => {
  const mixes: [string, (hf: string) => GgufWriteType, number][] = [
    ['Q8_0', () => 'Q8_0', 0.02],
    ['Q4_0', () => 'Q4_0', 0.25],
    ['Q5_0', () => 'Q5_0', 0.12],
    ['Q4_K_M', (n) => (n.includes('down_proj') || n === 'lm_head.weight' ? 'Q6_K' : 'Q4_K'), 0.25],
    ['F16/BF16', (n) => (n.includes('mlp') ? 'BF16' : 'F16'), 0.01],
  ];
  for (const [label, typeOf, tol] of mixes) {
    const t = twin({}, typeOf);
    const g = openCheckpoint(await prepareGgufModel(t.file, { modelsDir: scratchDir('models') }));
    const h = openCheckpoint(t.hfDir);
    const q = g.info('model.layers.0.self_attn.q_proj.weight');
    if (label === 'Q8_0' || label === 'Q5_0') assert.equal(q.dtype, 'q8');
    if (label.startsWith('Q4')) assert.equal(q.dtype, 'q4');
    if (label === 'Q4_K_M') assert.equal(g.info('model.layers.1.mlp.down_proj.weight').dtype, 'q8');
    for (const spec of checkpointLayout(h.config)) {
      const a = g.readF32(spec.name);
      const b = h.readF32(spec.name);
      let err = 0;
      let norm = 0;
      for (let i = 0; i < a.length; i++) {
        err += (a[i] - b[i]) ** 2;
        norm += b[i] ** 2;
      }
      assert.ok(Math.sqrt(err / norm) < tol, `${label} ${spec.name}: relative error ${Math.sqrt(err / norm)}`);
    }
    // Reference logits of the twin against the original's: within the weights' error, grown through two layers.
    const ids = [1, 12, 30, 44, 8, 100, 3];
    const la = referenceForward(g, ids);
    const lb = referenceForward(h, ids);
    let err = 0;
    let norm = 0;
    for (let i = 0; i < la.length; i++) {
      err += (la[i] - lb[i]) ** 2;
      norm += lb[i] ** 2;
    }
    assert.ok(Math.sqrt(err / norm) < 2 * tol, `${label}: logits relative error ${Math.sqrt(err / norm)}`);
    g.close();
    h.close();
  }
});

test('the text side comes from the metadata: SentencePiece vocab encodes as its HF twin; chat template and stop ids', async () => {
  const pieces = wordPieces(`${STORY} Tell me a story. Hello Hi x`);
  const tok = {
    ...sentencePieceKeys(pieces, true),
    'tokenizer.chat_template': kv.str("{% for m in messages %}<s>[{{ m['role'] }}] {{ m['content'] }}{% endfor %}"),
    'tokenizer.ggml.eot_token_id': kv.u32(2),
  };
  const vocab = 3 + 256 + pieces.length;
  const dir = scratchDir('gguf-text');
  writeSyntheticCheckpoint(dir, { ...base, vocab });
  const h = openCheckpoint(dir);
  const { metadata, tensors } = ggufTwin(h, { arch: 'llama', typeOf: () => 'F32', tokenizer: tok });
  h.close();
  const file = path.join(dir, 'm.gguf');
  writeGguf(file, metadata, tensors);
  const text = loadText(await prepareGgufModel(file, { modelsDir: scratchDir('models') }));
  const twinText = loadText(storyTextDir());
  for (const s of ['Once upon a time, there was a little girl', 'Hello Lily! ✓ naïve', 'x\n\ty']) {
    assert.deepEqual(await text.encodePrompt(s), await twinText.encodePrompt(s), s);
    const ids = await text.encodePrompt(s);
    assert.equal(text.tokenizer.decode(ids), s);
  }
  assert.equal(text.chat.render([{ role: 'user', content: 'hi' }], { addGenerationPrompt: true }), '<s>[user] hi');
  assert.deepEqual(text.stopIds, [2]);
});

test('a byte-level BPE vocab (tokenizer.ggml.model gpt2, pre qwen2) encodes with its merges and added tokens', async () => {
  // Byte-level alphabet: printable bytes map to themselves, space to "Ġ".
  const tokens = [
    ...'abcdehlorw',
    'Ġ',
    'he',
    'll',
    'hell',
    'hello',
    'Ġw',
    'Ġwo',
    'or',
    'Ġwor',
    'ld',
    'Ġworld',
    '<|im_start|>',
    '<|im_end|>',
  ];
  const merges = ['h e', 'l l', 'he ll', 'hell o', 'Ġ w', 'Ġw o', 'o r', 'Ġwo r', 'l d', 'Ġwor ld'];
  const types = tokens.map((t) => (t.startsWith('<|') ? 3 : 1));
  const meta: Record<string, GgufKv> = {
    'general.architecture': kv.str('qwen2'),
    'qwen2.context_length': kv.u32(64),
    'qwen2.embedding_length': kv.u32(32),
    'qwen2.block_count': kv.u32(1),
    'qwen2.feed_forward_length': kv.u32(64),
    'qwen2.attention.head_count': kv.u32(2),
    'qwen2.attention.layer_norm_rms_epsilon': kv.f32(1e-6),
    'tokenizer.ggml.model': kv.str('gpt2'),
    'tokenizer.ggml.pre': kv.str('qwen2'),
    'tokenizer.ggml.tokens': kv.strs(tokens),
    'tokenizer.ggml.token_type': kv.i32s(types),
    'tokenizer.ggml.merges': kv.strs(merges),
    'tokenizer.ggml.eos_token_id': kv.u32(tokens.indexOf('<|im_end|>')),
    'tokenizer.ggml.add_bos_token': kv.bool(false),
  };
  const V = tokens.length;
  const rnd = (n: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i));
  const mat = (name: string, rows: number, cols: number, type: GgufWriteType = 'F32') => ({
    name,
    type,
    dims: cols === 1 ? [rows] : [cols, rows],
    data: encodeGgml(type, rnd(rows * cols), cols === 1 ? 1 : rows, cols === 1 ? rows : cols),
  });
  const tensors = [
    mat('token_embd.weight', V, 32),
    mat('blk.0.attn_norm.weight', 32, 1),
    mat('blk.0.attn_q.weight', 32, 32, 'Q8_0'),
    mat('blk.0.attn_k.weight', 32, 32, 'Q4_0'),
    mat('blk.0.attn_v.weight', 32, 32),
    mat('blk.0.attn_q.bias', 32, 1),
    mat('blk.0.attn_k.bias', 32, 1),
    mat('blk.0.attn_v.bias', 32, 1),
    mat('blk.0.attn_output.weight', 32, 32),
    mat('blk.0.ffn_norm.weight', 32, 1),
    mat('blk.0.ffn_gate.weight', 64, 32),
    mat('blk.0.ffn_up.weight', 64, 32),
    mat('blk.0.ffn_down.weight', 32, 64),
    mat('output_norm.weight', 32, 1),
  ];
  const file = path.join(scratchDir('gguf-bpe'), 'bpe.gguf');
  writeGguf(file, meta, tensors);
  const dir = await resolveModel(file, { modelsDir: scratchDir('models') });
  const ck = openCheckpoint(dir);
  assert.equal(ck.config.architecture, 'Qwen2ForCausalLM');
  assert.equal(ck.config.tieWordEmbeddings, true);
  assert.equal(ck.config.bosTokenId, null);
  ck.close();
  const text = loadText(dir);
  const ids = await text.encodePrompt('hello world<|im_end|>');
  assert.deepEqual(
    ids.map((i) => tokens[i]),
    ['hello', 'Ġworld', '<|im_end|>'],
  );
  assert.equal(text.tokenizer.decode(ids, { skipSpecial: false }), 'hello world<|im_end|>');
  assert.deepEqual(text.stopIds, [tokens.indexOf('<|im_end|>')]);
});

test('bad files: errors name the file and the key or tensor', async () => {
  const t = twin({ layers: 1 }, () => 'Q8_0');
  const models = scratchDir('models');
  const bytes = fs.readFileSync(t.file);
  const dir = scratchDir('bad');
  const put = (name: string, b: Uint8Array) => {
    const f = path.join(dir, name);
    fs.writeFileSync(f, b);
    return f;
  };
  // Truncated data: the last tensor's bytes are cut.
  await rejects(
    prepareGgufModel(put('cut.gguf', bytes.subarray(0, bytes.length - 100)), { modelsDir: models }),
    'CHECKPOINT_INVALID',
    ['cut.gguf', 'tensor output.weight', 'truncated'],
  );
  // Truncated header.
  await rejects(GgufFile.open(put('head.gguf', bytes.subarray(0, 200))), 'CHECKPOINT_INVALID', ['head.gguf']);
  // Not GGUF at all.
  await rejects(GgufFile.open(put('junk.gguf', Buffer.alloc(64, 7))), 'CHECKPOINT_INVALID', [
    'junk.gguf',
    'not a GGUF',
  ]);
  // Unknown architecture.
  const arch = { ...t.metadata, 'general.architecture': kv.str('mamba') };
  await rejects(
    prepareGgufModel(put('arch.gguf', ggufBytes(arch, t.tensors)), { modelsDir: models }),
    'CHECKPOINT_UNSUPPORTED',
    ['general.architecture', 'mamba', 'llama'],
  );
  // A required key missing.
  const { 'llama.block_count': _, ...noBlocks } = t.metadata;
  await rejects(
    prepareGgufModel(put('keys.gguf', ggufBytes(noBlocks, t.tensors)), { modelsDir: models }),
    'CHECKPOINT_INVALID',
    ['llama.block_count'],
  );
  // A tensor of a type sift does not read (Q4_1, id 3): rewrite one tensor's type id in the header.
  const buf = Buffer.from(ggufBytes(t.metadata, t.tensors));
  const at = buf.indexOf(Buffer.from('blk.0.ffn_up.weight'));
  const typeAt = at + 'blk.0.ffn_up.weight'.length + 4 + 2 * 8; // name, n_dims, two dims
  assert.equal(buf.readUInt32LE(typeAt), 8);
  const q41 = Buffer.from(buf);
  q41.writeUInt32LE(3, typeAt); // Q4_1 blocks are 20 bytes per 32 values: offsets no longer add up, but sift names the type
  await rejects(prepareGgufModel(put('type.gguf', q41), { modelsDir: models }), 'CHECKPOINT_UNSUPPORTED', [
    'blk.0.ffn_up.weight',
    'Q4_1',
  ]);
  // A tensor the model needs is missing.
  await rejects(
    prepareGgufModel(
      put(
        'missing.gguf',
        ggufBytes(
          t.metadata,
          t.tensors.filter((x) => x.name !== 'blk.0.attn_k.weight'),
        ),
      ),
      {
        modelsDir: models,
      },
    ),
    'CHECKPOINT_INVALID',
    ['blk.0.attn_k.weight'],
  );
  // An unsupported byte-level pre-tokenizer is named rather than guessed.
  const pre = {
    ...t.metadata,
    'tokenizer.ggml.model': kv.str('gpt2'),
    'tokenizer.ggml.pre': kv.str('deepseek-coder'),
    'tokenizer.ggml.merges': kv.strs([]),
  };
  await rejects(
    prepareGgufModel(put('pre.gguf', ggufBytes(pre, t.tensors)), { modelsDir: models }),
    'CHECKPOINT_UNSUPPORTED',
    ['tokenizer.ggml.pre', 'deepseek-coder'],
  );
  // Nothing half-made was left where a loader would find it.
  const gg = path.join(models, 'gguf');
  for (const d of fs.existsSync(gg) ? fs.readdirSync(gg) : []) assert.ok(!d.includes('.tmp-'), d);
});

test('a converted GGUF directory is reused, and refused once its file changes', async () => {
  const t = twin({ layers: 1 }, () => 'F32');
  const models = scratchDir('models');
  const a = await prepareGgufModel(t.file, { modelsDir: models });
  const mtime = fs.statSync(path.join(a, 'gguf.json')).mtimeMs;
  assert.equal(await prepareGgufModel(t.file, { modelsDir: models }), a);
  assert.equal(fs.statSync(path.join(a, 'gguf.json')).mtimeMs, mtime, 'not rewritten');
  const later = new Date(Date.now() + 5000);
  fs.utimesSync(t.file, later, later);
  assert.throws(
    () => openCheckpoint(a),
    (e: unknown) => isSiftError(e, 'CHECKPOINT_INVALID') && e.message.includes('changed'),
  );
  assert.notEqual(await prepareGgufModel(t.file, { modelsDir: models }), a);
});

test('rope scaling from GGUF: rope.scaling.* keys (linear, yarn) and a rope_freqs.weight tensor (Llama 3.1)', async () => {
  const models = scratchDir('models');
  const t = twin({ layers: 1 }, () => 'F32');
  const cfgOf = async (name: string, meta: Record<string, GgufKv>, extra: typeof t.tensors = []) => {
    const file = path.join(scratchDir('rope'), name);
    writeGguf(file, { ...t.metadata, ...meta }, [...t.tensors, ...extra]);
    const ck = openCheckpoint(await prepareGgufModel(file, { modelsDir: models }));
    ck.close();
    return ck.config;
  };
  const yarn = await cfgOf('yarn.gguf', {
    'llama.rope.scaling.type': kv.str('yarn'),
    'llama.rope.scaling.factor': kv.f32(4),
    'llama.rope.scaling.original_context_length': kv.u32(512),
  });
  assert.deepEqual(yarn.ropeScaling, {
    type: 'yarn',
    factor: 4,
    originalMaxPositionEmbeddings: 512,
    betaFast: 32,
    betaSlow: 1,
    attentionFactor: 0.1 * Math.log(4) + 1,
    truncate: true,
  });
  const linear = await cfgOf('linear.gguf', { 'llama.rope.scale_linear': kv.f32(2) });
  assert.deepEqual(linear.ropeScaling, { type: 'linear', factor: 2 });
  const half = 64 / 2;
  const factors = Float32Array.from({ length: half }, (_, i) => 1 + i / 4);
  const freqs = await cfgOf('freqs.gguf', {}, [
    { name: 'rope_freqs.weight', type: 'F32', dims: [half], data: new Uint8Array(factors.buffer) },
  ]);
  assert.ok(freqs.ropeScaling.type === 'longrope');
  assert.deepEqual(freqs.ropeScaling.shortFactor, Array.from(factors));
  assert.deepEqual(freqs.ropeScaling.longFactor, Array.from(factors));
  assert.equal(freqs.ropeScaling.attentionFactor, 1);
  await rejects(cfgOf('su.gguf', { 'llama.rope.scaling.type': kv.str('su') }), 'CHECKPOINT_UNSUPPORTED', [
    'llama.rope.scaling.type',
    'su',
  ]);
});
