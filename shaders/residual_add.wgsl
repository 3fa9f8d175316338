// Residual add in place: a[i] += b[i] for i < n.
// One thread per element on a 2-D grid of workgroups (see shaders/lib/grid.ts).
//#include lib/grid

override WG: u32 = 256;

struct Params {
  n: u32,
  _p0: u32,
  _p1: u32,
  _p2: u32,
}

@group(0) @binding(0) var<storage, read_write> a: array<f32>;  // (n) residual stream, updated in place
@group(0) @binding(1) var<storage, read> b: array<f32>;        // (n) branch output; must not alias a
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(grid: Grid, @builtin(local_invocation_index) lid: u32) {
  let i = threadIndex(grid, lid, WG);
  if (i >= p.n) { return; }
  a[i] = a[i] + b[i];
}
