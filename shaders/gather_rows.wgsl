// Row gather: out[r, i] = x[rowIds[r], i]. Picks the hidden states whose logits are wanted
// (e.g. the last prompt token of each sequence) so lm_head runs on R rows, not on every prefill token.

override WG: u32 = 64;

struct Params {
  rows: u32,    // R, rows to gather
  n: u32,       // row length
  srcRows: u32, // rows in x (ids >= srcRows write zeros)
  _pad: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;          // (srcRows, n)
@group(0) @binding(1) var<storage, read> rowIds: array<u32>;     // (R)
@group(0) @binding(2) var<storage, read_write> out: array<f32>;  // (R, n)
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = wid.x;
  if (r >= p.rows) { return; }
  let src = rowIds[r];
  for (var i = lid; i < p.n; i += WG) {
    out[r * p.n + i] = select(0.0, x[src * p.n + i], src < p.srcRows);
  }
}
