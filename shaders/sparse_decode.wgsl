// Top-k decode attention, GPU variant: one workgroup of WG threads per (row, KV head, split); the G query heads of
// the KV head share every key and value the split reads, each read once from the cache. Per tile of BKD key slots:
//   1. threads < BKD look up the slots' word offsets (MASKED_KEY past the causal limit or the split's end);
//   2. the workgroup unpacks the tile's keys and values to f32 in workgroup memory, consecutive threads reading
//      consecutive words of a key (coalesced);
//   3. the G x BKD scores, one per thread (key rows padded to HW + 1 pairs: threads reading different keys hit
//      different banks);
//   4. thread (g, part) of the G x TPH fold threads rescales head g's running softmax to the tile's max and adds
//      p_j * v_j to its output pairs part, part + TPH, ...
// A masked slot is never read and adds nothing; every real key is added whatever its weight (a NaN stays visible).
//#include sparse_decode_common
//#include lib/softmax

override WG: u32 = 64;
const G: u32 = $G;          // query heads per KV head (<= WG)
const BKD: u32 = $BKD;      // key slots per tile
const TPH: u32 = $TPH;      // fold threads per query head: WG / G
const DPT: u32 = $DPT;      // output pairs per fold thread: ceil(HW / TPH)
const KS: u32 = HW + 1u;    // key row stride in kt (pairs)

var<workgroup> qs: array<vec2<f32>, G * HW>;   // the group's queries, pre-scaled: (G, HW) pairs
var<workgroup> kt: array<vec2<f32>, BKD * KS>; // the tile's keys, f32: (BKD, KS) pairs
var<workgroup> vt: array<vec2<f32>, BKD * HW>; // the tile's values, f32: (BKD, HW) pairs
var<workgroup> kw: array<u32, BKD>;            // word offset of each slot in the caches, or MASKED_KEY
var<workgroup> ss: array<f32, G * BKD>;        // scores: (G, BKD)

var<private> st: Softmax = SOFTMAX_EMPTY;      // this fold thread's head's running softmax
var<private> acc: array<vec2<f32>, DPT>;       // its output pairs part + c * TPH, unnormalised

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let sp = splitOf(wid, nwg.y);
  for (var e = lid; e < G * HW; e += WG) {
    let g = e / HW;
    qs[e] = q[qBase(sp.r, sp.h0 + g) + e - g * HW] * p.scale;
  }
  let g = lid / TPH;        // fold: head g (threads past G * TPH only load and score)
  let part = lid - g * TPH; // and output pairs part, part + TPH, ...
  let nTiles = (sp.nSlots + BKD - 1u) / BKD;
  for (var tile = 0u; tile < nTiles; tile++) {
    let t0 = tile * BKD;
    workgroupBarrier(); // the previous tile is consumed (the first time: qs is written)
    if (lid < BKD) {
      var b = MASKED_KEY;
      if (t0 + lid < sp.nSlots) { b = slotOf(sp, t0 + lid); }
      kw[lid] = b;
    }
    workgroupBarrier();
    for (var e = lid; e < BKD * HW; e += WG) {
      let j = e / HW;
      let w = e - j * HW;
      let b = kw[j];
      if (b != MASKED_KEY) {
        kt[j * KS + w] = unpack2x16float(kCacheLoad(b + w));
        vt[e] = unpack2x16float(vCacheLoad(b + w));
      }
    }
    workgroupBarrier();
    for (var e = lid; e < G * BKD; e += WG) {
      let gg = e / BKD;
      let j = e - gg * BKD;
      var s = NEG_BIG;
      if (kw[j] != MASKED_KEY) {
        var s2 = vec2<f32>(0.0);
        for (var w = 0u; w < HW; w++) { s2 += qs[gg * HW + w] * kt[j * KS + w]; }
        s = softcap(s2.x + s2.y, p.softcap);
      }
      ss[e] = s;
    }
    workgroupBarrier();
    if (g < G) {
      var tmax = NEG_BIG;
      for (var j = 0u; j < BKD; j++) {
        if (kw[j] != MASKED_KEY) { tmax = max(tmax, ss[g * BKD + j]); }
      }
      st = softmaxRescale(st, tmax);
      for (var c = 0u; c < DPT; c++) { acc[c] *= st.alpha; }
      for (var j = 0u; j < BKD; j++) {
        if (kw[j] != MASKED_KEY) {
          let pj = exp(ss[g * BKD + j] - st.m);
          st.l += pj;
          for (var c = 0u; c < DPT; c++) {
            let w = part + c * TPH;
            if (w < HW) { acc[c] += pj * vt[j * HW + w]; }
          }
        }
      }
    }
  }
  if (g < G) {
    let pb = partialBase(sp, g);
    if (part == 0u) {
      partials[pb] = st.m;
      partials[pb + 1u] = st.l;
    }
    for (var c = 0u; c < DPT; c++) {
      let w = part + c * TPH;
      if (w < HW) { writePartialAcc(pb, w, acc[c]); }
    }
  }
}
