// Top-k decode attention, CPU variant (lavapipe): one workgroup of LANES invocations per (row, query head,
// split); lane i takes the split's key slots i, i + LANES, ... with its own running max, sum and HD accumulator in
// private memory (no barrier in the key loop); the lanes are merged once into the split's partial.
//#include sparse_decode_common

const LANES: u32 = $LANES;

var<workgroup> laneMax: array<f32, LANES>;
var<workgroup> laneSum: array<f32, LANES>;
var<workgroup> laneAcc: array<vec2<f32>, LANES * HW>; // (LANES, HW)

@compute @workgroup_size(LANES)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let rh = wid.x; // r * nHeads + h
  let split = wid.y;
  let r = rh / p.nHeads;
  let h = rh - r * p.nHeads;
  let kvh = h / p.group;
  let row = rows[r];
  let pos = row.y;
  let pl = pageList(row.z, kvh, pos);
  let i0 = min(split * p.pagesPerSplit, pl.len);
  let nSlots = (min(i0 + p.pagesPerSplit, pl.len) - i0) * p.pageSize;

  var qv: array<vec2<f32>, HW>;
  for (var w = 0u; w < HW; w++) { qv[w] = q[qBase(r, h) + w] * p.scale; }
  var acc: array<vec2<f32>, HW>;
  var m = NEG_BIG;
  var l = 0.0;
  for (var t = lid; t < nSlots; t += LANES) {
    let e = t / p.pageSize;
    let o = t - e * p.pageSize;
    let lp = pageAt(pl, i0 + e);
    if (lp * p.pageSize + o > pos) { continue; } // causal limit in the newest page
    let b = kvOffset(row.x, lp, o, kvh);
    var dot2 = vec2<f32>(0.0);
    for (var w = 0u; w < HW; w++) { dot2 += qv[w] * unpack2x16float(kCache[b + w]); }
    let s = dot2.x + dot2.y;
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
  let pb = partialBase(rh, split);
  if (lid == 0u) {
    var gl = 0.0;
    for (var i = 0u; i < LANES; i++) { gl += laneSum[i] * exp(laneMax[i] - gm); }
    partials[pb] = gm;
    partials[pb + 1u] = gl;
  }
  for (var w = lid; w < HW; w += LANES) {
    var o = vec2<f32>(0.0);
    for (var i = 0u; i < LANES; i++) { o += laneAcc[i * HW + w] * exp(laneMax[i] - gm); }
    partials[pb + 2u + 2u * w] = o.x;
    partials[pb + 3u + 2u * w] = o.y;
  }
}
