/**
 * GPTQ (util/quant-gptq.ts) against the plain-TS reference (tests/reference/gptq.ts, the OBQ recurrence with an
 * explicit inverse Hessian) on seeded random layers whose calibration inputs have correlated channels of very
 * different sizes (as real activations do), widths that are not multiples of the group: the library's Cholesky solve
 * gives the reference's weights, and its output error ||(W - Q) X^T|| on the calibration X is well below
 * round-to-nearest's and the importance-weighted fit's (the imatrix, which sees only diag(X^T X)). Without the error
 * propagation GPTQ would be exactly the weighted fit, so the margin is what the propagation buys.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { dequantize, quantizeQ4, quantValue } from '../../util/quant.js';
import { cholesky, gptqFactor, quantizeQ4Gptq } from '../../util/quant-gptq.js';
import { quantizeQ4Weighted } from '../../util/quant-weighted.js';
import { Rng } from '../helpers/rng.js';
import { gptqRef, outputErrorRef } from '../reference/gptq.js';

/** Calibration inputs X (T, cols): a few shared factors plus noise, channel scales log-normal, some dead channels. */
function calibration(rng: Rng, T: number, cols: number, dead = 0): Float32Array {
  const k = 4;
  const mix = rng.normalArray(k * cols, 1);
  const scale = Float32Array.from({ length: cols }, () => Math.exp(0.8 * rng.normal()));
  const x = new Float32Array(T * cols);
  for (let t = 0; t < T; t++) {
    const f = rng.normalArray(k, 1);
    for (let c = 0; c < cols; c++) {
      let v = 0.5 * rng.normal();
      for (let j = 0; j < k; j++) v += f[j] * mix[j * cols + c];
      x[t * cols + c] = c < dead ? 0 : v * scale[c];
    }
  }
  return x;
}

/** Mean x x^T (cols, cols), the statistic `sift imatrix --full` stores. */
function gramOf(x: Float32Array, T: number, cols: number): Float32Array {
  const g = new Float64Array(cols * cols);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < cols; i++) {
      const xi = x[t * cols + i];
      for (let j = 0; j < cols; j++) g[i * cols + j] += xi * x[t * cols + j];
    }
  }
  return Float32Array.from(g, (v) => v / T);
}

const diagOf = (g: Float32Array, cols: number) => Float32Array.from({ length: cols }, (_, c) => g[c * cols + c]);

test('cholesky: L L^T reproduces a positive definite matrix; null for an indefinite one', () => {
  const rng = new Rng(5);
  const n = 13;
  const b = rng.normalArray(n * n, 1);
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      for (let k = 0; k < n; k++) a[i * n + j] += b[i * n + k] * b[j * n + k];
    }
    a[i * n + i] += 0.1;
  }
  const l = cholesky(a, n) as Float64Array;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += l[i * n + k] * l[j * n + k];
      assert.ok(Math.abs(s - a[i * n + j]) < 1e-9 * (1 + Math.abs(a[i * n + j])), `(${i}, ${j})`);
      if (j > i) assert.equal(l[i * n + j], 0);
    }
  }
  const bad = Float64Array.from(a);
  bad[0] = -1;
  assert.equal(cholesky(bad, n), null);
});

test('GPTQ equals the OBQ reference and beats round-to-nearest and the imatrix fit on the output error', () => {
  let sumG = 0;
  let sumW = 0;
  let sumR = 0;
  for (let seed = 1; seed <= 8; seed++) {
    const rng = new Rng(seed);
    const cols = [40, 72, 100, 130, 37 + 8, 64, 96, 120][seed - 1];
    const group = rng.pick([16, 32, 64]);
    const rows = rng.int(4, 12);
    const T = 3 * cols;
    const actOrder = seed % 2 === 0;
    const x = calibration(rng, T, cols, seed === 3 ? 5 : 0);
    const gram = gramOf(x, T, cols);
    const w = rng.normalArray(rows * cols, 0.05);
    const mg = quantizeQ4Gptq(w, rows, cols, group, gram, { actOrder });
    assert.equal(mg.scaleF16, true, `seed ${seed}: scales and mins are f16 values`);
    const dg = dequantize(mg);
    const ref = gptqRef(w, rows, cols, group, gram, 0.01, actOrder);
    let same = 0;
    for (let i = 0; i < dg.length; i++) if (Math.abs(dg[i] - ref[i]) <= 1e-6) same++;
    // the two solves differ only in rounding; a value on a rounding tie may go the other way (and move the rest)
    assert.ok(same >= 0.97 * dg.length, `seed ${seed}: ${same} of ${dg.length} weights equal the reference's`);
    const eG = outputErrorRef(w, dg, rows, cols, gram);
    const eRef = outputErrorRef(w, ref, rows, cols, gram);
    assert.ok(Math.abs(eG - eRef) <= 0.02 * eRef, `seed ${seed}: error ${eG} vs the reference's ${eRef}`);
    const eW = outputErrorRef(
      w,
      dequantize(quantizeQ4Weighted(w, rows, cols, group, diagOf(gram, cols))),
      rows,
      cols,
      gram,
    );
    const eR = outputErrorRef(w, dequantize(quantizeQ4(w, rows, cols, group)), rows, cols, gram);
    assert.ok(eG < 0.8 * eW, `seed ${seed} (${rows}, ${cols}) g${group}: GPTQ ${eG} not well below imatrix ${eW}`);
    assert.ok(eG < 0.8 * eR, `seed ${seed}: GPTQ ${eG} not well below round-to-nearest ${eR}`);
    if (process.env.SIFT_GPTQ_LOG) console.log(`seed ${seed} GPTQ/imatrix ${eG / eW} GPTQ/rtn ${eG / eR} same ${same}`);
    sumG += eG;
    sumW += eW;
    sumR += eR;
    // values in range; the dead channels of seed 3 are still quantized (any value is right for them)
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) assert.ok(quantValue(mg, r, c) <= 15);
  }
  assert.ok(sumG < 0.6 * sumW, `overall GPTQ ${sumG} vs imatrix ${sumW} vs round-to-nearest ${sumR}`);
});

test('GPTQ factor: act-order sorts by diag(H); bad Gram matrices are errors', () => {
  const rng = new Rng(11);
  const cols = 24;
  const gram = gramOf(calibration(rng, 80, cols), 80, cols);
  const { order, diag } = gptqFactor(gram, cols, { actOrder: true });
  for (let k = 1; k < cols; k++) assert.ok(diag[order[k - 1]] >= diag[order[k]]);
  assert.throws(() => gptqFactor(gram.subarray(1), cols), /Gram matrix of 575 values for 24 columns/);
  const nan = Float32Array.from(gram);
  nan[5 * cols + 5] = Number.NaN;
  assert.throws(() => gptqFactor(nan, cols), /diagonal 5 is NaN/);
  assert.throws(() => quantizeQ4Gptq(new Float32Array(10), 1, 10, 12, new Float32Array(100)), /multiple of 8/);
  const w = new Float32Array(10);
  w[3] = Number.POSITIVE_INFINITY;
  assert.throws(() => quantizeQ4Gptq(w, 1, 10, 8, new Float32Array(100)), /weight 3 is Infinity/);
});
