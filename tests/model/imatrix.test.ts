/**
 * The importance matrix (model/imatrix.ts, `sift imatrix`): the GPU collector's mean x^2 per input channel of every
 * linear layer equals the reference forward pass's (tests/reference/forward.ts onLinearInput) on synthetic models
 * (odd sizes; Gemma 2's sandwich norms; Phi-3's fused q/k/v and gate/up, read as their parts), documents cut into
 * windows; the file round-trips; bad or mismatched files are errors naming the file and the tensor.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { openCheckpoint } from '../../checkpoint/checkpoint.js';
import { writeSafetensors } from '../../checkpoint/safetensors.js';
import { imatrixToFile, paragraphs } from '../../cli/imatrix.js';
import { engineConfig } from '../../config/engine.js';
import { imatrixForCheckpoint, imatrixTensorNames, readImatrix } from '../../model/imatrix.js';
import { ModelRunner } from '../../model/runner.js';
import { randomDocs, referenceWindows, syntheticRoot } from '../helpers/calibration-pass.js';
import { assertClose } from '../helpers/compare.js';
import { assertNoGpuErrors, testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/rng.js';

const { root, synthetic } = syntheticRoot('sift-imatrix-');

for (const name of ['llama-f32-odd-sizes', 'gemma2-f32-gqa-softcap-window', 'phi3-f32-gqa-fused-sharded']) {
  test(`imatrix of ${name} equals the reference forward pass's mean x^2 at every linear input`, async () => {
    const gpu = await testGpu();
    const dir = synthetic(name);
    const ckpt = openCheckpoint(dir);
    const c = ckpt.config;
    const lmHead = ckpt.lmHeadName;
    const rng = new Rng(3);
    // two documents; the first longer than a window, cut into windows of 24 (fresh sequences), chunks of 16
    const docs = randomDocs(rng, c.vocabSize, [37, 20]);
    const win = 24;
    const out = path.join(root, `${name}.imatrix`);
    const m = await imatrixToFile({ dir, docs, out, windowTokens: win, chunkTokens: 16, source: 'random', gpu });
    assertNoGpuErrors(gpu);
    // the reference: every window run as its own sequence, sums of x^2 per (point, layer)
    const sums = new Map<string, Float64Array>();
    const tokens = referenceWindows(ckpt, docs, win, (point, layer, x) => {
      const key = `${point}:${layer}`;
      const acc = sums.get(key) ?? new Float64Array(x.length);
      for (let i = 0; i < x.length; i++) acc[i] += x[i] * x[i];
      sums.set(key, acc);
    });
    assert.equal(m.tokens, tokens);
    const file = readImatrix(out);
    assert.equal(file.tokens, tokens);
    assert.equal(file.metadata.format, 'sift-imatrix');
    assert.equal(file.metadata.text, 'random');
    let names = 0;
    for (const [key, acc] of sums) {
      const [point, layer] = key.split(':') as [Parameters<typeof imatrixTensorNames>[0], string];
      const want = Float32Array.from(acc, (v) => v / tokens);
      const scale = want.reduce((a, v) => Math.max(a, v), 0);
      for (const t of imatrixTensorNames(point, Number(layer), lmHead)) {
        names++;
        const got = file.values.get(t);
        assert.ok(got, `no entry for ${t}`);
        assert.equal(got.length, ckpt.info(t).shape[1], `${t}: one value per input column`);
        assertClose(got, want, { atol: 1e-4 * scale, rtol: 3e-3 }, `${name} ${t}`);
      }
    }
    assert.equal(names, 7 * c.numLayers + 1);
    assert.equal(file.values.size, names, 'one entry per matrix, nothing else');
    imatrixForCheckpoint(out, ckpt); // checks clean against its own model
    ckpt.close();
  });
}

test('paragraphs: blocks between blank lines, whitespace folded', () => {
  assert.deepEqual(paragraphs('one\ntwo\n\n\n  three  \r\n\r\nfour\n'), ['one two', 'three', 'four']);
});

test('bad or mismatched importance matrices are errors naming the file and the tensor', async () => {
  const gpu = await testGpu();
  const dir = synthetic('llama-f32-mha');
  const ckpt = openCheckpoint(dir);
  const c = ckpt.config;
  const rng = new Rng(9);
  const good = path.join(root, 'good.imatrix');
  await imatrixToFile({
    dir,
    docs: [Array.from({ length: 12 }, () => rng.int(0, c.vocabSize - 1))],
    out: good,
    source: 'random',
    gpu,
  });
  const m = readImatrix(good);
  const write = (file: string, values: Map<string, Float32Array>, meta: Record<string, string> = m.metadata) => {
    const p = path.join(root, file);
    writeSafetensors(
      p,
      [...values].map(([name, v]) => ({
        name,
        dtype: 'f32',
        shape: [v.length],
        data: new Uint8Array(v.buffer.slice(0)),
      })),
      meta,
    );
    return p;
  };
  const q0 = 'model.layers.0.self_attn.q_proj.weight';
  const down1 = `model.layers.${c.numLayers - 1}.mlp.down_proj.weight`;
  const cases: [string, string, RegExp][] = [];
  const garbage = path.join(root, 'garbage.imatrix');
  writeFileSync(garbage, 'not a safetensors file at all');
  cases.push(['garbage', garbage, /importance matrix .*garbage\.imatrix: .*sift imatrix/]);
  cases.push(['missing', path.join(root, 'nope.imatrix'), /importance matrix .*nope\.imatrix: .*cannot open/]);
  cases.push([
    'not an imatrix',
    write('plain.safetensors', m.values, { format: 'pt' }),
    /plain\.safetensors: not a sift-imatrix file \(metadata format is "pt"/,
  ]);
  const noQ = new Map(m.values);
  noQ.delete(q0);
  cases.push(['no entry', write('no-q.imatrix', noQ), new RegExp(`no-q.imatrix: no entry for tensor ${q0}`)]);
  const short = new Map(m.values);
  short.set(down1, new Float32Array(c.intermediateSize - 3).fill(1));
  cases.push([
    'wrong width',
    write('short.imatrix', short),
    new RegExp(`tensor ${down1} has ${c.intermediateSize - 3} values, .* has ${c.intermediateSize} columns`),
  ]);
  const extra = new Map(m.values);
  extra.set('model.layers.99.self_attn.q_proj.weight', new Float32Array(c.hiddenSize));
  cases.push([
    'other model',
    write('extra.imatrix', extra),
    /tensor model\.layers\.99\.self_attn\.q_proj\.weight is not a quantized matrix/,
  ]);
  const neg = new Map(m.values);
  const v = new Float32Array(c.hiddenSize).fill(1);
  v[2] = -0.5;
  neg.set(q0, v);
  cases.push(['negative', write('neg.imatrix', neg), new RegExp(`tensor ${q0} holds -0.5 at 2`)]);
  const nan = new Map(m.values);
  nan.set(q0, new Float32Array(c.hiddenSize).fill(Number.NaN));
  cases.push(['NaN', write('nan.imatrix', nan), new RegExp(`tensor ${q0} holds NaN at 0`)]);
  for (const [what, file, re] of cases) {
    assert.throws(
      () => imatrixForCheckpoint(file, ckpt),
      (e: Error & { code?: string }) => {
        assert.match(e.message, re, what);
        assert.equal(e.code, 'INVALID_ARGUMENT', what);
        return true;
      },
    );
  }
  ckpt.close();
  // at load: the file is checked before anything is uploaded; it needs --quantize q4
  const base = { maxBatchTokens: 16, maxSeqs: 1, kvCacheMib: 4, pageSize: 16 };
  await assert.rejects(
    ModelRunner.load(
      dir,
      engineConfig({ flags: { ...base, quantize: 'q4', quantizeImatrix: path.join(root, 'no-q.imatrix') } }),
      { gpu },
    ),
    new RegExp(`no entry for tensor ${q0}`),
  );
  await assert.rejects(
    ModelRunner.load(dir, engineConfig({ flags: { ...base, quantize: 'int8', quantizeImatrix: good } }), { gpu }),
    /quantizeImatrix .* needs --quantize q4/,
  );
});
