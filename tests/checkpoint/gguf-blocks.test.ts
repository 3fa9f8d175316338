// ggml block formats: sift's repacking (checkpoint/ggml.ts) against the spec-written reference
// (tests/reference/ggml.ts) and against ggml's own quantizer and dequantizer (tests/fixtures/ggml-golden.gguf, made
// by tests/fixtures/ggml-tool.c); sift's own int8 / q4 quantizers (checkpoint/quant.ts).
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { GGML_QUANTIZED, type GgmlQuantName, ggmlLayout, repackGgml } from '../../checkpoint/ggml.js';
import { GgufFile } from '../../checkpoint/gguf.js';
import {
  dequantize,
  permuteQuantizedRows,
  quantizedBytes,
  quantizeInt8,
  quantizeQ4,
  quantValue,
} from '../../util/quant.js';
import { Rng } from '../../util/rng.js';
import { encodeGgml } from '../helpers/gguf-writer.js';
import { refDequantize } from '../reference/ggml.js';

const here = path.dirname(fileURLToPath(import.meta.url));
// dist/tests/checkpoint -> tests/fixtures
const GOLDEN = path.resolve(here, '../../../tests/fixtures/ggml-golden.gguf');

function bitsEqual(got: Float32Array, want: Float32Array, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < got.length; i++) {
    if (!Object.is(got[i], want[i]) && !(got[i] === 0 && want[i] === 0)) {
      assert.fail(`${what}: element ${i} is ${got[i]}, want ${want[i]}`);
    }
  }
}

test("ggml's own quantization (golden file): repacked and reference values equal ggml's dequantization bit for bit", async () => {
  const g = await GgufFile.open(GOLDEN);
  try {
    for (const type of ['Q8_0', 'Q4_0', 'Q4_K', 'Q6_K'] as const) {
      const name = type.replace('Q', 'q'); // ggml_type_name spelling: q8_0, q4_0, q4_K, q6_K
      const q = g.tensor(`${name}.q`);
      assert.equal(g.typeOf(`${name}.q`), type);
      const [cols, rows] = q.dims;
      const bytes = g.read(`${name}.q`);
      const f = g.read(`${name}.f32`);
      const want = new Float32Array(f.buffer, f.byteOffset, f.byteLength / 4);
      bitsEqual(refDequantize(type, bytes, rows, cols), want, `reference ${type}`);
      const m = repackGgml(type, bytes, rows, cols, type);
      bitsEqual(dequantize(m), want, `repacked ${type}`);
      assert.equal(m.format, ggmlLayout(type));
      assert.equal(m.group, type === 'Q6_K' ? 16 : 32);
    }
  } finally {
    g.close();
  }
});

test('repacking is exact on random blocks of every type, random shapes (reference decode = repacked decode)', () => {
  const rng = new Rng(7);
  for (let trial = 0; trial < 30; trial++) {
    const type = GGML_QUANTIZED[trial % GGML_QUANTIZED.length] as GgmlQuantName;
    const block = type === 'Q4_K' || type === 'Q6_K' ? 256 : 32;
    const rows = rng.int(1, 5);
    const cols = block * rng.int(1, 3);
    // Random bytes are valid blocks of every type (any scale bits, any quant bits) except NaN/Inf f16 scales.
    const bytesPerRow = { Q8_0: 34, Q4_0: 18, Q5_0: 22, Q4_K: 144, Q6_K: 210 }[type] * (cols / block);
    const bytes = new Uint8Array(rows * bytesPerRow);
    for (let i = 0; i < bytes.length; i++) bytes[i] = rng.int(0, 255);
    // Keep f16 scales finite and moderate: clear the top exponent bits of every scale's high byte.
    const scaleOffsets = { Q8_0: [0], Q4_0: [0], Q5_0: [0], Q4_K: [0, 2], Q6_K: [208] }[type];
    const bb = { Q8_0: 34, Q4_0: 18, Q5_0: 22, Q4_K: 144, Q6_K: 210 }[type];
    for (let o = 0; o < bytes.length; o += bb) for (const s of scaleOffsets) bytes[o + s + 1] &= 0xbb;
    const want = refDequantize(type, bytes, rows, cols);
    const m = repackGgml(type, bytes, rows, cols, 'random');
    bitsEqual(dequantize(m), want, `${type} (${rows}, ${cols})`);
  }
});

