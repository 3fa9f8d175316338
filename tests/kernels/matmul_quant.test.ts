/**
 * Matmul/matvec over quantized weights (q8, q4: shaders/lib/dequant.wgsl inside matmul_common.wgsl) against the f64
 * reference over the host's dequantization of the same matrix (util/quant.ts dequantize, which the kernels equal
 * value for value): int8 per output channel, q8 groups of 16 / 32 (ggml Q6_K / Q8_0), q4 groups of 32 / 64 / 128
 * (sift's quantizer, ggml Q4_0 / Q4_K), f16 and f32 scales, rows and columns that are not multiples of the group or
 * of 8, chunked weights, token tiles; every variant (thread, workgroup with and without subgroups) with and without
 * the packed 4x8 built-ins.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { repackGgml } from '../../checkpoint/ggml.js';
import { MatmulKernel, type MatmulOptions } from '../../shaders/matmul.js';
import { type Gpu, UniformArena } from '../../shaders/runtime.js';
import { destroyWeight, uploadQuantized } from '../../shaders/tensor.js';
import {
  dequantize,
  markScaleF16,
  type QuantizedMatrix,
  quantizedBytes,
  quantizeInt8,
  quantizeQ4,
  wordsPerRow,
} from '../../util/quant.js';
import { assertClose } from '../helpers/compare.js';
import { encodeGgml } from '../helpers/gguf-writer.js';
import { assertNoGpuErrors, f32Buffer, testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/rng.js';
import { matmulRef } from '../reference/matmul.js';

const tolerance = (cols: number) => ({ atol: 1e-4 * Math.sqrt(cols), rtol: 1e-4 });
const SENTINEL = 1234.5;

type Maker = 'int8' | 'q4g32' | 'q4g128' | 'Q8_0' | 'Q6_K' | 'Q4_0' | 'Q4_K' | 'q4g64-f32';

/** A quantized (rows, cols) matrix of the kind named; ggml kinds need cols a multiple of their block. */
function make(kind: Maker, w: Float32Array, rows: number, cols: number): QuantizedMatrix {
  switch (kind) {
    case 'int8':
      return quantizeInt8(w, rows, cols);
    case 'q4g32':
      return quantizeQ4(w, rows, cols, 32);
    case 'q4g128':
      return quantizeQ4(w, rows, cols, 128);
    case 'q4g64-f32': {
      // Scales nudged off f16 so the f32 scale path runs.
      const m = quantizeQ4(w, rows, cols, 64);
      for (let i = 0; i < m.scales.length; i++) m.scales[i] *= 1 + 1e-6;
      return markScaleF16(m);
    }
    default:
      return repackGgml(kind, encodeGgml(kind, w, rows, cols), rows, cols, kind);
  }
}

interface Case {
  kind: Maker;
  rows: number;
  cols: number;
  T: number;
  bias: boolean;
  chunked: boolean;
}

async function check(gpu: Gpu, k: MatmulKernel, arena: UniformArena, rng: Rng, c: Case, what: string) {
  const { rows, cols, T } = c;
  const m = make(c.kind, rng.uniformArray(rows * cols, 1), rows, cols);
  const wRef = dequantize(m);
  const rowBytes = wordsPerRow(m.format, cols) * 4;
  const maxChunkBytes = c.chunked ? rowBytes * Math.max(1, Math.floor(rows / 3.5)) : undefined;
  const w = uploadQuantized(gpu, 'w', m, maxChunkBytes);
  if (c.chunked && rows >= 3) assert.ok(w.chunks.length >= 3, `${what}: expected >= 3 chunks`);
  const x = rng.normalArray(T * cols);
  const xPadded = new Float32Array(T * cols + 8).fill(Number.NaN);
  xPadded.set(x);
  const bias = c.bias ? rng.normalArray(rows) : undefined;
  const out = f32Buffer(gpu, new Float32Array(T * rows + 8).fill(SENTINEL), 'out');
  const xBuf = f32Buffer(gpu, xPadded, 'x');
  const biasBuf = bias ? f32Buffer(gpu, bias, 'bias') : undefined;
  arena.reset();
  gpu.run((pass) => k.encode(pass, arena, { x: xBuf, w, bias: biasBuf, out, T }), arena);
  const got = await gpu.readF32(out, T * rows + 8);
  assertNoGpuErrors(gpu);
  const label = `${what} ${c.kind} ${m.scaleF16 ? 'f16' : 'f32'} scales (T=${T}, rows=${rows}, cols=${cols}) chunks=${w.chunks.length}`;
  assertClose(got.subarray(0, T * rows), matmulRef(x, wRef, bias, T, rows, cols), tolerance(cols), label);
  assert.deepEqual([...got.subarray(T * rows)], new Array(8).fill(SENTINEL), `${label}: wrote past out`);
  destroyWeight(w);
  for (const b of [out, xBuf, biasBuf]) b?.destroy();
}

