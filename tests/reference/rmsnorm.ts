/** Reference RMSNorm: x (T, n), weight (n) -> (T, n), computed in f64. */
export function rmsnormRef(x: Float32Array, weight: Float32Array, rows: number, n: number, eps: number): Float32Array {
  const out = new Float32Array(rows * n);
  for (let t = 0; t < rows; t++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += x[t * n + i] * x[t * n + i];
    const inv = 1 / Math.sqrt(s / n + eps);
    for (let i = 0; i < n; i++) out[t * n + i] = x[t * n + i] * inv * weight[i];
  }
  return out;
}
