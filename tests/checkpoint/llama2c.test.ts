import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { openCheckpoint } from '../../checkpoint/checkpoint.js';
import { importLlama2c, llama2cStopIds, permuteRopeRows } from '../../checkpoint/llama2c.js';
import { parseLlama2cTokenizer } from '../../checkpoint/llama2c-tokenizer.js';
import { MARKER_FILE, readMarker, writeModelDirAtomically } from '../../checkpoint/model-dir.js';
import { KNOWN_MODELS } from '../../checkpoint/models.js';
import { openSafetensorsDir } from '../../checkpoint/safetensors.js';
import { isSiftError } from '../../config/errors.js';
import { loadText } from '../../text/text.js';
import { Tokenizer } from '../../text/tokenizer.js';
import { Rng } from '../helpers/rng.js';
import { type SynthShape, spEncode, synthCheckpoint, synthTokenizer, TINY } from './synth-llama2c.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-llama2c-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const tok = synthTokenizer();
const shape: SynthShape = { ...TINY, vocabSize: tok.vocabSize };

function writeInputs(name: string, s: SynthShape, seed: number) {
  const ck = synthCheckpoint(s, seed);
  const ckFile = path.join(tmp, `${name}.bin`);
  const tokFile = path.join(tmp, `${name}-tokenizer.bin`);
  fs.writeFileSync(ckFile, ck.bytes);
  fs.writeFileSync(tokFile, tok.bytes);
  return { ...ck, ckFile, tokFile };
}

// ---- RoPE, both conventions, on one head: x (headSize,) at position pos ----
function ropeInterleaved(x: Float32Array, pos: number): Float64Array {
  const hs = x.length;
  const out = new Float64Array(hs);
  for (let i = 0; i < hs; i += 2) {
    const freq = 1 / 10000 ** (i / hs);
    const c = Math.cos(pos * freq);
    const s = Math.sin(pos * freq);
    out[i] = x[i] * c - x[i + 1] * s;
    out[i + 1] = x[i] * s + x[i + 1] * c;
  }
  return out;
}
function ropeRotateHalf(x: Float32Array, pos: number): Float64Array {
  const hs = x.length;
  const half = hs / 2;
  const out = new Float64Array(hs);
  for (let i = 0; i < half; i++) {
    const freq = 1 / 10000 ** ((2 * i) / hs);
    const c = Math.cos(pos * freq);
    const s = Math.sin(pos * freq);
    out[i] = x[i] * c - x[i + half] * s;
    out[i + half] = x[i + half] * c + x[i] * s;
  }
  return out;
}
/** W (rows, cols) @ x (cols,) -> (rows,) */
function matvec(w: Float32Array, x: Float32Array, rows: number, cols: number): Float32Array {
  const y = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let acc = 0;
    for (let c = 0; c < cols; c++) acc += w[r * cols + c] * x[c];
    y[r] = acc;
  }
  return y;
}
const f32 = (u: Uint8Array) => new Float32Array(u.slice().buffer);
const bytesOf = (a: Float32Array) => new Uint8Array(a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength));

