// Hierarchical page selection, scoring pass of one level: one thread per (reselecting row, KV head, item), grid
// x = select index * nKvHeads + kvh, y = item tiles of WG. Row r = selectRows[s] has len = position + 1 tokens in
// P = ceil(len / pageSize) pages and keeps K = min(rows[r].w, P, maxSelected) pages; dense rows (K >= P) are not
// scored. Items of a level:
//   top level (fan == 0): blocks 0 .. ceil(P / blockPages) - 1
//   lower levels: children j of the candidates the level above kept: item i -> block cand[i / fan] * fan + i % fan,
//   for i < count * fan (cand[0] = count, ascending block ids after it), so items come in ascending block order.
// A block covers blockPages pages (1: a physical page, scored as the max over its logical pages' digests through the
// block table, PAGES; else a coarse digest of the row's slot, levels (digest_levels.wgsl) at row levelRow + block).
//   bound = Quest's upper bound on the digest (lib/quest_bound; group combined by sum or max as page_score.wgsl)
// Output per item: keys[i] = max(orderKey(bound), 1), 0xffffffff for the blocks holding page 0 (sink) or page P - 1
// (newest), 0 for a block past the context; ids[i] = block.

override WG: u32 = 64;
const HW: u32 = $HW; // headDim / 2
const HD: u32 = 2u * HW;
const NEG_BIG: f32 = -3.0e38;

struct Params {
  numSelect: u32,       // rows reselecting this step
  qRowHeads: u32,       // query heads per q row
  qHeadOffset: u32,     // first query head of the q rows processed
  nKvHeads: u32,        // KV heads of the digests / selection
  group: u32,           // query heads per KV head
  pageSize: u32,        // tokens per physical page
  logicalPageSize: u32, // tokens per logical page
  lpp: u32,             // logical pages per physical page
  maxPagesPerSeq: u32,  // block table row length
  maxSelected: u32,     // selection row length
  blocksPerSlot: u32,   // coarse rows per slot in levels
  levelRow: u32,        // first coarse row of this level
  blockPages: u32,      // pages per block of this level
  fan: u32,             // children per candidate (0: top level)
  itemStride: u32,      // items per (select index, KV head) in keys / ids
  candStride: u32,      // words per (select index, KV head) in cand: 1 + most candidates
}

@group(0) @binding(0) var<storage, read> q: array<vec2<f32>>;          // (numRows, qRowHeads, HW) f32 pairs
//#if V4
@group(0) @binding(1) var<storage, read> digests: array<vec4<u32>>;    // PAGES: (numPages, lpp, nKv, 2, HW) else levels
//#else
@group(0) @binding(1) var<storage, read> digests: array<u32>;          // PAGES: (numPages, lpp, nKv, 2, HW) else levels
//#endif
@group(0) @binding(2) var<storage, read> blockTable: array<u32>;       // (numSeqs, maxPagesPerSeq) physical pages
@group(0) @binding(3) var<storage, read> rows: array<vec4<u32>>;       // (numRows) (blockRow, position, slot, pages kept)
@group(0) @binding(4) var<storage, read> selectRows: array<u32>;       // (numSelect) rows that reselect this step
@group(0) @binding(5) var<storage, read> cand: array<u32>;             // (numSelect, nKv, candStride) level above's kept
@group(0) @binding(6) var<storage, read_write> keys: array<u32>;       // (numSelect, nKv, itemStride) score keys
@group(0) @binding(7) var<storage, read_write> ids: array<u32>;        // (numSelect, nKv, itemStride) block ids
@group(0) @binding(8) var<uniform> p: Params;

var<workgroup> qp: array<vec2<f32>, HW>; // sum: Qp; max: unused
var<workgroup> qn: array<vec2<f32>, HW>; // sum: Qn

//#include lib/quest_bound

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let s = wid.x / p.nKvHeads;
  let kvh = wid.x - s * p.nKvHeads;
  let r = selectRows[s];
  let row = rows[r];
  let len = row.y + 1u;
  let qb0 = (r * p.qRowHeads + p.qHeadOffset + kvh * p.group) * HW;
//#if !COMBINE_MAX
  for (var w = lid; w < HW; w += WG) {
    var a = vec2<f32>(0.0);
    var n = vec2<f32>(0.0);
    for (var g = 0u; g < p.group; g++) {
      let qd = q[qb0 + g * HW + w];
      a += max(qd, vec2<f32>(0.0));
      n += min(qd, vec2<f32>(0.0));
    }
    qp[w] = a;
    qn[w] = n;
  }
  workgroupBarrier();
//#endif

  let P = (len + p.pageSize - 1u) / p.pageSize;
  let K = min(row.w, min(P, p.maxSelected));
  let sh = s * p.nKvHeads + kvh;
  let i = wid.y * WG + lid;
  var n = (P + p.blockPages - 1u) / p.blockPages;
  var block = i;
  if (p.fan != 0u) {
    let cb = sh * p.candStride;
    n = cand[cb] * p.fan;
    if (i < n) { block = cand[cb + 1u + i / p.fan] * p.fan + i % p.fan; }
  }
  if (K >= P || i >= n || i >= p.itemStride) { return; }
  let dst = sh * p.itemStride + i;
  ids[dst] = block;
  let first = block * p.blockPages; // first page of the block
  if (first >= P) {
    keys[dst] = 0u;
    return;
  }
  if (block == 0u || block == (P - 1u) / p.blockPages) {
    keys[dst] = 0xffffffffu;
    return;
  }
  var best = NEG_BIG;
//#if PAGES
  let phys = blockTable[row.x * p.maxPagesPerSeq + block];
  let nLog = min(p.lpp, (len - block * p.pageSize + p.logicalPageSize - 1u) / p.logicalPageSize);
  for (var l = 0u; l < nLog; l++) {
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
  keys[dst] = max(orderKey(best), 1u);
}
