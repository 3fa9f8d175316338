/**
 * Plain-TS reference for GPTQ (util/quant-gptq.ts), in the form GPTQ derives from Optimal Brain Quantization: keep the
 * inverse Hessian of the columns not yet quantized explicitly (Gauss-Jordan inverse of the dampened H, f64), and after
 * quantizing column k with error d = w_k - q_k move every remaining column j by -d Hinv[k, j] / Hinv[k, k], then
 * drop k from Hinv by one step of Gaussian elimination. No Cholesky: the library's factored solve must agree with it.
 * Group scales and mins come from the same weighted fit (util/quant-weighted.ts) on the same weights the library
 * fits (the error-updated group when it starts, or the original weights with act-order), so the two differ only in
 * how the solve is computed.
 */
import { fitQ4GroupWeighted } from '../../util/quant-weighted.js';

/** Inverse of a (n, n) by Gauss-Jordan with partial pivoting, f64. */
export function invertRef(a: Float64Array, n: number): Float64Array {
  const m = Float64Array.from(a);
  const inv = new Float64Array(n * n);
  for (let i = 0; i < n; i++) inv[i * n + i] = 1;
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(m[r * n + c]) > Math.abs(m[p * n + c])) p = r;
    for (let k = 0; k < n; k++) {
      [m[c * n + k], m[p * n + k]] = [m[p * n + k], m[c * n + k]];
      [inv[c * n + k], inv[p * n + k]] = [inv[p * n + k], inv[c * n + k]];
    }
    const d = m[c * n + c];
    for (let k = 0; k < n; k++) {
      m[c * n + k] /= d;
      inv[c * n + k] /= d;
    }
    for (let r = 0; r < n; r++) {
      if (r === c) continue;
      const f = m[r * n + c];
      if (f === 0) continue;
      for (let k = 0; k < n; k++) {
        m[r * n + k] -= f * m[c * n + k];
        inv[r * n + k] -= f * inv[c * n + k];
      }
    }
  }
  return inv;
}

/**
 * GPTQ by the OBQ recurrence: w (rows, cols), gram (cols, cols) symmetric, dampened by damp * mean(diag) (inputs with
 * diag 0 cut off, as the library does); columns in descending diag order when actOrder. Returns the decoded matrix
 * (rows, cols) in f64.
 */
export function gptqRef(
  w: Float32Array,
  rows: number,
  cols: number,
  group: number,
  gram: Float32Array,
  damp = 0.01,
  actOrder = false,
): Float64Array {
  const diag = Float64Array.from({ length: cols }, (_, c) => gram[c * cols + c]);
  const order = Array.from({ length: cols }, (_, i) => i);
  if (actOrder) order.sort((a, b) => diag[b] - diag[a] || a - b);
  const mean = diag.reduce((s, d) => s + d, 0) / cols;
  const h = new Float64Array(cols * cols);
  for (let i = 0; i < cols; i++) {
    for (let j = 0; j < cols; j++) {
      h[i * cols + j] = diag[i] === 0 || diag[j] === 0 ? (i === j ? 1 : 0) : gram[i * cols + j];
    }
    if (diag[i] !== 0) h[i * cols + i] += damp * mean;
  }
  const hinv = invertRef(h, cols); // by original column
  const W = Float64Array.from(w);
  const out = new Float64Array(rows * cols);
  const imp = Float32Array.from(diag);
  const gpr = Math.ceil(cols / group);
  const scale = new Float64Array(rows * gpr);
  const min = new Float64Array(rows * gpr);
  const fit = (r: number, g: number) => {
    const c0 = g * group;
    const n = Math.min(cols, c0 + group) - c0;
    const x = Float32Array.from({ length: n }, (_, i) => W[r * cols + c0 + i]);
    const f = fitQ4GroupWeighted(x, imp.subarray(c0, c0 + n), new Uint8Array(n));
    scale[r * gpr + g] = f.scale;
    min[r * gpr + g] = f.min;
  };
  if (actOrder) for (let r = 0; r < rows; r++) for (let g = 0; g < gpr; g++) fit(r, g);
  const done = new Uint8Array(cols);
  for (const k of order) {
    const g = Math.floor(k / group);
    if (!actOrder && k % group === 0) for (let r = 0; r < rows; r++) fit(r, g);
    const hkk = hinv[k * cols + k];
    for (let r = 0; r < rows; r++) {
      const s = scale[r * gpr + g];
      const m = min[r * gpr + g];
      const v = W[r * cols + k];
      const q = s > 0 ? Math.max(0, Math.min(15, Math.round((v - m) / s))) : 0;
      const deq = Math.fround(Math.fround(s * q) + m);
      out[r * cols + k] = deq;
      const d = (v - deq) / hkk;
      for (let j = 0; j < cols; j++) if (!done[j] && j !== k) W[r * cols + j] -= d * hinv[k * cols + j];
    }
    done[k] = 1;
    // eliminate k from the inverse Hessian of the remaining columns
    const hk = Float64Array.from({ length: cols }, (_, j) => hinv[k * cols + j]);
    for (let i = 0; i < cols; i++) {
      if (done[i]) continue;
      const f = hinv[i * cols + k] / hkk;
      for (let j = 0; j < cols; j++) if (!done[j]) hinv[i * cols + j] -= f * hk[j];
    }
  }
  return out;
}

/** ||(W - D) X^T||^2 over calibration inputs with Gram matrix gram = X^T X: sum_r dw_r gram dw_r^T, f64. */
export function outputErrorRef(
  w: Float32Array,
  d: ArrayLike<number>,
  rows: number,
  cols: number,
  gram: Float32Array,
): number {
  let e = 0;
  const dw = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) dw[c] = w[r * cols + c] - d[r * cols + c];
    for (let i = 0; i < cols; i++) {
      let s = 0;
      for (let j = 0; j < cols; j++) s += gram[i * cols + j] * dw[j];
      e += dw[i] * s;
    }
  }
  return e;
}
