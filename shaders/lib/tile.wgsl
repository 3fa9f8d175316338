// Workgroup layout of the attention kernels (GPUs): a workgroup of WG threads serves one (query, head); each tile
// of WG key slots is scored one slot per thread, then every thread accumulates the tile's values for its own
// output pairs lid, lid + WG, ... (DPW of them), with one running softmax per workgroup (every thread holds the
// same copy).
// The including shader provides: override WG, const HW (head dim / 2), const DPW = ceil(HW / WG),
// q: array<vec2<f32>> (query rows, f32 pairs), kCache and vCache: array<u32> (f16 pairs).
//#include lib/softmax

var<workgroup> qs: array<vec2<f32>, HW>;   // the (query, head)'s query, pre-scaled, (HW) pairs
var<workgroup> tileScore: array<f32, WG>;  // scores of the current tile
var<workgroup> tileProb: array<f32, WG>;   // their weights under the running max
var<workgroup> tileWord: array<u32, WG>;   // word offset of each slot's value in vCache, or MASKED_KEY

var<private> st: Softmax = SOFTMAX_EMPTY;  // the running softmax
var<private> acc: array<vec2<f32>, DPW>;   // this thread's output pairs lid + c * WG, unnormalised

// Loads the query at pair offset qo of q, times scale, into workgroup memory (all threads call it).
fn loadQueryTile(lid: u32, qo: u32, scale: f32) {
  for (var w = lid; w < HW; w += WG) { qs[w] = q[qo + w] * scale; }
  workgroupBarrier();
}

// qs . key at word offset b of kCache.
fn scoreTile(b: u32) -> f32 {
  var s2 = vec2<f32>(0.0);
  for (var w = 0u; w < HW; w++) { s2 += qs[w] * unpack2x16float(kCacheLoad(b + w)); }
  return s2.x + s2.y;
}

// Folds one tile: thread lid gives its slot's score s and value offset vb, or vb = MASKED_KEY for a masked slot
// (its score is then ignored). All threads call it (workgroup-uniform control flow). A masked slot's value is never
// read and it adds nothing; every real key is added whatever its weight (a NaN stays visible).
fn foldTile(lid: u32, s: f32, vb: u32) {
  tileScore[lid] = select(s, NEG_BIG, vb == MASKED_KEY);
  tileWord[lid] = vb;
  workgroupBarrier();
  var tmax = NEG_BIG;
  for (var i = 0u; i < WG; i++) { tmax = max(tmax, tileScore[i]); }
  st = softmaxRescale(st, tmax);
  tileProb[lid] = exp(tileScore[lid] - st.m);
  workgroupBarrier();
  for (var c = 0u; c < DPW; c++) { acc[c] *= st.alpha; }
  for (var i = 0u; i < WG; i++) {
    let vb = tileWord[i];
    if (vb != MASKED_KEY) {
      let pr = tileProb[i];
      st.l += pr;
      for (var c = 0u; c < DPW; c++) {
        let w = lid + c * WG;
        if (w < HW) { acc[c] += pr * unpack2x16float(vCacheLoad(vb + w)); }
      }
    }
  }
  workgroupBarrier();
}
