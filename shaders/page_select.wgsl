// Hierarchical page selection (Quest scoring over LServe's logical pages), one workgroup per (reselecting decode
// row, KV head). Row r = selectRows[wid.x] has len = position + 1 tokens in P = ceil(len / pageSize) pages.
//   logical page score (query head g)  b_g = sum_d max(q_g[d] * kmin[d], q_g[d] * kmax[d])   (Quest upper bound)
//   GQA: the group's bounds are combined by COMBINE (sum by default; max as the alternative, see page_select.ts)
//   physical page score = max over its logical pages holding tokens < len
// K = min(P, clamp(tokenBudget / pageSize, 2, maxSelected)), or P when len <= tokenBudget; page 0 (sink) and page P - 1 (newest, holds the
// current token) are always kept (their key is the largest), the rest by score, ties to the lower index. K >= P
// keeps every page (dense) without scoring. Output: selected[slot, h, 0..K) ascending page indices (block-table
// columns), counts[slot, h] = K.
// Top-k: the scores become order-preserving u32 keys in workgroup memory (MAX_PAGES of them); an MSB-first radix
// select finds the K-th largest key in 32 counting rounds, then a prefix sum over threads' contiguous chunks breaks
// ties by index and compacts the kept pages in ascending order.

override WG: u32 = 64;
const HD: u32 = $HD;
const MAX_PAGES: u32 = $MAX_PAGES;
const NEG_BIG: f32 = -3.0e38;

struct Params {
  numSelect: u32,       // rows reselecting this step (grid x)
  nHeads: u32,          // query heads
  nKvHeads: u32,        // KV heads (grid y)
  group: u32,           // nHeads / nKvHeads
  pageSize: u32,        // tokens per physical page
  logicalPageSize: u32, // tokens per logical page
  lpp: u32,             // logical pages per physical page
  maxPagesPerSeq: u32,  // block table row length
  maxSelected: u32,     // selection row length (>= 2)
  _p0: u32,
  _p1: u32,
  _p2: u32,
}

@group(0) @binding(0) var<storage, read> q: array<f32>;                // (numRows, nHeads, HD) f32
@group(0) @binding(1) var<storage, read> digests: array<f32>;          // (numPages, lpp, nKvHeads, 2, HD) f32 min, max
@group(0) @binding(2) var<storage, read> blockTable: array<u32>;       // (numSeqs, maxPagesPerSeq) physical pages
@group(0) @binding(3) var<storage, read> rows: array<vec4<u32>>;       // (numRows) (blockRow, position, slot, tokenBudget)
@group(0) @binding(4) var<storage, read> selectRows: array<u32>;       // (numSelect) rows that reselect this step
@group(0) @binding(5) var<storage, read_write> selected: array<u32>;   // (numSlots, nKvHeads, maxSelected) page indices
@group(0) @binding(6) var<storage, read_write> counts: array<u32>;     // (numSlots, nKvHeads) pages kept
@group(0) @binding(7) var<uniform> p: Params;

var<workgroup> keys: array<u32, MAX_PAGES>; // order-preserving score keys of pages 0..P-1
var<workgroup> part: array<u32, WG>;        // per-thread counts
var<workgroup> part2: array<u32, WG>;

// Maps an f32 score to a u32 whose unsigned order is the float order; NaN ranks last; 0xffffffff is reserved
// for the forced pages (sink, newest).
fn orderKey(s: f32) -> u32 {
  let b = bitcast<u32>(s);
  if ((b & 0x7fffffffu) > 0x7f800000u) { return 0u; }
  var k = b | 0x80000000u;
  if ((b & 0x80000000u) != 0u) { k = ~b; }
  return min(k, 0xfffffffeu);
}

fn pageScore(r: u32, blockRow: u32, i: u32, len: u32, kvh: u32) -> f32 {
  let phys = blockTable[blockRow * p.maxPagesPerSeq + i];
  let first = i * p.pageSize;
  let nLog = min(p.lpp, (len - first + p.logicalPageSize - 1u) / p.logicalPageSize);
  var best = NEG_BIG;
  for (var l = 0u; l < nLog; l++) {
    let db = ((phys * p.lpp + l) * p.nKvHeads + kvh) * 2u * HD;
//#if COMBINE_MAX
    var s = NEG_BIG;
//#else
    var s = 0.0;
//#endif
    for (var g = 0u; g < p.group; g++) {
      let qb = (r * p.nHeads + kvh * p.group + g) * HD;
      var b = 0.0;
      for (var d = 0u; d < HD; d++) {
        let qd = q[qb + d];
        b += max(qd * digests[db + d], qd * digests[db + HD + d]);
      }
//#if COMBINE_MAX
      s = max(s, b);
//#else
      s += b;
//#endif
    }
    best = max(best, s);
  }
  return best;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = selectRows[wid.x];
  let kvh = wid.y;
  let row = rows[r];
  let blockRow = row.x;
  let len = row.y + 1u;
  let slot = row.z;
  let P = min((len + p.pageSize - 1u) / p.pageSize, MAX_PAGES);
  let newest = P - 1u;
  var K = min(clamp(row.w / p.pageSize, 2u, p.maxSelected), P);
  if (len <= row.w) { K = min(P, p.maxSelected); } // the context fits the budget: dense
  let dense = K >= P;

  for (var i = lid; i < P; i += WG) {
    var key = 0xffffffffu;
    if (!dense && i != 0u && i != newest) { key = orderKey(pageScore(r, blockRow, i, len, kvh)); }
    keys[i] = key;
  }
  workgroupBarrier();

  // Radix select: thr = the largest key with count(key >= thr) >= K, i.e. the K-th largest key.
  let chunk = (P + WG - 1u) / WG;
  let lo = min(lid * chunk, P);
  let hi = min(lo + chunk, P);
  var thr = 0u;
  for (var bit = 0u; bit < 32u; bit++) {
    let cand = thr | (0x80000000u >> bit);
    var c = 0u;
    for (var i = lo; i < hi; i++) { c += select(0u, 1u, keys[i] >= cand); }
    part[lid] = c;
    workgroupBarrier();
    var tot = 0u;
    for (var i = 0u; i < WG; i++) { tot += part[i]; }
    if (tot >= K) { thr = cand; }
    workgroupBarrier();
  }

  // Keep every key > thr and the first (K - #greater) keys == thr by page index.
  var gt = 0u;
  var eq = 0u;
  for (var i = lo; i < hi; i++) {
    let k = keys[i];
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
  let need = K - min(K, gtAll);
  let takeEq = min(eq, need - min(need, eqBefore));
  workgroupBarrier();
  part[lid] = gt + takeEq;
  workgroupBarrier();
  var off = 0u;
  for (var i = 0u; i < lid; i++) { off += part[i]; }
  let base = (slot * p.nKvHeads + kvh) * p.maxSelected;
  var eqSeen = 0u;
  for (var i = lo; i < hi; i++) {
    let k = keys[i];
    var take = k > thr;
    if (k == thr) {
      take = eqSeen < takeEq;
      eqSeen++;
    }
    if (take && off < p.maxSelected) {
      selected[base + off] = i;
      off++;
    }
  }
  if (lid == 0u) { counts[slot * p.nKvHeads + kvh] = K; }
}
