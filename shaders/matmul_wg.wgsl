//#if SUBGROUPS
enable subgroups;
//#endif
// x (T, cols) @ W^T (rows, cols) (+ bias) -> out (T, rows), one dispatch per weight row chunk.
// One workgroup per (weight row, tile of TT tokens): its WG invocations read consecutive 8-element blocks of the
// row (coalesced 16-byte loads), each applies its blocks to the TT tokens, then the workgroup reduces the TT partial
// sums (subgroupAdd + workgroup memory with SUBGROUPS, else a workgroup-memory tree). For real GPUs: a matvec here
// runs at the memory-copy rate. Rows are spread over workgroup_id x and y; token tiles over z.
// The SUBGROUPS path assumes subgroup k holds local invocations [k * sgSize, (k + 1) * sgSize), as Vulkan, Metal
// and D3D drivers lay out 1-D workgroups.
//#include matmul_common

const WG: u32 = $WG;
const TT: u32 = $TT;  // tokens per workgroup

var<workgroup> partial: array<f32, TT * WG>;  // (TT, WG) partial sums
//#if !SUBGROUPS
const SEG: u32 = 32u;                          // segments per token in the second reduction step (WG >= 32)
var<workgroup> segment: array<f32, TT * SEG>;  // (TT, SEG) segment sums
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
  let r = wid.x + wid.y * nwg.x;  // row within the chunk (uniform across the workgroup)
  if (r >= p.rows) { return; }
  let t0 = wid.z * TT;
  let last = p.T - 1u;
  var acc: array<f32, TT>;
  let full = p.cols / 8u;  // full 8-element blocks; a partial last block follows when cols % 8 != 0
  for (var b = lid; b < full; b += WG) {
    let wv = wBlock(r, b);
    for (var j = 0u; j < TT; j++) { acc[j] += dot8(wv, xBlock(min(t0 + j, last), b)); }
  }
  if (full * 8u < p.cols && lid == full % WG) {
    let wv = wBlock(r, full);
    // The partial last block, column by column (x is never read past cols; a runtime loop compiles fast).
    for (var c = full * 8u; c < p.cols; c++) {
      let wc = blockAt(wv, c & 7u);
      for (var j = 0u; j < TT; j++) { acc[j] += wc * xAt(min(t0 + j, last), c); }
    }
  }
//#if SUBGROUPS
  for (var j = 0u; j < TT; j++) { acc[j] = subgroupAdd(acc[j]); }
  if (sgLane == 0u) {
    let sg = lid / sgSize;
    for (var j = 0u; j < TT; j++) { partial[j * WG + sg] = acc[j]; }
  }
  workgroupBarrier();
  if (lid < TT && t0 + lid < p.T) {
    let nsg = (WG + sgSize - 1u) / sgSize;
    var s = 0.0;
    for (var i = 0u; i < nsg; i++) { s += partial[lid * WG + i]; }
    store(t0 + lid, r, s);
  }
//#else
  // Two barriers, none inside a loop (lavapipe compiles barriers in loops very slowly): SEG invocations per token
  // each sum WG / SEG partials, then one invocation per token sums its SEG segment sums.
  for (var j = 0u; j < TT; j++) { partial[j * WG + lid] = acc[j]; }
  workgroupBarrier();
  for (var q = lid; q < TT * SEG; q += WG) {
    let base = (q / SEG) * WG + (q % SEG) * (WG / SEG);
    var s = 0.0;
    for (var i = 0u; i < WG / SEG; i++) { s += partial[base + i]; }
    segment[q] = s;
  }
  workgroupBarrier();
  if (lid < TT && t0 + lid < p.T) {
    var s = 0.0;
    for (var i = 0u; i < SEG; i++) { s += segment[lid * SEG + i]; }
    store(t0 + lid, r, s);
  }
//#endif
}
