// Paged causal attention, GPU variant (lib/tile.wgsl): one workgroup of WG threads per (query token, head); thread
// i scores key tile + i of each tile of WG keys, then every thread accumulates its own output pairs lid, lid + WG,
// ... over the tile, with one running softmax (f32). K and V are f16 pairs unpacked to f32. Serves prefill and
// decode tokens in the same dispatch: each workgroup only needs its own token's sequence and position.
//#include attention_common
//#include lib/tile

override WG: u32 = 64;
const DPW: u32 = $DPW; // ceil(HW / WG): output pairs per thread

@compute @workgroup_size(WG)
fn main(grid: Grid, @builtin(local_invocation_index) lid: u32) {
  let qr = queryOf(grid);
  if (!qr.valid) { return; }
  loadQueryTile(lid, qr.qo, p.scale);
  for (var start = qr.firstKey; start < qr.endKey; start += WG) {
    let j = start + lid;
    var s = 0.0;
    var b = MASKED_KEY;
    if (j < qr.endKey) {
      b = kvWord(qr.seq, j, qr.kvh);
      s = softcap(scoreTile(b), p.softcap);
    }
    foldTile(lid, s, b);
  }
  let norm = softmaxInv(st.l);
  for (var c = 0u; c < DPW; c++) {
    let w = lid + c * WG;
    if (w < HW) { out[qr.qo + w] = acc[c] * norm; }
  }
}
