/** Reference column Gram matrix: out[i, j] = sum over rows t of x[t, i] x[t, j] (full, symmetric; f64 sums). */
export function columnGramRef(x: Float32Array, rows: number, n: number): Float64Array {
  const out = new Float64Array(n * n);
  for (let t = 0; t < rows; t++) {
    for (let i = 0; i < n; i++) {
      const xi = x[t * n + i];
      for (let j = 0; j < n; j++) out[i * n + j] += xi * x[t * n + j];
    }
  }
  return out;
}
