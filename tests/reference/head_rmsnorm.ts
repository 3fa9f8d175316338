/**
 * Reference per-head RMSNorm (Qwen3's q/k norm): x (T, rowHeads, headDim); heads [firstHead, firstHead + nHeads) of
 * each row normalized with weight (headDim), the rest copied; f64 sums.
 */
export function headRmsNormRef(
  x: Float32Array,
  weight: Float32Array,
  a: { tokens: number; rowHeads: number; firstHead: number; nHeads: number; headDim: number; eps: number },
): Float32Array {
  const out = Float32Array.from(x);
  const d = a.headDim;
  for (let t = 0; t < a.tokens; t++) {
    for (let h = a.firstHead; h < a.firstHead + a.nHeads; h++) {
      const base = (t * a.rowHeads + h) * d;
      let s = 0;
      for (let i = 0; i < d; i++) s += x[base + i] * x[base + i];
      const inv = 1 / Math.sqrt(s / d + a.eps);
      for (let i = 0; i < d; i++) out[base + i] = x[base + i] * inv * weight[i];
    }
  }
  return out;
}
