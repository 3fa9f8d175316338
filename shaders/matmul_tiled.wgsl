// Prefill GEMM: x (T, cols) @ W^T (rows, cols) (+ bias) -> out (T, rows), one dispatch per weight row chunk, for
// T >= a token tile. Every weight element is read once per tile of TM = 64 tokens. Weights go through wBlock of
// matmul_common.wgsl (f32, f16, bf16 and whatever that include decodes), so every weight dtype takes this path; so do
// the NORM / GLU / ACC fusions of that include (`rows` counts output rows: with GLU a chunk holds 2 * rows weight
// rows, gate and up interleaved, and an output row is a pair of adjacent weight rows, never split by a tile).
// For GPUs: a workgroup owns a tile of TM = 64 tokens x TN = 64 weight rows and walks the columns KB = 32 at a time:
// the x tile (NORM: times the norm weight) and the weight tile (converted to f32) are staged in workgroup memory by
// coalesced loads, then each of the 16 x 16 threads accumulates a 4 x 4 register block (tokens x weight rows) from
// them. NORM: each staging thread also sums the squares of the raw x it loaded; the 4 threads of a token row add
// theirs through workgroup memory at the end.
// CPU adapters (lavapipe) take the per-row kernel (matmul.wgsl) for prefill instead: there every load whose address
// differs across the SIMD lanes is a gather, and that kernel measured 2-3x faster than this one and than the
// lanes-as-tokens CPU layout this file had (bench/results/PREFILL.md, "The prefill GEMM on lavapipe").
// Grid: x = weight row blocks of TN rows, y = token tiles of TM.
//#include matmul_common

const TM: u32 = 64u;   // tokens per tile
const TN: u32 = 64u;   // weight rows per tile
const KB: u32 = 32u;   // columns per step (4 blocks of 8)
const RM: u32 = 4u;    // tokens per thread
const RN: u32 = 4u;    // weight rows per thread (whole gate/up pairs)
var<workgroup> xs: array<array<f32, 33>, TM>;  // (TM, KB) x tile, +1 column against bank conflicts
var<workgroup> ws: array<array<f32, 33>, TN>;  // (TN, KB) weight tile, f32
//#if NORM
var<workgroup> ssw: array<f32, 256>;           // (TM, 4) per staging thread: its sum of x^2 over the columns
//#endif

// Stages columns [k0, k0 + KB) of the tile: thread lid loads 8-element block (lid % 4) of x row / weight row lid / 4.
// Returns the sum of squares of the raw x block it loaded (NORM), 0 otherwise.
fn stage(lid: u32, t0: u32, r0: u32, k0: u32) -> f32 {
  let i = lid / 4u;            // 0..63: token (x) and weight row (weights) of the tile
  let kb = lid % 4u;           // block within the step
  let c = k0 + kb * 8u;        // first column of the block
  let blk = c / 8u;
  var xv = Block8(vec4<f32>(0.0), vec4<f32>(0.0));
  var ss = 0.0;
  let t = t0 + i;
  if (t < p.T) {
    if (c + 8u <= p.cols) {
      xv = xBlock(t, blk);
//#if NORM
      ss = dot8(xv, xv);
      xv = mul8(xv, gBlock(blk));
//#endif
    } else {
      for (var e = 0u; e < 8u; e++) {
        if (c + e < p.cols) {
          var v = xAt(t, c + e);
//#if NORM
          ss += v * v;
          v *= gAt(c + e);
//#endif
          if (e < 4u) { xv.lo[e] = v; } else { xv.hi[e - 4u] = v; }
        }
      }
    }
  }
  // a block starting past cols is zero (x is zero there too); one that straddles cols reads stored zero padding
  var wv = Block8(vec4<f32>(0.0), vec4<f32>(0.0));
  if (r0 + i < p.rows * WROWS && c < p.cols) { wv = wBlock(r0 + i, blk); }
  for (var e = 0u; e < 4u; e++) {
    xs[i][kb * 8u + e] = xv.lo[e];
    xs[i][kb * 8u + 4u + e] = xv.hi[e];
    ws[i][kb * 8u + e] = wv.lo[e];
    ws[i][kb * 8u + 4u + e] = wv.hi[e];
  }
  return ss;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r0 = wid.x * TN;
  let t0 = wid.y * TM;
  let tm = (lid / 16u) * RM;  // this thread's first token in the tile
  let tn = (lid % 16u) * RN;  // this thread's first weight row in the tile
  var acc: array<vec4<f32>, RM>; // acc[i][j]: token tm + i, weight row tn + j
  var ssPart = 0.0;
  for (var k0 = 0u; k0 < p.cols; k0 += KB) {
    workgroupBarrier(); // the previous step is consumed
    ssPart += stage(lid, t0, r0, k0);
    workgroupBarrier();
    for (var k = 0u; k < KB; k++) {
      let wk = vec4<f32>(ws[tn][k], ws[tn + 1u][k], ws[tn + 2u][k], ws[tn + 3u][k]);
      for (var i = 0u; i < RM; i++) { acc[i] += xs[tm + i][k] * wk; }
    }
  }
  var ss: vec4<f32>; // per token of this thread: sum of x^2 over the columns (NORM)
//#if NORM
  ssw[lid] = ssPart;
  workgroupBarrier();
  for (var i = 0u; i < RM; i++) {
    let b = (tm + i) * 4u;
    ss[i] = ssw[b] + ssw[b + 1u] + ssw[b + 2u] + ssw[b + 3u];
  }
//#endif
  for (var i = 0u; i < RM; i++) {
    for (var j = 0u; j < RN; j += WROWS) {
      let r = (r0 + tn + j) / WROWS; // output row within the chunk
      if (t0 + tm + i < p.T && r < p.rows) {
        store(t0 + tm + i, r, finish(acc[i][j], acc[i][min(j + 1u, RN - 1u)], ss[i]));
      }
    }
  }
}
