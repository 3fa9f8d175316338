/**
 * Reference RoPE (HF rotate_half): x (T, heads, headDim) rotated by angle positions[t] * invFreq[i] for the pair
 * (i, i + headDim/2), with the product and sin/cos in f64 (invFreq's f32 values taken as exact).
 * `angleF32` rounds the product to f32 first, as a naive kernel would (used to show the tolerance is meaningful).
 */
export function ropeRef(
  x: Float32Array,
  positions: Uint32Array,
  invFreq: Float32Array,
  tokens: number,
  heads: number,
  headDim: number,
  angleF32 = false,
): Float32Array {
  const half = headDim / 2;
  const out = new Float32Array(x.length);
  for (let t = 0; t < tokens; t++) {
    for (let h = 0; h < heads; h++) {
      const base = (t * heads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const a = angleF32 ? Math.fround(positions[t] * invFreq[i]) : positions[t] * invFreq[i];
        const c = Math.cos(a);
        const s = Math.sin(a);
        const x0 = x[base + i];
        const x1 = x[base + half + i];
        out[base + i] = x0 * c - x1 * s;
        out[base + half + i] = x1 * c + x0 * s;
      }
    }
  }
  return out;
}