describe('llama2.c importer', () => {
  test('q/k row permutation turns interleaved RoPE into rotate_half RoPE', () => {
    const rng = new Rng(7);
    for (const [nHeads, hs, cols] of [
      [1, 8, 5],
      [3, 6, 4],
      [2, 16, 9],
    ]) {
      const w = rng.uniformArray(nHeads * hs * cols);
      const wHf = f32(permuteRopeRows(bytesOf(w), nHeads, hs, cols));
      const x = rng.uniformArray(cols);
      const xk = rng.uniformArray(cols);
      const q = matvec(w, x, nHeads * hs, cols);
      const qHf = matvec(wHf, x, nHeads * hs, cols);
      const k = matvec(w, xk, nHeads * hs, cols);
      const kHf = matvec(wHf, xk, nHeads * hs, cols);
      for (const pos of [0, 1, 5, 37]) {
        for (let h = 0; h < nHeads; h++) {
          const head = (v: Float32Array) => v.subarray(h * hs, (h + 1) * hs);
          const a = ropeInterleaved(head(q), pos);
          const b = ropeRotateHalf(head(qHf), pos);
          // Element-wise: HF index j*hs/2+i holds llama2.c index 2i+j.
          for (let i = 0; i < hs / 2; i++) {
            for (let j = 0; j < 2; j++) assert.ok(Math.abs(b[j * (hs / 2) + i] - a[2 * i + j]) < 1e-5);
          }
          // And attention scores are unchanged: rope(q).rope(k) at two positions.
          const ak = ropeInterleaved(head(k), pos + 3);
          const bk = ropeRotateHalf(head(kHf), pos + 3);
          let d1 = 0;
          let d2 = 0;
          for (let i = 0; i < hs; i++) {
            d1 += a[i] * ak[i];
            d2 += b[i] * bk[i];
          }
          assert.ok(Math.abs(d1 - d2) < 1e-4, `score ${d1} vs ${d2}`);
        }
      }
    }
  });

  for (const shared of [true, false]) {
    test(`imports a tiny checkpoint (${shared ? 'shared' : 'unshared'} classifier) into a loadable HF dir`, async () => {
      const s = { ...shape, shared };
      const inp = writeInputs(`tiny-${shared}`, s, 11);
      const dest = path.join(tmp, `model-${shared}`);
      const r = await importLlama2c({ checkpoint: inp.ckFile, tokenizer: inp.tokFile, dest });
      assert.equal(r.dir, dest);
      for (const f of [
        'config.json',
        'model.safetensors',
        'tokenizer.json',
        'tokenizer_config.json',
        'generation_config.json',
      ]) {
        assert.ok(fs.existsSync(path.join(dest, f)), f);
      }
      assert.equal(readMarker(dest)?.sha256, r.sha256);
      // llama2.c ends a sequence at BOS: the import says so in generation_config.json and in its marker
      assert.equal(readMarker(dest)?.format, 'llama2c');
      const gen = JSON.parse(fs.readFileSync(path.join(dest, 'generation_config.json'), 'utf8'));
      assert.deepEqual(gen.eos_token_id, [2, 1]);
      assert.deepEqual(llama2cStopIds(dest), [1]);
      assert.deepEqual(loadText(dest).stopIds.slice().sort(), [1, 2]);
      const cfg = JSON.parse(fs.readFileSync(path.join(dest, 'config.json'), 'utf8'));
      assert.equal(cfg.architectures[0], 'LlamaForCausalLM');
      assert.equal(cfg.tie_word_embeddings, shared);
      assert.equal(cfg.max_position_embeddings, s.seqLen);
      assert.equal(cfg.num_key_value_heads, s.nKvHeads);
      assert.equal(cfg.rms_norm_eps, 1e-5);
      assert.equal(cfg.rope_theta, 10000);

      const st = openSafetensorsDir(dest);
      const read = (n: string) => f32(st.read(n));
      assert.deepEqual(read('model.embed_tokens.weight'), inp.blocks.get('tok')?.[0]);
      assert.equal(st.has('lm_head.weight'), !shared);
      if (!shared) assert.deepEqual(read('lm_head.weight'), inp.blocks.get('wcls')?.[0]);
      const hs = s.dim / s.nHeads;
      for (let l = 0; l < s.nLayers; l++) {
        const p = `model.layers.${l}.`;
        const bl = (n: string) => inp.blocks.get(n)?.[l];
        assert.deepEqual(read(`${p}input_layernorm.weight`), bl('rms_att'));
        assert.deepEqual(read(`${p}self_attn.v_proj.weight`), bl('wv'));
        assert.deepEqual(read(`${p}self_attn.o_proj.weight`), bl('wo'));
        assert.deepEqual(read(`${p}mlp.gate_proj.weight`), bl('w1'));
        assert.deepEqual(read(`${p}mlp.down_proj.weight`), bl('w2'));
        assert.deepEqual(read(`${p}mlp.up_proj.weight`), bl('w3'));
        assert.deepEqual(read(`${p}post_attention_layernorm.weight`), bl('rms_ffn'));
        const wk = bl('wk') as Float32Array;
        const k = read(`${p}self_attn.k_proj.weight`);
        // row (h, j*hs/2+i) of HF = row (h, 2i+j) of llama2.c
        for (let h = 0; h < s.nKvHeads; h++) {
          for (let i = 0; i < hs / 2; i++) {
            for (let j = 0; j < 2; j++) {
              const a = k.subarray((h * hs + j * (hs / 2) + i) * s.dim, (h * hs + j * (hs / 2) + i + 1) * s.dim);
              const b = wk.subarray((h * hs + 2 * i + j) * s.dim, (h * hs + 2 * i + j + 1) * s.dim);
              assert.deepEqual(a, b);
            }
          }
        }
      }
      assert.deepEqual(read('model.norm.weight'), inp.blocks.get('rms_final')?.[0]);
      st.close?.();

      const ck = openCheckpoint(dest);
      try {
        assert.equal(ck.config.tieWordEmbeddings, shared);
        assert.equal(ck.lmHeadName, shared ? 'model.embed_tokens.weight' : 'lm_head.weight');
        assert.deepEqual(ck.readF32('model.norm.weight'), inp.blocks.get('rms_final')?.[0]);
      } finally {
        ck.close();
      }
    });
  }

  test('tiny tokenizer: HF BPE from derived merges equals SentencePiece greedy merging', async () => {
    const dest = path.join(tmp, 'model-true');
    if (!fs.existsSync(dest)) {
      const inp = writeInputs('tok-only', shape, 3);
      await importLlama2c({ checkpoint: inp.ckFile, tokenizer: inp.tokFile, dest });
    }
    const t = Tokenizer.load(dest);
    const v = parseLlama2cTokenizer(tok.bytes, tok.vocabSize, 'tiny');
    assert.equal(v.pieces[3], '<0x00>');
    assert.equal(v.pieces[3 + 0xc3], '<0xC3>');
    assert.equal(v.pieces[259], '\u2581t');
    const texts = [
      'the cat',
      ' the cat at',
      'thethe',
      'a  cat ',
      'café',
      'incantations',
      'at the\nhat',
      'x',
      'ééé the',
    ];
    for (const text of texts) {
      const want = spEncode(text, v.pieces, v.scores, 259);
      assert.deepEqual(await t.encode(text, { addBos: false }), want, JSON.stringify(text));
      assert.deepEqual(await t.encode(text), [1, ...want]);
      assert.equal(t.decode(want), text);
    }
  });

  test('truncated, padded and foreign checkpoints are CHECKPOINT_INVALID naming the file and the sizes', async () => {
    const inp = writeInputs('bad', shape, 5);
    const cases: [string, Buffer, RegExp][] = [
      ['truncated', inp.bytes.subarray(0, inp.bytes.length - 4), /truncated: .* needs \d+ bytes, found \d+/],
      ['padded', Buffer.concat([inp.bytes, Buffer.alloc(8)]), /trailing bytes: .* needs \d+ bytes, found \d+/],
      ['short', inp.bytes.subarray(0, 10), /10 bytes, too short/],
      ['garbage', Buffer.alloc(1000, 0xff), /out of range/],
    ];
    for (const [name, bytes, re] of cases) {
      const file = path.join(tmp, `${name}.bin`);
      fs.writeFileSync(file, bytes);
      await assert.rejects(
        importLlama2c({ checkpoint: file, tokenizer: inp.tokFile, dest: path.join(tmp, `out-${name}`) }),
        (e: unknown) => isSiftError(e, 'CHECKPOINT_INVALID') && e.message.includes(file) && re.test(e.message),
      );
      assert.ok(!fs.existsSync(path.join(tmp, `out-${name}`)));
    }
    const expected = inp.bytes.length;
    const file = path.join(tmp, 'truncated.bin');
    await assert.rejects(importLlama2c({ checkpoint: file, tokenizer: inp.tokFile, dest: path.join(tmp, 'o') }), {
      message: new RegExp(`needs ${expected} bytes, found ${expected - 4}`),
    });
    // A tokenizer that does not match the vocab size
    const badTok = path.join(tmp, 'bad-tokenizer.bin');
    fs.writeFileSync(badTok, tok.bytes.subarray(0, tok.bytes.length - 3));
    await assert.rejects(
      importLlama2c({ checkpoint: inp.ckFile, tokenizer: badTok, dest: path.join(tmp, 'o2') }),
      (e: unknown) => isSiftError(e, 'CHECKPOINT_INVALID') && e.message.includes(badTok) && /truncated/.test(e.message),
    );
  });

  test('atomic write: a failure mid-build leaves no directory, and an existing model stays intact', async () => {
    const inp = writeInputs('atomic', shape, 9);
    const dest = path.join(tmp, 'atomic-model');
    // A failure after some files are written (the marker cannot be written: a directory is in its way).
    await assert.rejects(
      writeModelDirAtomically(dest, { name: 'x', sha256: 'y', source: 'z' }, (t) => {
        fs.writeFileSync(path.join(t, 'config.json'), '{}');
        fs.mkdirSync(path.join(t, MARKER_FILE));
      }),
    );
    assert.ok(!fs.existsSync(dest));
    assert.deepEqual(
      fs.readdirSync(tmp).filter((n) => n.startsWith('atomic-model')),
      [],
      'no temp folder left behind',
    );

    // A complete model, then a failing re-import: the old one survives untouched.
    await importLlama2c({ checkpoint: inp.ckFile, tokenizer: inp.tokFile, dest });
    const before = fs.readFileSync(path.join(dest, MARKER_FILE), 'utf8');
    const truncated = path.join(tmp, 'atomic-trunc.bin');
    fs.writeFileSync(truncated, inp.bytes.subarray(0, 100));
    await assert.rejects(importLlama2c({ checkpoint: truncated, tokenizer: inp.tokFile, dest }));
    assert.equal(fs.readFileSync(path.join(dest, MARKER_FILE), 'utf8'), before);
    await assert.rejects(
      writeModelDirAtomically(dest, { name: 'x', sha256: 'y', source: 'z' }, () => {
        throw new Error('boom');
      }),
      /boom/,
    );
    assert.equal(fs.readFileSync(path.join(dest, MARKER_FILE), 'utf8'), before);
    assert.deepEqual(
      fs.readdirSync(tmp).filter((n) => n.startsWith('atomic-model')),
      ['atomic-model'],
    );
  });
});

test('llama2cStopIds: BOS for a llama2.c import (marker format, or a known llama2.c checksum); nothing else', () => {
  const dir = (name: string, marker: object | null) => {
    const d = path.join(tmp, `stops-${name}`);
    fs.mkdirSync(d, { recursive: true });
    if (marker) fs.writeFileSync(path.join(d, MARKER_FILE), JSON.stringify(marker));
    return d;
  };
  const base = { name: 'm', source: 'x', createdAt: 'now' };
  assert.deepEqual(llama2cStopIds(dir('fmt', { ...base, sha256: 'aa', format: 'llama2c' })), [1]);
  // an import made before the marker recorded its format: known by the registry's checksum
  const known = KNOWN_MODELS.stories15M.source.sha256;
  assert.deepEqual(llama2cStopIds(dir('old', { ...base, sha256: known })), [1]);
  assert.deepEqual(llama2cStopIds(dir('other', { ...base, sha256: 'bb' })), []);
  assert.deepEqual(llama2cStopIds(dir('none', null)), []);
});
