/**
 * The matmul fusions (shaders/matmul_common.wgsl: RMSNorm folded in front, SwiGLU over interleaved gate/up rows and a
 * residual add behind; GeGLU for Gemma) against the plain steps' references, in every variant: 'thread', 'workgroup' with and without
 * subgroups, and the prefill GEMM (shaders/matmul_tiled.wgsl) in both of its layouts, on shapes off its 64-token,
 * 64-row and 8-row tiles; float and quantized (q8, q4) weights.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MatmulKernel, type MatmulOptions } from '../../shaders/matmul.js';
import { type Gpu, UniformArena } from '../../shaders/runtime.js';
import { destroyWeight, type GpuWeight, ROW_ALIGN, uploadQuantized, uploadWeight } from '../../shaders/tensor.js';
import { bytesPerElement, decodeToF32, encodeFromF32, type WeightDType } from '../../util/dtype.js';
import { dequantize, quantizedBytes, quantizeInt8, quantizeQ4 } from '../../util/quant.js';
import { assertClose } from '../helpers/compare.js';
import { assertNoGpuErrors, f32Buffer, testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/rng.js';
import { matmulRef } from '../reference/matmul.js';
import { rmsnormRef } from '../reference/rmsnorm.js';
import { gegluRef, swigluRef } from '../reference/swiglu.js';

// As tests/kernels/matmul.test.ts: f32 accumulation against an f64 reference over the same decoded weights.
const tolerance = (cols: number) => ({ atol: 1e-4 * Math.sqrt(cols), rtol: 1e-4 });
const SENTINEL = 1234.5;

const VARIANTS: [string, MatmulOptions][] = [
  ['thread', { variant: 'thread' }],
  ['workgroup+subgroups', { variant: 'workgroup', subgroups: true }],
  ['workgroup', { variant: 'workgroup', subgroups: false, tokenTile: 4 }],
  // the prefill GEMM from 2 tokens on (the cases with T = 1 keep the matvec)
  ['tiled', { variant: 'workgroup', tiledMinTokens: 2 }],
  // the register-tile kernel of CPU adapters' prefill from 2 tokens on
  ['tiled rows', { variant: 'thread', rowTileMinTokens: 2 }],
];

interface FusedCase {
  /** Output rows (with glu: gate/up pairs). */
  rows: number;
  cols: number;
  T: number;
  dtype: WeightDType | 'q8' | 'q4';
  norm: boolean;
  glu: boolean | 'gelu';
  accumulate: boolean;
  bias: boolean;
  chunked: boolean;
}

/**
 * The decode path's fusions against the reference composed of the plain steps: rmsnorm(x) * g (NORM), then the
 * projection, then silu(gate) * up over the interleaved rows (GLU), then out += (ACC). out starts as random values
 * (ACC reads them) with a sentinel tail; x carries NaN past its T*cols values.
 */
async function checkFused(gpu: Gpu, k: MatmulKernel, arena: UniformArena, rng: Rng, c: FusedCase, what: string) {
  const { rows, cols, T, dtype } = c;
  const wRows = c.glu ? 2 * rows : rows;
  const wF32 = rng.uniformArray(wRows * cols, 1);
  let w: GpuWeight;
  let wRef: Float32Array;
  const chunkRows = Math.max(2, Math.floor(wRows / 3.5));
  if (dtype === 'q8' || dtype === 'q4') {
    const m = dtype === 'q8' ? quantizeInt8(wF32, wRows, cols) : quantizeQ4(wF32, wRows, cols, 32);
    wRef = dequantize(m);
    const maxChunkBytes = c.chunked ? Math.ceil((quantizedBytes(m) / wRows) * chunkRows) : undefined;
    w = uploadQuantized(gpu, 'w', m, maxChunkBytes, c.glu ? 2 : 1);
  } else {
    const wBytes = encodeFromF32(wF32, dtype);
    wRef = decodeToF32(wBytes, dtype);
    const rowBytes = Math.ceil(cols / ROW_ALIGN) * ROW_ALIGN * bytesPerElement(dtype);
    const maxChunkBytes = c.chunked ? rowBytes * chunkRows : undefined;
    w = uploadWeight(gpu, 'w', dtype, wRows, cols, wBytes, maxChunkBytes, c.glu ? 2 : 1);
  }
  if (c.chunked) assert.ok(w.chunks.length >= 3, `${what}: expected >= 3 chunks, got ${w.chunks.length}`);
  const x = rng.normalArray(T * cols, 2);
  const xPadded = new Float32Array(T * cols + 8).fill(Number.NaN);
  xPadded.set(x);
  const g = rng.uniformArray(cols, 0.5).map((v) => v + 1);
  const bias = c.bias ? rng.normalArray(rows) : undefined;
  const out0 = rng.normalArray(T * rows);
  const outInit = new Float32Array(T * rows + 8).fill(SENTINEL);
  outInit.set(out0);
  const eps = 1e-5;
  // reference: norm -> projection (gate and up separately for glu) -> swiglu -> accumulate
  const xn = c.norm ? rmsnormRef(x, g, T, cols, eps) : x;
  let want: Float32Array;
  if (c.glu) {
    const gate = new Float32Array(rows * cols);
    const up = new Float32Array(rows * cols);
    for (let i = 0; i < rows; i++) {
      gate.set(wRef.subarray(2 * i * cols, (2 * i + 1) * cols), i * cols);
      up.set(wRef.subarray((2 * i + 1) * cols, (2 * i + 2) * cols), i * cols);
    }
    const act = c.glu === 'gelu' ? gegluRef : swigluRef;
    want = act(matmulRef(xn, gate, undefined, T, rows, cols), matmulRef(xn, up, undefined, T, rows, cols));
  } else {
    want = matmulRef(xn, wRef, bias, T, rows, cols);
  }
  if (c.accumulate) want = want.map((v, i) => v + out0[i]);
  const out = f32Buffer(gpu, outInit, 'out');
  const xBuf = f32Buffer(gpu, xPadded, 'x');
  const gBuf = f32Buffer(gpu, g, 'g');
  const biasBuf = bias ? f32Buffer(gpu, bias, 'bias') : undefined;
  arena.reset();
  gpu.run(
    (pass) =>
      k.encode(pass, arena, {
        x: xBuf,
        w,
        bias: biasBuf,
        out,
        T,
        norm: c.norm ? { weight: gBuf, eps } : undefined,
        glu: c.glu,
        accumulate: c.accumulate,
      }),
    arena,
  );
  const got = await gpu.readF32(out, T * rows + 8);
  assertNoGpuErrors(gpu);
  const label = `${what} ${JSON.stringify(c)} chunks=${w.chunks.length}`;
  assertClose(got.subarray(0, T * rows), want, tolerance(cols), label);
  assert.deepEqual([...got.subarray(T * rows)], new Array(8).fill(SENTINEL), `${label}: wrote past out`);
  destroyWeight(w);
  for (const b of [out, xBuf, gBuf, biasBuf]) b?.destroy();
}

