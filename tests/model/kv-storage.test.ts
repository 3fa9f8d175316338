/**
 * The GPU KV storage: f16 byte accounting that agrees with kvcache/bytes.ts, and the cap at the slabs a kernel binds.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type ModelConfig, parseModelConfig } from '../../checkpoint/config.js';
import { isSiftError } from '../../config/errors.js';
import { bytesPerPage, kvBytesPerToken } from '../../kvcache/bytes.js';
import { KvStorage } from '../../model/kv-storage.js';
import { testGpu } from '../helpers/gpu.js';

function modelConfig(numLayers: number, numKvHeads: number, headDim: number): ModelConfig {
  return parseModelConfig({
    architectures: ['LlamaForCausalLM'],
    hidden_size: numKvHeads * headDim,
    intermediate_size: 4 * numKvHeads * headDim,
    num_hidden_layers: numLayers,
    num_attention_heads: numKvHeads,
    num_key_value_heads: numKvHeads,
    head_dim: headDim,
    vocab_size: 32,
    tie_word_embeddings: true,
  });
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
      assert.equal(kv.layers[0].k.bytes, 2 * s.pageSize * s.kvHeads * s.headDim * 2, `${s.name} K buffer bytes`);
      assert.equal(kv.layers.length * 2 * kv.layers[0].k.bytes, 2 * kv.bytesPerPage, `${s.name} total bytes`);
    } finally {
      kv.destroy();
    }
  }
});

test('KvStorage caps pages at the slabs the kernels bind (not one binding) and says how many tokens fit', async () => {
  const gpu = await testGpu();
  const config = modelConfig(2, 8, 128);
  const pageSize = 64;
  const pageBytes = pageSize * 8 * 128 * 2;
  const fit = Math.floor(gpu.caps.maxStorageBufferBindingSize / pageBytes) * KvStorage.maxSlabsPerPool(gpu);
  assert.equal(KvStorage.pagesFor(gpu, config, pageSize, 1e9), fit);
  assert.equal(KvStorage.pagesFor(gpu, config, pageSize, 1), Math.max(1, Math.floor(2 ** 20 / (2 * 2 * pageBytes))));
  assert.throws(
    () => new KvStorage(gpu, config, fit + 1, pageSize),
    (e: unknown) => isSiftError(e) && e.code === 'GPU_LIMIT' && e.message.includes(`${fit * pageSize} tokens`),
  );
  assert.throws(() => new KvStorage(gpu, modelConfig(1, 1, 7), 4, 16), /even/);
});
