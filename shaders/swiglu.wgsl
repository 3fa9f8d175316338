// SwiGLU: out[t, i] = silu(gate[t, i]) * up[t, i], silu(x) = x / (1 + exp(-x)).
// Gate and up come either as two (T, I) buffers or, with FUSED, as one (T, 2I) buffer whose row t is
// [gate[t, 0..I) | up[t, 0..I)] (a fused gate_up projection writes that). One thread per output element.
//#include lib/grid

override WG: u32 = 256;

struct Params {
  rows: u32,   // T
  n: u32,      // I, the intermediate size
  _p0: u32,
  _p1: u32,
}

//#if FUSED
@group(0) @binding(0) var<storage, read> gateUp: array<f32>;   // (T, 2I): gate then up in each row
@group(0) @binding(1) var<storage, read_write> out: array<f32>; // (T, I)
@group(0) @binding(2) var<uniform> p: Params;
//#else
@group(0) @binding(0) var<storage, read> gate: array<f32>;     // (T, I)
@group(0) @binding(1) var<storage, read> up: array<f32>;       // (T, I)
@group(0) @binding(2) var<storage, read_write> out: array<f32>; // (T, I); must not alias gate or up
@group(0) @binding(3) var<uniform> p: Params;
//#endif

@compute @workgroup_size(WG)
fn main(grid: Grid, @builtin(local_invocation_index) lid: u32) {
  let idx = threadIndex(grid, lid, WG);
  if (idx >= p.rows * p.n) { return; }
//#if FUSED
  let t = idx / p.n;
  let i = idx - t * p.n;
  let g = gateUp[t * 2u * p.n + i];
  let u = gateUp[t * 2u * p.n + p.n + i];
//#else
  let g = gate[idx];
  let u = up[idx];
//#endif
  // exp(-g) overflows to +inf for g < -88: g / inf = -0, the right limit.
  out[idx] = g / (1.0 + exp(-g)) * u;
}