// Each case is its own pipeline (dtype, token tile, x layout, fusions): the decode path's combinations (norm + bias
// for q/k/v, norm + glu for gate/up, accumulate for o and down, norm for lm_head), the prefill path's (glu alone,
// bias alone, accumulate alone), odd sizes, chunked weights, quantized weights.
const FUSED: FusedCase[] = [
  { rows: 97, cols: 288, T: 1, dtype: 'f16', norm: true, glu: false, accumulate: false, bias: true, chunked: true },
  { rows: 37, cols: 13, T: 3, dtype: 'bf16', norm: true, glu: true, accumulate: false, bias: false, chunked: true },
  { rows: 64, cols: 300, T: 5, dtype: 'f32', norm: false, glu: false, accumulate: true, bias: false, chunked: true },
  { rows: 5, cols: 7, T: 17, dtype: 'f32', norm: true, glu: false, accumulate: false, bias: false, chunked: false },
  { rows: 40, cols: 64, T: 1, dtype: 'f16', norm: true, glu: true, accumulate: true, bias: false, chunked: false },
  { rows: 37, cols: 72, T: 70, dtype: 'q4', norm: false, glu: true, accumulate: false, bias: false, chunked: true },
  { rows: 70, cols: 40, T: 66, dtype: 'q8', norm: true, glu: false, accumulate: true, bias: true, chunked: false },
  // Gemma's GeGLU (gelu_tanh gate), with the norm in front as the decode path runs it
  { rows: 37, cols: 72, T: 2, dtype: 'bf16', norm: true, glu: 'gelu', accumulate: false, bias: false, chunked: true },
  { rows: 24, cols: 40, T: 1, dtype: 'q4', norm: true, glu: 'gelu', accumulate: false, bias: false, chunked: false },
];

/** The tiled layouts' cases: T > 1 (T = 1 stays a matvec), plus shapes across several 64-token and 64-row tiles. */
const TILED: FusedCase[] = [
  ...FUSED.filter((c) => c.T > 1),
  { rows: 45, cols: 100, T: 129, dtype: 'f16', norm: true, glu: true, accumulate: false, bias: false, chunked: true },
  { rows: 33, cols: 35, T: 2, dtype: 'f32', norm: true, glu: false, accumulate: true, bias: true, chunked: false },
  { rows: 130, cols: 48, T: 65, dtype: 'bf16', norm: false, glu: false, accumulate: true, bias: true, chunked: true },
];

for (const [name, opts] of VARIANTS) {
  test(`matmul (${name}) fusions match the reference: norm in front, swiglu and residual add behind`, async (t) => {
    const gpu = await testGpu();
    if (opts.subgroups && !gpu.caps.subgroups) {
      t.skip('device has no subgroups');
      return;
    }
    const k = new MatmulKernel(gpu, opts);
    const arena = new UniformArena(gpu);
    const rng = new Rng(31 + name.length);
    for (const c of name.startsWith('tiled') ? TILED : FUSED) await checkFused(gpu, k, arena, rng, c, `matmul ${name}`);
    arena.destroy();
  });
}

test('matmul with glu rejects a weight whose chunks split a gate/up pair', async () => {
  const gpu = await testGpu();
  const k = new MatmulKernel(gpu);
  const arena = new UniformArena(gpu);
  const w = uploadWeight(gpu, 'w', 'f32', 6, 8, new Uint8Array(6 * 8 * 4), 3 * 8 * 4);
  const buf = gpu.createBuffer('b', 6 * 8 * 4);
  const enc = gpu.device.createCommandEncoder();
  const pass = enc.beginComputePass();
  assert.throws(() => k.encode(pass, arena, { x: buf, w, out: buf, T: 1, glu: true }), /gate\/up row pairs/);
  pass.end();
  enc.finish();
  destroyWeight(w);
  buf.destroy();
  arena.destroy();
});
