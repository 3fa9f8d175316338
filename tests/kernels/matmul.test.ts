/**
 * Matmul/matvec against the f64 reference on every weight dtype, chunked weights and token tiles. All variants run:
 * shaders/matmul.wgsl ('thread'), shaders/matmul_wg.wgsl ('workgroup', with and without subgroups) and their shared
 * matmul_common.wgsl.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MatmulKernel, type MatmulOptions } from '../../shaders/matmul.js';
import { type Gpu, UniformArena } from '../../shaders/runtime.js';
import { destroyWeight, ROW_ALIGN, uploadWeight } from '../../shaders/tensor.js';
import { bytesPerElement, decodeToF32, encodeFromF32, type WeightDType } from '../../util/dtype.js';
import { assertClose } from '../helpers/compare.js';
import { assertNoGpuErrors, f32Buffer, testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/rng.js';
import { matmulRef } from '../reference/matmul.js';

// Tolerance: f32 accumulation of `cols` products of x ~ N(0, 1) and W ~ U(-1, 1) against an f64 reference over the
// same decoded weights (16-bit rounding is not counted): atol 1e-4 * sqrt(cols), rtol 1e-4.
const tolerance = (cols: number) => ({ atol: 1e-4 * Math.sqrt(cols), rtol: 1e-4 });

const ROWS = [1, 5, 97, 768];
const COLS = [1, 7, 13, 288, 300];
const TOKENS = [1, 2, 3, 17, 64, 65];
const SENTINEL = 1234.5;

interface Case {
  rows: number;
  cols: number;
  T: number;
  dtype: WeightDType;
  bias: boolean;
  /** Split the matrix into at least 3 chunks (the last one partial when rows allow). */
  chunked: boolean;
}

/**
 * Runs one matmul and compares it with the reference. x carries NaN past its T*cols values and out carries a
 * sentinel past its T*rows values, so reading x past cols or writing out of range shows up.
 */
async function check(gpu: Gpu, k: MatmulKernel, arena: UniformArena, rng: Rng, c: Case, what: string) {
  const { rows, cols, T, dtype } = c;
  const wBytes = encodeFromF32(rng.uniformArray(rows * cols, 1), dtype);
  const wRef = decodeToF32(wBytes, dtype);
  const rowBytes = (Math.ceil(cols / ROW_ALIGN) * ROW_ALIGN * bytesPerElement(dtype)) | 0;
  const maxChunkBytes = c.chunked ? rowBytes * Math.max(1, Math.floor(rows / 3.5)) : undefined;
  const w = uploadWeight(gpu, 'w', dtype, rows, cols, wBytes, maxChunkBytes);
  if (c.chunked && rows >= 3) assert.ok(w.chunks.length >= 3, `${what}: expected >= 3 chunks, got ${w.chunks.length}`);
  const x = rng.normalArray(T * cols);
  const xPadded = new Float32Array(T * cols + 8).fill(Number.NaN);
  xPadded.set(x);
  const bias = c.bias ? rng.normalArray(rows) : undefined;
  const outInit = new Float32Array(T * rows + 8).fill(SENTINEL);
  const out = f32Buffer(gpu, outInit, 'out');
  const xBuf = f32Buffer(gpu, xPadded, 'x');
  const biasBuf = bias ? f32Buffer(gpu, bias, 'bias') : undefined;
  arena.reset();
  gpu.run((pass) => k.encode(pass, arena, { x: xBuf, w, bias: biasBuf, out, T }), arena);
  const got = await gpu.readF32(out, T * rows + 8);
  assertNoGpuErrors(gpu);
  const label = `${what} ${dtype} (T=${T}, rows=${rows}, cols=${cols}) bias=${c.bias} chunks=${w.chunks.length}`;
  assertClose(got.subarray(0, T * rows), matmulRef(x, wRef, bias, T, rows, cols), tolerance(cols), label);
  assert.deepEqual([...got.subarray(T * rows)], new Array(8).fill(SENTINEL), `${label}: wrote past out`);
  destroyWeight(w);
  for (const b of [out, xBuf, biasBuf]) b?.destroy();
}

