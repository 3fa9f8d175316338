// Top-k decode attention, GPU variant (lib/tile.wgsl): one workgroup of WG threads per (row, query head, split);
// thread i scores slot tile + i of each tile of WG key slots of the split, then every thread accumulates p_j * v_j
// over the tile for its own output pairs lid, lid + WG, ... (online softmax, f32); thread 0 writes the split's
// (m, l) and every thread its acc pairs.
//#include sparse_decode_common
//#include lib/tile

override WG: u32 = 64;
const DPW: u32 = $DPW; // ceil(HW / WG)

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let sp = splitOf(wid, nwg.y);
  loadQueryTile(lid, qBase(sp.r, sp.h), p.scale);
  let nTiles = (sp.nSlots + WG - 1u) / WG;
  for (var tile = 0u; tile < nTiles; tile++) {
    let t = tile * WG + lid;
    var s = 0.0;
    var b = MASKED_KEY;
    if (t < sp.nSlots) {
      b = slotOf(sp, t);
      if (b != MASKED_KEY) { s = softcap(scoreTile(b), p.softcap); }
    }
    foldTile(lid, s, b);
  }
  if (lid == 0u) {
    partials[sp.pb] = st.m;
    partials[sp.pb + 1u] = st.l;
  }
  for (var c = 0u; c < DPW; c++) {
    let w = lid + c * WG;
    if (w < HW) { writePartialAcc(sp, w, acc[c]); }
  }
}
