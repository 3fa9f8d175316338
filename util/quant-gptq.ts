/**
 * GPTQ-calibrated 4-bit quantization (`--quantize q4 --quantize-gptq FILE`; Frantar et al. 2022, "GPTQ: Accurate
 * Post-Training Quantization for Generative Pre-trained Transformers"), in sift's q4 layout (util/quant.ts).
 *
 * A linear layer y = W x sees calibration inputs X (T, cols). Quantizing W to Q adds the output error
 *   E = ||(W - Q) X^T||^2 = sum_r dw_r H dw_r^T / 2,   H = 2 X^T X (cols, cols)  (the layer's Hessian),
 * whose off-diagonal terms say that a rounding error in one column can be undone by moving the columns its input
 * correlates with. GPTQ quantizes the columns of each row one at a time and, after each, moves the columns not yet
 * quantized to cancel the error it made: with U the upper Cholesky factor of H^-1 (H^-1 = U^T U) and column k just
 * quantized with error e = (w_k - q_k) / U[k, k], every later column j gets w_j -= e U[k, j]. Rows are independent
 * given H (they share U), so each row runs on its own.
 *
 * Groups: sift's q4 has one scale and min per group of `group` consecutive columns. In column order (the default) a
 * group's scale and min are fitted when the group starts, from the error-updated weights of that group, by the
 * importance-weighted fit of util/quant-weighted.ts with importances diag(H) (the mean x^2 the imatrix holds). With
 * act-order (columns taken by descending diag(H), GPTQ's `act_order`) every group's scale and min are fitted first
 * from the original weights ("static groups"), since a group's columns are then spread over the whole order.
 *
 * H is dampened by `damp` * mean(diag(H)) on its diagonal (GPTQ's percdamp, 0.01), and by 10x more while its
 * Cholesky fails. Columns whose input is always zero (H[c, c] = 0) get H[c, c] = 1: they take no error and give none.
 * The solve runs in f64; every weight is decoded as the kernels decode it (f32: scale q, then + min).
 */
import {
  allocQuantized,
  firstNonFinite,
  groupsPerRow,
  markScaleF16,
  type QuantizedMatrix,
  setQuantValue,
} from './quant.js';
import { fitQ4GroupWeighted } from './quant-weighted.js';

export interface GptqOptions {
  /** Diagonal damping as a share of mean(diag(H)) (default 0.01). */
  damp?: number;
  /** Quantize columns by descending diag(H), with static groups (default false: column order). */
  actOrder?: boolean;
}

export const GPTQ_DEFAULT_DAMP = 0.01;

/**
 * The Cholesky factor L (n, n) row-major, lower, of the symmetric matrix a (n, n) (a = L L^T), or null when a is not
 * positive definite.
 */
export function cholesky(a: Float64Array, n: number): Float64Array | null {
  const l = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let s = a[i * n + j];
      for (let k = 0; k < j; k++) s -= l[i * n + k] * l[j * n + k];
      if (i === j) {
        if (!(s > 0)) return null;
        l[i * n + i] = Math.sqrt(s);
      } else {
        l[i * n + j] = s / l[j * n + j];
      }
    }
  }
  return l;
}

/**
 * The upper Cholesky factor U (n, n) row-major of H^-1 (H^-1 = U^T U), from the lower Cholesky factor L of H: H^-1 =
 * L^-T L^-1, then U^T = chol(H^-1). Null when H^-1 is not numerically positive definite.
 */
