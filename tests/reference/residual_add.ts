/** Reference residual add: a (n) + b (n) -> (n), computed in f64 and rounded once to f32. */
export function residualAddRef(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i] + b[i];
  return out;
}
