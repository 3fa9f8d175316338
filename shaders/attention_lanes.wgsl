// Paged causal attention, CPU variant (lavapipe): one workgroup of LANES invocations per (query token, head);
// lane i takes keys i, i + LANES, ... and keeps its own running max, sum and full (HD, as HW pairs) accumulator in
// private memory, with no barrier in the key loop; the lanes' partial softmaxes are merged once at the end.
// K and V are f16 pairs unpacked to f32.
//#include attention_common

const LANES: u32 = $LANES;

var<workgroup> laneMax: array<f32, LANES>;
var<workgroup> laneSum: array<f32, LANES>;
var<workgroup> laneAcc: array<vec2<f32>, LANES * HW>; // (LANES, HW) pairs

@compute @workgroup_size(LANES)
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

  var qv: array<vec2<f32>, HW>;
  for (var w = 0u; w < HW; w++) { qv[w] = q[qo + w] * p.scale; }
  var acc: array<vec2<f32>, HW>;
  var m = NEG_BIG;
  var l = 0.0;
  for (var j = lid; j < nKeys; j += LANES) {
    let b = kvOffset(seq, j, kvh);
    var s2 = vec2<f32>(0.0);
    for (var w = 0u; w < HW; w++) { s2 += qv[w] * unpack2x16float(kCache[b + w]); }
    let s = s2.x + s2.y;
    let mNew = max(m, s);
    let alpha = exp(m - mNew);
    let pr = exp(s - mNew);
    l = l * alpha + pr;
    for (var w = 0u; w < HW; w++) { acc[w] = acc[w] * alpha + pr * unpack2x16float(vCache[b + w]); }
    m = mNew;
  }
  laneMax[lid] = m;
  laneSum[lid] = l;
  for (var w = 0u; w < HW; w++) { laneAcc[lid * HW + w] = acc[w]; }
  workgroupBarrier();

  var gm = NEG_BIG;
  for (var i = 0u; i < LANES; i++) { gm = max(gm, laneMax[i]); }
  var gl = 0.0;
  for (var i = 0u; i < LANES; i++) { gl += laneSum[i] * exp(laneMax[i] - gm); }
  let inv = 1.0 / gl;
  for (var w = lid; w < HW; w += LANES) {
    var o = vec2<f32>(0.0);
    for (var i = 0u; i < LANES; i++) { o += laneAcc[i * HW + w] * exp(laneMax[i] - gm); }
    out[qo + w] = o * inv;
  }
}