function upperCholeskyOfInverse(l: Float64Array, n: number): Float64Array | null {
  // Li = L^-1, lower triangular, row by row: Li[i, j] = -(sum_{j <= k < i} L[i, k] Li[k, j]) / L[i, i] (row-major
  // sweeps only)
  const li = new Float64Array(n * n);
  const acc = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    acc.fill(0, 0, i);
    for (let k = 0; k < i; k++) {
      const a = l[i * n + k];
      if (a === 0) continue;
      const rk = k * n;
      for (let j = 0; j <= k; j++) acc[j] += a * li[rk + j];
    }
    const d = l[i * n + i];
    for (let j = 0; j < i; j++) li[i * n + j] = -acc[j] / d;
    li[i * n + i] = 1 / d;
  }
  // Hinv = Li^T Li: row k of Li adds Li[k, i] Li[k, j] to Hinv[i, j] for i, j <= k (upper half, then mirrored)
  const hinv = new Float64Array(n * n);
  for (let k = 0; k < n; k++) {
    const rk = k * n;
    for (let i = 0; i <= k; i++) {
      const a = li[rk + i];
      if (a === 0) continue;
      const ri = i * n;
      for (let j = i; j <= k; j++) hinv[ri + j] += a * li[rk + j];
    }
  }
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) hinv[j * n + i] = hinv[i * n + j];
  const c = cholesky(hinv, n);
  if (!c) return null;
  // U = C^T
  const u = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) u[j * n + i] = c[i * n + j];
  return u;
}

type GptqFactor = { u: Float64Array; order: Int32Array; diag: Float64Array };
/**
 * Factors already computed, per Gram array and options: q/k/v (and gate/up) share one input and one factor. A Gram
 * array must not change once factored.
 */
const factors = new WeakMap<Float32Array | Float64Array, Map<string, GptqFactor>>();

/**
 * The GPTQ factor of a Gram matrix: `gram` (cols, cols) row-major, symmetric (only its upper triangle is read) ->
 * {u: upper Cholesky factor of (H + damping)^-1 in `order`'s column order, order, diag: diag(H) per original column}.
 * The scale of H does not matter (the damping is relative), so mean x x^T serves as well as 2 X^T X.
 */
export function gptqFactor(gram: Float32Array | Float64Array, cols: number, opts: GptqOptions = {}): GptqFactor {
  const key = `${opts.damp ?? GPTQ_DEFAULT_DAMP}:${Boolean(opts.actOrder)}`;
  const hit = factors.get(gram)?.get(key);
  if (hit && hit.diag.length === cols) return hit;
  const f = computeFactor(gram, cols, opts);
  if (!factors.has(gram)) factors.set(gram, new Map());
  factors.get(gram)?.set(key, f);
  return f;
}

function computeFactor(gram: Float32Array | Float64Array, cols: number, opts: GptqOptions): GptqFactor {
  if (gram.length !== cols * cols) {
    throw new RangeError(`GPTQ: a Gram matrix of ${gram.length} values for ${cols} columns (needs ${cols * cols})`);
  }
  const sym = (i: number, j: number) => (i <= j ? gram[i * cols + j] : gram[j * cols + i]);
  const diag = Float64Array.from({ length: cols }, (_, c) => sym(c, c));
  for (let c = 0; c < cols; c++) {
    if (!(Number.isFinite(diag[c]) && diag[c] >= 0)) {
      throw new RangeError(`GPTQ: Gram matrix diagonal ${c} is ${diag[c]}; must be finite and >= 0`);
    }
  }
  const order = Int32Array.from({ length: cols }, (_, i) => i);
  if (opts.actOrder) order.sort((a, b) => diag[b] - diag[a] || a - b);
  const live = diag.filter((d) => d > 0);
  const mean = live.length > 0 ? live.reduce((s, d) => s + d, 0) / cols : 1;
  let damp = (opts.damp ?? GPTQ_DEFAULT_DAMP) * mean;
  if (!(damp > 0)) damp = 1e-8 * mean;
  for (let attempt = 0; attempt < 8; attempt++, damp *= 10) {
    const h = new Float64Array(cols * cols);
    for (let i = 0; i < cols; i++) {
      const oi = order[i];
      for (let j = 0; j < cols; j++) {
        const oj = order[j];
        // a dead input (diag 0) is cut off from the rest: H[c, c] = 1, nothing else
        h[i * cols + j] = diag[oi] === 0 || diag[oj] === 0 ? (i === j ? 1 : 0) : sym(oi, oj);
      }
      if (diag[oi] !== 0) h[i * cols + i] += damp;
    }
    const l = cholesky(h, cols);
    const u = l && upperCholeskyOfInverse(l, cols);
    if (u) return { u, order, diag };
  }
  throw new RangeError('GPTQ: the Gram matrix stays singular after damping (not a Gram matrix?)');
}

