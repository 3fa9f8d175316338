// Page selection, pass 2 (top-k): one workgroup per (reselecting decode row, KV head) over the page score keys
// page_score.wgsl wrote (pass 1). Row r = selectRows[wid.x] has len = position + 1 tokens in P = ceil(len / pageSize)
// pages and keeps K = rows[r].w pages (the host's budget rule, model/attention/budget.ts; clamped to P and
// maxSelected here only to stay in bounds); page 0 (sink) and page P - 1 (newest, holds the current token) are
// always kept (pass 1 gave them the largest key), the rest by score, ties to the lower index. K >= P keeps every page (dense) without reading keys. Output:
// selected[slot, h, 0..K) ascending page indices (block-table columns), counts[slot, h] = K.
// Top-k: the keys are copied to workgroup memory (MAX_PAGES of them); an MSB-first radix select finds the K-th
// largest key in 32 counting rounds, then a prefix sum over threads' contiguous chunks breaks ties by index and
// compacts the kept pages in ascending order.
// A layer with a sliding window w > 0: the candidates are the window's pages f = (len - w) / pageSize .. P - 1
// only (page_score.wgsl), K is clamped to their number, and K >= P - f keeps them all.

override WG: u32 = 64;
const MAX_PAGES: u32 = $MAX_PAGES;

struct Params {
  numSelect: u32,       // rows reselecting this step (grid x)
  nKvHeads: u32,        // KV heads (grid y)
  pageSize: u32,        // tokens per physical page
  maxSelected: u32,     // selection row length (>= 2)
  keyStride: u32,       // pages per (select index, KV head) in keys
  window: u32,          // the layer's sliding window in tokens (0: none)
  _p1: u32,
  _p2: u32,
}

@group(0) @binding(0) var<storage, read> keysIn: array<u32>;           // (numSelect, nKvHeads, keyStride) page_score
@group(0) @binding(1) var<storage, read> rows: array<vec4<u32>>;       // (numRows) (blockRow, position, slot, pages kept)
@group(0) @binding(2) var<storage, read> selectRows: array<u32>;       // (numSelect) rows that reselect this step
@group(0) @binding(3) var<storage, read_write> selected: array<u32>;   // (numSlots, nKvHeads, maxSelected) page indices
@group(0) @binding(4) var<storage, read_write> counts: array<u32>;     // (numSlots, nKvHeads) pages kept
@group(0) @binding(5) var<uniform> p: Params;

var<workgroup> keys: array<u32, MAX_PAGES>; // order-preserving score keys of the candidate pages f..P-1
var<workgroup> part: array<u32, WG>;        // per-thread counts
var<workgroup> part2: array<u32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = selectRows[wid.x];
  let kvh = wid.y;
  let row = rows[r];
  let len = row.y + 1u;
  let slot = row.z;
  let P = min((len + p.pageSize - 1u) / p.pageSize, p.keyStride);
  let winStart = select(0u, len - p.window, p.window > 0u && len > p.window);
  let f = min(winStart / p.pageSize, P - 1u); // first candidate page: keys[c] holds page f + c
  let N = P - f;                              // candidates
  let K = min(row.w, min(N, p.maxSelected));
  let dense = K >= N;

  let kb = (wid.x * p.nKvHeads + kvh) * p.keyStride + f;
  for (var i = lid; i < N; i += WG) {
    var key = 0xffffffffu;
    if (!dense) { key = keysIn[kb + i]; }
    keys[i] = key;
  }
  workgroupBarrier();

  // Radix select: thr = the largest key with count(key >= thr) >= K, i.e. the K-th largest key.
  let chunk = (N + WG - 1u) / WG;
  let lo = min(lid * chunk, N);
  let hi = min(lo + chunk, N);
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
      selected[base + off] = f + i;
      off++;
    }
  }
  if (lid == 0u) { counts[slot * p.nKvHeads + kvh] = K; }
}
