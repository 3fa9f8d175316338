// Paged causal attention, CPU variant (lavapipe): one workgroup of LANES invocations per (query token, head);
// lane i takes keys i, i + LANES, ... and keeps its own running max, sum and full (HD) accumulator in private
// memory, with no barrier in the key loop; the lanes' partial softmaxes are merged once at the end.
//#include attention_common

const LANES: u32 = $LANES;

var<workgroup> laneMax: array<f32, LANES>;
var<workgroup> laneSum: array<f32, LANES>;
var<workgroup> laneAcc: array<f32, LANES * HD>; // (LANES, HD)

@compute @workgroup_size(LANES)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let th = wid.y * nwg.x + wid.x; // t * nHeads + h
  if (th >= p.tokens * p.nHeads) { return; }
  let t = th / p.nHeads;
  let h = th - t * p.nHeads;
  let kvh = h / p.group;
  let seq = tokenSeq[t];
  let nKeys = positions[t] + 1u;

  var qv: array<f32, HD>;
  for (var d = 0u; d < HD; d++) { qv[d] = q[th * HD + d] * p.scale; }
  var acc: array<f32, HD>;
  var m = NEG_BIG;
  var l = 0.0;
  for (var j = lid; j < nKeys; j += LANES) {
    let b = kvOffset(seq, j, kvh);
    var s = 0.0;
    for (var d = 0u; d < HD; d++) { s += qv[d] * kCache[b + d]; }
    let mNew = max(m, s);
    let alpha = exp(m - mNew);
    let pr = exp(s - mNew);
    l = l * alpha + pr;
    for (var d = 0u; d < HD; d++) { acc[d] = acc[d] * alpha + pr * vCache[b + d]; }
    m = mNew;
  }
  laneMax[lid] = m;
  laneSum[lid] = l;
  for (var d = 0u; d < HD; d++) { laneAcc[lid * HD + d] = acc[d]; }
  workgroupBarrier();

  var gm = NEG_BIG;
  for (var i = 0u; i < LANES; i++) { gm = max(gm, laneMax[i]); }
  var gl = 0.0;
  for (var i = 0u; i < LANES; i++) { gl += laneSum[i] * exp(laneMax[i] - gm); }
  let inv = 1.0 / gl;
  for (var d = lid; d < HD; d += LANES) {
    var o = 0.0;
    for (var i = 0u; i < LANES; i++) { o += laneAcc[i * HD + d] * exp(laneMax[i] - gm); }
    out[th * HD + d] = o * inv;
  }
}
