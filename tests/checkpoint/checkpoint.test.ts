import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { checkpointLayout, openCheckpoint } from '../../checkpoint/checkpoint.js';
import { SafetensorsFile, type TensorToWrite, writeSafetensors } from '../../checkpoint/safetensors.js';
import {
  SYNTHETIC_VARIANTS,
  type SyntheticOptions,
  syntheticConfigJson,
  writeSyntheticCheckpoint,
} from '../../checkpoint/synthetic.js';
import { isSiftError } from '../../config/errors.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-checkpoint-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
let counter = 0;

const tiny: SyntheticOptions = {
  architecture: 'LlamaForCausalLM',
  dtype: 'f32',
  sharded: false,
  tie: 'untied',
  hidden: 16,
  layers: 2,
  heads: 2,
  kvHeads: 1,
  intermediate: 24,
  vocab: 20,
  seed: 9,
};

function write(o: Partial<SyntheticOptions> = {}): string {
  const dir = path.join(tmp, `m${counter++}`);
  writeSyntheticCheckpoint(dir, { ...tiny, ...o });
  return dir;
}

/** Rewrites `dir`/model.safetensors through `edit` (which gets and returns the tensor list). */
function rewrite(dir: string, edit: (ts: TensorToWrite[]) => TensorToWrite[]): string {
  const file = path.join(dir, 'model.safetensors');
  const f = SafetensorsFile.open(file);
  const ts = [...f.entries.values()].map((e) => ({
    name: e.name,
    dtype: e.rawDtype as 'F32',
    shape: e.shape,
    data: f.read(e.name),
  }));
  f.close();
  writeSafetensors(file, edit(ts));
  return file;
}

function throwsNaming(fn: () => unknown, code: Parameters<typeof isSiftError>[1], parts: string[]) {
  assert.throws(fn, (e: unknown) => {
    assert.ok(isSiftError(e, code), `expected SiftError ${code}, got ${String(e)}`);
    for (const p of parts) assert.ok(e.message.includes(p), `message "${e.message}" should name "${p}"`);
    return true;
  });
}

test('every synthetic variant opens, holds its layout, and its config matches the options', () => {
  for (const v of SYNTHETIC_VARIANTS) {
    const dir = path.join(tmp, v.name);
    writeSyntheticCheckpoint(dir, v);
    const ck = openCheckpoint(dir);
    try {
      const c = ck.config;
      assert.equal(c.architecture, v.architecture, v.name);
      assert.equal(c.headDim, v.headDim ?? v.hidden / v.heads, v.name);
      assert.equal(c.numKvHeads, v.kvHeads, v.name);
      assert.deepEqual(c.ropeScaling, v.ropeScaling ?? { type: 'none' }, v.name);
      assert.equal(c.tieWordEmbeddings, v.tie !== 'untied', v.name);
      assert.equal(fs.existsSync(path.join(dir, 'model.safetensors.index.json')), v.sharded, v.name);
      if (v.sharded) {
        const shards = fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors'));
        assert.ok(shards.length >= 2 && shards.length <= 3, `${v.name}: ${shards.length} shards`);
      }
      for (const t of checkpointLayout(c)) {
        const name = t.name === 'model.embed_tokens.weight' ? ck.embeddingName : t.name;
        assert.deepEqual(ck.info(name), { dtype: v.dtype, shape: t.shape }, `${v.name} ${name}`);
      }
      assert.equal(ck.read(ck.lmHeadName).byteLength, v.vocab * v.hidden * (v.dtype === 'f32' ? 4 : 2));
    } finally {
      ck.close();
    }
  }
});

test('tied embeddings resolve both ways; untied keeps both', () => {
  const untied = openCheckpoint(write({ tie: 'untied' }));
  assert.equal(untied.embeddingName, 'model.embed_tokens.weight');
  assert.equal(untied.lmHeadName, 'lm_head.weight');
  untied.close();
  const te = openCheckpoint(write({ tie: 'tied-embed' }));
  assert.equal(te.has('lm_head.weight'), false);
  assert.equal(te.embeddingName, 'model.embed_tokens.weight');
  assert.equal(te.lmHeadName, 'model.embed_tokens.weight');
  const teEmbed = te.readF32(te.embeddingName);
  te.close();
  const tl = openCheckpoint(write({ tie: 'tied-lmhead' }));
  assert.equal(tl.has('model.embed_tokens.weight'), false);
  assert.equal(tl.embeddingName, 'lm_head.weight');
  assert.equal(tl.lmHeadName, 'lm_head.weight');
  assert.deepEqual(tl.readF32(tl.embeddingName), teEmbed, 'same seed, same shared matrix under either name');
  tl.close();
});

