/**
 * --quantize q4 with --quantize-int8 ROLES: the flag parses to the upload's roles (unknown ones refused by name), and
 * the upload keeps exactly the matrices of those roles at int8 (embedding = token embedding and lm_head, attn-v =
 * v_proj, ffn-down = down_proj), everything else q4.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { openCheckpoint } from '../../checkpoint/checkpoint.js';
import { writeSyntheticCheckpoint } from '../../checkpoint/synthetic.js';
import { modelWeightBytes } from '../../checkpoint/weight-bytes.js';
import { engineConfig } from '../../config/engine.js';
import { isSiftError } from '../../config/errors.js';
import { quantizeOption } from '../../model/runner.js';
import { destroyModel, uploadModel } from '../../model/weights.js';
import { testGpu } from '../helpers/gpu.js';

const root = mkdtempSync(path.join(os.tmpdir(), 'sift-qmix-'));
after(() => rmSync(root, { recursive: true, force: true }));

test('--quantize-int8 parses to the upload roles; unknown roles name the flag', () => {
  const q = (flags: Record<string, unknown>) => quantizeOption(engineConfig({ flags: { quantize: 'q4', ...flags } }));
  // The default: groups of 64, v_proj and down_proj at int8 (92% greedy agreement on stories15M; QUANT.md).
  assert.deepEqual(q({}), { format: 'q4', group: 64, int8: ['attn-v', 'ffn-down'] });
  assert.deepEqual(q({ quantizeInt8: 'none', quantizeGroup: 32 }), { format: 'q4', group: 32, int8: [] });
  assert.deepEqual(q({ quantizeInt8: 'embedding, ffn-down', quantizeGroup: 64 }), {
    format: 'q4',
    group: 64,
    int8: ['embedding', 'ffn-down'],
  });
  assert.throws(
    () => q({ quantizeInt8: 'embedding,attn-q' }),
    (e: unknown) =>
      isSiftError(e, 'INVALID_ARGUMENT') && e.message.includes('"attn-q"') && e.message.includes('attn-v'),
  );
});

test('a q4 upload keeps the matrices of the int8 roles at int8 and nothing else', async () => {
  const gpu = await testGpu();
  const dir = path.join(root, 'm');
  writeSyntheticCheckpoint(dir, {
    architecture: 'LlamaForCausalLM',
    dtype: 'f16',
    sharded: false,
    tie: 'untied',
    hidden: 64,
    layers: 2,
    heads: 4,
    kvHeads: 2,
    intermediate: 96,
    vocab: 128,
    seed: 31,
  });
  const ck = openCheckpoint(dir);
  try {
    for (const int8 of [[], ['embedding'], ['attn-v', 'ffn-down']] as const) {
      const w = uploadModel(gpu, ck, { quantize: { format: 'q4', group: 32, int8 } });
      const want = (role: string) => ((int8 as readonly string[]).includes(role) ? 'q8' : 'q4');
      assert.equal(w.embed.dtype, want('embedding'), `embedding with ${int8}`);
      assert.equal(w.lmHead.dtype, want('embedding'), `lm_head with ${int8}`);
      // q/k/v are stacked into one weight (model/weights.ts), or into q4 q+k and q8 v parts when v is kept at int8
      const hd = 64 / 4;
      const qkv =
        want('attn-v') === 'q8'
          ? [
              ['q4', (4 + 2) * hd],
              ['q8', 2 * hd],
            ]
          : [['q4', (4 + 2 * 2) * hd]];
      for (const l of w.layers) {
        assert.deepEqual(
          l.qkv.map((m) => [m.dtype, m.rows]),
          qkv,
          `q/k/v parts with ${int8}`,
        );
        assert.equal(l.down.dtype, want('ffn-down'), `down_proj with ${int8}`);
        for (const m of [l.o, l.gateUp]) assert.equal(m.dtype, 'q4', `${m.name} with ${int8}`);
      }
      destroyModel(w);
    }
    // sift kv's arithmetic for the default mix is the upload's byte count.
    const mix = uploadModel(gpu, ck, { quantize: { format: 'q4', group: 64, int8: ['attn-v', 'ffn-down'] } });
    assert.equal(mix.bytes, modelWeightBytes(ck.config, 'q4g64+int8 v,down').total);
    destroyModel(mix);
  } finally {
    ck.close();
  }
});
