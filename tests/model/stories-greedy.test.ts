/**
 * End to end on the default model (karpathy's stories15M, imported from llama2.c): greedy decoding from BOS on the
 * GPU, through the engine core, produces exactly the reference forward pass's tokens, and the text is llama2.c's own story.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { openCheckpoint } from '../../checkpoint/checkpoint.js';
import { engineConfig } from '../../config/engine.js';
import { EngineCore } from '../../engine/core.js';
import { argmax } from '../../engine/sampler.js';
import { ModelRunner } from '../../model/runner.js';
import { loadText } from '../../text/text.js';
import { collect, greedy } from '../engine/core-helpers.js';
import { testGpu } from '../helpers/gpu.js';
import { storiesDir } from '../helpers/stories.js';
import { ReferenceModel } from '../reference/forward.js';

const N = 64;

test("stories15M: GPU greedy tokens equal the reference forward pass, and the story is llama2.c's", async () => {
  const dir = await storiesDir();
  const gpu = await testGpu();
  const loop = EngineCore.create(await ModelRunner.load(dir, engineConfig(), { gpu }));
  const text = loadText(dir);
  try {
    const prompt = await text.encodePrompt('');
    assert.deepEqual(prompt, [1], 'an empty prompt is BOS only');
    const res = await collect(loop.submit(greedy('stories', prompt, N, { stopIds: text.stopIds })));
    assert.equal(res.tokens.length, N);

    const ckpt = openCheckpoint(dir);
    const ref = new ReferenceModel(ckpt);
    const refIds: number[] = [];
    let logits = ref.forward(prompt);
    for (let i = 0; i < N; i++) {
      const id = argmax(logits);
      refIds.push(id);
      logits = ref.forward([id]);
    }
    ckpt.close();
    assert.deepEqual(res.tokens, refIds, 'GPU greedy tokens == reference greedy tokens');

    const story = text.tokenizer.decode(res.tokens);
    assert.ok(
      story.startsWith(
        'Once upon a time, there was a little girl named Lily. She loved to play outside in the sunshine.',
      ),
      `unexpected story: ${story}`,
    );
  } finally {
    await loop.shutdown(0);
  }
});
