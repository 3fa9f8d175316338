/**
 * Per-input-channel scales folded into the op before each matrix (model/quant-scales.ts): the folded checkpoint
 * computes the same logits as the original in the reference forward pass (random scales at every point; GQA, q/k/v
 * biases, Gemma's (1 + w) norms and sandwich norms); the search keeps a point unscaled unless scaling lowers its
 * weighted error; and a --quantize q4 --quantize-imatrix load on the GPU equals the reference over the folded,
 * importance-weighted q4 weights it should hold (with and without the scales).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { type Checkpoint, openCheckpoint } from '../../checkpoint/checkpoint.js';
import { SYNTHETIC_VARIANTS, writeSyntheticCheckpoint } from '../../checkpoint/synthetic.js';
import { imatrixToFile } from '../../cli/imatrix.js';
import { engineConfig } from '../../config/engine.js';
import { imatrixForCheckpoint } from '../../model/imatrix.js';
import { foldChannelScales, type LayerScales, searchChannelScales } from '../../model/quant-scales.js';
import { quantizeOption, withImatrix } from '../../model/runner.js';
import { dequantize, quantizeQ4 } from '../../util/quant.js';
import { quantizeQ4Weighted } from '../../util/quant-weighted.js';
import { assertClose } from '../helpers/compare.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/rng.js';
import { referenceForward } from '../reference/forward.js';
import { checkForward } from './forward-check.js';

const root = mkdtempSync(path.join(os.tmpdir(), 'sift-quant-scales-'));
after(() => rmSync(root, { recursive: true, force: true }));

function synthetic(name: string): string {
  const dir = path.join(root, name);
  writeSyntheticCheckpoint(dir, SYNTHETIC_VARIANTS.find((v) => v.name === name)!);
  return dir;
}

const logNormal = (rng: Rng, n: number) => Float32Array.from({ length: n }, () => Math.exp(0.7 * rng.normal()));

for (const name of ['llama-f32-odd-sizes', 'qwen2-f32-gqa-yarn', 'gemma2-f32-gqa-softcap-window']) {
  test(`folding channel scales into ${name} leaves its logits unchanged (reference forward)`, () => {
    const ckpt = openCheckpoint(synthetic(name));
    const c = ckpt.config;
    const rng = new Rng(21);
    const scales: LayerScales[] = Array.from({ length: c.numLayers }, () => ({
      attn: logNormal(rng, c.hiddenSize),
      o: logNormal(rng, c.numKvHeads * c.headDim),
      mlp: logNormal(rng, c.hiddenSize),
      down: logNormal(rng, c.intermediateSize),
      alpha: { attn: 1, o: 1, mlp: 1, down: 1 },
    }));
    const { ckpt: view, importance } = foldChannelScales(ckpt, scales, new Map());
    assert.equal(importance.size, 0);
    assert.notDeepEqual(
      view.readF32('model.layers.0.self_attn.q_proj.weight'),
      ckpt.readF32('model.layers.0.self_attn.q_proj.weight'),
    );
    const ids = Array.from({ length: 13 }, () => rng.int(0, c.vocabSize - 1));
    const want = referenceForward(ckpt, ids);
    const got = referenceForward(view, ids);
    assertClose(got, want, { atol: 2e-4, rtol: 2e-4 }, `${name} folded`);
    ckpt.close();
  });
}

test("the scale search keeps alpha on its grid and never raises a point's weighted error", async () => {
  const gpu = await testGpu();
  const dir = synthetic('llama-f32-mha');
  const ckpt = openCheckpoint(dir);
  const c = ckpt.config;
  const rng = new Rng(4);
  const out = path.join(root, 'mha.imatrix');
  await imatrixToFile({
    dir,
    docs: [Array.from({ length: 40 }, () => rng.int(0, c.vocabSize - 1))],
    out,
    source: 'random',
    gpu,
  });
  const importance = imatrixForCheckpoint(out, ckpt);
  const scales = searchChannelScales(ckpt, { group: 16, importance, int8: new Set() });
  const folded = foldChannelScales(ckpt, scales, importance);
  // every matrix of this model has at most 96 rows: the search saw every row, so its guarantee holds matrix-wide
  for (let li = 0; li < c.numLayers; li++) {
    for (const v of Object.values(scales[li].alpha)) assert.ok([0, 0.25, 0.5, 0.75, 1].includes(v), `alpha ${v}`);
    const p = `model.layers.${li}.`;
    const points: [string[], boolean][] = [
      [['q', 'k', 'v'].map((x) => `${p}self_attn.${x}_proj.weight`), scales[li].attn !== null],
      [['gate', 'up'].map((x) => `${p}mlp.${x}_proj.weight`), scales[li].mlp !== null],
      [[`${p}mlp.down_proj.weight`], scales[li].down !== null],
    ];
    for (const [names, scaled] of points) {
      let plain = 0;
      let withScales = 0;
      for (const n of names) {
        const [rows, cols] = ckpt.info(n).shape;
        const w = ckpt.readF32(n);
        const a = importance.get(n) as Float32Array;
        const d0 = dequantize(quantizeQ4Weighted(w, rows, cols, 16, a));
        const ws = folded.ckpt.readF32(n);
        const d1 = dequantize(quantizeQ4Weighted(ws, rows, cols, 16, folded.importance.get(n) as Float32Array));
        // d1 decodes the scaled matrix: back to the original space, column c / s[c] (= ws / w where w != 0)
        for (let r = 0; r < rows; r++) {
          for (let col = 0; col < cols; col++) {
            const i = r * cols + col;
            const s = w[i] === 0 ? 1 : ws[i] / w[i];
            plain += a[col] * (d0[i] - w[i]) ** 2;
            withScales += a[col] * (d1[i] / s - w[i]) ** 2;
          }
        }
      }
      assert.ok(withScales <= plain * (1 + 1e-4), `${names[0]}: ${withScales} > ${plain} (scaled ${scaled})`);
      // (v_proj's rows carry o_proj's scales and up_proj's rows down_proj's: only q/k and gate/down stay as they were)
      const rowScaled = names.some((n) => n.endsWith('v_proj.weight') || n.endsWith('up_proj.weight'));
      if (!scaled && !rowScaled) {
        assert.ok(Math.abs(withScales - plain) <= 1e-9 * plain, `${names[0]}: unscaled point changed`);
      }
    }
  }
  ckpt.close();
});

for (const channelScales of [false, true]) {
  test(`--quantize q4 --quantize-imatrix${channelScales ? ' --quantize-channel-scales' : ''} on the GPU equals the reference over the${channelScales ? ' folded,' : ''} weighted q4 weights`, async () => {
    const gpu = await testGpu();
    const name = 'qwen2-f32-gqa-yarn';
    const dir = synthetic(name);
    const ckpt = openCheckpoint(dir);
    const rng = new Rng(8);
    const file = path.join(root, `yarn-${channelScales}.imatrix`);
    await imatrixToFile({
      dir,
      docs: [Array.from({ length: 48 }, () => rng.int(0, ckpt.config.vocabSize - 1))],
      out: file,
      source: 'random',
      gpu,
    });
    ckpt.close();
    const engine = {
      quantize: 'q4',
      quantizeGroup: 16,
      quantizeInt8: 'none',
      quantizeImatrix: file,
      quantizeChannelScales: channelScales,
    };
    const cfg = engineConfig({ flags: engine });
    const decoded = (opened: Checkpoint): Checkpoint => {
      const { quantize, source } = withImatrix(quantizeOption(cfg), cfg, opened);
      const importance = (quantize as { importance: ReadonlyMap<string, Float32Array> }).importance;
      const view: Checkpoint = Object.create(source);
      view.readF32 = (n: string) => {
        const f = source.readF32(n);
        const shape = source.info(n).shape;
        if (shape.length !== 2) return f;
        const [r, c] = shape;
        const a = importance.get(n);
        return dequantize(a ? quantizeQ4Weighted(f, r, c, 16, a) : quantizeQ4(f, r, c, 16));
      };
      return view;
    };
    await checkForward(dir, {
      what: `${name} calibrated q4${channelScales ? ' + scales' : ''}`,
      seed: 5,
      engine,
      reference: decoded,
    });
  });
}
