// Block selection for block-sparse prefill (MInference-style dynamic sparsity): per (query block, KV head) the mean
// of the chunk's queries in that block over the G query heads of the KV head (GQA: the group shares one list, as the
// group shares one query tile in prefill_attention), scored against the kept digest (mean key, block_digest.wgsl)
// of causal key blocks c < b (b = the query block's own block): score = pooled q . digest. Keeps the sink block
// 0, the diagonal block b, the `localBlocks` blocks before b, and the `topBlocks` best-scoring remaining blocks
// (ties: lower block first). Writes the kept blocks in ascending order: blockList[(qb, kvh), 0] = count, then the
// block indices. KV heads not in mode 1 (sparse) get count 0 and cost nothing.
// Hierarchical (GROUP > 0): the candidates 1 .. candEnd - 1 are first taken a group of GROUP blocks at a time; the
// nG = candEnd / GROUP full groups below candEnd are bounded by their coarse digests (block_group.wgsl: per-channel
// min / max of their blocks' means, scored by lib/quest_bound's bound as decode's hier_select scores its levels,
// with the pooled query's positive and negative parts), and when there are more than `beam` = topBlocks + margin of
// them only the best `beam` groups' blocks are scored; the blocks of the other groups get key 0 and are neither read
// nor kept. Blocks from nG * GROUP on (the partial group, local and diagonal) are scored as in the flat selection.
// Quest's bound bounds every block mean of a group, so a group is dropped only when `beam` others bound higher.
// Cost per query block: flat, one digest (HD f32) per earlier block (linear in the prompt); hierarchical, one coarse
// digest per group plus at most beam * GROUP + GROUP + localBlocks block digests (a fixed part set by the budget).
// The top-k is a radix select in workgroup memory (32 counting rounds over the scores, as order-preserving u32
// keys): nothing per thread grows with the prompt or with topBlocks, so nothing spills.
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
  beam: u32,            // GROUP > 0: groups whose blocks are scored (topBlocks + margin)
  modes: array<vec4<u32>, 16>, // per KV head: 0 dense, 1 block-sparse, 2 Lambda (only 1 selects)
}

const HD: u32 = $HD;       // head dim
const HW: u32 = HD / 2u;   // u32 words per cached key (lib/paged.wgsl; only blockPage is used here)
const WG: u32 = 64u;
const MAXKB: u32 = $MAXKB; // >= the largest query block index + 1
const GROUP: u32 = $GROUP; // key blocks per coarse group (0: flat, every earlier block scored)
const MAXG: u32 = $MAXG;   // >= MAXKB / GROUP (1 when flat)

@group(0) @binding(0) var<storage, read> q: array<f32>;               // (T, qRowHeads, HD) the chunk's queries
@group(0) @binding(1) var<storage, read> qBlocks: array<u32>;         // (numQBlocks, 4): [row, firstToken, firstPos, count]
@group(0) @binding(2) var<storage, read> blockTable: array<u32>;      // (numSeqs, maxPagesPerSeq) physical pages
@group(0) @binding(3) var<storage, read> digests: array<u32>;         // (numPages * bpp, 2, nKvHeads, HD) means, groups
//#slabs digests
@group(0) @binding(4) var<storage, read_write> blockList: array<u32>; // (numQBlocks, nKvHeads, listStride)
@group(0) @binding(5) var<uniform> p: Params;

var<workgroup> qs: array<f32, HD>;       // pooled query
var<workgroup> keys: array<u32, MAXKB>;  // order-preserving key of the score of each causal key block c < b
var<workgroup> counter: atomic<u32>;
var<workgroup> qp: array<vec2<f32>, HW>; // positive part of the pooled query (the coarse bound's)
var<workgroup> qn: array<vec2<f32>, HW>; // negative part
var<workgroup> gkeep: array<u32, MAXG>;  // 1: the group's blocks are scored

//#include lib/quest_bound

fn slotOf(row: u32, c: u32) -> u32 {
  let j0 = c * p.blockSize;
  return blockPage(row, j0 / p.pageSize) * p.bpp + (j0 % p.pageSize) / p.blockSize;
}

// Keys[c] for c in [lo, hi) that are >= x, counted by the whole workgroup (every thread gets the total).
fn countAtLeast(lid: u32, lo: u32, hi: u32, x: u32) -> u32 {
  if (lid == 0u) { atomicStore(&counter, 0u); }
  workgroupBarrier();
  var mine = 0u;
  for (var c = lo + lid; c < hi; c += WG) { mine += select(0u, 1u, keys[c] >= x); }
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
  // Candidates for top-k: blocks 1 .. candEnd-1 (neither sink, diagonal nor local); the rest are forced.
  let candEnd = select(1u, b - p.localBlocks, b > p.localBlocks + 1u);
  let allFit = candEnd - 1u <= p.topBlocks;
  var coarse = 0u; // groups 0 .. coarse-1 were ranked; only those with gkeep[g] have their blocks scored
//#if GROUP
  let nG = candEnd / GROUP;
  if (!allFit && nG > p.beam) {
    for (var w = lid; w < HW; w += WG) {
      let v = vec2<f32>(qs[2u * w], qs[2u * w + 1u]);
      qp[w] = max(v, vec2<f32>(0.0));
      qn[w] = min(v, vec2<f32>(0.0));
    }
    workgroupBarrier();
    for (var g = lid; g < nG; g += WG) {
      let db = ((slotOf(row, g * GROUP + GROUP - 1u) * 2u + 1u) * p.nKvHeads + kvh) * HD;
      keys[g] = max(orderKey(bound(db, 0u)), 1u);
    }
    workgroupBarrier();
    var thrG = 0u;
    for (var bit = 0u; bit < 32u; bit++) {
      let x = thrG | (0x80000000u >> bit);
      if (countAtLeast(lid, 0u, nG, x) >= p.beam) { thrG = x; }
    }
    let aboveG = select(countAtLeast(lid, 0u, nG, thrG + 1u), 0u, thrG == 0xffffffffu);
    if (lid == 0u) {
      var tiesG = p.beam - aboveG;
      for (var g = 0u; g < nG; g++) {
        let key = keys[g];
        let k = key > thrG || (key == thrG && tiesG > 0u);
        if (k && key == thrG) { tiesG--; }
        gkeep[g] = select(0u, 1u, k);
      }
    }
    workgroupBarrier();
    coarse = nG;
  }
//#endif
  for (var c = lid; c < b; c += WG) {
//#if GROUP
    if (c < coarse * GROUP && gkeep[c / GROUP] == 0u) {
      keys[c] = 0u;
      continue;
    }
//#endif
    let kb = (slotOf(row, c) * 2u * p.nKvHeads + kvh) * HD;
    var s = 0.0;
    for (var d = 0u; d < HD; d++) { s += qs[d] * bitcast<f32>(digestsLoad(kb + d)); }
    keys[c] = max(orderKey(s), 1u);
  }
  workgroupBarrier();
  // thr = the topBlocks-th largest key (bit by bit: the largest x with at least topBlocks keys >= x); kept are the
  // keys > thr and, of those == thr, the lowest blocks up to topBlocks in all.
  var thr = 0u;
  var ties = 0u;
  if (!allFit && p.topBlocks > 0u) {
    for (var bit = 0u; bit < 32u; bit++) {
      let x = thr | (0x80000000u >> bit);
      if (countAtLeast(lid, 1u, candEnd, x) >= p.topBlocks) { thr = x; }
    }
    // keys > thr (none when thr is the largest u32; the call stays in uniform control flow)
    let above = select(countAtLeast(lid, 1u, candEnd, thr + 1u), 0u, thr == 0xffffffffu);
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
