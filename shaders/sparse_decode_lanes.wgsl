// Top-k decode attention, CPU variant (lavapipe; lib/lanes_acc.wgsl): one workgroup of LANES invocations per
// (row, query head, split); lane i takes the split's key slots i, i + LANES, ... into its own running softmax and
// full-head accumulator in private memory (no barrier in the key loop); the lanes merge once into the split's
// partial.
//#include sparse_decode_common
//#include lib/lanes_acc

const LANES: u32 = $LANES;

@compute @workgroup_size(LANES)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let sp = splitOf(wid, nwg.y);
  loadQuery(qBase(sp.r, sp.h), p.scale);
  for (var t = lid; t < sp.nSlots; t += LANES) {
    let b = slotOf(sp, t);
    if (b != MASKED_KEY) { foldCached(b, p.softcap); } // masked (causal limit, window): not read
  }
  let g = mergeLanesAcc(lid);
  if (lid == 0u) {
    partials[sp.pb] = g.m;
    partials[sp.pb + 1u] = g.l;
  }
  for (var w = lid; w < HW; w += LANES) { writePartialAcc(sp, w, mergedAcc(g, w)); }
}
