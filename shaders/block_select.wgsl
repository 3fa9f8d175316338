// Block selection for block-sparse prefill (MInference-style dynamic sparsity), two entry points chosen by define:
// - POOL_K: kPool[kb, kvh, :] = mean of the BS keys of key block kBlocks[kb] (positions [c*BS, c*BS + BS) of one
//   sequence, read through the block table from the packed-f16 cache). Only full blocks before a query block's
//   own (diagonal) block are ever pooled, so every key read is a written cache slot.
// - otherwise (select): per (query block, query head) the mean of the chunk's queries in that block, scored against
//   the pooled keys of every causal key block c < b (b = the query block's own block, scores = pooled q . pooled k,
//   GQA: the head's KV head); keeps the sink block 0, the diagonal block b, the `localBlocks` blocks before b, and
//   the `topBlocks` best-scoring remaining blocks (ties: lower block first). Writes the kept blocks in ascending
//   order: blockList[(qb, h), 0] = count, then the block indices. Heads whose KV head is not in mode 1 (sparse)
//   get count 0 and cost nothing.
//#include lib/grid

struct Params {
  nHeads: u32,          // query heads
  nKvHeads: u32,        // KV heads
  group: u32,           // nHeads / nKvHeads
  pageSize: u32,        // tokens per cache page
  maxPagesPerSeq: u32,  // block table row length
  blockSize: u32,       // BS: tokens per query / key block (64)
  count: u32,           // POOL_K: numKBlocks; select: numQBlocks
  topBlocks: u32,       // best-scoring blocks kept besides the forced ones
  localBlocks: u32,     // blocks just before the diagonal always kept
  listStride: u32,      // u32 words per (query block, head) list: 1 + most blocks a list can hold
  qRowHeads: u32,       // query heads per q row (>= nHeads)
  _p1: u32,
  modes: array<vec4<u32>, 16>, // per KV head: 0 dense, 1 block-sparse, 2 Lambda (only 1 selects)
}

const HD: u32 = $HD;       // head dim
const HW: u32 = HD / 2u;   // u32 words per cached key row (f16 pairs)
const WG: u32 = 64u;

//#if POOL_K
//#include lib/block_table
@group(0) @binding(0) var<storage, read> kCache: array<u32>;          // (numPages, pageSize, nKvHeads, HD/2) f16 pairs
@group(0) @binding(1) var<storage, read> blockTable: array<u32>;      // (numSeqs, maxPagesPerSeq) physical pages
@group(0) @binding(2) var<storage, read> kBlocks: array<u32>;         // (numKBlocks, 2): [block-table row, key block c]
@group(0) @binding(3) var<storage, read_write> kPool: array<f32>;     // (numKBlocks, nKvHeads, HD) mean keys
@group(0) @binding(4) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(grid: Grid, @builtin(local_invocation_index) lid: u32) {
  let idx = workgroupIndex(grid); // kb * nKvHeads + kvh
  if (idx >= p.count * p.nKvHeads) { return; }
  let kb = idx / p.nKvHeads;
  let kvh = idx - kb * p.nKvHeads;
  let seq = kBlocks[kb * 2u];
  let j0 = kBlocks[kb * 2u + 1u] * p.blockSize;
  let inv = 1.0 / f32(p.blockSize);
  for (var w = lid; w < HW; w += WG) {
    var s = vec2<f32>(0.0);
    for (var j = j0; j < j0 + p.blockSize; j++) { s += unpack2x16float(kCache[kvWord(seq, j, kvh) + w]); }
    kPool[idx * HD + 2u * w] = s.x * inv;
    kPool[idx * HD + 2u * w + 1u] = s.y * inv;
  }
}
//#else
@group(0) @binding(0) var<storage, read> q: array<f32>;               // (T, nHeads, HD) the chunk's queries
@group(0) @binding(1) var<storage, read> qBlocks: array<u32>;         // (numQBlocks, 5): [row, firstToken, firstPos, count, kPoolBase]
@group(0) @binding(2) var<storage, read> kPool: array<f32>;           // (numKBlocks, nKvHeads, HD) from POOL_K
@group(0) @binding(3) var<storage, read_write> blockList: array<u32>; // (numQBlocks, nHeads, listStride)
@group(0) @binding(4) var<uniform> p: Params;

const MAXKB: u32 = $MAXKB; // >= the largest query block index + 1

var<workgroup> qs: array<f32, HD>;         // pooled query
var<workgroup> scores: array<f32, MAXKB>;  // pooled score of each causal key block c < b
var<workgroup> keep: array<u32, MAXKB>;    // 1 if block c (<= b) is kept

@compute @workgroup_size(WG)
fn main(grid: Grid, @builtin(local_invocation_index) lid: u32) {
  let idx = workgroupIndex(grid); // qb * nHeads + h
  if (idx >= p.count * p.nHeads) { return; }
  let qb = idx / p.nHeads;
  let h = idx - qb * p.nHeads;
  let kvh = h / p.group;
  let base = idx * p.listStride;
  if (p.modes[kvh / 4u][kvh % 4u] != 1u) {
    if (lid == 0u) { blockList[base] = 0u; }
    return;
  }
  let firstToken = qBlocks[qb * 5u + 1u];
  let b = qBlocks[qb * 5u + 2u] / p.blockSize;
  let n = qBlocks[qb * 5u + 3u];
  let kBase = qBlocks[qb * 5u + 4u];
  for (var d = lid; d < HD; d += WG) {
    var s = 0.0;
    for (var i = 0u; i < n; i++) { s += q[((firstToken + i) * p.qRowHeads + h) * HD + d]; }
    qs[d] = s / f32(n);
  }
  workgroupBarrier();
  for (var c = lid; c < b; c += WG) {
    let kb = ((kBase + c) * p.nKvHeads + kvh) * HD;
    var s = 0.0;
    for (var d = 0u; d < HD; d++) { s += qs[d] * kPool[kb + d]; }
    scores[c] = s;
  }
  workgroupBarrier();
  // Candidates for top-k: blocks 1 .. candEnd-1 (neither sink, diagonal nor local); the rest are forced.
  let candEnd = select(1u, b - p.localBlocks, b > p.localBlocks + 1u);
  let allFit = candEnd - 1u <= p.topBlocks;
  for (var c = lid; c <= b; c += WG) {
    var k = 1u;
    if (c >= 1u && c < candEnd && !allFit) {
      let sc = scores[c];
      var rank = 0u;
      for (var o = 1u; o < candEnd; o++) {
        let so = scores[o];
        rank += select(0u, 1u, so > sc || (so == sc && o < c));
      }
      k = select(0u, 1u, rank < p.topBlocks);
    }
    keep[c] = k;
  }
  workgroupBarrier();
  if (lid == 0u) {
    var cnt = 0u;
    for (var c = 0u; c <= b; c++) {
      if (keep[c] != 0u) {
        cnt++;
        blockList[base + cnt] = c;
      }
    }
    blockList[base] = cnt;
  }
}
//#endif
