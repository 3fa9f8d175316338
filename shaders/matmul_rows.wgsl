// Prefill GEMM for CPU adapters: x (T, cols) @ W^T (rows, cols) (+ bias) -> out (T, rows), one dispatch per weight row
// chunk, for T of a token tile or more.
// Why this shape (lavapipe, measured in bench/results/PREFILL.md, "A register tile per invocation"): llvmpipe runs the
// invocations of a workgroup as the lanes of SIMD vectors, and turns a load whose address differs across the lanes into
// one bounds-checked scalar load per lane, while a load whose address is the same in every lane is a single load,
// broadcast, and workgroup memory needs no bounds check. So:
//  - each invocation owns a register tile of 2 weight rows x TT tokens: per 4 columns it loads its 2 rows' weights
//    (the only lane-varying loads of the loop, each weight then used for TT tokens);
//  - the TT tokens' x (NORM: times the RMSNorm weight) are staged by the workgroup in workgroup memory, KC vec4 columns
//    at a time, and read there at addresses every lane shares.
// Plain: the 2 weight rows are 2 output rows. GLU: they are one output row's gate and up rows (adjacent by layout).
// Columns run over whole 8-element blocks: weight rows are stored zero-padded to them and x is staged as zeros past
// cols, so no partial block needs care. Rows past the chunk and tokens past T are clamped or zero and never stored.
// Weights, fusions, finish and store: matmul_common.wgsl (every weight dtype; f32 is read 4 columns at a time, the
// others as dequantized 8-element blocks).
// Grid: x = row pairs (plain) or output rows (GLU) / WG, y = token tiles of TT.
//#include matmul_common

override WG: u32 = 64;
const TT: u32 = $TT;  // tokens per invocation (divides WG)
const KC: u32 = $KC;  // vec4 columns staged per step (even: whole 8-element blocks)
// The weight's shape as constants (a pipeline per shape): known trip counts and strides let LLVM simplify the loop,
// 1.5-2x faster on lavapipe than reading them from the uniform.
const C4N: u32 = $C4N;         // vec4 columns over whole 8-element blocks: 2 * ceil(cols / 8)
const STRIDE_V: u32 = $STRIDEV; // = p.strideV
var<workgroup> xs: array<vec4<f32>, TT * KC>;  // (TT, KC): staged x of the tile's tokens
//#if NORM
var<workgroup> ssw: array<f32, WG>;            // per staging invocation: its token's share of sum x^2
//#endif

// x[t, 4 * c4 .. 4 * c4 + 4), zero past cols and for tokens past T.
fn xVec(t: u32, c4: u32) -> vec4<f32> {
  var v = vec4<f32>(0.0);
  if (t >= p.T) { return v; }
//#if XV4
  if (c4 * 4u < p.cols) { v = x[t * (p.cols / 4u) + c4]; }
//#else
  for (var e = 0u; e < 4u; e++) {
    let c = c4 * 4u + e;
    if (c < p.cols) { v[e] = x[t * p.cols + c]; }
  }
//#endif
  return v;
}

//#if NORM
// normW[4 * c4 .. 4 * c4 + 4), zero past cols.
fn gVec(c4: u32) -> vec4<f32> {
  var v = vec4<f32>(0.0);
//#if XV4
  if (c4 * 4u < p.cols) { v = normW[c4]; }
//#else
  for (var e = 0u; e < 4u; e++) {
    let c = c4 * 4u + e;
    if (c < p.cols) { v[e] = normW[c]; }
  }
//#endif
  return v;
}
//#endif

fn dot4fma(w: vec4<f32>, v: vec4<f32>, acc: f32) -> f32 {
  return fma(w.w, v.w, fma(w.z, v.z, fma(w.y, v.y, fma(w.x, v.x, acc))));
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = gid.x;                           // row pair (plain) or output row (GLU) within the chunk
  let wrows = p.rows * WROWS;              // weight rows of the chunk
  let wr0 = min(2u * i, wrows - 1u);       // its weight rows, clamped (rows past the chunk are never stored)
  let wr1 = min(2u * i + 1u, wrows - 1u);
  let t0 = gid.y * TT;
  // staging: invocation lid stages token sj's vec4 columns sq, sq + WG / TT, ...
  let sj = lid % TT;
  let sq = lid / TT;
  var ss = 0.0;
  var a0: array<f32, TT>;
  var a1: array<f32, TT>;
  for (var k0 = 0u; k0 < C4N; k0 += KC) {
    let kn = min(KC, C4N - k0);
    workgroupBarrier();
    for (var q = sq; q < kn; q += WG / TT) {
      var v = xVec(t0 + sj, k0 + q);
//#if NORM
      ss += dot(v, v);
      v *= gVec(k0 + q);
//#endif
      xs[sj * KC + q] = v;
    }
    workgroupBarrier();
//#if F32
    for (var q = 0u; q < kn; q++) {
      let w0 = w[wr0 * STRIDE_V + k0 + q];
      let w1 = w[wr1 * STRIDE_V + k0 + q];
      for (var j = 0u; j < TT; j++) {
        let v = xs[j * KC + q];
        a0[j] = dot4fma(w0, v, a0[j]);
        a1[j] = dot4fma(w1, v, a1[j]);
      }
    }
//#else
    for (var q = 0u; q < kn; q += 2u) {
      let b0 = wBlock(wr0, (k0 + q) / 2u);
      let b1 = wBlock(wr1, (k0 + q) / 2u);
      for (var j = 0u; j < TT; j++) {
        let v = xs[j * KC + q];
        a0[j] = dot4fma(b0.lo, v, a0[j]);
        a1[j] = dot4fma(b1.lo, v, a1[j]);
      }
      for (var j = 0u; j < TT; j++) {
        let v = xs[j * KC + q + 1u];
        a0[j] = dot4fma(b0.hi, v, a0[j]);
        a1[j] = dot4fma(b1.hi, v, a1[j]);
      }
    }
//#endif
  }
//#if NORM
  ssw[lid] = ss;
  workgroupBarrier();
//#endif
  for (var j = 0u; j < TT; j++) {
    let t = t0 + j;
    var s = 0.0;
//#if NORM
    for (var q = j; q < WG; q += TT) { s += ssw[q]; }
//#endif
    if (t < p.T) {
//#if GLU
      if (i < p.rows) { store(t, i, finish(a0[j], a1[j], s)); }
//#else
      if (2u * i < p.rows) { store(t, 2u * i, finish(a0[j], 0.0, s)); }
      if (2u * i + 1u < p.rows) { store(t, 2u * i + 1u, finish(a1[j], 0.0, s)); }
//#endif
    }
  }
}
