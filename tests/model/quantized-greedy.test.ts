/**
 * Quantized weights end to end on stories15M (GPU, through the engine core):
 *  - --quantize int8: greedy tokens equal the reference forward pass over the same int8 weights (the kernels are
 *    exact), and the F32 model's greedy tokens;
 *  - a GGUF twin of stories15M in Q8_0 (written by tests/helpers/gguf-writer.ts, q/k rows interleaved as llama.cpp's
 *    converter writes them, tokenizer from tokenizer.ggml.*) loads through --model file.gguf, tokenizes the same,
 *    and generates the F32 model's greedy tokens.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { type Checkpoint, openCheckpoint } from '../../checkpoint/checkpoint.js';
import { resolveModel } from '../../checkpoint/pull.js';
import { engineConfig } from '../../config/engine.js';
import { EngineCore } from '../../engine/core.js';
import { argmax } from '../../engine/sampler.js';
import { ModelRunner } from '../../model/runner.js';
import { loadText } from '../../text/text.js';
import { dequantize, quantizeInt8 } from '../../util/quant.js';
import { collect, greedy } from '../engine/core-helpers.js';
import { ggufTwin, sentencePieceKeysFromTokenizerJson, writeGguf } from '../helpers/gguf-writer.js';
import { testGpu } from '../helpers/gpu.js';
import { storiesDir } from '../helpers/stories.js';
import { scratchDir } from '../helpers/tiny-text.js';
import { ReferenceModel } from '../reference/forward.js';

const N = 48;

async function gpuGreedy(dir: string, quantize: 'none' | 'int8' = 'none'): Promise<number[]> {
  const gpu = await testGpu();
  const core = EngineCore.create(await ModelRunner.load(dir, engineConfig({ flags: { quantize } }), { gpu }));
  try {
    return (await collect(core.submit(greedy('q', [1], N, { stopIds: [] })))).tokens;
  } finally {
    await core.shutdown(0);
  }
}

let f32Tokens: Promise<number[]> | undefined;
/** The F32 model's greedy tokens (computed once for both tests). */
function f32Greedy(dir: string): Promise<number[]> {
  f32Tokens ??= gpuGreedy(dir);
  return f32Tokens;
}

/** The checkpoint with every matrix replaced by its int8 round trip (what --quantize int8 uploads). */
function int8View(ckpt: Checkpoint): Checkpoint {
  return {
    ...ckpt,
    readF32: (name: string) => {
      const f = ckpt.readF32(name);
      const shape = ckpt.info(name).shape;
      return shape.length === 2 ? dequantize(quantizeInt8(f, shape[0], shape[1])) : f;
    },
  };
}

function referenceGreedy(ckpt: Checkpoint): number[] {
  const ref = new ReferenceModel(ckpt, { kvF16: true });
  const ids: number[] = [];
  let logits = ref.forward([1]);
  for (let i = 0; i < N; i++) {
    ids.push(argmax(logits));
    logits = ref.forward([ids[i]]);
  }
  return ids;
}

test('stories15M --quantize int8: GPU greedy tokens equal the reference over int8 weights and the F32 tokens', async () => {
  const dir = await storiesDir();
  const f32 = await f32Greedy(dir);
  const int8 = await gpuGreedy(dir, 'int8');
  const ckpt = openCheckpoint(dir);
  try {
    assert.deepEqual(int8, referenceGreedy(int8View(ckpt)), 'GPU int8 == reference over the int8 weights');
  } finally {
    ckpt.close();
  }
  assert.deepEqual(int8, f32, 'int8 greedy tokens == F32 greedy tokens');
});

test('a Q8_0 GGUF twin of stories15M loads, tokenizes as the original, and generates its greedy tokens', async () => {
  const dir = await storiesDir();
  const hf = openCheckpoint(dir);
  const tokJson = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8'));
  const { metadata, tensors } = ggufTwin(hf, {
    arch: 'llama',
    typeOf: () => 'Q8_0',
    tokenizer: sentencePieceKeysFromTokenizerJson(tokJson),
  });
  hf.close();
  const file = path.join(scratchDir('stories-gguf'), 'stories15M.Q8_0.gguf');
  writeGguf(file, metadata, tensors);
  const ggufDir = await resolveModel(file, { modelsDir: scratchDir('models') });
  const [a, b] = [loadText(dir), loadText(ggufDir)];
  for (const s of ['Once upon a time, there was a little girl named Lily.', 'Tom said: "Héllo!"\n\nThe end.']) {
    assert.deepEqual(await b.encodePrompt(s), await a.encodePrompt(s), s);
  }
  // the GGUF names one stop id, its tokenizer.ggml.eos_token_id (a llama2.c import adds BOS on the sift side only)
  assert.deepEqual(b.stopIds, [2]);
  assert.ok(a.stopIds.includes(2));
  const f32 = await f32Greedy(dir);
  const q8 = await gpuGreedy(ggufDir);
  assert.deepEqual(q8, f32, 'Q8_0 GGUF greedy tokens == F32 safetensors greedy tokens');
  assert.equal(b.tokenizer.decode(q8), a.tokenizer.decode(f32));
});
