/** Embedding gather (shaders/embedding.wgsl) against the reference. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { repackGgml } from '../../checkpoint/ggml.js';
import { EmbeddingKernel } from '../../shaders/embedding.js';
import { UniformArena } from '../../shaders/runtime.js';
import { destroyWeight, ROW_ALIGN, uploadQuantized, uploadWeight } from '../../shaders/tensor.js';
import { bytesPerElement, decodeToF32, encodeFromF32, type WeightDType } from '../../util/dtype.js';
import { dequantize, markScaleF16, quantizeInt8, quantizeQ4, wordsPerRow } from '../../util/quant.js';
import { assertClose } from '../helpers/compare.js';
import { encodeGgml } from '../helpers/gguf-writer.js';
import { assertNoGpuErrors, f32Buffer, testGpu, u32Buffer } from '../helpers/gpu.js';
import { Rng } from '../helpers/rng.js';
import { embeddingRef } from '../reference/embedding.js';

// Tolerance: a gather is exact, except that a GPU may flush f16 subnormals (|v| < 6.1e-5) to zero.
const tolerance = (dtype: WeightDType) => ({ atol: dtype === 'f16' ? 6.2e-5 : 0, rtol: 0 });
const SENTINEL = -777;

test('embedding gathers rows on seeded random shapes, every dtype, chunked, ids out of range give zeros', async () => {
  const gpu = await testGpu();
  const k = new EmbeddingKernel(gpu);
  const arena = new UniformArena(gpu);
  for (let seed = 1; seed <= 8; seed++) {
    for (const dtype of ['f32', 'f16', 'bf16'] as WeightDType[]) {
      const rng = new Rng(seed * 31 + dtype.length);
      const vocab = rng.pick([1, 5, 97, 300]);
      const hidden = rng.pick([1, 7, 13, 288, 300]);
      const T = rng.pick([1, 2, 3, 17, 65]);
      const chunked = seed % 2 === 0;
      const bytes = encodeFromF32(rng.uniformArray(vocab * hidden, 1), dtype);
      const rowBytes = Math.ceil(hidden / ROW_ALIGN) * ROW_ALIGN * bytesPerElement(dtype);
      const maxChunkBytes = chunked ? rowBytes * Math.max(1, Math.floor(vocab / 3.5)) : undefined;
      const table = uploadWeight(gpu, 'embed', dtype, vocab, hidden, bytes, maxChunkBytes);
      if (chunked && vocab >= 3) assert.ok(table.chunks.length >= 3);
      const ids = new Uint32Array(T);
      for (let t = 0; t < T; t++) {
        const r = rng.next();
        ids[t] = r < 0.15 ? rng.pick([vocab, vocab + 5, 0xffffffff]) : rng.int(0, vocab - 1);
      }
      const out = f32Buffer(gpu, new Float32Array(T * hidden + 4).fill(SENTINEL), 'out');
      const idsBuf = u32Buffer(gpu, ids, 'ids');
      // Gemma's embedding scale on some cases
      const scale = seed % 3 === 0 ? 55.5 : undefined;
      arena.reset();
      gpu.run((pass) => k.encode(pass, arena, { ids: idsBuf, table, out, T, scale }), arena);
      const got = await gpu.readF32(out, T * hidden + 4);
      assertNoGpuErrors(gpu);
      const label = `embedding seed=${seed} ${dtype} (vocab=${vocab}, hidden=${hidden}, T=${T}) chunks=${table.chunks.length} scale=${scale ?? 1}`;
      const want = embeddingRef(ids, decodeToF32(bytes, dtype), vocab, hidden).map((v) => v * (scale ?? 1));
      assertClose(got.subarray(0, T * hidden), want, tolerance(dtype), label);
      assert.deepEqual(
        [...got.subarray(T * hidden)],
        [SENTINEL, SENTINEL, SENTINEL, SENTINEL],
        `${label}: wrote past out`,
      );
      destroyWeight(table);
      out.destroy();
      idsBuf.destroy();
    }
  }
  arena.destroy();
});

test('embedding gathers quantized rows (q8 per channel and Q8_0 groups, q4 groups with f16 / f32 scales) exactly', async () => {
  const gpu = await testGpu();
  const k = new EmbeddingKernel(gpu);
  const arena = new UniformArena(gpu);
  for (let seed = 1; seed <= 6; seed++) {
    const rng = new Rng(seed * 97);
    const vocab = rng.pick([1, 5, 97, 300]);
    const kind = seed % 4;
    const hidden = kind === 3 ? 288 : rng.pick([7, 13, 64, 288, 300]);
    const T = rng.pick([1, 3, 17]);
    const w = rng.uniformArray(vocab * hidden, 1);
    const m =
      kind === 0
        ? quantizeInt8(w, vocab, hidden)
        : kind === 1
          ? quantizeQ4(w, vocab, hidden, 32)
          : kind === 2
            ? quantizeQ4(w, vocab, hidden, 8) // f32 scales: nudged off f16 below
            : repackGgml('Q8_0', encodeGgml('Q8_0', w, vocab, hidden), vocab, hidden, 'q8_0'); // f16 scales
    if (kind === 2) {
      for (let i = 0; i < m.scales.length; i++) m.scales[i] *= 1 + 1e-6;
      markScaleF16(m);
    }
    const chunked = seed % 2 === 0;
    const maxChunkBytes = chunked
      ? wordsPerRow(m.format, hidden) * 4 * Math.max(1, Math.floor(vocab / 3.5))
      : undefined;
    const table = uploadQuantized(gpu, 'embed', m, maxChunkBytes);
    const ids = new Uint32Array(T);
    for (let t = 0; t < T; t++) ids[t] = rng.next() < 0.15 ? vocab + 3 : rng.int(0, vocab - 1);
    const out = f32Buffer(gpu, new Float32Array(T * hidden + 4).fill(SENTINEL), 'out');
    const idsBuf = u32Buffer(gpu, ids, 'ids');
    arena.reset();
    gpu.run((pass) => k.encode(pass, arena, { ids: idsBuf, table, out, T }), arena);
    const got = await gpu.readF32(out, T * hidden + 4);
    assertNoGpuErrors(gpu);
    const label = `embedding ${m.format} group ${m.group} ${m.scaleF16 ? 'f16' : 'f32'} (vocab=${vocab}, hidden=${hidden}, T=${T})`;
    assertClose(
      got.subarray(0, T * hidden),
      embeddingRef(ids, dequantize(m), vocab, hidden),
      { atol: 0, rtol: 0 },
      label,
    );
    assert.deepEqual(
      [...got.subarray(T * hidden)],
      [SENTINEL, SENTINEL, SENTINEL, SENTINEL],
      `${label}: wrote past out`,
    );
    destroyWeight(table);
    out.destroy();
    idsBuf.destroy();
  }
  arena.destroy();
});

test('embedding rejects mismatched shapes', async () => {
  const gpu = await testGpu();
  const k = new EmbeddingKernel(gpu);
  const arena = new UniformArena(gpu);
  const table = uploadWeight(gpu, 'embed', 'f32', 4, 8, new Uint8Array(4 * 8 * 4));
  const small = gpu.createBuffer('small', 16);
  const big = gpu.createBuffer('big', 4096);
  const enc = gpu.device.createCommandEncoder();
  const pass = enc.beginComputePass();
  assert.throws(() => k.encode(pass, arena, { ids: small, table, out: small, T: 2 }), /binding out/);
  assert.throws(() => k.encode(pass, arena, { ids: small, table, out: big, T: 8 }), /binding ids/);
  pass.end();
  enc.finish();
  destroyWeight(table);
  small.destroy();
  big.destroy();
  arena.destroy();
});
