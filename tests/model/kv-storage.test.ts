/**
 * The GPU KV storage: f16 byte accounting that agrees with kvcache/bytes.ts, the binding-limit cap, and page copies
 * (copy-on-write, fork) that copy K and V of every layer and touch nothing else.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ModelConfig } from '../../checkpoint/config.js';
import { isSiftError } from '../../config/errors.js';
import { bytesPerPage, kvBytesPerToken } from '../../kvcache/bytes.js';
import { KvStorage } from '../../model/kv-storage.js';
import { assertNoGpuErrors, testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/rng.js';

function modelConfig(numLayers: number, numKvHeads: number, headDim: number): ModelConfig {
  return {
    architecture: 'LlamaForCausalLM',
    hiddenSize: numKvHeads * headDim,
    intermediateSize: 4 * numKvHeads * headDim,
    numLayers,
    numHeads: numKvHeads,
    numKvHeads,
    headDim,
    vocabSize: 32,
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    ropeScaling: { type: 'none' },
    maxPositionEmbeddings: 2048,
    tieWordEmbeddings: true,
    attentionBias: false,
    bosTokenId: 1,
    eosTokenIds: [2],
    slidingWindow: null,
  };
}

test('KvStorage bytes per token and page agree with kvcache/bytes.ts at 2 bytes per element', async () => {
  const gpu = await testGpu();
  const shapes = [
    { name: 'stories15M', layers: 6, kvHeads: 6, headDim: 48, pageSize: 64, perToken: 6912 },
    { name: 'llama3-8b', layers: 32, kvHeads: 8, headDim: 128, pageSize: 16, perToken: 131072 },
    { name: 'odd', layers: 3, kvHeads: 3, headDim: 10, pageSize: 32, perToken: 360 },
  ];
  for (const s of shapes) {
    const config = modelConfig(s.layers, s.kvHeads, s.headDim);
    const shape = { numLayers: s.layers, numKvHeads: s.kvHeads, headDim: s.headDim, bytesPerElement: 2 };
    const kv = new KvStorage(gpu, config, 2, s.pageSize);
    try {
      assert.equal(kv.bytesPerToken, kvBytesPerToken(shape), `${s.name} bytes per token`);
      assert.equal(kv.bytesPerToken, s.perToken, `${s.name} bytes per token (literal)`);
      assert.equal(kv.bytesPerPage, bytesPerPage(shape, s.pageSize), `${s.name} bytes per page`);
      assert.equal(kv.layers.length, s.layers);
      // one layer's K buffer: 2 pages of (pageSize, kvHeads, headDim) f16
      assert.equal(kv.layers[0].k.size, 2 * s.pageSize * s.kvHeads * s.headDim * 2, `${s.name} K buffer bytes`);
      assert.equal(kv.layers.length * 2 * kv.layers[0].k.size, 2 * kv.bytesPerPage, `${s.name} total bytes`);
    } finally {
      kv.destroy();
    }
  }
});

test('KvStorage caps pages at the binding limit and says how many tokens fit', async () => {
  const gpu = await testGpu();
  const config = modelConfig(2, 8, 128);
  const pageSize = 64;
  const pageBytes = pageSize * 8 * 128 * 2;
  const fit = Math.floor(gpu.caps.maxStorageBufferBindingSize / pageBytes);
  assert.equal(KvStorage.pagesFor(gpu, config, pageSize, 1e9), fit);
  assert.equal(KvStorage.pagesFor(gpu, config, pageSize, 1), Math.max(1, Math.floor(2 ** 20 / (2 * 2 * pageBytes))));
  assert.throws(
    () => new KvStorage(gpu, config, fit + 1, pageSize),
    (e: unknown) => isSiftError(e) && e.code === 'GPU_LIMIT' && e.message.includes(`${fit * pageSize} tokens`),
  );
  assert.throws(() => new KvStorage(gpu, modelConfig(1, 1, 7), 4, 16), /even/);
});

test('copyPages copies K and V of every layer for the listed pages and leaves every other page alone', async () => {
  const gpu = await testGpu();
  const rng = new Rng(17);
  const config = modelConfig(3, 2, 8);
  const numPages = 150;
  const pageSize = 16;
  const kv = new KvStorage(gpu, config, numPages, pageSize);
  try {
    const pageWords = (pageSize * 2 * 8) / 2;
    const words = numPages * pageWords;
    // random contents in every buffer (any bit pattern: the copy must be exact)
    const before = kv.layers.flatMap((l) =>
      [l.k, l.v].map((buf) => {
        const data = Uint32Array.from({ length: words }, () => rng.int(0, 2 ** 32 - 1));
        gpu.write(buf, data);
        return data;
      }),
    );
    // 70 copies (more than one staging round), sources and destinations disjoint
    const order = Array.from({ length: numPages }, (_, i) => i);
    for (let i = order.length - 1; i > 0; i--) {
      const j = rng.int(0, i);
      [order[i], order[j]] = [order[j], order[i]];
    }
    const copies = Array.from({ length: 70 }, (_, i) => ({ src: order[i], dst: order[70 + i] }));
    copies.push({ src: copies[0].src, dst: order[140] }); // one source copied twice
    const enc = gpu.device.createCommandEncoder();
    kv.copyPages(enc, copies);
    gpu.device.queue.submit([enc.finish()]);
    const dstOf = new Map(copies.map((c) => [c.dst, c.src]));
    const bufs = kv.layers.flatMap((l) => [l.k, l.v]);
    for (let b = 0; b < bufs.length; b++) {
      const got = await gpu.readU32(bufs[b], words);
      for (let p = 0; p < numPages; p++) {
        const src = dstOf.get(p) ?? p;
        const want = before[b].subarray(src * pageWords, (src + 1) * pageWords);
        const have = got.subarray(p * pageWords, (p + 1) * pageWords);
        assert.deepEqual(have, want, `buffer ${b} page ${p} (${dstOf.has(p) ? `copy of ${src}` : 'untouched'})`);
      }
    }
    assertNoGpuErrors(gpu);

    const e = gpu.device.createCommandEncoder();
    assert.throws(() => kv.copyPages(e, [{ src: 0, dst: numPages }]), /outside/);
    assert.throws(() => kv.copyPages(e, [{ src: 3, dst: 3 }]), /both a source and a destination/);
    assert.throws(
      () =>
        kv.copyPages(e, [
          { src: 1, dst: 2 },
          { src: 4, dst: 2 },
        ]),
      /destination twice/,
    );
    kv.copyPages(e, []);
    e.finish();
  } finally {
    kv.destroy();
  }
});
