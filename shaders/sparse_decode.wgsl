// Top-k decode attention, GPU variant: one workgroup of WG threads per (row, query head, split); the threads
// split each tile of WG key slots of the split (thread i scores slot tile + i), then every thread owns output
// dim pairs lid, lid + WG, ... and accumulates p_j * v_j over the tile (online softmax, f32); thread 0 writes the
// split's (m, l) and every thread its acc pairs.
//#include sparse_decode_common

override WG: u32 = 64;
const DPW: u32 = $DPW; // ceil(HW / WG)

var<workgroup> qs: array<vec2<f32>, HW>;
var<workgroup> scores: array<f32, WG>;
var<workgroup> probs: array<f32, WG>;
var<workgroup> offs: array<u32, WG>; // cache word offset of each slot of the tile

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let rh = wid.x;
  let split = wid.y;
  let r = rh / p.nHeads;
  let h = rh - r * p.nHeads;
  let kvh = h / p.group;
  let row = rows[r];
  let pos = row.y;
  let pl = pageList(row.z, kvh, pos);
  let i0 = min(split * p.pagesPerSplit, pl.len);
  let nSlots = (min(i0 + p.pagesPerSplit, pl.len) - i0) * p.pageSize;
  for (var w = lid; w < HW; w += WG) { qs[w] = q[qBase(r, h) + w] * p.scale; }
  workgroupBarrier();

  var m = NEG_BIG;
  var l = 0.0;
  var acc: array<vec2<f32>, DPW>;
  let nTiles = (nSlots + WG - 1u) / WG;
  for (var tile = 0u; tile < nTiles; tile++) {
    let t = tile * WG + lid;
    var s = NEG_BIG;
    if (t < nSlots) {
      let e = t / p.pageSize;
      let o = t - e * p.pageSize;
      let lp = pageAt(pl, i0 + e);
      if (lp * p.pageSize + o <= pos) {
        let kb = kvOffset(row.x, lp, o, kvh);
        offs[lid] = kb;
        var dot2 = vec2<f32>(0.0);
        for (var w = 0u; w < HW; w++) { dot2 += qs[w] * unpack2x16float(kCache[kb + w]); }
        s = dot2.x + dot2.y;
      }
    }
    scores[lid] = s;
    workgroupBarrier();
    var tmax = NEG_BIG;
    for (var i = 0u; i < WG; i++) { tmax = max(tmax, scores[i]); }
    let mNew = max(m, tmax);
    var pr = 0.0;
    if (s > NEG_BIG) { pr = exp(s - mNew); }
    probs[lid] = pr;
    workgroupBarrier();
    let alpha = exp(m - mNew);
    l *= alpha;
    for (var c = 0u; c < DPW; c++) { acc[c] *= alpha; }
    for (var i = 0u; i < WG; i++) {
      let pi = probs[i];
      if (pi > 0.0) {
        l += pi;
        let vb = offs[i];
        for (var c = 0u; c < DPW; c++) {
          let w = lid + c * WG;
          if (w < HW) { acc[c] += pi * unpack2x16float(vCache[vb + w]); }
        }
      }
    }
    m = mNew;
    workgroupBarrier();
  }
  let pb = partialBase(rh, split);
  if (lid == 0u) {
    partials[pb] = m;
    partials[pb + 1u] = l;
  }
  for (var c = 0u; c < DPW; c++) {
    let w = lid + c * WG;
    if (w < HW) {
      partials[pb + 2u + 2u * w] = acc[c].x;
      partials[pb + 3u + 2u * w] = acc[c].y;
    }
  }
}
