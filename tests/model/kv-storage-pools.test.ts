/**
 * KvStorage with a head plan: per layer a main pool of r_l retrieval heads and a streaming pool of s_l streaming heads;
 * bytes agree with kvcache/bytes.ts at the plan's streaming fraction; layers with no head in a pool get a minimal
 * buffer.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type ModelConfig, parseModelConfig } from '../../checkpoint/config.js';
import { isSiftError } from '../../config/errors.js';
import { kvBytesPerToken, streamingBytesPerPage } from '../../kvcache/bytes.js';
import { chooseHeadPlan } from '../../model/head-plan.js';
import { KvStorage, maxSlabsPerStreamingPool } from '../../model/kv-storage.js';
import { testGpu } from '../helpers/gpu.js';

function modelConfig(numLayers: number, numKvHeads: number, headDim: number): ModelConfig {
  return parseModelConfig({
    architectures: ['LlamaForCausalLM'],
    hidden_size: numKvHeads * headDim,
    intermediate_size: 4 * numKvHeads * headDim,
    num_hidden_layers: numLayers,
    num_attention_heads: numKvHeads * 2,
    num_key_value_heads: numKvHeads,
    head_dim: headDim,
    vocab_size: 32,
    tie_word_embeddings: true,
  });
}

test('two pools: buffer shapes per layer and bytes that agree with kvcache/bytes.ts', async () => {
  const gpu = await testGpu();
  const config = modelConfig(4, 4, 16);
  // layer 0 streams everything, layer 3 nothing: scores rank layer 0 lowest
  const scores = [
    [0, 0, 0, 0],
    [0.5, 0.1, 0.9, 0.2],
    [0.3, 0.8, 0.05, 0.6],
    [1, 1, 1, 1],
  ];
  const f = 0.5;
  const plan = chooseHeadPlan(scores, config, { streamingFraction: f });
  assert.deepEqual(plan.streaming[0], [0, 1, 2, 3]);
  assert.deepEqual(plan.streaming[3], []);
  const pageSize = 16;
  const kv = new KvStorage(gpu, config, 5, pageSize, { headPlan: plan, numStreamingPages: 7 });
  try {
    const shape = { numLayers: 4, numKvHeads: 4, headDim: 16, bytesPerElement: 2, streamingFraction: f };
    assert.equal(kv.bytesPerToken, kvBytesPerToken(shape));
    assert.equal(kv.bytesPerPage, kvBytesPerToken(shape) * pageSize);
    assert.equal(kv.streamingBytesPerPage, streamingBytesPerPage(shape, pageSize));
    for (let l = 0; l < 4; l++) {
      const L = kv.layers[l];
      assert.equal(L.numRetrievalHeads, plan.retrieval[l].length);
      assert.equal(L.numStreamingHeads, plan.streaming[l].length);
      const mainBytes = 5 * pageSize * L.numRetrievalHeads * 16 * 2;
      const streamBytes = 7 * pageSize * L.numStreamingHeads * 16 * 2;
      assert.equal(L.k.bytes, Math.max(16, mainBytes), `layer ${l} main K`);
      assert.equal(L.sv.bytes, Math.max(16, streamBytes), `layer ${l} streaming V`);
    }
    assert.equal(kv.layers[0].k.bytes, 16, 'a layer with no retrieval head gets a minimal buffer');
    assert.equal(kv.layers[3].sk.bytes, 16, 'a layer with no streaming head gets a minimal buffer');
    assert.throws(() => new KvStorage(gpu, config, 5, pageSize, { headPlan: plan }), /numStreamingPages/);
    // the streaming pool in slabs of one page (4 streaming heads in layer 0): as many pages as the streaming kernels
    // bind slabs fit, one more is refused naming the limit
    const maxSS = maxSlabsPerStreamingPool(gpu.caps.maxStorageBuffersPerShaderStage);
    const onePage = pageSize * 4 * 16 * 2;
    const small = { headPlan: plan, maxSlabBytes: onePage };
    new KvStorage(gpu, config, 5, pageSize, { ...small, numStreamingPages: maxSS }).destroy();
    assert.throws(
      () => new KvStorage(gpu, config, 5, pageSize, { ...small, numStreamingPages: maxSS + 1 }),
      (e: unknown) => isSiftError(e) && e.code === 'GPU_LIMIT' && e.message.includes(`at most ${maxSS} streaming`),
    );
    // the budget split leaves room for the streaming pages
    const withRings = KvStorage.pagesFor(gpu, config, pageSize, 1, { headPlan: plan, numStreamingPages: 100 });
    assert.equal(withRings, Math.floor((2 ** 20 - 100 * kv.streamingBytesPerPage) / kv.bytesPerPage));
  } finally {
    kv.destroy();
  }
});
