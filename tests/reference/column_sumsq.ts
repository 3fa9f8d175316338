/** Reference column sums of squares: out[c] = sum over rows t of x[t, c]^2 (f64 sums). */
export function columnSumSqRef(x: Float32Array, rows: number, n: number): Float64Array {
  const out = new Float64Array(n);
  for (let t = 0; t < rows; t++) for (let c = 0; c < n; c++) out[c] += x[t * n + c] ** 2;
  return out;
}
