/**
 * Calibrated q4 (util/quant-weighted.ts) against the plain-TS reference (tests/reference/quant_weighted.ts): on seeded
 * random matrices (widths that are not multiples of the group, heavy-tailed importances with zeros) the
 * importance-weighted error of every group is never above the unweighted quantizer's, the whole matrix's is below the
 * reference weighted fit's, every value is the nearest level of its group, and scales stay f16.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { dequantize, groupsPerRow, quantizeQ4, quantValue } from '../../util/quant.js';
import { quantizeQ4Weighted } from '../../util/quant-weighted.js';
import { Rng } from '../helpers/rng.js';
import { weightedFitRef, weightedGroupErrorsRef } from '../reference/quant_weighted.js';

/** Importances like mean x^2 of real activations: log-normal, a few channels far above the rest, some zero. */
function importances(rng: Rng, cols: number): Float32Array {
  const a = new Float32Array(cols);
  for (let c = 0; c < cols; c++) a[c] = rng.next() < 0.05 ? 0 : Math.exp(2 * rng.normal());
  return a;
}

const sum = (v: Float64Array) => v.reduce((s, x) => s + x, 0);

test('weighted q4: per group never worse than round-to-nearest on the weighted error, better overall', () => {
  let totalW = 0;
  let totalU = 0;
  let totalRef = 0;
  for (let seed = 1; seed <= 12; seed++) {
    const rng = new Rng(seed);
    const group = rng.pick([8, 32, 64, 128]);
    const cols = rng.pick([8, 37, 64, 100, 130, 288, 300]);
    const rows = rng.int(1, 6);
    const w = rng.normalArray(rows * cols, 0.05);
    const a = importances(rng, cols);
    const mw = quantizeQ4Weighted(w, rows, cols, group, a);
    const mu = quantizeQ4(w, rows, cols, group);
    assert.equal(mw.scaleF16, true, `seed ${seed}: scales and mins are f16 values`);
    const ew = weightedGroupErrorsRef(w, dequantize(mw), a, rows, cols, group);
    const eu = weightedGroupErrorsRef(w, dequantize(mu), a, rows, cols, group);
    for (let g = 0; g < ew.length; g++) {
      assert.ok(
        ew[g] <= eu[g] * (1 + 1e-6) + 1e-30,
        `seed ${seed} group ${g}: weighted ${ew[g]} > unweighted ${eu[g]}`,
      );
    }
    // every value is the nearest of its group's 16 levels (rounding is optimal per element whatever the weights)
    const gpr = groupsPerRow(cols, group);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const gi = r * gpr + Math.floor(c / group);
        const s = mw.scales[gi];
        const m = (mw.mins as Float32Array)[gi];
        const q = quantValue(mw, r, c);
        const x = w[r * cols + c];
        for (const q2 of [q - 1, q + 1]) {
          if (q2 < 0 || q2 > 15) continue;
          assert.ok(
            Math.abs(s * q + m - x) <= Math.abs(s * q2 + m - x) + 1e-7,
            `seed ${seed} (${r}, ${c}) not nearest`,
          );
        }
      }
    }
    // the reference weighted fit, group by group
    const ref = new Float32Array(rows * cols);
    for (let r = 0; r < rows; r++) {
      for (let c0 = 0; c0 < cols; c0 += group) {
        const n = Math.min(group, cols - c0);
        const d = weightedFitRef(w.subarray(r * cols + c0, r * cols + c0 + n), a.subarray(c0, c0 + n));
        ref.set(d, r * cols + c0);
      }
    }
    totalW += sum(ew);
    totalU += sum(eu);
    totalRef += sum(weightedGroupErrorsRef(w, ref, a, rows, cols, group));
  }
  assert.ok(totalW < 0.9 * totalU, `weighted error ${totalW} not clearly below round-to-nearest's ${totalU}`);
  assert.ok(totalW <= totalRef, `weighted error ${totalW} above the reference weighted fit's ${totalRef}`);
});

test('weighted q4: zero importance falls back to round-to-nearest; equal importances never do worse', () => {
  const rng = new Rng(7);
  const rows = 3;
  const cols = 77;
  const w = rng.normalArray(rows * cols);
  const plain = quantizeQ4(w, rows, cols, 32);
  const zero = quantizeQ4Weighted(w, rows, cols, 32, new Float32Array(cols));
  assert.deepEqual(zero.values, plain.values);
  assert.deepEqual(zero.scales, plain.scales);
  assert.deepEqual(zero.mins, plain.mins);
  const ones = new Float32Array(cols).fill(1);
  const eq = quantizeQ4Weighted(w, rows, cols, 32, ones);
  const e1 = weightedGroupErrorsRef(w, dequantize(eq), ones, rows, cols, 32);
  const e0 = weightedGroupErrorsRef(w, dequantize(plain), ones, rows, cols, 32);
  for (let g = 0; g < e1.length; g++) assert.ok(e1[g] <= e0[g] * (1 + 1e-6), `group ${g}`);
});

test('weighted q4: a column the activations drive hard is rounded more closely', () => {
  const rng = new Rng(11);
  const rows = 64;
  const cols = 64;
  const w = rng.normalArray(rows * cols);
  const a = new Float32Array(cols).fill(1);
  a[5] = 1e4;
  const dw = dequantize(quantizeQ4Weighted(w, rows, cols, 64, a));
  const du = dequantize(quantizeQ4(w, rows, cols, 64));
  let ew = 0;
  let eu = 0;
  for (let r = 0; r < rows; r++) {
    ew += (dw[r * cols + 5] - w[r * cols + 5]) ** 2;
    eu += (du[r * cols + 5] - w[r * cols + 5]) ** 2;
  }
  assert.ok(ew < 0.25 * eu, `column 5's error ${ew} vs ${eu} unweighted`);
});

test('weighted q4: bad importances are range errors', () => {
  const w = new Float32Array(16);
  assert.throws(() => quantizeQ4Weighted(w, 2, 8, 8, new Float32Array(7)), /7 importances for 8 columns/);
  const neg = new Float32Array(8);
  neg[3] = -1;
  assert.throws(() => quantizeQ4Weighted(w, 2, 8, 8, neg), /importance 3 is -1/);
  neg[3] = Number.NaN;
  assert.throws(() => quantizeQ4Weighted(w, 2, 8, 8, neg), /importance 3 is NaN/);
});
