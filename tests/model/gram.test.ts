/**
 * GPTQ's statistics (model/gram.ts, `sift imatrix --full`): the GPU collector's mean x x^T at every distinct linear
 * input equals the reference forward pass's (tests/reference/forward.ts onLinearInput) on synthetic models (odd sizes,
 * Phi-3's fused q/k/v and gate/up), documents cut into windows; its diagonal is the importance matrix; the file
 * round-trips; --quantize q4 --quantize-gptq maps every matrix to its input's Gram matrix and loads;
 * bad or mismatched files are errors naming the file and the tensor.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { openCheckpoint } from '../../checkpoint/checkpoint.js';
import { writeSafetensors } from '../../checkpoint/safetensors.js';
import { imatrixToFile } from '../../cli/imatrix.js';
import { engineConfig } from '../../config/engine.js';
import { activationSlots } from '../../model/activation-pass.js';
import { gramForCheckpoint, gramTensorName, readGram } from '../../model/gram.js';
import { readImatrix } from '../../model/imatrix.js';
import { ModelRunner, quantizeOption, withImatrix } from '../../model/runner.js';
import { quantizeQ4Gptq } from '../../util/quant-gptq.js';
import { randomDocs, referenceWindows, syntheticRoot } from '../helpers/calibration-pass.js';
import { assertClose } from '../helpers/compare.js';
import { assertNoGpuErrors, testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/rng.js';

const { root, synthetic } = syntheticRoot('sift-gram-');

for (const name of ['llama-f32-odd-sizes', 'phi3-f32-gqa-fused-sharded']) {
  test(`imatrix --full of ${name} equals the reference forward pass's mean x x^T at every linear input`, async () => {
    const gpu = await testGpu();
    const dir = synthetic(name);
    const ckpt = openCheckpoint(dir);
    const rng = new Rng(4);
    // two documents; the first longer than a window, cut into windows of 24 (fresh sequences), chunks of 16
    const docs = randomDocs(rng, ckpt.config.vocabSize, [37, 20]);
    const win = 24;
    const out = path.join(root, `${name}.gram`);
    const r = await imatrixToFile({
      dir,
      docs,
      out,
      windowTokens: win,
      chunkTokens: 16,
      source: 'random',
      gpu,
      full: true,
    });
    assertNoGpuErrors(gpu);
    const sums = new Map<string, Float64Array>();
    const tokens = referenceWindows(ckpt, docs, win, (point, layer, x) => {
      const key = gramTensorName(point, layer);
      const n = x.length;
      const acc = sums.get(key) ?? new Float64Array(n * n);
      for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) acc[i * n + j] += x[i] * x[j];
      sums.set(key, acc);
    });
    assert.equal(r.tokens, tokens);
    const file = readGram(out);
    assert.equal(file.tokens, tokens);
    assert.equal(file.metadata.format, 'sift-gram');
    const slots = activationSlots(ckpt.config);
    assert.equal(file.values.size, slots.length, 'one entry per distinct input, nothing else');
    assert.equal(sums.size, slots.length);
    for (const [key, acc] of sums) {
      const got = file.values.get(key);
      assert.ok(got, `no entry for ${key}`);
      const want = Float32Array.from(acc, (v) => v / tokens);
      const scale = want.reduce((a, v) => Math.max(a, Math.abs(v)), 0);
      assertClose(got, want, { atol: 1e-4 * scale, rtol: 3e-3 }, `${name} ${key}`);
    }
    // its diagonal is the importance matrix
    const im = path.join(root, `${name}.imatrix`);
    await imatrixToFile({ dir, docs, out: im, windowTokens: win, chunkTokens: 16, source: 'random', gpu });
    const imatrix = readImatrix(im);
    const byMatrix = gramForCheckpoint(out, ckpt);
    assert.equal(byMatrix.size, imatrix.values.size, 'a Gram matrix for every matrix the imatrix covers');
    for (const [t, v] of imatrix.values) {
      const g = byMatrix.get(t) as Float32Array;
      const n = v.length;
      assertClose(
        Float32Array.from({ length: n }, (_, i) => g[i * n + i]),
        v,
        { atol: 1e-6, rtol: 1e-4 },
        `${t}: diag = imatrix`,
      );
    }
    ckpt.close();
  });
}

test('--quantize q4 --quantize-gptq: each q4 matrix is GPTQ on its input Gram matrix; bad files are errors', async () => {
  const gpu = await testGpu();
  const dir = synthetic('llama-f32-mha');
  const ckpt = openCheckpoint(dir);
  const c = ckpt.config;
  const rng = new Rng(9);
  const good = path.join(root, 'good.gram');
  const docs = randomDocs(rng, c.vocabSize, [40]);
  await imatrixToFile({ dir, docs, out: good, source: 'random', gpu, full: true });
  // the option the runner builds: GPTQ with the file's matrices, plain q4 where no GPTQ applies
  const flags = { quantize: 'q4', quantizeGroup: 16, quantizeInt8: 'attn-v', quantizeGptq: good } as const;
  const cfg = engineConfig({ flags });
  const { quantize } = withImatrix(quantizeOption(cfg), cfg, ckpt);
  assert.ok(quantize?.format === 'q4' && quantize.gram, 'GPTQ option set');
  const down = 'model.layers.0.mlp.down_proj.weight';
  const [rows, cols] = ckpt.info(down).shape;
  const g = quantize.gram.get(down) as Float32Array;
  assert.deepEqual(g, readGram(good).values.get(gramTensorName('down', 0)), 'down_proj gets its input');
  const qkv = ['q_proj', 'k_proj', 'v_proj'].map((n) => quantize.gram?.get(`model.layers.0.self_attn.${n}.weight`));
  assert.ok(qkv[0] && qkv[0] === qkv[1] && qkv[1] === qkv[2], 'q, k and v share one Gram matrix');
  // the importances (for a tied embedding, which gets the weighted fit) are the Gram matrices' diagonals
  const im = quantize.importance?.get(down) as Float32Array;
  assert.deepEqual(
    im,
    Float32Array.from({ length: cols }, (_, i) => g[i * cols + i]),
  );
  const q = quantizeQ4Gptq(ckpt.readF32(down), rows, cols, 16, g);
  assert.equal(q.group, 16);
  // loads and runs
  const base = { maxBatchTokens: 16, maxSeqs: 1, kvCacheMib: 4, pageSize: 16 };
  const eng = await ModelRunner.load(dir, engineConfig({ flags: { ...base, ...flags } }), { gpu });
  assert.ok(eng.weights.bytes > 0);
  eng.destroy();
  // bad files
  const m = readGram(good);
  const write = (file: string, values: Map<string, Float32Array>, meta: Record<string, string> = m.metadata) => {
    const p = path.join(root, file);
    writeSafetensors(
      p,
      [...values].map(([name, v]) => {
        const n = Math.round(Math.sqrt(v.length));
        return {
          name,
          dtype: 'f32',
          shape: n * n === v.length ? [n, n] : [v.length],
          data: new Uint8Array(v.buffer.slice(0)),
        };
      }),
      meta,
    );
    return p;
  };
  const qkv0 = gramTensorName('qkv', 0);
  const downIn = gramTensorName('down', c.numLayers - 1);
  const imatrixFile = path.join(root, 'plain.imatrix');
  await imatrixToFile({ dir, docs, out: imatrixFile, source: 'random', gpu });
  const noQkv = new Map(m.values);
  noQkv.delete(qkv0);
  const narrow = new Map(m.values);
  narrow.set(downIn, new Float32Array((c.intermediateSize - 1) ** 2));
  const extra = new Map(m.values);
  extra.set('model.layers.99.mlp.down_proj.input', new Float32Array(4));
  const nan = new Map(m.values);
  nan.set(qkv0, new Float32Array(c.hiddenSize ** 2).fill(Number.NaN));
  const flat = new Map(m.values);
  flat.set(qkv0, new Float32Array(3));
  const cases: [string, string, RegExp][] = [
    ['missing', path.join(root, 'nope.gram'), /GPTQ statistics .*nope\.gram: .*cannot open.*sift imatrix --full/],
    ['an imatrix', imatrixFile, /not a sift-gram file .*"sift-imatrix".*only the diagonal.*sift imatrix --full/],
    ['no entry', write('no-qkv.gram', noQkv), new RegExp(`no-qkv.gram: no entry for ${qkv0.replace(/\./g, '\\.')}`)],
    [
      'too narrow',
      write('narrow.gram', narrow),
      new RegExp(`is \\[${c.intermediateSize - 1}, ${c.intermediateSize - 1}\\], .* has ${c.intermediateSize} columns`),
    ],
    ['other model', write('extra.gram', extra), /model\.layers\.99\.mlp\.down_proj\.input is not a linear-layer input/],
    ['NaN', write('nan.gram', nan), /holds NaN at 0/],
    ['not square', write('flat.gram', flat), /is f32 \[3\], expected f32 \[cols, cols\]/],
  ];
  for (const [what, file, re] of cases) {
    assert.throws(
      () => gramForCheckpoint(file, ckpt),
      (e: Error & { code?: string }) => {
        assert.match(e.message, re, what);
        assert.equal(e.code, 'INVALID_ARGUMENT', what);
        return true;
      },
    );
  }
  ckpt.close();
  await assert.rejects(
    ModelRunner.load(dir, engineConfig({ flags: { ...base, quantize: 'int8', quantizeGptq: good } }), { gpu }),
    /quantizeGptq .* needs --quantize q4/,
  );
  await assert.rejects(
    ModelRunner.load(
      dir,
      engineConfig({ flags: { ...base, quantize: 'q4', quantizeGptq: good, quantizeImatrix: imatrixFile } }),
      { gpu },
    ),
    /quantizeGptq replaces quantizeImatrix/,
  );
});
