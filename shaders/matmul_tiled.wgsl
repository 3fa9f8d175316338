// Prefill GEMM: x (T, cols) @ W^T (rows, cols) (+ bias) -> out (T, rows), one dispatch per weight row chunk, for
// T >= a token tile. Every weight element is read once per tile of TM (>= 64) tokens. Weights go through wBlock of
// matmul_common.wgsl (f32, f16, bf16 and whatever that include decodes), so every weight dtype takes this path.
// Two layouts (SHARED):
//   SHARED (GPUs): a workgroup owns a tile of TM = 64 tokens x TN = 64 rows and walks the columns KB = 32 at a
//     time: the x tile and the weight tile (converted to f32) are staged in workgroup memory by coalesced loads,
//     then each of the 16 x 16 threads accumulates a 4 x 4 register block (tokens x rows) from them.
//   otherwise (CPU adapters): one invocation per (token, block of RB rows), TM = 64 tokens per workgroup: the SIMD
//     lanes of the CPU are tokens, and every lane reads the same weight block (workgroup-uniform address, loaded
//     once and broadcast), applied to its token's x block; RB accumulators per lane, no workgroup memory, no barrier.
// Grid: x = row blocks (of TN or RB rows), y = token tiles of TM.
//#include matmul_common

//#if SHARED
const TM: u32 = 64u;   // tokens per tile
const TN: u32 = 64u;   // rows per tile
const KB: u32 = 32u;   // columns per step (4 blocks of 8)
const RM: u32 = 4u;    // tokens per thread
const RN: u32 = 4u;    // rows per thread
var<workgroup> xs: array<array<f32, 33>, TM>;  // (TM, KB) x tile, +1 column against bank conflicts
var<workgroup> ws: array<array<f32, 33>, TN>;  // (TN, KB) weight tile, f32

// Stages columns [k0, k0 + KB) of the tile: thread lid loads 8-element block (lid % 4) of x row / weight row lid / 4.
fn stage(lid: u32, t0: u32, r0: u32, k0: u32) {
  let i = lid / 4u;            // 0..63: token (x) and row (weights) of the tile
  let kb = lid % 4u;           // block within the step
  let c = k0 + kb * 8u;        // first column of the block
  let blk = c / 8u;
  var xv = Block8(vec4<f32>(0.0), vec4<f32>(0.0));
  let t = t0 + i;
  if (t < p.T) {
    if (c + 8u <= p.cols) {
      xv = xBlock(t, blk);
    } else {
      for (var e = 0u; e < 8u; e++) {
        if (c + e < p.cols) {
          if (e < 4u) { xv.lo[e] = xAt(t, c + e); } else { xv.hi[e - 4u] = xAt(t, c + e); }
        }
      }
    }
  }
  // a block starting past cols is zero (x is zero there too); one that straddles cols reads stored zero padding
  var wv = Block8(vec4<f32>(0.0), vec4<f32>(0.0));
  if (r0 + i < p.rows && c < p.cols) { wv = wBlock(r0 + i, blk); }
  for (var e = 0u; e < 4u; e++) {
    xs[i][kb * 8u + e] = xv.lo[e];
    xs[i][kb * 8u + 4u + e] = xv.hi[e];
    ws[i][kb * 8u + e] = wv.lo[e];
    ws[i][kb * 8u + 4u + e] = wv.hi[e];
  }
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r0 = wid.x * TN;
  let t0 = wid.y * TM;
  let tm = (lid / 16u) * RM;  // this thread's first token in the tile
  let tn = (lid % 16u) * RN;  // this thread's first row in the tile
  var acc: array<vec4<f32>, RM>; // acc[i][j]: token tm + i, row tn + j
  for (var k0 = 0u; k0 < p.cols; k0 += KB) {
    workgroupBarrier(); // the previous step is consumed
    stage(lid, t0, r0, k0);
    workgroupBarrier();
    for (var k = 0u; k < KB; k++) {
      let wk = vec4<f32>(ws[tn][k], ws[tn + 1u][k], ws[tn + 2u][k], ws[tn + 3u][k]);
      for (var i = 0u; i < RM; i++) { acc[i] += xs[tm + i][k] * wk; }
    }
  }
  for (var i = 0u; i < RM; i++) {
    for (var j = 0u; j < RN; j++) {
      if (t0 + tm + i < p.T && r0 + tn + j < p.rows) { store(t0 + tm + i, r0 + tn + j, acc[i][j]); }
    }
  }
}
//#else
const TM: u32 = 64u;   // tokens per workgroup (one per invocation)
const RB: u32 = $RB;   // rows per invocation

@compute @workgroup_size(TM)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r0 = wid.x * RB;
  let t = wid.y * TM + lid;
  let tr = min(t, p.T - 1u);   // tokens past T read a valid x row, never store
  let last = p.rows - 1u;      // rows past the chunk read its last row, never store
  var acc: array<f32, RB>;
  let full = p.cols / 8u;
  for (var b = 0u; b < full; b++) {
    let xv = xBlock(tr, b);
    for (var i = 0u; i < RB; i++) { acc[i] += dot8(wBlock(min(r0 + i, last), b), xv); }
  }
  if (full * 8u < p.cols) {
    for (var i = 0u; i < RB; i++) {
      let wv = wBlock(min(r0 + i, last), full);
      for (var c = full * 8u; c < p.cols; c++) { acc[i] += blockAt(wv, c & 7u) * xAt(tr, c); }
    }
  }
  if (t < p.T) {
    for (var i = 0u; i < RB; i++) {
      if (r0 + i < p.rows) { store(t, r0 + i, acc[i]); }
    }
  }
}
//#endif
