// Paged causal attention, GPU variant: one workgroup per (query token, head); the WG threads split each tile of
// WG keys (thread i scores key tile+i), then every thread owns output dim pairs (words) lid, lid + WG, ... and
// accumulates sum_j p_j * v_j[pair] over the tile, with a running max / sum (online softmax, f32). K and V are
// f16 pairs unpacked to f32. Serves prefill and decode tokens in the same dispatch: each workgroup only needs its
// own token's sequence and position.
//#include attention_common

override WG: u32 = 64;
const DPW: u32 = $DPW; // ceil(HW / WG): output dim pairs per thread

var<workgroup> qs: array<vec2<f32>, HW>; // this token's query head, pre-scaled, (HW) pairs
var<workgroup> scores: array<f32, WG>;   // scores of the current key tile
var<workgroup> probs: array<f32, WG>;    // exp(score - running max) of the current tile

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let th = wid.y * nwg.x + wid.x; // (t - firstToken) * nHeads + h (local head)
  if (th >= p.tokens * p.nHeads) { return; }
  let tl = th / p.nHeads;
  let h = th - tl * p.nHeads;
  let t = p.firstToken + tl;
  let kvh = h / p.group;
  let qo = qOffset(t, h);
  let seq = tokenSeq[t];
  let nKeys = positions[t] + 1u;
  for (var w = lid; w < HW; w += WG) { qs[w] = q[qo + w] * p.scale; }
  workgroupBarrier();

  var m = NEG_BIG;
  var l = 0.0;
  var acc: array<vec2<f32>, DPW>;
  for (var start = 0u; start < nKeys; start += WG) {
    let j = start + lid;
    var s = NEG_BIG;
    if (j < nKeys) {
      let kb = kvOffset(seq, j, kvh);
      var dot2 = vec2<f32>(0.0);
      for (var w = 0u; w < HW; w++) { dot2 += qs[w] * unpack2x16float(kCache[kb + w]); }
      s = dot2.x + dot2.y;
    }
    scores[lid] = s;
    workgroupBarrier();
    let n = min(WG, nKeys - start);
    var tmax = NEG_BIG;
    for (var i = 0u; i < n; i++) { tmax = max(tmax, scores[i]); }
    let mNew = max(m, tmax);
    probs[lid] = exp(s - mNew); // 0 for keys past the end
    workgroupBarrier();
    let alpha = exp(m - mNew);
    l *= alpha;
    for (var c = 0u; c < DPW; c++) { acc[c] *= alpha; }
    for (var i = 0u; i < n; i++) {
      let pr = probs[i];
      l += pr;
      let vb = kvOffset(seq, start + i, kvh);
      for (var c = 0u; c < DPW; c++) {
        let w = lid + c * WG;
        if (w < HW) { acc[c] += pr * unpack2x16float(vCache[vb + w]); }
      }
    }
    m = mNew;
    workgroupBarrier();
  }
  let inv = 1.0 / l;
  for (var c = 0u; c < DPW; c++) {
    let w = lid + c * WG;
    if (w < HW) { out[qo + w] = acc[c] * inv; }
  }
}
