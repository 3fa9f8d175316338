//#if SUBGROUPS
enable subgroups;
//#endif
// x (T, cols) @ W^T (rows, cols) (+ bias) -> out (T, rows), one dispatch per weight row chunk.
// One workgroup per (output row, tile of TT tokens): its WG invocations read consecutive 8-element blocks of the
// weight row (GLU: of its two rows; coalesced 16-byte loads), each applies its blocks to the TT tokens, then the
// workgroup reduces the NACC * TT accumulators (subgroupAdd + workgroup memory with SUBGROUPS, else a
// workgroup-memory tree). For real GPUs: a matvec here runs at the memory-copy rate. Output rows are spread over
// workgroup_id x and y; token tiles over z. Fusions (NORM / GLU / ACC) and accumulators: matmul_common.wgsl.
// The SUBGROUPS path assumes subgroup k holds local invocations [k * sgSize, (k + 1) * sgSize), as Vulkan, Metal
// and D3D drivers lay out 1-D workgroups.
//#include matmul_common

const WG: u32 = $WG;
const TT: u32 = $TT;  // tokens per workgroup

var<workgroup> partial: array<f32, NACC * TT * WG>;  // (NACC * TT, WG) partial sums
//#if !SUBGROUPS
const SEG: u32 = 32u;                                 // segments per sum in the second reduction step (WG >= 32)
var<workgroup> segment: array<f32, NACC * TT * SEG>;  // (NACC * TT, SEG) segment sums
//#endif

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
//#if SUBGROUPS
  @builtin(subgroup_invocation_id) sgLane: u32,
  @builtin(subgroup_size) sgSize: u32,
//#endif
) {
  let r = wid.x + wid.y * nwg.x;  // output row within the chunk (uniform across the workgroup)
  if (r >= p.rows) { return; }
  let wr = r * WROWS;             // its first weight row within the chunk
  let t0 = wid.z * TT;
  let last = p.T - 1u;
  var acc: array<f32, NACC * TT>;
  let full = p.cols / 8u;  // full 8-element blocks; a partial last block follows when cols % 8 != 0
  for (var b = lid; b < full; b += WG) {
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
  if (full * 8u < p.cols && lid == full % WG) {
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
//#if SUBGROUPS
  for (var i = 0u; i < NACC * TT; i++) { acc[i] = subgroupAdd(acc[i]); }
  if (sgLane == 0u) {
    let sg = lid / sgSize;
    for (var i = 0u; i < NACC * TT; i++) { partial[i * WG + sg] = acc[i]; }
  }
  workgroupBarrier();
  if (lid < TT && t0 + lid < p.T) {
    let nsg = (WG + sgSize - 1u) / sgSize;
    var s: array<f32, NACC>;
    for (var k = 0u; k < NACC; k++) {
      var x = 0.0;
      for (var i = 0u; i < nsg; i++) { x += partial[(k * TT + lid) * WG + i]; }
      s[k] = x;
    }
    store(t0 + lid, r, finish(s[0], s[min(ACC_UP, NACC - 1u)], s[min(ACC_SS, NACC - 1u)]));
  }
//#else
  // Two barriers, none inside a loop (lavapipe compiles barriers in loops very slowly): SEG invocations per sum
  // each add WG / SEG partials, then one invocation per token adds its SEG segment sums of each accumulator.
  for (var i = 0u; i < NACC * TT; i++) { partial[i * WG + lid] = acc[i]; }
  workgroupBarrier();
  for (var q = lid; q < NACC * TT * SEG; q += WG) {
    let base = (q / SEG) * WG + (q % SEG) * (WG / SEG);
    var s = 0.0;
    for (var i = 0u; i < WG / SEG; i++) { s += partial[base + i]; }
    segment[q] = s;
  }
  workgroupBarrier();
  if (lid < TT && t0 + lid < p.T) {
    var s: array<f32, NACC>;
    for (var k = 0u; k < NACC; k++) {
      var x = 0.0;
      for (var i = 0u; i < SEG; i++) { x += segment[(k * TT + lid) * SEG + i]; }
      s[k] = x;
    }
    store(t0 + lid, r, finish(s[0], s[min(ACC_UP, NACC - 1u)], s[min(ACC_SS, NACC - 1u)]));
  }
//#endif
}
