/** Reference SwiGLU: silu(gate (T, I)) * up (T, I) -> (T, I), computed in f64. */
export function swigluRef(gate: Float32Array, up: Float32Array): Float32Array {
  const out = new Float32Array(gate.length);
  for (let i = 0; i < gate.length; i++) {
    const g = gate[i];
    out[i] = (g / (1 + Math.exp(-g))) * up[i];
  }
  return out;
}

/** Reference GeGLU (Gemma): gelu_tanh(gate (T, I)) * up (T, I) -> (T, I), computed in f64. */
export function gegluRef(gate: Float32Array, up: Float32Array): Float32Array {
  const out = new Float32Array(gate.length);
  for (let i = 0; i < gate.length; i++) {
    const g = gate[i];
    out[i] = 0.5 * g * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (g + 0.044715 * g * g * g))) * up[i];
  }
  return out;
}

/** Splits a fused (T, 2I) gate_up buffer into gate (T, I) and up (T, I). */
export function splitGateUp(gateUp: Float32Array, rows: number, n: number): { gate: Float32Array; up: Float32Array } {
  const gate = new Float32Array(rows * n);
  const up = new Float32Array(rows * n);
  for (let t = 0; t < rows; t++) {
    gate.set(gateUp.subarray(t * 2 * n, t * 2 * n + n), t * n);
    up.set(gateUp.subarray(t * 2 * n + n, (t + 1) * 2 * n), t * n);
  }
  return { gate, up };
}
