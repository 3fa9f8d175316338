// Page selection, pass 1 (scores): one thread per (reselecting decode row, KV head, page), many workgroups, grid
// x = select index * nKvHeads + kvh, y = page tiles of WG pages. Row r = selectRows[s] has len = position + 1 tokens
// in P = ceil(len / pageSize) pages.
//   logical page bound (query head g)  b_g = sum_d max(q_g[d] * kmin[d], q_g[d] * kmax[d])   (Quest upper bound)
//                                          = sum_d (max(q_g[d], 0) * kmax[d] + min(q_g[d], 0) * kmin[d])
//   GQA sum (default): sum_g b_g = sum_d (Qp[d] * kmax[d] + Qn[d] * kmin[d]), Qp / Qn = sum_g max / min(q_g, 0),
//   so the group costs one pass over the digest; max (COMBINE_MAX): max_g b_g, one pass per query head.
//   physical page score = max over its logical pages holding tokens < len
// Output: keys[s, kvh, i] = order-preserving u32 key of page i's score (0xffffffff for the forced pages 0 and
// P - 1). Rows whose selection is dense (K >= P) write nothing (pass 2 does not read their keys).
// A layer with a sliding window w > 0: only the window's pages are candidates, pages f = (len - w) / pageSize ..
// P - 1 (earlier ones are not scored and pass 2 never reads their keys), scored over their logical pages that hold
// window tokens; the newest page is forced, the sink page only while the window still holds token 0 (as without a
// window); dense when K >= P - f.
// Digests are f16 pairs (page_digest.wgsl); V4 loads four words (eight channels) at a time (HW % 4 == 0).

override WG: u32 = 64;
const HW: u32 = $HW; // headDim / 2
const HD: u32 = 2u * HW;
const NEG_BIG: f32 = -3.0e38;

struct Params {
  numSelect: u32,       // rows reselecting this step
  qRowHeads: u32,       // query heads per q row (row stride in heads)
  qHeadOffset: u32,     // first query head of the q rows processed
  nKvHeads: u32,        // KV heads of the cache / digests
  group: u32,           // query heads per KV head
  pageSize: u32,        // tokens per physical page
  logicalPageSize: u32, // tokens per logical page
  lpp: u32,             // logical pages per physical page
  maxPagesPerSeq: u32,  // block table row length
  maxSelected: u32,     // selection row length (>= 2)
  keyStride: u32,       // pages per (select index, KV head) in keys
  window: u32,          // the layer's sliding window in tokens (0: none)
}

@group(0) @binding(0) var<storage, read> q: array<vec2<f32>>;          // (numRows, qRowHeads, HW) f32 pairs
//#if V4
@group(0) @binding(1) var<storage, read> digests: array<vec4<u32>>;    // (numPages, lpp, nKvHeads, 2, HW / 4) f16 x8
//#slabs digests
//#else
@group(0) @binding(1) var<storage, read> digests: array<u32>;          // (numPages, lpp, nKvHeads, 2, HW) f16 pairs
//#slabs digests
//#endif
@group(0) @binding(2) var<storage, read> blockTable: array<u32>;       // (numSeqs, maxPagesPerSeq) physical pages
@group(0) @binding(3) var<storage, read> rows: array<vec4<u32>>;       // (numRows) (blockRow, position, slot, pages kept)
@group(0) @binding(4) var<storage, read> selectRows: array<u32>;       // (numSelect) rows that reselect this step
@group(0) @binding(5) var<storage, read_write> keys: array<u32>;       // (numSelect, nKvHeads, keyStride) score keys
@group(0) @binding(6) var<uniform> p: Params;

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
  let qb0 = (r * p.qRowHeads + p.qHeadOffset + kvh * p.group) * HW; // first query head of the group
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

  let P = min((len + p.pageSize - 1u) / p.pageSize, p.keyStride);
  let winStart = select(0u, len - p.window, p.window > 0u && len > p.window); // first visible token
  let f = min(winStart / p.pageSize, P - 1u);                                // first candidate page
  let K = min(row.w, min(P - f, p.maxSelected)); // pages kept (the host's budget rule)
  let i = wid.y * WG + lid;
  if (K >= P - f || i >= P || i < f) { return; } // dense rows are not scored, pages before the window neither
  let dst = (s * p.nKvHeads + kvh) * p.keyStride + i;
  if ((i == 0u && winStart == 0u) || i == P - 1u) {
    keys[dst] = 0xffffffffu;
    return;
  }
  let phys = blockTable[row.x * p.maxPagesPerSeq + i];
  let nLog = min(p.lpp, (len - i * p.pageSize + p.logicalPageSize - 1u) / p.logicalPageSize);
  // logical pages wholly before the window are skipped (only page f can hold some)
  let l0 = select(0u, (winStart - i * p.pageSize) / p.logicalPageSize, i == f);
  var best = NEG_BIG;
  for (var l = l0; l < nLog; l++) {
    let db = ((phys * p.lpp + l) * p.nKvHeads + kvh) * HD;
//#if COMBINE_MAX
    var sc = NEG_BIG;
    for (var g = 0u; g < p.group; g++) { sc = max(sc, bound(db, qb0 + g * HW)); }
//#else
    let sc = bound(db, qb0);
//#endif
    best = max(best, sc);
  }
  keys[dst] = orderKey(best);
}
