/**
 * Calibrated 4-bit quantization (`--quantize q4 --quantize-imatrix FILE`): the q4 layout of util/quant.ts, with each
 * group's scale and min chosen to minimize the importance-weighted squared error
 *   E = sum_c a[c] (w[c] - (scale q[c] + min))^2,   a[c] = mean of x[c]^2 at the matrix's input (model/imatrix.ts)
 * instead of the plain squared error. Since a matmul output is y = sum_c w[c] x[c], the error a group adds to y is
 * sum_c dw[c] x[c]; its expected square over the calibration text is, keeping the diagonal, sum_c dw[c]^2 E[x[c]^2]
 * = E: columns the activations drive hard must be rounded closely, columns that are nearly always zero hardly
 * matter. This is llama.cpp's importance matrix (imatrix) idea; the search is sift's own:
 *   1. the unweighted fit (util/quant.ts: min/max range and least-squares refits), scored by E;
 *   2. 21 trial grids: q = round(k (w - lo) / (hi - lo)) for k = 14, 14.1, .., 16 (the range stretched or shrunk so
 *      that outliers may clip), each with scale and min refit by weighted least squares and the values rounded again;
 *   3. from the best, weighted least-squares refits while E falls.
 * Scale and min are f16 values throughout (the GPU stores them exactly) and every candidate is scored after that
 * rounding, so the result's E is never above the unweighted fit's. A group whose importances sum to zero gets the
 * unweighted fit.
 */
import { fitQ4Group, type Q4GroupFit, type QuantizedMatrix, quantizeQ4Groups, toF16 } from './quant.js';

/** Trial grids on each side of the group's [lo, hi] range (step 2). */
const GRID_STEPS = 10;
/** Change of the levels across the range per trial grid (15 levels: 14, 14.1, .., 16 for 10 steps). */
const GRID_DELTA = 0.1;
const REFITS = 4;

/**
 * 4-bit group-wise quantization weighted by `importance` (cols) >= 0, one value per input column (the same for every
 * row). Same layout and f16 scales as quantizeQ4.
 */
export function quantizeQ4Weighted(
  w: Float32Array,
  rows: number,
  cols: number,
  group: number,
  importance: Float32Array,
): QuantizedMatrix {
  if (importance.length !== cols) {
    throw new RangeError(`quantizeQ4Weighted: ${importance.length} importances for ${cols} columns`);
  }
  for (let c = 0; c < cols; c++) {
    if (!(importance[c] >= 0 && Number.isFinite(importance[c]))) {
      throw new RangeError(`quantizeQ4Weighted: importance ${c} is ${importance[c]}; must be finite and >= 0`);
    }
  }
  return quantizeQ4Groups(w, rows, cols, group, (x, q, c0) =>
    fitQ4GroupWeighted(x, importance.subarray(c0, c0 + x.length), q),
  );
}

/** Sum of a[i] (scale q[i] + min - x[i])^2 of a group, each weight decoded in f32 as the kernels do. */
export function weightedGroupError(x: Float32Array, a: ArrayLike<number>, q: ArrayLike<number>, f: Q4GroupFit): number {
  let e = 0;
  for (let i = 0; i < x.length; i++) e += a[i] * (Math.fround(Math.fround(f.scale * q[i]) + f.min) - x[i]) ** 2;
  return e;
}

/** The weighted fit of one group x (n) with importances a (n); writes q[0..n). */
export function fitQ4GroupWeighted(x: Float32Array, a: Float32Array, q: Uint8Array): Q4GroupFit {
  const n = x.length;
  const base = fitQ4Group(x, q);
  let sw = 0;
  for (let i = 0; i < n; i++) sw += a[i];
  if (!(sw > 0)) return base;
  let lo = Number.POSITIVE_INFINITY;
  let hi = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < n; i++) {
    lo = Math.min(lo, x[i]);
    hi = Math.max(hi, x[i]);
  }
  if (!(hi > lo)) return base;
  const cur = new Uint8Array(n);
  /**
   * Rounds x to the nearest level of (s, m) into cur (optimal per element for any weights); returns E in f64 (the
   * final choice against the unweighted fit is scored as the kernels decode, in f32).
   */
  const roundAll = (s: number, m: number): number => {
    const inv = 1 / s;
    let e = 0;
    for (let i = 0; i < n; i++) {
      const v = Math.max(0, Math.min(15, Math.round((x[i] - m) * inv)));
      cur[i] = v;
      const d = s * v + m - x[i];
      e += a[i] * d * d;
    }
    return e;
  };
  /** Weighted least squares of x ~ s l + m over levels l; null where degenerate. */
  const lsq = (l: Uint8Array): Q4GroupFit | null => {
    let sl = 0;
    let sll = 0;
    let sx = 0;
    let slx = 0;
    for (let i = 0; i < n; i++) {
      const ai = a[i];
      sl += ai * l[i];
      sll += ai * l[i] * l[i];
      sx += ai * x[i];
      slx += ai * l[i] * x[i];
    }
    const den = sw * sll - sl * sl;
    if (!(den > 0)) return null;
    const scale = toF16((sw * slx - sl * sx) / den);
    const min = toF16((sll * sx - sl * slx) / den);
    return scale > 0 && Number.isFinite(scale) && Number.isFinite(min) ? { scale, min } : null;
  };
  let best = base;
  let bestE = weightedGroupError(x, a, q, base);
  const bestQ = Uint8Array.from(q.subarray(0, n));
  const trial = new Uint8Array(n);
  const consider = (f: Q4GroupFit | null): boolean => {
    if (!f) return false;
    const e = roundAll(f.scale, f.min);
    if (!(e < bestE)) return false;
    bestE = e;
    best = f;
    bestQ.set(cur);
    return true;
  };
  for (let k = -GRID_STEPS; k <= GRID_STEPS; k++) {
    const levels = 15 + GRID_DELTA * k;
    const inv = levels / (hi - lo);
    for (let i = 0; i < n; i++) trial[i] = Math.max(0, Math.min(15, Math.round(inv * (x[i] - lo))));
    consider(lsq(trial));
  }
  for (let it = 0; it < REFITS; it++) if (!consider(lsq(bestQ))) break;
  if (best === base || !(weightedGroupError(x, a, bestQ, best) < weightedGroupError(x, a, q, base))) return base;
  q.set(bestQ);
  return best;
}
