// The reference forward pass against HF transformers itself: logits HF computed (f32, eager attention) for the
// checkpoints of hf-cases.ts, stored in tests/fixtures/hf-architectures.json (made by tests/fixtures/hf-golden.py;
// see scripts/hf-golden.mjs). Covers Qwen3's q/k norm, Phi-3's fused projections and longrope (short factors),
// Gemma 2 (attention and final soft-caps, query_pre_attn_scalar, alternating sliding layers), Gemma 3 (q/k norms,
// local rope base, linear scaling on global layers only), and the sliding window of Mistral, Phi-3 and Qwen2/3
// (max_window_layers), with every window shorter than the tokens.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { openCheckpoint } from '../../checkpoint/checkpoint.js';
import { writeSyntheticCheckpoint } from '../../checkpoint/synthetic.js';
import { assertClose } from '../helpers/compare.js';
import { referenceForward } from './forward.js';
import { HF_CASES, HF_TOKENS } from './hf-cases.js';

const here = path.dirname(fileURLToPath(import.meta.url));
// dist/tests/reference -> tests/fixtures
const GOLDEN = path.resolve(here, '../../../tests/fixtures/hf-architectures.json');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-hf-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test('reference logits equal HF transformers on Qwen3, Phi-3, Gemma 2/3 and sliding-window checkpoints', () => {
  const golden = JSON.parse(fs.readFileSync(GOLDEN, 'utf8')) as {
    transformers: string;
    tokens: number[];
    logits: Record<string, string>;
  };
  assert.deepEqual(golden.tokens, HF_TOKENS, 'the fixture was made for these tokens');
  assert.deepEqual(Object.keys(golden.logits).sort(), Object.keys(HF_CASES).sort(), 'one fixture entry per case');
  for (const [name, c] of Object.entries(HF_CASES)) {
    const dir = path.join(tmp, name);
    writeSyntheticCheckpoint(dir, c.options);
    const ck = openCheckpoint(dir);
    try {
      const got = referenceForward(ck, HF_TOKENS, { contextLength: c.contextLength });
      const b = Buffer.from(golden.logits[name], 'base64');
      const want = new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
      assert.equal(want.length, got.length, `${name}: logits count`);
      // HF sums in f32, the reference in f64: agreement to f32 accumulation error over 3 layers.
      assertClose(got, want, { atol: 5e-5, rtol: 5e-5 }, `${name} vs transformers ${golden.transformers}`);
    } finally {
      ck.close();
    }
  }
});
