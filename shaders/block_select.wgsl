// Block selection for block-sparse prefill (MInference-style dynamic sparsity): per (query block, KV head) the mean
// of the chunk's queries in that block over the G query heads of the KV head (GQA: the group shares one list, as the
// group shares one query tile in prefill_attention), scored against the kept digest (mean key, block_digest.wgsl)
// of every causal key block c < b (b = the query block's own block): score = pooled q . digest. Keeps the sink block
// 0, the diagonal block b, the `localBlocks` blocks before b, and the `topBlocks` best-scoring remaining blocks
// (ties: lower block first). Writes the kept blocks in ascending order: blockList[(qb, kvh), 0] = count, then the
// block indices. KV heads not in mode 1 (sparse) get count 0 and cost nothing.
// Cost per query block: one digest (HD f32) per earlier block, so a chunk's selection grows linearly with the
// prompt. The top-k is a radix select in workgroup memory (32 counting rounds over the scores, as order-preserving
// u32 keys): nothing per thread grows with the prompt or with topBlocks, so nothing spills.
//#include lib/grid
//#include lib/block_table

struct Params {
  nHeads: u32,          // query heads
  nKvHeads: u32,        // KV heads
  group: u32,           // nHeads / nKvHeads
  pageSize: u32,        // tokens per cache page
  maxPagesPerSeq: u32,  // block table row length
  blockSize: u32,       // BS: tokens per query / key block (64)
  numQBlocks: u32,      // query blocks in qBlocks
  topBlocks: u32,       // best-scoring blocks kept besides the forced ones
  localBlocks: u32,     // blocks just before the diagonal always kept
  listStride: u32,      // u32 words per (query block, KV head) list: 1 + most blocks a list can hold
  qRowHeads: u32,       // query heads per q row (>= nHeads)
  bpp: u32,             // digest slots per physical page: max(1, pageSize / BS)
  modes: array<vec4<u32>, 16>, // per KV head: 0 dense, 1 block-sparse, 2 Lambda (only 1 selects)
}

const HD: u32 = $HD;       // head dim
const HW: u32 = HD / 2u;   // u32 words per cached key (lib/paged.wgsl; only blockPage is used here)
const WG: u32 = 64u;
const MAXKB: u32 = $MAXKB; // >= the largest query block index + 1

@group(0) @binding(0) var<storage, read> q: array<f32>;               // (T, qRowHeads, HD) the chunk's queries
@group(0) @binding(1) var<storage, read> qBlocks: array<u32>;         // (numQBlocks, 4): [row, firstToken, firstPos, count]
@group(0) @binding(2) var<storage, read> blockTable: array<u32>;      // (numSeqs, maxPagesPerSeq) physical pages
@group(0) @binding(3) var<storage, read> digests: array<f32>;         // (numPages * bpp, nKvHeads, HD) mean keys
//#slabs digests
@group(0) @binding(4) var<storage, read_write> blockList: array<u32>; // (numQBlocks, nKvHeads, listStride)
@group(0) @binding(5) var<uniform> p: Params;

var<workgroup> qs: array<f32, HD>;       // pooled query
var<workgroup> keys: array<u32, MAXKB>;  // order-preserving key of the score of each causal key block c < b
var<workgroup> counter: atomic<u32>;

// f32 -> u32 whose unsigned order is the float order.
fn orderKey(s: f32) -> u32 {
  let u = bitcast<u32>(s);
  return select(u | 0x80000000u, ~u, (u & 0x80000000u) != 0u);
}

// Candidates c in [1, candEnd) whose key is >= x, counted by the whole workgroup (every thread gets the total).
fn countAtLeast(lid: u32, candEnd: u32, x: u32) -> u32 {
  if (lid == 0u) { atomicStore(&counter, 0u); }
  workgroupBarrier();
  var mine = 0u;
  for (var c = 1u + lid; c < candEnd; c += WG) { mine += select(0u, 1u, keys[c] >= x); }
  atomicAdd(&counter, mine);
  workgroupBarrier();
  let total = atomicLoad(&counter);
  workgroupBarrier(); // every thread has read it before the next reset
  return total;
}

@compute @workgroup_size(WG)
fn main(grid: Grid, @builtin(local_invocation_index) lid: u32) {
  let idx = workgroupIndex(grid); // qb * nKvHeads + kvh
  if (idx >= p.numQBlocks * p.nKvHeads) { return; }
  let qb = idx / p.nKvHeads;
  let kvh = idx - qb * p.nKvHeads;
  let base = idx * p.listStride;
  if (p.modes[kvh / 4u][kvh % 4u] != 1u) {
    if (lid == 0u) { blockList[base] = 0u; }
    return;
  }
  let row = qBlocks[qb * 4u];
  let firstToken = qBlocks[qb * 4u + 1u];
  let b = qBlocks[qb * 4u + 2u] / p.blockSize;
  let n = qBlocks[qb * 4u + 3u];
  for (var d = lid; d < HD; d += WG) {
    var s = 0.0;
    for (var i = 0u; i < n; i++) {
      let qo = ((firstToken + i) * p.qRowHeads + kvh * p.group) * HD + d;
      for (var g = 0u; g < p.group; g++) { s += q[qo + g * HD]; }
    }
    qs[d] = s / f32(n * p.group);
  }
  workgroupBarrier();
  for (var c = lid; c < b; c += WG) {
    let j0 = c * p.blockSize;
    let slot = blockPage(row, j0 / p.pageSize) * p.bpp + (j0 % p.pageSize) / p.blockSize;
    let kb = (slot * p.nKvHeads + kvh) * HD;
    var s = 0.0;
    for (var d = 0u; d < HD; d++) { s += qs[d] * digestsLoad(kb + d); }
    keys[c] = orderKey(s);
  }
  workgroupBarrier();
  // Candidates for top-k: blocks 1 .. candEnd-1 (neither sink, diagonal nor local); the rest are forced.
  let candEnd = select(1u, b - p.localBlocks, b > p.localBlocks + 1u);
  let allFit = candEnd - 1u <= p.topBlocks;
  // thr = the topBlocks-th largest key (bit by bit: the largest x with at least topBlocks keys >= x); kept are the
  // keys > thr and, of those == thr, the lowest blocks up to topBlocks in all.
  var thr = 0u;
  var ties = 0u;
  if (!allFit && p.topBlocks > 0u) {
    for (var bit = 0u; bit < 32u; bit++) {
      let x = thr | (0x80000000u >> bit);
      if (countAtLeast(lid, candEnd, x) >= p.topBlocks) { thr = x; }
    }
    // keys > thr (none when thr is the largest u32; the call stays in uniform control flow)
    let above = select(countAtLeast(lid, candEnd, thr + 1u), 0u, thr == 0xffffffffu);
    ties = p.topBlocks - above;
  }
  if (lid == 0u) {
    var cnt = 0u;
    for (var c = 0u; c <= b; c++) {
      var k = true;
      if (c >= 1u && c < candEnd && !allFit) {
        let key = keys[c];
        k = p.topBlocks > 0u && (key > thr || (key == thr && ties > 0u));
        if (k && key == thr) { ties--; }
      }
      if (k) {
        cnt++;
        blockList[base + cnt] = c;
      }
    }
    blockList[base] = cnt;
  }
}