test('the test writer encodes every type within its quantization error (round trip through the reference)', () => {
  const rng = new Rng(11);
  for (const type of ['F32', 'F16', 'BF16', ...GGML_QUANTIZED] as const) {
    const rows = 3;
    const cols = 512;
    const x = rng.normalArray(rows * cols, 0.5);
    const y = refDequantize(type, encodeGgml(type, x, rows, cols), rows, cols);
    let err = 0;
    let norm = 0;
    for (let i = 0; i < x.length; i++) {
      err += (x[i] - y[i]) ** 2;
      norm += x[i] ** 2;
    }
    const rel = Math.sqrt(err / norm);
    const bound = { F32: 0, F16: 1e-3, BF16: 4e-3, Q8_0: 0.01, Q4_0: 0.12, Q5_0: 0.06, Q4_K: 0.12, Q6_K: 0.04 }[type];
    assert.ok(rel <= bound, `${type}: relative error ${rel} > ${bound}`);
  }
});

test('int8 per-channel quantizer: per-row scale max|w|/127, |error| <= scale/2, values in [-127, 127]', () => {
  const rng = new Rng(3);
  for (const [rows, cols] of [
    [1, 1],
    [5, 7],
    [17, 288],
    [3, 1000],
  ]) {
    const w = rng.normalArray(rows * cols, 0.3);
    w[0] = 0; // a zero and a constant row must not break it
    const m = quantizeInt8(w, rows, cols);
    assert.equal(m.format, 'q8');
    assert.equal(m.group, cols);
    const d = dequantize(m);
    for (let r = 0; r < rows; r++) {
      let amax = 0;
      for (let c = 0; c < cols; c++) amax = Math.max(amax, Math.abs(w[r * cols + c]));
      assert.ok(Math.abs(m.scales[r] - amax / 127) <= 1e-7 * amax, `row ${r} scale`);
      for (let c = 0; c < cols; c++) {
        const q = quantValue(m, r, c);
        assert.ok(q >= -127 && q <= 127);
        assert.ok(Math.abs(d[r * cols + c] - w[r * cols + c]) <= m.scales[r] / 2 + 1e-7, `(${r}, ${c})`);
      }
    }
  }
});

test('q4 group quantizer: f16 scale and min per group (last group may be short); min/max range within half a step, refits only lower the error', () => {
  const rng = new Rng(4);
  for (const [rows, cols, group] of [
    [2, 32, 32],
    [3, 288, 128],
    [4, 100, 32],
    [2, 136, 64],
  ]) {
    const w = rng.normalArray(rows * cols, 0.2);
    for (let c = 0; c < 16; c++) w[c] = 0.05; // a constant stretch
    const plain = quantizeQ4(w, rows, cols, group, 0);
    const refit = quantizeQ4(w, rows, cols, group);
    const gpr = Math.ceil(cols / group);
    for (const m of [plain, refit]) {
      assert.equal(m.scaleF16, true, 'scales and mins are f16 values');
      assert.equal(m.scales.length, rows * gpr);
      // 4 bits per value plus two f16 per group
      assert.equal(quantizedBytes(m), rows * Math.ceil(cols / 8) * 4 + rows * gpr * 4);
    }
    const dp = dequantize(plain);
    const dr = dequantize(refit);
    for (let r = 0; r < rows; r++) {
      for (let g = 0; g < gpr; g++) {
        let ep = 0;
        let er = 0;
        for (let c = g * group; c < Math.min(cols, (g + 1) * group); c++) {
          const i = r * cols + c;
          const s = plain.scales[r * gpr + g];
          // within half a step, plus the f16 rounding of the min
          const tol = s / 2 + Math.abs(plain.mins![r * gpr + g]) * 2 ** -11 + 1e-7;
          assert.ok(Math.abs(dp[i] - w[i]) <= tol, `(${r}, ${c}): ${dp[i]} vs ${w[i]}`);
          ep += (dp[i] - w[i]) ** 2;
          er += (dr[i] - w[i]) ** 2;
        }
        assert.ok(er <= ep * (1 + 1e-6) + 1e-12, `group (${r}, ${g}): refit error ${er} > min/max error ${ep}`);
      }
    }
  }
});

test('row permutation of a quantized matrix moves values and scales together', () => {
  const rng = new Rng(5);
  const w = rng.normalArray(6 * 40, 1);
  for (const m of [quantizeQ4(w, 6, 40, 8), quantizeInt8(w, 6, 40)]) {
    const order = [3, 0, 5, 1, 4, 2];
    const p = dequantize(permuteQuantizedRows(m, order));
    const d = dequantize(m);
    for (let i = 0; i < 6; i++)
      bitsEqual(p.subarray(i * 40, i * 40 + 40), d.subarray(order[i] * 40, order[i] * 40 + 40), `row ${i}`);
  }
});
