// Hierarchical page selection, top-k pass of one level: one workgroup per (reselecting row, KV head) over the item
// keys hier_score.wgsl wrote. Row r = selectRows[wid.x]: P pages, K = min(rows[r].w, P, maxSelected) pages kept.
// Items: n = ceil(P / blockPages) at the top level (fan == 0), else candIn[0] * fan (the level above's kept blocks'
// children); valid items have key != 0. Kept: C = min(K + margin, valid, candStride - 1) items on a coarse level
// (written to out as a candidate list: out[0] = C, then the kept block ids), C = min(K, valid) on the page level
// (FINAL: out = selected[slot, h, 0..C), counts[slot, h] = C). Dense rows (K >= P): FINAL keeps pages 0..P-1
// without reading keys, a coarse level writes nothing (the scoring passes skip dense rows).
// Top-k as page_select.wgsl: an MSB-first radix select finds the C-th largest key in 32 counting rounds over the
// keys (read from the scratch, not copied: their count is not bounded by workgroup memory), then a prefix sum over
// threads' contiguous chunks breaks ties by item index and compacts the kept ids in item order (ascending blocks).

override WG: u32 = 64;

struct Params {
  numSelect: u32,   // rows reselecting this step (grid x)
  nKvHeads: u32,    // KV heads (grid y)
  pageSize: u32,    // tokens per physical page
  maxSelected: u32, // selection row length
  itemStride: u32,  // items per (select index, KV head) in keys / ids
  candStride: u32,  // words per (select index, KV head) of a candidate list
  fan: u32,         // children per candidate of the level above (0: top level)
  blockPages: u32,  // pages per block of this level
  margin: u32,      // candidates kept beyond K on a coarse level
  _p0: u32,
  _p1: u32,
  _p2: u32,
}

@group(0) @binding(0) var<storage, read> keys: array<u32>;          // (numSelect, nKv, itemStride) score keys
@group(0) @binding(1) var<storage, read> ids: array<u32>;           // (numSelect, nKv, itemStride) block ids
@group(0) @binding(2) var<storage, read> rows: array<vec4<u32>>;    // (numRows) (blockRow, position, slot, pages kept)
@group(0) @binding(3) var<storage, read> selectRows: array<u32>;    // (numSelect) rows that reselect this step
@group(0) @binding(4) var<storage, read> candIn: array<u32>;        // (numSelect, nKv, candStride) the level above's
//#if FINAL
@group(0) @binding(5) var<storage, read_write> out: array<u32>;     // (numSlots, nKv, maxSelected) selected pages
@group(0) @binding(6) var<storage, read_write> counts: array<u32>;  // (numSlots, nKv) pages kept
//#else
@group(0) @binding(5) var<storage, read_write> out: array<u32>;     // (numSelect, nKv, candStride) candidates kept
//#endif
@group(0) @binding(7) var<uniform> p: Params;

var<workgroup> part: array<u32, WG>;
var<workgroup> part2: array<u32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let s = wid.x;
  let kvh = wid.y;
  let row = rows[selectRows[s]];
  let len = row.y + 1u;
  let P = (len + p.pageSize - 1u) / p.pageSize;
  let K = min(row.w, min(P, p.maxSelected));
  let sh = s * p.nKvHeads + kvh;
//#if FINAL
  let base = (row.z * p.nKvHeads + kvh) * p.maxSelected;
  if (K >= P) {
    for (var i = lid; i < K; i += WG) { out[base + i] = i; }
    if (lid == 0u) { counts[row.z * p.nKvHeads + kvh] = K; }
    return;
  }
//#else
  let base = sh * p.candStride + 1u;
  if (K >= P) { return; }
//#endif
  var n = (P + p.blockPages - 1u) / p.blockPages;
  if (p.fan != 0u) { n = candIn[sh * p.candStride] * p.fan; }
  n = min(n, p.itemStride);
  let kb = sh * p.itemStride;
  let chunk = (n + WG - 1u) / WG;
  let lo = min(lid * chunk, n);
  let hi = min(lo + chunk, n);

  var v = 0u;
  for (var i = lo; i < hi; i++) { v += select(0u, 1u, keys[kb + i] != 0u); }
  part[lid] = v;
  workgroupBarrier();
  var valid = 0u;
  for (var i = 0u; i < WG; i++) { valid += part[i]; }
  workgroupBarrier();
//#if FINAL
  let C = min(K, valid);
//#else
  let C = min(min(K + p.margin, valid), p.candStride - 1u);
//#endif

  // Radix select: thr = the largest key with count(key >= thr) >= C, i.e. the C-th largest key.
  var thr = 0u;
  for (var bit = 0u; bit < 32u; bit++) {
    let c = thr | (0x80000000u >> bit);
    var m = 0u;
    for (var i = lo; i < hi; i++) { m += select(0u, 1u, keys[kb + i] >= c); }
    part[lid] = m;
    workgroupBarrier();
    var tot = 0u;
    for (var i = 0u; i < WG; i++) { tot += part[i]; }
    if (tot >= C) { thr = c; }
    workgroupBarrier();
  }
  thr = max(thr, 1u); // never keep an item past the context

  // Keep every key > thr and the first (C - #greater) keys == thr by item index.
  var gt = 0u;
  var eq = 0u;
  for (var i = lo; i < hi; i++) {
    let k = keys[kb + i];
    gt += select(0u, 1u, k > thr);
    eq += select(0u, 1u, k == thr);
  }
  part[lid] = gt;
  part2[lid] = eq;
  workgroupBarrier();
  var gtAll = 0u;
  var eqBefore = 0u;
  for (var i = 0u; i < WG; i++) {
    gtAll += part[i];
    if (i < lid) { eqBefore += part2[i]; }
  }
  let need = C - min(C, gtAll);
  let takeEq = min(eq, need - min(need, eqBefore));
  workgroupBarrier();
  part[lid] = gt + takeEq;
  workgroupBarrier();
  var off = 0u;
  for (var i = 0u; i < lid; i++) { off += part[i]; }
  var eqSeen = 0u;
  for (var i = lo; i < hi; i++) {
    let k = keys[kb + i];
    var take = k > thr;
    if (k == thr) {
      take = eqSeen < takeEq;
      eqSeen++;
    }
    if (take && off < C) {
      out[base + off] = ids[kb + i];
      off++;
    }
  }
//#if FINAL
  if (lid == 0u) { counts[row.z * p.nKvHeads + kvh] = C; }
//#else
  if (lid == 0u) { out[base - 1u] = C; }
//#endif
}