// Pipelines differ by dtype, token tile (T = 1 or T > 1) and x layout (cols % 4 == 0 or not), and each costs up to
// seconds to compile on lavapipe, so every case draws from one of six (dtype, T > 1, cols % 4 == 0) combinations that
// together cover every pair of these factors; shapes, bias and chunking vary freely inside them.
const COMBOS: [WeightDType, boolean, boolean][] = [
  ['f32', false, true],
  ['f32', true, false],
  ['f16', false, false],
  ['f16', true, true],
  ['bf16', false, true],
  ['bf16', true, false],
];

function randomCase(rng: Rng, [dtype, prefill, xv4]: [WeightDType, boolean, boolean]): Case {
  const rows = rng.pick(ROWS);
  let T = prefill ? rng.pick(TOKENS.slice(1)) : 1;
  // Keep the largest products small enough for a fast suite on a CPU adapter.
  if (rows === 768 && T > 17) T = rng.pick([2, 3, 17]);
  return {
    rows,
    cols: rng.pick(COLS.filter((c) => (c % 4 === 0) === xv4)),
    T,
    dtype,
    bias: rng.next() < 0.5,
    chunked: rng.next() < 0.4,
  };
}

// Every listed size at least once, with bias and chunking, in the six combinations.
const FIXED: Omit<Case, 'dtype'>[] = [
  { rows: 768, cols: 288, T: 1, bias: true, chunked: true },
  { rows: 97, cols: 13, T: 65, bias: false, chunked: true },
  { rows: 5, cols: 7, T: 1, bias: true, chunked: true },
  { rows: 97, cols: 300, T: 64, bias: true, chunked: true },
  { rows: 1, cols: 300, T: 1, bias: false, chunked: false },
  { rows: 768, cols: 1, T: 17, bias: false, chunked: true },
];

const VARIANTS: [string, MatmulOptions][] = [
  ['thread', { variant: 'thread' }],
  ['workgroup+subgroups', { variant: 'workgroup', subgroups: true }],
  // The fallback for GPUs without subgroups; a smaller token tile keeps its lavapipe compile time down.
  ['workgroup', { variant: 'workgroup', subgroups: false, tokenTile: 4 }],
];

for (const [name, opts] of VARIANTS) {
  test(`matmul (${name}) matches the reference: listed sizes, seeded random shapes, every dtype`, async (t) => {
    const gpu = await testGpu();
    if (opts.subgroups && !gpu.caps.subgroups) {
      t.skip('device has no subgroups');
      return;
    }
    const k = new MatmulKernel(gpu, opts);
    const arena = new UniformArena(gpu);
    const rng = new Rng(name.length * 7919);
    for (let i = 0; i < COMBOS.length; i++) {
      await check(gpu, k, arena, rng, { ...FIXED[i], dtype: COMBOS[i][0] }, `matmul ${name} fixed=${i}`);
    }
    // The workgroup variants run 3-10x slower on lavapipe: fewer random rounds keep the file fast there.
    const rounds = name === 'thread' ? 4 : 2;
    for (let seed = 1; seed <= rounds; seed++) {
      for (const combo of COMBOS) {
        await check(gpu, k, arena, rng, randomCase(rng, combo), `matmul ${name} seed=${seed}`);
      }
    }
    arena.destroy();
  });
}

// The tiled GEMM (shaders/matmul_tiled.wgsl, GPUs' prefill): tokens and rows that are not multiples of its 64-token
// tiles, 64-row tiles or 32-column steps; chunked weights; every dtype and both x layouts.
// The register-tile kernel of CPU adapters (shaders/matmul_rows.wgsl) from 2 tokens on: token counts off its 16-token
// tiles, odd row counts (a half-used row pair), cols off its 8-column blocks and, at 1000 columns, x staged in two
// unequal steps (on an adapter with 32 KiB of workgroup memory).
const TILED_VARIANTS: [string, MatmulOptions][] = [
  ['tiled', { variant: 'workgroup', tiledMinTokens: 2 }],
  ['rows', { variant: 'thread', rowTileMinTokens: 2 }],
];
for (const [name, opts] of TILED_VARIANTS) {
  test(`matmul (${name}) matches the reference on shapes off its tiles, every dtype`, async () => {
    const gpu = await testGpu();
    const k = new MatmulKernel(gpu, opts);
    const arena = new UniformArena(gpu);
    const rng = new Rng(name.length * 104729);
    const shapes: Omit<Case, 'dtype'>[] = [
      { rows: 130, cols: 300, T: 65, bias: true, chunked: true },
      { rows: 97, cols: 13, T: 130, bias: false, chunked: false },
      { rows: 5, cols: 40, T: 2, bias: true, chunked: false },
      { rows: 64, cols: 7, T: 200, bias: false, chunked: true },
      { rows: 1, cols: 288, T: 64, bias: true, chunked: false },
      { rows: 9, cols: 33, T: 127, bias: false, chunked: true },
      { rows: 33, cols: 1000, T: 20, bias: true, chunked: true },
    ];
    for (let i = 0; i < shapes.length; i++) {
      const [dtype, , xv4] = COMBOS[i % COMBOS.length];
      const shape = shapes[i];
      // keep each combination's x layout: cols % 4 == 0 exactly when the combination says so
      const cols = (shape.cols % 4 === 0) === xv4 ? shape.cols : shape.cols + 1;
      await check(gpu, k, arena, rng, { ...shape, cols, dtype }, `matmul ${name} shape=${i}`);
    }
    arena.destroy();
  });
}