test('untied config without lm_head is an error naming it', () => {
  const dir = write({ tie: 'tied-embed' });
  const cfg = { ...syntheticConfigJson({ ...tiny, tie: 'tied-embed' }), tie_word_embeddings: false };
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfg));
  throwsNaming(() => openCheckpoint(dir), 'CHECKPOINT_INVALID', ['model.safetensors', 'lm_head.weight', 'missing']);
});

test('extra tensors (rotary_emb.inv_freq) are ignored', () => {
  const dir = write();
  rewrite(dir, (ts) => [
    ...ts,
    { name: 'model.layers.0.self_attn.rotary_emb.inv_freq', dtype: 'f32', shape: [4], data: new Uint8Array(16) },
  ]);
  const ck = openCheckpoint(dir);
  assert.ok(ck.tensorNames.includes('model.layers.0.self_attn.rotary_emb.inv_freq'));
  ck.close();
});

test('missing tensor, wrong shape and unsupported dtype name the file, tensor and shapes', () => {
  const q = 'model.layers.1.self_attn.q_proj.weight';
  const d1 = write();
  const f1 = rewrite(d1, (ts) => ts.filter((t) => t.name !== q));
  throwsNaming(() => openCheckpoint(d1), 'CHECKPOINT_INVALID', [f1, q, 'missing']);

  const d2 = write();
  const k = 'model.layers.0.self_attn.k_proj.weight';
  const f2 = rewrite(d2, (ts) => ts.map((t) => (t.name === k ? { ...t, shape: [16, 8] } : t)));
  throwsNaming(() => openCheckpoint(d2), 'CHECKPOINT_INVALID', [f2, k, '(16, 8)', 'expected (8, 16)']);

  // The writer refuses I32, so patch the header's dtype string in place (same element size: offsets stay valid).
  const d4 = write();
  const f4 = path.join(d4, 'model.safetensors');
  const buf = fs.readFileSync(f4);
  const hlen = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + hlen).toString());
  header[q].dtype = 'I32';
  const json = Buffer.from(JSON.stringify(header).padEnd(hlen, ' '));
  assert.equal(json.length, hlen);
  json.copy(buf, 8);
  fs.writeFileSync(f4, buf);
  throwsNaming(() => openCheckpoint(d4), 'CHECKPOINT_UNSUPPORTED', [f4, q, 'I32']);
});

test('sharded: a mis-shaped tensor names its shard', () => {
  const dir = write({ sharded: true });
  const index = JSON.parse(fs.readFileSync(path.join(dir, 'model.safetensors.index.json'), 'utf8'));
  const name = 'model.layers.1.mlp.down_proj.weight';
  const shardPath = path.join(dir, index.weight_map[name]);
  const f = SafetensorsFile.open(shardPath);
  const ts = [...f.entries.values()].map((e) => ({
    name: e.name,
    dtype: e.rawDtype as 'F32',
    shape: e.name === name ? [e.shape[1], e.shape[0]] : e.shape,
    data: f.read(e.name),
  }));
  f.close();
  writeSafetensors(shardPath, ts);
  throwsNaming(() => openCheckpoint(dir), 'CHECKPOINT_INVALID', [shardPath, name, '(24, 16)', 'expected (16, 24)']);
});

test('missing directory, no config.json, no weights', () => {
  const nowhere = path.join(tmp, 'does-not-exist');
  throwsNaming(() => openCheckpoint(nowhere), 'MODEL_NOT_FOUND', [nowhere]);
  const empty = path.join(tmp, 'empty');
  fs.mkdirSync(empty);
  throwsNaming(() => openCheckpoint(empty), 'CHECKPOINT_INVALID', [empty, 'config.json']);
  fs.writeFileSync(path.join(empty, 'config.json'), JSON.stringify(syntheticConfigJson(tiny)));
  throwsNaming(() => openCheckpoint(empty), 'CHECKPOINT_INVALID', [empty, 'model.safetensors']);
  const file = path.join(empty, 'config.json');
  throwsNaming(() => openCheckpoint(file), 'MODEL_NOT_FOUND', [file]);
  const d = write();
  fs.writeFileSync(
    path.join(d, 'config.json'),
    JSON.stringify({ ...syntheticConfigJson(tiny), architectures: ['FalconForCausalLM'] }),
  );
  throwsNaming(() => openCheckpoint(d), 'CHECKPOINT_UNSUPPORTED', [
    'config.json',
    'FalconForCausalLM',
    'Qwen2ForCausalLM',
  ]);
});
