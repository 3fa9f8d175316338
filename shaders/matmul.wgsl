// x (T, cols) @ W^T (rows, cols) (+ bias) -> out (T, rows), one dispatch per weight row chunk.
// One invocation per (weight row, tile of TT tokens): it streams its row once in 8-element blocks (vec4 loads) and
// applies each block to the TT tokens of its tile. Fastest on CPU adapters (lavapipe), whose invocations are SIMD
// lanes and whose barriers are costly. Bindings and loads: matmul_common.wgsl.
//#include matmul_common

override WG: u32 = 64;
const TT: u32 = $TT;  // tokens per invocation

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let r = gid.x;       // row within the chunk
  if (r >= p.rows) { return; }
  let t0 = gid.y * TT; // first token of the tile
  let last = p.T - 1u; // tokens past T are clamped (read valid x, never stored)
  var acc: array<f32, TT>;
  let full = p.cols / 8u;
  for (var b = 0u; b < full; b++) {
    let wv = wBlock(r, b);
    for (var j = 0u; j < TT; j++) {
      acc[j] += dot8(wv, xBlock(min(t0 + j, last), b));
    }
  }
  if (full * 8u < p.cols) {
    let wv = wBlock(r, full);
    // The partial last block, column by column (x is never read past cols; a runtime loop compiles fast).
    for (var c = full * 8u; c < p.cols; c++) {
      let wc = blockAt(wv, c & 7u);
      for (var j = 0u; j < TT; j++) { acc[j] += wc * xAt(min(t0 + j, last), c); }
    }
  }
  for (var j = 0u; j < TT; j++) {
    if (t0 + j < p.T) { store(t0 + j, r, acc[j]); }
  }
}
