// Paged causal attention, CPU variant (lavapipe; lib/lanes_acc.wgsl): one workgroup of LANES invocations per
// (query token, head); lane i takes keys i, i + LANES, ... into its own running softmax and full-head accumulator
// in private memory, with no barrier in the key loop; the lanes merge once at the end. K and V are f16 pairs
// unpacked to f32.
//#include attention_common
//#include lib/lanes_acc

const LANES: u32 = $LANES;

@compute @workgroup_size(LANES)
fn main(grid: Grid, @builtin(local_invocation_index) lid: u32) {
  let qr = queryOf(grid);
  if (!qr.valid) { return; }
  loadQuery(qr.qo, p.scale);
  for (var j = qr.firstKey + lid; j < qr.endKey; j += LANES) { foldCached(kvWord(qr.seq, j, qr.kvh), p.softcap); }
  let g = mergeLanesAcc(lid);
  let norm = softmaxInv(g.l);
  for (var w = lid; w < HW; w += LANES) { out[qr.qo + w] = mergedAcc(g, w) * norm; }
}
