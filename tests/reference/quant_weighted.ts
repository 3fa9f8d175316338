/**
 * Plain-TS reference for calibrated q4 (util/quant-weighted.ts): the importance-weighted squared error of a decoded
 * matrix per scale group, and a simple weighted quantizer to compare against (weighted least squares refits of the
 * min/max range, f64 throughout, scale and min rounded to f16).
 */
import { f16ToF32, f32ToF16 } from '../../util/dtype.js';

/** (rows, ceil(cols / group)) sum over each group of a[c] (w - deq)^2, in f64. */
export function weightedGroupErrorsRef(
  w: Float32Array,
  deq: Float32Array,
  a: Float32Array,
  rows: number,
  cols: number,
  group: number,
): Float64Array {
  const gpr = Math.ceil(cols / group);
  const out = new Float64Array(rows * gpr);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++)
      out[r * gpr + Math.floor(c / group)] += a[c] * (w[r * cols + c] - deq[r * cols + c]) ** 2;
  }
  return out;
}

/**
 * A reference weighted q4 fit of one group x (n) with importances a: start at [min, max] / 15, then `refits` rounds of
 * "round to nearest, refit scale and min by weighted least squares", keeping the best. Returns the decoded group.
 */
export function weightedFitRef(x: ArrayLike<number>, a: ArrayLike<number>, refits = 8): Float64Array {
  const n = x.length;
  const h = (v: number) => f16ToF32(f32ToF16(v));
  let lo = Number.POSITIVE_INFINITY;
  let hi = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < n; i++) {
    lo = Math.min(lo, x[i]);
    hi = Math.max(hi, x[i]);
  }
  const decode = (s: number, m: number) =>
    Float64Array.from({ length: n }, (_, i) =>
      s > 0 ? s * Math.max(0, Math.min(15, Math.round((x[i] - m) / s))) + m : m,
    );
  const err = (d: Float64Array) => d.reduce((e, v, i) => e + a[i] * (v - x[i]) ** 2, 0);
  let s = h((hi - lo) / 15);
  let m = h(lo);
  let best = decode(s, m);
  for (let it = 0; it < refits && s > 0; it++) {
    const l = Array.from({ length: n }, (_, i) => Math.max(0, Math.min(15, Math.round((x[i] - m) / s))));
    let sw = 0;
    let sl = 0;
    let sll = 0;
    let sx = 0;
    let slx = 0;
    for (let i = 0; i < n; i++) {
      sw += a[i];
      sl += a[i] * l[i];
      sll += a[i] * l[i] * l[i];
      sx += a[i] * x[i];
      slx += a[i] * l[i] * x[i];
    }
    const den = sw * sll - sl * sl;
    if (!(den > 0)) break;
    const s2 = h((sw * slx - sl * sx) / den);
    const m2 = h((sll * sx - sl * slx) / den);
    if (!(s2 > 0)) break;
    const d = decode(s2, m2);
    if (err(d) < err(best)) best = d;
    s = s2;
    m = m2;
  }
  return best;
}
