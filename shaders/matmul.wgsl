// x (T, cols) @ W^T (rows, cols) (+ bias) -> out (T, rows), one dispatch per weight row chunk.
// One invocation per (output row, tile of TT tokens): it streams its weight row (GLU: its two rows) once in
// 8-element blocks (vec4 loads) and applies each block to the TT tokens of its tile. CPU adapters' (lavapipe) matvec
// and steps under 16 tokens; from 16 tokens on they take the register tiles of matmul_rows.wgsl. Bindings, loads and the NORM / GLU /
// ACC fusions: matmul_common.wgsl. Accumulators: acc[k * TT + j] for token slot j, k = dot, up (GLU), x^2 (NORM).
//#include matmul_common

override WG: u32 = 64;
const TT: u32 = $TT;  // tokens per invocation

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let r = gid.x;       // output row within the chunk
  if (r >= p.rows) { return; }
  let wr = r * WROWS;  // its first weight row within the chunk
  let t0 = gid.y * TT; // first token of the tile
  let last = p.T - 1u; // tokens past T are clamped (read valid x, never stored)
  var acc: array<f32, NACC * TT>;
  let full = p.cols / 8u;
  for (var b = 0u; b < full; b++) {
    let wv = wBlock(wr, b);
//#if GLU
    let wu = wBlock(wr + 1u, b);
//#endif
//#if NORM
    let gv = gBlock(b);
//#endif
    for (var j = 0u; j < TT; j++) {
      var xv = xBlock(min(t0 + j, last), b);
//#if NORM
      acc[ACC_SS * TT + j] += dot8(xv, xv);
      xv = mul8(xv, gv);
//#endif
      acc[j] += dot8(wv, xv);
//#if GLU
      acc[ACC_UP * TT + j] += dot8(wu, xv);
//#endif
    }
  }
  if (full * 8u < p.cols) {
    let wv = wBlock(wr, full);
//#if GLU
    let wu = wBlock(wr + 1u, full);
//#endif
    // The partial last block, column by column (x is never read past cols; a runtime loop compiles fast).
    for (var c = full * 8u; c < p.cols; c++) {
      let wc = blockAt(wv, c & 7u);
//#if GLU
      let uc = blockAt(wu, c & 7u);
//#endif
//#if NORM
      let gc = gAt(c);
//#endif
      for (var j = 0u; j < TT; j++) {
        var xc = xAt(min(t0 + j, last), c);
//#if NORM
        acc[ACC_SS * TT + j] += xc * xc;
        xc *= gc;
//#endif
        acc[j] += wc * xc;
//#if GLU
        acc[ACC_UP * TT + j] += uc * xc;
//#endif
      }
    }
  }
  for (var j = 0u; j < TT; j++) {
    if (t0 + j < p.T) {
      let up = acc[min(ACC_UP * TT + j, NACC * TT - 1u)];
      let ss = acc[min(ACC_SS * TT + j, NACC * TT - 1u)];
      store(t0 + j, r, finish(acc[j], up, ss));
    }
  }
}
