// Lanes layout of the attention kernels (the fast one on CPU adapters): a workgroup of LANES invocations serves one
// (query, head); lane i folds keys i, i + LANES, ... into its own running softmax in private memory, with no
// barrier in the key loop, and the lanes merge once at the end (mergeLanes).
// The including shader provides: const LANES, const HW (head dim / 2), q: array<vec2<f32>> (query rows, f32 pairs)
// and kCache: array<u32> (f16 pairs). Values and their accumulator: lib/lanes_acc.wgsl.
//#include lib/softmax

var<private> qv: array<vec2<f32>, HW>;  // the (query, head)'s query, pre-scaled, (HW) pairs
var<private> st: Softmax = SOFTMAX_EMPTY; // this lane's running softmax

var<workgroup> laneMax: array<f32, LANES>;
var<workgroup> laneSum: array<f32, LANES>;

// Loads the query at pair offset qo of q, times scale.
fn loadQuery(qo: u32, scale: f32) {
  for (var w = 0u; w < HW; w++) { qv[w] = q[qo + w] * scale; }
}

// qv . key at word offset b of kCache.
fn scoreCached(b: u32) -> f32 {
  var s2 = vec2<f32>(0.0);
  for (var w = 0u; w < HW; w++) { s2 += qv[w] * unpack2x16float(kCacheLoad(b + w)); }
  return s2.x + s2.y;
}

// The lanes merged: the overall max and sum, and the weight of each lane's partial.
struct Lanes {
  m: f32,
  l: f32,
  w: array<f32, LANES>,
}

// Publishes this lane's (m, l), waits for all lanes and merges them. Every lane calls it (workgroup-uniform
// control flow), after publishing anything else it merges (mergeLanesAcc).
fn mergeLanes(lane: u32) -> Lanes {
  laneMax[lane] = st.m;
  laneSum[lane] = st.l;
  workgroupBarrier();
  var g: Lanes;
  g.m = NEG_BIG;
  for (var i = 0u; i < LANES; i++) { g.m = max(g.m, laneMax[i]); }
  g.l = 0.0;
  for (var i = 0u; i < LANES; i++) {
    g.w[i] = softmaxWeight(laneMax[i], g.m);
    g.l += laneSum[i] * g.w[i];
  }
  return g;
}
