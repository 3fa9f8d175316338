/**
 * A GGUF that mixes weight formats within a layer, through the fused forward pass, against the reference forward
 * pass over the weights the GGUF decodes to (prefill logits of every token, then decode steps through the captured
 * decode path): q/k in Q4_0 (q4) beside v in Q8_0 (q8), as llama.cpp's _M mixes keep v
 * wider, load as two q/k/v parts (one matmul each into the stacked rows); gate in Q4_0 beside up in Q8_0 is decoded
 * to f32 for the one SwiGLU matmul; o and down stay q4 / q8.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { openCheckpoint } from '../../checkpoint/checkpoint.js';
import { prepareGgufModel } from '../../checkpoint/gguf-import.js';
import { type SyntheticOptions, writeSyntheticCheckpoint } from '../../checkpoint/synthetic.js';
import type { ModelRunner } from '../../model/runner.js';
import { ggufTwin, sentencePieceKeys, writeGguf } from '../helpers/gguf-writer.js';
import { STORY, scratchDir, wordPieces } from '../helpers/tiny-text.js';
import { checkForward } from './forward-check.js';

const SHAPE: SyntheticOptions = {
  architecture: 'LlamaForCausalLM',
  dtype: 'f32',
  sharded: false,
  tie: 'untied',
  hidden: 64,
  layers: 2,
  heads: 4,
  kvHeads: 2,
  intermediate: 96,
  vocab: 300,
  seed: 77,
};

/** GGUF tensor types: v and up Q8_0, o and down too in their own formats, the other projections Q4_0. */
function typeOf(n: string) {
  if (n.includes('v_proj') || n.includes('up_proj') || n.includes('down_proj')) return 'Q8_0' as const;
  if (n.includes('proj')) return 'Q4_0' as const;
  return 'F32' as const;
}

/** The synthetic model's GGUF twin in the mixed formats, imported; its model directory. */
function mixedModel(): Promise<string> {
  const hfDir = scratchDir('forward-quant-hf');
  writeSyntheticCheckpoint(hfDir, SHAPE);
  const hf = openCheckpoint(hfDir);
  const tokenizer = sentencePieceKeys(wordPieces(STORY).slice(0, SHAPE.vocab - 3), false);
  const { metadata, tensors } = ggufTwin(hf, { arch: 'llama', typeOf, tokenizer });
  hf.close();
  const file = path.join(scratchDir('forward-quant-gguf'), 'mixed.gguf');
  writeGguf(file, metadata, tensors);
  return prepareGgufModel(file, { modelsDir: scratchDir('forward-quant-models') });
}

function inspect(runner: ModelRunner): void {
  const hd = SHAPE.hidden / SHAPE.heads;
  for (const L of runner.weights.layers) {
    assert.deepEqual(
      L.qkv.map((w) => [w.dtype, w.rows]),
      [
        ['q4', (SHAPE.heads + SHAPE.kvHeads) * hd],
        ['q8', SHAPE.kvHeads * hd],
      ],
      'q/k (q4) and v (q8): two parts',
    );
    assert.equal(L.gateUp.dtype, 'f32', 'gate (q4) and up (q8) decoded for the one SwiGLU matmul');
    assert.deepEqual([L.o.dtype, L.down.dtype], ['q4', 'q8']);
  }
}

// The default kernel variants only: the parts and the decoded gate/up are the forward pass's doing, the same for
// both variants, and forward-quant.test.ts runs the GPU variants' q8 / q4 matmuls (every pipeline a mixed layer
// adds costs minutes to compile on a loaded lavapipe).
test('a GGUF mixing formats in a layer: q/k/v in parts, gate/up decoded, against the reference', async () => {
  // the GGUF checkpoint's readF32 decodes its blocks as the kernels do: the reference runs on those weights
  await checkForward(await mixedModel(), { what: 'mixed GGUF', seed: 9, inspect });
});
