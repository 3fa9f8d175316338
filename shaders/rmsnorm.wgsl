// RMSNorm over rows: out[t, i] = x[t, i] / sqrt(mean_j x[t, j]^2 + eps) * weight[i]
// ACC: out[t, i] += that instead (Gemma's post-attention / post-feedforward norm straight into the residual stream).
// One workgroup per row; threads stride over the row, then reduce in workgroup memory.

override WG: u32 = 64;

struct Params {
  rows: u32,   // T
  n: u32,      // row length
  eps: f32,
  _pad: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;          // (T, n)
@group(0) @binding(1) var<storage, read> weight: array<f32>;     // (n)
@group(0) @binding(2) var<storage, read_write> out: array<f32>;  // (T, n); may alias nothing
@group(0) @binding(3) var<uniform> p: Params;

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x;
  if (row >= p.rows) { return; }
  let base = row * p.n;
  var s = 0.0;
  for (var i = lid; i < p.n; i += WG) {
    let v = x[base + i];
    s += v * v;
  }
  partial[lid] = s;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) { partial[lid] += partial[lid + stride]; }
    workgroupBarrier();
  }
  let inv = inverseSqrt(partial[0] / f32(p.n) + p.eps);
  for (var i = lid; i < p.n; i += WG) {
//#if ACC
    out[base + i] += x[base + i] * inv * weight[i];
//#else
    out[base + i] = x[base + i] * inv * weight[i];
//#endif
  }
}
