// Shared by sparse_decode.wgsl and sparse_decode_lanes.wgsl: parameters, bindings and the page list of top-k
// decode attention. Decode row r (rows[r] = (blockRow, position, slot, pages kept)) and query head h (KV head
// kvh = h / group) attend to the pages selected[slot, kvh, 0..counts) (ascending block-table columns) plus the
// newest page position / pageSize when the list does not end with it (a selection reused from an earlier step),
// keys j <= position only; in a layer with a sliding window w > 0 also keys j > position - w only (the selection then
// holds the window's pages, shaders/page_select.ts; a reused one may hold a page the window has left: masked, never
// read). Scores are soft-capped when softcap > 0 (Gemma 2). A workgroup serves (row, KV head, split): the group's G
// query heads share every key and value it reads. Split `split` (grid y) takes list entries [split * pps, +pps) and
// writes, per query head, its partial softmax (running max m, sum l, unnormalised acc) for sparse_decode_reduce,
// pps = pagesPerSplit, or more for a row whose list the grid's splits (its y, at most numSplits: what the partials
// scratch holds) cannot hold at pagesPerSplit: ceil(len / splits). The row's own list decides, so a step whose split
// count is capped needs nothing but its inputs and grid.
//#include lib/block_table

struct Params {
  numRows: u32,         // decode rows
  nHeads: u32,          // query heads processed
  nKvHeads: u32,        // KV heads
  group: u32,           // nHeads / nKvHeads
  pageSize: u32,        // tokens per page
  maxPagesPerSeq: u32,  // block table row length
  maxSelected: u32,     // selection row length
  numSplits: u32,       // splits per (row, head) in partials (the grid's y is at most this)
  pagesPerSplit: u32,   // list entries per split (at least)
  scale: f32,           // softmax scale
  qRowHeads: u32,       // query heads per q row (row stride in heads)
  qHeadOffset: u32,     // first query head of the q rows processed (local head h is row head qHeadOffset + h)
  window: u32,          // the layer's sliding window in keys (0: none)
  softcap: f32,         // attention logit soft-cap (0: none)
}

@group(0) @binding(0) var<storage, read> q: array<vec2<f32>>;          // (numRows, qRowHeads, HW) f32 pairs
@group(0) @binding(1) var<storage, read> kCache: array<u32>;           // (numPages, pageSize, nKvHeads, HW) f16 pairs
//#slabs kCache
@group(0) @binding(2) var<storage, read> vCache: array<u32>;           // (numPages, pageSize, nKvHeads, HW) f16 pairs
//#slabs vCache
@group(0) @binding(3) var<storage, read> blockTable: array<u32>;       // (numSeqs, maxPagesPerSeq) physical pages
@group(0) @binding(4) var<storage, read> rows: array<vec4<u32>>;       // (numRows) (blockRow, position, slot, pages kept)
@group(0) @binding(5) var<storage, read> selected: array<u32>;         // (numSlots, nKvHeads, maxSelected) page indices
@group(0) @binding(6) var<storage, read> counts: array<u32>;           // (numSlots, nKvHeads)
@group(0) @binding(7) var<storage, read_write> partials: array<f32>;   // (numRows, nHeads, numSplits, 2 + HD) m, l, acc
@group(0) @binding(8) var<uniform> p: Params;

const HW: u32 = $HW;          // headDim / 2
const HD: u32 = 2u * HW;

// The page list of one (row, KV head): selection base, selected count, newest page, list length.
struct PageList {
  base: u32,
  cnt: u32,
  newest: u32,
  len: u32,
}

fn pageList(slot: u32, kvh: u32, pos: u32) -> PageList {
  let sb = slot * p.nKvHeads + kvh;
  let cnt = min(counts[sb], p.maxSelected);
  let base = sb * p.maxSelected;
  let newest = pos / p.pageSize;
  var len = cnt + 1u;
  if (cnt > 0u && selected[base + cnt - 1u] >= newest) { len = cnt; }
  return PageList(base, cnt, newest, len);
}

// Page index (block-table column) of list entry i.
fn listPage(pl: PageList, i: u32) -> u32 {
  if (i < pl.cnt) { return selected[pl.base + i]; }
  return pl.newest;
}

// One workgroup's work: (decode row, KV head, split) and the split's key slots; the KV head's G query heads share it.
struct Split {
  r: u32,       // decode row
  h0: u32,      // the KV head's first local query head: kvh * group
  kvh: u32,     // KV head
  split: u32,   // split index (grid y)
  row: vec4<u32>, // rows[r]: (blockRow, position, slot, pages kept)
  pl: PageList,
  i0: u32,      // first list entry of the split
  nSlots: u32,  // key slots of the split: its pages times pageSize (slots past the position are masked)
}

// `splits`: the grid's y (this step's split count, <= numSplits).
fn splitOf(wid: vec3<u32>, splits: u32) -> Split {
  let rk = wid.x; // r * nKvHeads + kvh
  let r = rk / p.nKvHeads;
  let kvh = rk - r * p.nKvHeads;
  let row = rows[r];
  let pl = pageList(row.z, kvh, row.y);
  let pps = max(p.pagesPerSplit, (pl.len + splits - 1u) / splits);
  let i0 = min(wid.y * pps, pl.len);
  let nSlots = (min(i0 + pps, pl.len) - i0) * p.pageSize;
  return Split(r, kvh * p.group, kvh, wid.y, row, pl, i0, nSlots);
}

// First word of the split's partial of the group's query head g: (numRows, nHeads, numSplits, 2 + HD) f32.
fn partialBase(sp: Split, g: u32) -> u32 {
  return ((sp.r * p.nHeads + sp.h0 + g) * p.numSplits + sp.split) * (2u + HD);
}

// Word offset in the caches of key slot t of the split, or MASKED_KEY past the causal limit (the query's position)
// or before the sliding window.
fn slotOf(sp: Split, t: u32) -> u32 {
  let e = t / p.pageSize;
  let o = t - e * p.pageSize;
  let lp = listPage(sp.pl, sp.i0 + e);
  let j = lp * p.pageSize + o;
  if (j > sp.row.y || (p.window > 0u && j + p.window <= sp.row.y)) { return MASKED_KEY; }
  return slotWord(blockPage(sp.row.x, lp), o, sp.kvh);
}

// First f32 pair of local query head h of row r in q.
fn qBase(r: u32, h: u32) -> u32 {
  return (r * p.qRowHeads + p.qHeadOffset + h) * HW;
}

// Writes pair w of a partial at word pb (partialBase): the (unnormalised) accumulator pair acc.
fn writePartialAcc(pb: u32, w: u32, acc: vec2<f32>) {
  partials[pb + 2u + 2u * w] = acc.x;
  partials[pb + 3u + 2u * w] = acc.y;
}
