// Hierarchical page selection, one level: one workgroup per (reselecting row, KV head) scores the level's items and
// keeps the best. Row r = selectRows[wid.x] has len = position + 1 tokens in P = ceil(len / pageSize) pages and keeps
// K = min(rows[r].w, P, maxSelected) pages.
// Items of a level:
//   top level (fan == 0): blocks 0 .. ceil(P / blockPages) - 1
//   lower levels: children j of the candidates the level above kept: item i -> block candIn[1 + i / fan] * fan +
//   i % fan for i < candIn[0] * fan, so items come in ascending block order.
// A block covers blockPages pages: 1 (PAGES) is a physical page, scored as the max over its logical pages' digests
// through the block table; else a coarse digest of the row's slot (digest_levels.wgsl) at row levelRow + block.
//   score = Quest's upper bound on the digest (lib/quest_bound; the group combined by sum or max as page_score.wgsl)
//   key = max(orderKey(score), 1); 0xffffffff for the blocks holding page 0 (sink) or page P - 1 (newest); 0 past
//   the context. Keys and block ids go to the scratch (keys, ids), then the top-k below reads them back.
// Kept: C = min(K + margin, valid, candStride - 1) items on a coarse level (out = candidate list: out[0] = C, the
// kept block ids after it), C = min(K, valid) on the page level (FINAL: out = selected[slot, h, 0..C), counts[slot,
// h] = C). Dense rows (K >= P): FINAL keeps pages 0..P-1 without scoring, a coarse level does nothing.
// A layer with a sliding window w > 0 (as page_score.wgsl): the candidates are the pages from f = (len - w) /
// pageSize on; blocks wholly before page f get key 0, the sink block is forced only while the window holds token 0,
// page f is scored over its logical pages holding window tokens (a coarse block straddling the window start keeps
// its digest: still an upper bound), K = min(rows[r].w, P - f, maxSelected) and a row is dense when K >= P - f.
// Top-k as page_select.wgsl: an MSB-first radix select finds the C-th largest key in 32 counting rounds over the keys
// (in the scratch: their count is not bounded by workgroup memory), then a prefix sum over threads' contiguous
// chunks breaks ties by item index and compacts the kept ids in item order (ascending blocks).

override WG: u32 = 64;
const HW: u32 = $HW; // headDim / 2
const HD: u32 = 2u * HW;
const NEG_BIG: f32 = -3.0e38;

struct Params {
  numSelect: u32,       // rows reselecting this step (grid x)
  qRowHeads: u32,       // query heads per q row
  qHeadOffset: u32,     // first query head of the q rows processed
  nKvHeads: u32,        // KV heads of the digests / selection (grid y)
  group: u32,           // query heads per KV head
  pageSize: u32,        // tokens per physical page
  logicalPageSize: u32, // tokens per logical page
  lpp: u32,             // logical pages per physical page
  maxPagesPerSeq: u32,  // block table row length
  maxSelected: u32,     // selection row length
  blocksPerSlot: u32,   // coarse rows per slot in levels
  levelRow: u32,        // first coarse row of this level
  blockPages: u32,      // pages per block of this level
  fan: u32,             // children per candidate of the level above (0: top level)
  itemStride: u32,      // items per (select index, KV head) in keys / ids
  candStride: u32,      // words per (select index, KV head) of a candidate list
  margin: u32,          // candidates kept beyond K on a coarse level
  window: u32,          // the layer's sliding window in tokens (0: none)
  _p1: u32,
  _p2: u32,
}

@group(0) @binding(0) var<storage, read> q: array<vec2<f32>>;          // (numRows, qRowHeads, HW) f32 pairs
//#if V4
@group(0) @binding(1) var<storage, read> digests: array<vec4<u32>>;    // PAGES: (numPages, lpp, nKv, 2, HW) else levels
//#slabs digests
//#else
@group(0) @binding(1) var<storage, read> digests: array<u32>;          // PAGES: (numPages, lpp, nKv, 2, HW) else levels
//#slabs digests
//#endif
@group(0) @binding(2) var<storage, read> blockTable: array<u32>;       // (numSeqs, maxPagesPerSeq) physical pages
@group(0) @binding(3) var<storage, read> rows: array<vec4<u32>>;       // (numRows) (blockRow, position, slot, pages kept)
@group(0) @binding(4) var<storage, read> selectRows: array<u32>;       // (numSelect) rows that reselect this step
@group(0) @binding(5) var<storage, read> candIn: array<u32>;           // (numSelect, nKv, candStride) level above's
@group(0) @binding(6) var<storage, read_write> keys: array<u32>;       // (numSelect, nKv, itemStride) score keys
@group(0) @binding(7) var<storage, read_write> ids: array<u32>;        // (numSelect, nKv, itemStride) block ids
//#if FINAL
@group(0) @binding(8) var<storage, read_write> out: array<u32>;        // (numSlots, nKv, maxSelected) selected pages
@group(0) @binding(9) var<storage, read_write> counts: array<u32>;     // (numSlots, nKv) pages kept
//#else
@group(0) @binding(8) var<storage, read_write> out: array<u32>;        // (numSelect, nKv, candStride) candidates kept
//#endif
@group(0) @binding(10) var<uniform> p: Params;

