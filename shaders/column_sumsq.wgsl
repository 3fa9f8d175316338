// Column sums of squares: out[c] = sum over t < rows of x[t, c]^2. Measures the activations entering a linear layer
// for its importance matrix (model/imatrix.ts: mean x^2 per input channel). One invocation per column, looping over
// the rows: neighbouring invocations read neighbouring columns, so every row is read coalesced.

override WG: u32 = 64;

struct Params {
  rows: u32, // T, rows of x summed
  n: u32,    // columns
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;          // (rows, n)
@group(0) @binding(1) var<storage, read_write> out: array<f32>;  // (n)
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c = gid.x;
  if (c >= p.n) { return; }
  var s = 0.0;
  for (var t = 0u; t < p.rows; t++) {
    let v = x[t * p.n + c];
    s = fma(v, v, s);
  }
  out[c] = s;
}