test('matmul picks the thread variant on CPU adapters and the workgroup variant elsewhere', async () => {
  const gpu = await testGpu();
  assert.equal(new MatmulKernel(gpu).variant, gpu.caps.isCpu ? 'thread' : 'workgroup');
});

test('prefill takes the tiled GEMM from 64 tokens on with the workgroup variant, the register tiles from 16 with the thread variant', async () => {
  const gpu = await testGpu();
  const wg = new MatmulKernel(gpu, { variant: 'workgroup' });
  assert.equal(wg.isTiled(63), false);
  assert.equal(wg.isTiled(64), true);
  assert.equal(wg.isRowTiled(4096), false);
  // on CPU adapters the register-tile kernel is the faster prefill GEMM (bench/results/PREFILL.md), below 16 tokens
  // the per-row kernel with 4-token tiles
  const thread = new MatmulKernel(gpu, { variant: 'thread' });
  assert.equal(thread.isTiled(4096), false);
  assert.equal(thread.isRowTiled(15), false);
  assert.equal(thread.isRowTiled(16), true);
  assert.equal(thread.tokenTileFor({ rowStride: 288 } as never, 15, 1), 4);
  assert.equal(new MatmulKernel(gpu, { variant: 'thread', rowTileMinTokens: Infinity }).isRowTiled(4096), false);
  assert.equal(new MatmulKernel(gpu, { variant: 'thread', tiledMinTokens: 2 }).isTiled(2), true);
  // the staged x columns: whole 8-column blocks in equal-as-possible steps that fit workgroup memory
  const kc = thread.rowTileColumns({ cols: 1000 } as never);
  assert.equal(kc % 2, 0);
  assert.ok(kc * 16 * 16 + 64 * 4 <= gpu.caps.maxComputeWorkgroupStorageSize);
  assert.equal(Math.ceil(250 / kc), Math.ceil(250 / Math.floor((gpu.caps.maxComputeWorkgroupStorageSize - 256) / 256)));
  assert.equal(thread.rowTileColumns({ cols: 13 } as never), 4);
});

test('matmul rejects mismatched shapes', async () => {
  const gpu = await testGpu();
  const k = new MatmulKernel(gpu);
  const arena = new UniformArena(gpu);
  const w = uploadWeight(gpu, 'w', 'f32', 4, 8, new Uint8Array(4 * 8 * 4));
  const small = gpu.createBuffer('small', 16);
  const ok = gpu.createBuffer('ok', 4 * 8 * 4);
  const encode = (args: Parameters<MatmulKernel['encode']>[2]) => {
    const enc = gpu.device.createCommandEncoder();
    const pass = enc.beginComputePass();
    try {
      k.encode(pass, arena, args);
    } finally {
      pass.end();
      enc.finish();
    }
  };
  assert.throws(() => encode({ x: small, w, out: ok, T: 2 }), /binding x/);
  assert.throws(() => encode({ x: ok, w, out: small, T: 2 }), /binding out/);
  assert.throws(() => encode({ x: ok, w, bias: { buffer: ok, size: 8 }, out: ok, T: 1 }), /binding bias/);
  assert.throws(() => encode({ x: ok, w: { ...w, rowStride: 4 }, out: ok, T: 1 }), /bad shape/);
  assert.throws(() => encode({ x: ok, w: { ...w, chunks: [] }, out: ok, T: 1 }), /cover 0 of 4/);
  gpu.takeErrors();
  destroyWeight(w);
  small.destroy();
  ok.destroy();
  arena.destroy();
});