var<workgroup> qp: array<vec2<f32>, HW>; // sum: Qp; max: unused
var<workgroup> qn: array<vec2<f32>, HW>; // sum: Qn
var<workgroup> part: array<u32, WG>;
var<workgroup> part2: array<u32, WG>;

//#include lib/quest_bound

// Order key of item block `block` of row `row` (len tokens, P pages, window from token winStart = page f on) for KV
// head kvh, query group at qb0.
fn itemKey(block: u32, row: vec4<u32>, len: u32, P: u32, winStart: u32, f: u32, kvh: u32, qb0: u32) -> u32 {
  if (block * p.blockPages >= P || (block + 1u) * p.blockPages <= f) { return 0u; }
  if ((block == 0u && winStart == 0u) || block == (P - 1u) / p.blockPages) { return 0xffffffffu; }
  var best = NEG_BIG;
//#if PAGES
  let phys = blockTable[row.x * p.maxPagesPerSeq + block];
  let nLog = min(p.lpp, (len - block * p.pageSize + p.logicalPageSize - 1u) / p.logicalPageSize);
  // logical pages wholly before the window are skipped (only page f can hold some)
  let l0 = select(0u, (winStart - block * p.pageSize) / p.logicalPageSize, block == f);
  for (var l = l0; l < nLog; l++) {
    let db = ((phys * p.lpp + l) * p.nKvHeads + kvh) * HD;
//#else
  {
    let db = ((row.z * p.blocksPerSlot + p.levelRow + block) * p.nKvHeads + kvh) * HD;
//#endif
//#if COMBINE_MAX
    var sc = NEG_BIG;
    for (var g = 0u; g < p.group; g++) { sc = max(sc, bound(db, qb0 + g * HW)); }
//#else
    let sc = bound(db, qb0);
//#endif
    best = max(best, sc);
  }
  return max(orderKey(best), 1u);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let s = wid.x;
  let kvh = wid.y;
  let r = selectRows[s];
  let row = rows[r];
  let len = row.y + 1u;
  let P = (len + p.pageSize - 1u) / p.pageSize;
  let winStart = select(0u, len - p.window, p.window > 0u && len > p.window); // first token in the window
  let f = min(winStart / p.pageSize, P - 1u);                                // first candidate page
  let K = min(row.w, min(P - f, p.maxSelected));
  let sh = s * p.nKvHeads + kvh;
//#if FINAL
  let base = (row.z * p.nKvHeads + kvh) * p.maxSelected;
  if (K >= P - f) {
    for (var i = lid; i < K; i += WG) { out[base + i] = f + i; }
    if (lid == 0u) { counts[row.z * p.nKvHeads + kvh] = K; }
    return;
  }
//#else
  let base = sh * p.candStride + 1u;
  if (K >= P - f) { return; }
//#endif
  let qb0 = (r * p.qRowHeads + p.qHeadOffset + kvh * p.group) * HW; // first query head of the group
//#if !COMBINE_MAX
  for (var w = lid; w < HW; w += WG) {
    var a = vec2<f32>(0.0);
    var b = vec2<f32>(0.0);
    for (var g = 0u; g < p.group; g++) {
      let qd = q[qb0 + g * HW + w];
      a += max(qd, vec2<f32>(0.0));
      b += min(qd, vec2<f32>(0.0));
    }
    qp[w] = a;
    qn[w] = b;
  }
  workgroupBarrier();
//#endif

  var n = (P + p.blockPages - 1u) / p.blockPages;
  if (p.fan != 0u) { n = candIn[sh * p.candStride] * p.fan; }
  n = min(n, p.itemStride);
  let kb = sh * p.itemStride;
  // score the items (keys and ids to the scratch), then read them back after the barrier
  for (var i = lid; i < n; i += WG) {
    var block = i;
    if (p.fan != 0u) { block = candIn[sh * p.candStride + 1u + i / p.fan] * p.fan + i % p.fan; }
    ids[kb + i] = block;
    keys[kb + i] = itemKey(block, row, len, P, winStart, f, kvh, qb0);
  }
  storageBarrier();

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