/**
 * 4-bit group-wise quantization of w (rows, cols) minimizing ||(W - Q) X^T|| for the calibration inputs whose Gram
 * matrix is `gram` (cols, cols), by GPTQ (see the file comment). Same layout and f16 scales as quantizeQ4.
 */
export function quantizeQ4Gptq(
  w: Float32Array,
  rows: number,
  cols: number,
  group: number,
  gram: Float32Array | Float64Array,
  opts: GptqOptions = {},
): QuantizedMatrix {
  if (w.length !== rows * cols) throw new RangeError(`GPTQ: ${w.length} values for a (${rows}, ${cols}) matrix`);
  const bad = firstNonFinite(w);
  if (bad >= 0) throw new RangeError(`GPTQ: weight ${bad} is ${w[bad]}; non-finite weights cannot be quantized`);
  if (!(Number.isInteger(group) && group >= 8 && group % 8 === 0)) {
    throw new RangeError(`q4 group size ${group} must be a positive multiple of 8`);
  }
  const { u, order, diag } = gptqFactor(gram, cols, opts);
  const importance = Float32Array.from(diag);
  const m = allocQuantized('q4', rows, cols, group);
  const mins = m.mins as Float32Array;
  const gpr = groupsPerRow(cols, group);
  const wr = new Float64Array(cols); // the row being quantized, in `order`, error-updated as it goes
  const tmpQ = new Uint8Array(group);
  const f32 = new Float32Array(1);
  /** Fits group g of row r from xs (the group's weights by original column) into the matrix's scales / mins. */
  const fitGroup = (r: number, g: number, xs: Float32Array) => {
    const c0 = g * group;
    const f = fitQ4GroupWeighted(xs, importance.subarray(c0, c0 + xs.length), tmpQ);
    m.scales[r * gpr + g] = f.scale;
    mins[r * gpr + g] = f.min;
  };
  const pos = new Int32Array(cols); // position of each original column in `order`
  for (let k = 0; k < cols; k++) pos[order[k]] = k;
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let k = 0; k < cols; k++) wr[k] = w[base + order[k]];
    if (opts.actOrder) {
      // static groups: every group fitted from the original weights before any column moves
      for (let g = 0; g < gpr; g++) fitGroup(r, g, w.slice(base + g * group, base + Math.min(cols, (g + 1) * group)));
    }
    for (let k = 0; k < cols; k++) {
      const c = order[k];
      const g = Math.floor(c / group);
      if (!opts.actOrder && c % group === 0) {
        // column order: the group starts here; fit it from its error-updated weights
        const xs = new Float32Array(Math.min(cols, c + group) - c);
        for (let i = 0; i < xs.length; i++) xs[i] = wr[pos[c + i]];
        fitGroup(r, g, xs);
      }
      const s = m.scales[r * gpr + g];
      const mn = mins[r * gpr + g];
      const v = wr[k];
      const q = s > 0 ? Math.max(0, Math.min(15, Math.round((v - mn) / s))) : 0;
      setQuantValue(m, r, c, q);
      f32[0] = s * q; // decoded as the kernels decode: f32(scale q) + min
      f32[0] += mn;
      // the error, spread over the columns not yet quantized
      const e = (v - f32[0]) / u[k * cols + k];
      const uk = k * cols;
      for (let j = k + 1; j < cols; j++) wr[j] -= e * u[uk + j];
    }
  }
  return markScaleF16(m);
}
