// Lanes layout with values (lib/lanes.wgsl): each lane keeps a private (HW) f32-pair accumulator over full head
// dims; mergeLanesAcc + mergedAcc combine the lanes' accumulators with their softmax weights.
// The including shader provides what lib/lanes.wgsl needs plus vCache: array<u32> (f16 pairs).
//#include lib/lanes

var<private> acc: array<vec2<f32>, HW>; // sum_j exp(s_j - m) v_j over this lane's keys

var<workgroup> laneAcc: array<vec2<f32>, LANES * HW>; // (LANES, HW) pairs

// Folds the cached key and value at word offset b (kCache / vCache) into this lane's softmax, the score soft-capped
// at cap (0: none; lib/softmax.wgsl softcap).
fn foldCached(b: u32, cap: f32) {
  st = softmaxFold(st, softcap(scoreCached(b), cap));
  for (var w = 0u; w < HW; w++) { acc[w] = acc[w] * st.alpha + st.p * unpack2x16float(vCacheLoad(b + w)); }
}

// mergeLanes, publishing this lane's accumulator first.
fn mergeLanesAcc(lane: u32) -> Lanes {
  for (var w = 0u; w < HW; w++) { laneAcc[lane * HW + w] = acc[w]; }
  return mergeLanes(lane);
}

// Pair w of the merged (unnormalised) accumulator: sum over lanes of their pair w times their weight.
fn mergedAcc(g: Lanes, w: u32) -> vec2<f32> {
  var o = vec2<f32>(0.0);
  for (var i = 0u; i < LANES; i++) { o += laneAcc[i * HW + w] * g.w[i]; }
  return o;
}
