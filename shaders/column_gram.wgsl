// Gram matrix of the columns: out[i, j] = sum over t < rows of x[t, i] * x[t, j] (or out[i, j] += that sum when
// p.accumulate is 1, to sum a calibration text chunk by chunk on the GPU), upper triangle (j >= i) only; entries
// below the diagonal are not written. Measures the activations entering a linear layer for GPTQ
// (model/gram.ts: the layer's Hessian H = 2 X^T X). Each invocation owns a 4x4 tile of out in registers and loops
// over the rows: per row it loads 4 values of column block i and 4 of column block j (neighbouring invocations read
// neighbouring columns, so a row is read coalesced) for 16 fmas. Tiles wholly below the diagonal return at once.
// Indices past n are clamped for the loads and never written, so n need not be a multiple of 4.

override WG: u32 = 8;

struct Params {
  rows: u32, // T, rows of x summed
  n: u32,    // columns
  accumulate: u32, // 1: add to out, 0: overwrite it
  _pad0: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;          // (rows, n)
@group(0) @binding(1) var<storage, read_write> out: array<f32>;  // (n, n), upper triangle written
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(WG, WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let n = p.n;
  let j0 = gid.x * 4u;
  let i0 = gid.y * 4u;
  if (i0 >= n || j0 >= n || j0 + 3u < i0) { return; }
  let last = n - 1u;
  let ic = min(vec4<u32>(i0, i0 + 1u, i0 + 2u, i0 + 3u), vec4<u32>(last));
  let jc = min(vec4<u32>(j0, j0 + 1u, j0 + 2u, j0 + 3u), vec4<u32>(last));
  var a0 = vec4<f32>(0.0);
  var a1 = vec4<f32>(0.0);
  var a2 = vec4<f32>(0.0);
  var a3 = vec4<f32>(0.0);
  for (var t = 0u; t < p.rows; t++) {
    let r = t * n;
    let xi = vec4<f32>(x[r + ic.x], x[r + ic.y], x[r + ic.z], x[r + ic.w]);
    let xj = vec4<f32>(x[r + jc.x], x[r + jc.y], x[r + jc.z], x[r + jc.w]);
    a0 = fma(vec4<f32>(xi.x), xj, a0);
    a1 = fma(vec4<f32>(xi.y), xj, a1);
    a2 = fma(vec4<f32>(xi.z), xj, a2);
    a3 = fma(vec4<f32>(xi.w), xj, a3);
  }
  let acc = array<vec4<f32>, 4>(a0, a1, a2, a3);
  for (var a = 0u; a < 4u; a++) {
    let i = i0 + a;
    if (i >= n) { break; }
    for (var b = 0u; b < 4u; b++) {
      let j = j0 + b;
      if (j < n && j >= i) {
        let o = i * n + j;
        out[o] = select(acc[a][b], out[o] + acc[a][b], p.accumulate != 0u);
      }
    }
  }
}
