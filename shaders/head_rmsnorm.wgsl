// Per-head RMSNorm in place (Qwen3's q_norm / k_norm, applied before RoPE): for every token t and every head h in
// [firstHead, firstHead + nHeads) of rows of rowHeads heads,
//   x[t, h, i] = x[t, h, i] / sqrt(mean_j x[t, h, j]^2 + eps) * weight[i]
// rowHeads lets one kernel serve a q (T, H, headDim) buffer and the q or k part of a fused (T, H + 2 KV, headDim) one.
// One workgroup per (t, h) on a 2-D grid (x * y >= T * nHeads); threads stride over the head, then reduce in
// workgroup memory.

override WG: u32 = 64;

struct Params {
  tokens: u32,    // T
  rowHeads: u32,  // heads per token row of x
  firstHead: u32, // first head normalized in each row
  nHeads: u32,    // heads normalized per row
  headDim: u32,
  eps: f32,
  _p0: u32,
  _p1: u32,
}

@group(0) @binding(0) var<storage, read_write> x: array<f32>;  // (T, rowHeads, headDim)
@group(0) @binding(1) var<storage, read> weight: array<f32>;   // (headDim)
@group(0) @binding(2) var<uniform> p: Params;

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let item = wid.y * nwg.x + wid.x; // (t, h) pair
  if (item >= p.tokens * p.nHeads) { return; }
  let t = item / p.nHeads;
  let h = p.firstHead + item % p.nHeads;
  let base = (t * p.rowHeads + h) * p.headDim;
  var s = 0.0;
  for (var i = lid; i < p.headDim; i += WG) {
    let v = x[base + i];
    s += v * v;
  }
  partial[lid] = s;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) { partial[lid] += partial[lid + stride]; }
    workgroupBarrier();
  }
  let inv = inverseSqrt(partial[0] / f32(p.headDim) + p.eps);
  for (var i = lid; i < p.headDim; i += WG) {
    x[base + i] = x[base + i] * inv * weight[i];
  }
}
