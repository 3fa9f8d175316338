/**
 * Reference linear layer: out (T, rows) = x (T, cols) @ W^T (+ bias), W (rows, cols) row-major f32 (the decoded
 * checkpoint values), accumulated in f64.
 */
export function matmulRef(
  x: Float32Array,
  w: Float32Array,
  bias: Float32Array | undefined,
  T: number,
  rows: number,
  cols: number,
): Float32Array {
  const out = new Float32Array(T * rows);
  for (let t = 0; t < T; t++) {
    for (let r = 0; r < rows; r++) {
      let s = bias ? bias[r] : 0;
      for (let c = 0; c < cols; c++) s += x[t * cols + c] * w[r * cols + c];
      out[t * rows + r] = s;
    }
  }
  return out;
}
