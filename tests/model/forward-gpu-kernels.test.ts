/**
 * The forward pass with the kernel variants a GPU runs (matmul 'workgroup' with subgroup and with workgroup-memory
 * reductions, attention and sparse decode 'workgroup'), on lavapipe, against the reference forward pass: the
 * variants an NVIDIA, AMD or Apple GPU will run are proven end to end, not only kernel by kernel. (The default
 * variants on this CPU adapter are the 'cpu' ones: tests/model/forward-gpu.test.ts.) The workgroup kernels run
 * 3-10x slower on lavapipe, so this covers a spread of the synthetic variants: MHA and GQA 4:1, every dtype, odd
 * sizes, a head_dim override, tied embeddings, biases, and Gemma 2.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { SYNTHETIC_VARIANTS } from '../../checkpoint/synthetic.js';
import { testGpu } from '../helpers/gpu.js';
import { checkVariant } from './forward-check.js';

const root = mkdtempSync(path.join(os.tmpdir(), 'sift-forward-gpuk-'));
after(() => rmSync(root, { recursive: true, force: true }));

const PICK = [
  'llama-f16-gqa4-sharded-llama3rope',
  'llama-f32-odd-sizes',
  'qwen2-bf16-odd-tied-lmhead',
  'mistral-f16-tied-embed',
  // Gemma 2: GeGLU, sandwich norms, soft-capped scores and logits, alternating windows
  'gemma2-f32-gqa-softcap-window',
];

for (const name of PICK) {
  const variant = SYNTHETIC_VARIANTS.find((v) => v.name === name);
  if (!variant) throw new Error(`no synthetic variant ${name}`);
  test(`forward pass with the GPU kernel variants equals the reference: ${name}`, async () => {
    const gpu = await testGpu();
    if (!gpu.caps.subgroups) throw new Error('the adapter has no subgroups: the subgroup variants cannot be tested');
    await checkVariant(path.join(root, name), variant, { variant: 'gpu', subgroups: true });
  });
}

test('forward pass with the GPU kernel variants without subgroups equals the reference', async () => {
  const variant = SYNTHETIC_VARIANTS.find((v) => v.name === 'qwen2-f16-gqa4-sharded-llama3rope');
  if (!variant) throw new Error('no synthetic variant qwen2-f16-gqa4-sharded-llama3rope');
  await checkVariant(path.join(root, 'nosub'), variant, { variant: 'gpu', subgroups: false });
});
