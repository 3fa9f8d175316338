// Top-k decode attention, CPU variant (lavapipe): one workgroup of LANES invocations per (row, KV head, split); lane
// i folds the split's key slots i, i + LANES, ... for the G query heads of the KV head at once (each key and value
// read and unpacked once for G heads) into G private running softmaxes and accumulators, with no barrier in the key
// loop; the lanes merge once per head at the end (as lib/lanes.wgsl merges one head).
//#include sparse_decode_common
//#include lib/softmax

const LANES: u32 = $LANES;
const G: u32 = $G; // query heads per KV head

var<private> qv: array<array<vec2<f32>, HW>, G>;  // the group's queries, pre-scaled
var<private> acc: array<array<vec2<f32>, HW>, G>; // per head: sum_j exp(s_j - m) v_j over this lane's keys
var<private> st: array<Softmax, G>;               // per head: this lane's running softmax

var<workgroup> laneMax: array<f32, LANES>;
var<workgroup> laneSum: array<f32, LANES>;
var<workgroup> laneAcc: array<vec2<f32>, LANES * HW>; // (LANES, HW) pairs of one head

// Merges the lanes' softmaxes and accumulators of head g and writes its partial. Every lane calls it.
fn mergeHead(lid: u32, sp: Split, g: u32) {
  laneMax[lid] = st[g].m;
  laneSum[lid] = st[g].l;
  for (var w = 0u; w < HW; w++) { laneAcc[lid * HW + w] = acc[g][w]; }
  workgroupBarrier();
  var m = NEG_BIG;
  for (var i = 0u; i < LANES; i++) { m = max(m, laneMax[i]); }
  var wt: array<f32, LANES>;
  var l = 0.0;
  for (var i = 0u; i < LANES; i++) {
    wt[i] = softmaxWeight(laneMax[i], m);
    l += laneSum[i] * wt[i];
  }
  let pb = partialBase(sp, g);
  if (lid == 0u) {
    partials[pb] = m;
    partials[pb + 1u] = l;
  }
  for (var w = lid; w < HW; w += LANES) {
    var o = vec2<f32>(0.0);
    for (var i = 0u; i < LANES; i++) { o += laneAcc[i * HW + w] * wt[i]; }
    writePartialAcc(pb, w, o);
  }
}

@compute @workgroup_size(LANES)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let sp = splitOf(wid, nwg.y);
  for (var g = 0u; g < G; g++) {
    st[g] = SOFTMAX_EMPTY;
    let qo = qBase(sp.r, sp.h0 + g);
    for (var w = 0u; w < HW; w++) { qv[g][w] = q[qo + w] * p.scale; }
  }
  for (var t = lid; t < sp.nSlots; t += LANES) {
    let b = slotOf(sp, t);
    if (b != MASKED_KEY) { // masked (causal limit, window): not read
      var s = array<vec2<f32>, G>(); // zeroed explicitly, every key
      for (var w = 0u; w < HW; w++) {
        let k = unpack2x16float(kCacheLoad(b + w));
        for (var g = 0u; g < G; g++) { s[g] += qv[g][w] * k; }
      }
      for (var g = 0u; g < G; g++) { st[g] = softmaxFold(st[g], softcap(s[g].x + s[g].y, p.softcap)); }
      for (var w = 0u; w < HW; w++) {
        let v = unpack2x16float(vCacheLoad(b + w));
        for (var g = 0u; g < G; g++) { acc[g][w] = acc[g][w] * st[g].alpha + st[g].p * v; }
      }
    }
  }
  // One head at a time through laneAcc. With G = 1 there is no loop around the barrier: on lavapipe a barrier in a
  // loop keeps the accumulators in the coroutine's frame through the whole key loop (2x slower at head dim 48).
//#if GQA
  for (var g = 0u; g < G; g++) {
    mergeHead(lid, sp, g);
    if (g + 1u < G) { workgroupBarrier(); } // the next head reuses laneAcc
  }
//#else
  mergeHead(lid, sp, 0u);
//#endif
}
