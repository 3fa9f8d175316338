// Final logit soft-capping (Gemma 2) in place: x[i] = cap * tanh(x[i] / cap) for i < n, the tanh of
// lib/softmax.wgsl's softcap. One thread per element on a 2-D grid of workgroups (see shaders/lib/grid.ts).
//#include lib/grid
//#include lib/softmax

override WG: u32 = 256;

struct Params {
  n: u32,     // elements: rows * vocab
  cap: f32,   // > 0
  _p0: u32,
  _p1: u32,
}

@group(0) @binding(0) var<storage, read_write> x: array<f32>;  // (rows, vocab) logits, capped in place
@group(0) @binding(1) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(grid: Grid, @builtin(local_invocation_index) lid: u32) {
  let i = threadIndex(grid, lid, WG);
  if (i >= p.n) { return; }
  x[i] = softcap(x[i], p.cap);
}
