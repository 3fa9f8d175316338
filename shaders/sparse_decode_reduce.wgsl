// Flash-decoding reduce: out[r, h, d] = sum_s acc_s[d] * exp(m_s - M) / sum_s l_s * exp(m_s - M), M = max_s m_s,
// over the numSplits partials of (r, h) written by sparse_decode(_lanes), merged as lib/softmax.wgsl says: an empty
// split (m = NEG_BIG, l = 0, acc = 0) adds nothing, and a row whose splits are all empty gives 0.
// SPLITS_ARG: the step's split count is read from the indirect dispatch arguments of sparse_decode (args[splitsWord],
// the grid's y) and `numSplits` is only the partials' stride.
// One thread per (r, h, d) on a 2-D grid of workgroups. Local head h of row r is written to out row head
// qHeadOffset + h of rows of qRowHeads heads; the other heads of out are untouched.
//#include lib/grid
//#include lib/softmax

override WG: u32 = 64;

struct Params {
  count: u32,     // numRows * nHeads * headDim
  headDim: u32,
  numSplits: u32,    // splits per (row, head) in partials (SPLITS_ARG: the stride; the count is in args)
  nHeads: u32,       // query heads processed
  qRowHeads: u32,    // query heads per out row
  qHeadOffset: u32,  // first out head written
  splitsWord: u32,   // SPLITS_ARG: word of args holding this step's split count
  _p1: u32,
}

@group(0) @binding(0) var<storage, read> partials: array<f32>;   // (numRows, nHeads, numSplits, 2 + headDim)
@group(0) @binding(1) var<storage, read_write> out: array<f32>;  // (numRows, qRowHeads, headDim)
@group(0) @binding(2) var<uniform> p: Params;
//#if SPLITS_ARG
@group(0) @binding(3) var<storage, read> args: array<u32>;      // indirect dispatch arguments of sparse_decode
//#endif

@compute @workgroup_size(WG)
fn main(grid: Grid, @builtin(local_invocation_index) lid: u32) {
  let idx = threadIndex(grid, lid, WG);
  if (idx >= p.count) { return; }
  let rh = idx / p.headDim;
  let d = idx - rh * p.headDim;
  let stride = 2u + p.headDim;
  let b = rh * p.numSplits * stride;
//#if SPLITS_ARG
  let ns = min(args[p.splitsWord], p.numSplits);
//#else
  let ns = p.numSplits;
//#endif
  var mx = NEG_BIG;
  for (var s = 0u; s < ns; s++) { mx = max(mx, partials[b + s * stride]); }
  var l = 0.0;
  var o = 0.0;
  for (var s = 0u; s < ns; s++) {
    let sb = b + s * stride;
    let w = softmaxWeight(partials[sb], mx);
    l += partials[sb + 1u] * w;
    o += partials[sb + 2u + d] * w;
  }
  let r = rh / p.nHeads;
  let h = rh - r * p.nHeads;
  out[(r * p.qRowHeads + p.qHeadOffset + h) * p.headDim + d] = o * softmaxInv(l);
}
