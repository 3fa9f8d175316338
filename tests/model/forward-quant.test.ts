/**
 * The fused forward pass over quantized weights with a rope scaling, against the reference forward pass over the
 * same decoded weights (prefill logits of every token, then decode steps through the captured decode path):
 * --quantize int8 (default kernels) and q4 (the GPU kernel variants) of an F32 model with yarn rope scaling. Every
 * matrix is in one format, so q/k/v stack and gate/up interleave as quantized rows (scales and mins moved with
 * them), with the RMSNorm, SwiGLU and residual add folded into the q8 / q4 matmuls. A GGUF that mixes formats within
 * a layer: forward-quant-gguf.test.ts.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import type { Checkpoint } from '../../checkpoint/checkpoint.js';
import { SYNTHETIC_VARIANTS, writeSyntheticCheckpoint } from '../../checkpoint/synthetic.js';
import type { KernelChoice } from '../../model/forward.js';
import { dequantize, quantizeInt8, quantizeQ4 } from '../../util/quant.js';
import { checkForward } from './forward-check.js';

const root = mkdtempSync(path.join(os.tmpdir(), 'sift-forward-quant-'));
after(() => rmSync(root, { recursive: true, force: true }));

/** The checkpoint with every matrix replaced by its round trip through `roundTrip` (what the GPU holds). */
function decodedView(ckpt: Checkpoint, roundTrip: (f: Float32Array, rows: number, cols: number) => Float32Array) {
  return {
    ...ckpt,
    readF32: (name: string) => {
      const f = ckpt.readF32(name);
      const shape = ckpt.info(name).shape;
      return shape.length === 2 ? roundTrip(f, shape[0], shape[1]) : f;
    },
  };
}

const YARN = SYNTHETIC_VARIANTS.find((v) => v.name === 'qwen2-f32-gqa-yarn')!;
const dir = path.join(root, YARN.name);
writeSyntheticCheckpoint(dir, YARN);
const qkvRows = (YARN.heads + 2 * YARN.kvHeads) * (YARN.hidden / YARN.heads);

for (const [format, engine, kernels, roundTrip] of [
  ['int8', { quantize: 'int8' }, undefined, (f, r, c) => dequantize(quantizeInt8(f, r, c))],
  // every matrix q4 (not the default mix, which keeps v_proj and down_proj at int8)
  [
    'q4',
    { quantize: 'q4', quantizeGroup: 16, quantizeInt8: 'none' },
    { variant: 'gpu' },
    (f, r, c) => dequantize(quantizeQ4(f, r, c, 16)),
  ],
] as [
  string,
  Record<string, unknown>,
  KernelChoice | undefined,
  (f: Float32Array, r: number, c: number) => Float32Array,
][]) {
  test(`--quantize ${format}, yarn rope${kernels ? ', GPU kernels' : ''}: fused quantized q/k/v and gate/up, against the reference`, async () => {
    const dtype = format === 'int8' ? 'q8' : 'q4';
    await checkForward(dir, {
      what: `${YARN.name} --quantize ${format}${kernels ? ' (gpu kernels)' : ''}`,
      seed: YARN.seed,
      kernels,
      engine,
      reference: (ckpt) => decodedView(ckpt, roundTrip),
      inspect: (runner) => {
        for (const L of runner.weights.layers) {
          assert.deepEqual(
            L.qkv.map((w) => [w.dtype, w.rows]),
            [[dtype, qkvRows]],
            'q/k/v: one quantized weight',
          );
          assert.deepEqual([L.gateUp.dtype, L.gateUp.rows], [dtype, 2 * YARN.intermediate], 'gate/up: one');
        }
      },
    });
  });
}