// Each (format, scale dtype) pipeline is compiled for T = 1 and T > 1; columns mix cols % 4 == 0 and not.
const CASES: Case[] = [
  { kind: 'int8', rows: 97, cols: 13, T: 1, bias: true, chunked: true },
  { kind: 'int8', rows: 5, cols: 300, T: 17, bias: false, chunked: false },
  { kind: 'q4g32', rows: 768, cols: 288, T: 1, bias: false, chunked: true },
  { kind: 'q4g32', rows: 5, cols: 100, T: 3, bias: true, chunked: true },
  { kind: 'q4g128', rows: 97, cols: 300, T: 1, bias: true, chunked: false },
  { kind: 'q4g64-f32', rows: 33, cols: 136, T: 1, bias: false, chunked: true },
  { kind: 'q4g64-f32', rows: 7, cols: 200, T: 65, bias: true, chunked: false },
  { kind: 'Q8_0', rows: 97, cols: 288, T: 1, bias: true, chunked: true },
  { kind: 'Q6_K', rows: 31, cols: 768, T: 1, bias: false, chunked: true },
  { kind: 'Q6_K', rows: 3, cols: 256, T: 17, bias: true, chunked: false },
  { kind: 'Q4_0', rows: 9, cols: 64, T: 1, bias: false, chunked: false },
  { kind: 'Q4_K', rows: 65, cols: 512, T: 1, bias: true, chunked: true },
  { kind: 'Q4_K', rows: 4, cols: 256, T: 5, bias: false, chunked: false },
];

const VARIANTS: [string, MatmulOptions][] = [
  ['thread', { variant: 'thread' }],
  ['thread, shifts', { variant: 'thread', packed4x8: false }],
  ['workgroup+subgroups', { variant: 'workgroup', subgroups: true }],
  ['workgroup, shifts', { variant: 'workgroup', subgroups: false, tokenTile: 4, packed4x8: false }],
  // the prefill GEMM of GPUs (shaders/matmul_tiled.wgsl) from 2 tokens on
  ['tiled', { variant: 'workgroup', tiledMinTokens: 2 }],
  // the register-tile kernel of CPU adapters' prefill from 2 tokens on
  ['tiled rows', { variant: 'thread', rowTileMinTokens: 2 }],
];

for (const [name, opts] of VARIANTS) {
  test(`quantized matmul (${name}) matches the reference over the dequantized weights`, async (t) => {
    const gpu = await testGpu();
    if (opts.subgroups && !gpu.caps.subgroups) {
      t.skip('device has no subgroups');
      return;
    }
    if (opts.packed4x8 !== false && !gpu.caps.packed4x8) {
      t.skip('device has no packed 4x8 built-ins');
      return;
    }
    const k = new MatmulKernel(gpu, opts);
    const arena = new UniformArena(gpu);
    const rng = new Rng(name.length * 104729);
    // The workgroup variants are slow to compile and run on lavapipe: they take every other case.
    const cases = name.startsWith('tiled')
      ? CASES.filter((c) => c.T > 1)
      : name.startsWith('thread')
        ? CASES
        : CASES.filter((_, i) => i % 2 === 0);
    for (const c of cases) await check(gpu, k, arena, rng, c, `matmul ${name}`);
    arena.destroy();
  });
}

test('quantized weights take the bytes of their layout: 4 or 8 bits per value plus group scales', async () => {
  const gpu = await testGpu();
  const rng = new Rng(1);
  const w = rng.uniformArray(64 * 256, 1);
  const q8 = quantizeInt8(w, 64, 256);
  const q4 = quantizeQ4(w, 64, 256, 128);
  assert.equal(quantizedBytes(q8), 64 * 256 + 64 * 4);
  assert.equal(quantizedBytes(q4), (64 * 256) / 2 + 64 * 2 * 4);
  const g = uploadQuantized(gpu, 'q4', q4);
  assert.equal(g.chunks[0].buffer.size, (64 * 256) / 2);
  assert.equal(g.chunks[0].scales?.size, 64 * 2 * 4);
  destroyWeight(g);
});
