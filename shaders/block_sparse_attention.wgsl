// Block-sparse prefill attention over the packed-f16 paged KV cache, lanes layout (lib/lanes_acc.wgsl, as
// attention_lanes.wgsl): one workgroup of LANES invocations per (query token, head); each lane takes every LANES-th
// key of each key range into a private online softmax (f32) over full head dims; the lanes merge once at the end.
// Query tokens come in query blocks (qBlocks: tokens firstToken.. of one sequence at consecutive positions
// firstPos.., all inside block firstPos / BS); the token at position pos attends, by its KV head's mode, to:
//   0 dense:        keys [0, pos]
//   1 block-sparse: keys of the listed key blocks c (blockList of its query block and head), [c*BS, c*BS + BS)
//                   clipped to <= pos (token-exact causal mask inside the diagonal block)
//   2 Lambda:       keys [0, min(sink, pos + 1)) and (pos - local, pos] (sink tokens + local window)
// so one dispatch serves a layer whose heads mix retrieval (dense / sparse) and streaming (Lambda) kinds.
//#include lib/grid
//#include lib/block_table
//#include lib/lanes_acc

struct Params {
  nHeads: u32,          // query heads
  nKvHeads: u32,        // KV heads
  group: u32,           // nHeads / nKvHeads
  pageSize: u32,        // tokens per cache page
  maxPagesPerSeq: u32,  // block table row length
  blockSize: u32,       // BS: tokens per query / key block
  numQBlocks: u32,      // query blocks in qBlocks
  listStride: u32,      // u32 words per (query block, head) entry of blockList
  sink: u32,            // Lambda: sink tokens
  local: u32,           // Lambda: local window in tokens (>= 1: a token always sees itself)
  scale: f32,           // softmax scale, usually 1 / sqrt(headDim)
  qRowHeads: u32,       // query heads per q/out row (>= nHeads: a layer's retrieval heads come first)
  modes: array<vec4<u32>, 16>, // per KV head: 0 dense, 1 block-sparse, 2 Lambda
}

@group(0) @binding(0) var<storage, read> q: array<vec2<f32>>;      // (T, qRowHeads, HW) f32 pairs after RoPE; heads [0, nHeads) used
@group(0) @binding(1) var<storage, read> kCache: array<u32>;       // (numPages, pageSize, nKvHeads, HW) f16 pairs
@group(0) @binding(2) var<storage, read> vCache: array<u32>;       // (numPages, pageSize, nKvHeads, HW) f16 pairs
@group(0) @binding(3) var<storage, read> blockTable: array<u32>;   // (numSeqs, maxPagesPerSeq) physical pages
@group(0) @binding(4) var<storage, read> qBlocks: array<u32>;      // (numQBlocks, 5): [row, firstToken, firstPos, count, kPoolBase]
@group(0) @binding(5) var<storage, read> blockList: array<u32>;    // (numQBlocks, nHeads, listStride): count, blocks
@group(0) @binding(6) var<storage, read_write> out: array<vec2<f32>>; // (T, qRowHeads, HW) f32 pairs; heads [0, nHeads) written
@group(0) @binding(7) var<uniform> p: Params;

const HD: u32 = $HD;          // head dim (pipelines are specialised per head dim)
const HW: u32 = HD / 2u;      // u32 words per cached row
const LANES: u32 = $LANES;

// Folds keys [lo, hi) of block-table row seq, KV head kvh, this lane's share (lo + lane, lo + lane + LANES, ...).
fn attendRange(seq: u32, kvh: u32, lo: u32, hi: u32, lane: u32) {
  for (var j = lo + lane; j < hi; j += LANES) { foldCached(kvWord(seq, j, kvh)); }
}

@compute @workgroup_size(LANES)
fn main(grid: Grid, @builtin(local_invocation_index) lid: u32) {
  let idx = workgroupIndex(grid); // (qb * BS + i) * nHeads + h
  if (idx >= p.numQBlocks * p.blockSize * p.nHeads) { return; }
  let qi = idx / p.nHeads; // qb * BS + i
  let h = idx - qi * p.nHeads;
  let qb = qi / p.blockSize;
  let i = qi - qb * p.blockSize;
  if (i >= qBlocks[qb * 5u + 3u]) { return; } // past the block's last token in this chunk
  let seq = qBlocks[qb * 5u];
  let t = qBlocks[qb * 5u + 1u] + i;
  let pos = qBlocks[qb * 5u + 2u] + i;
  let kvh = h / p.group;
  let mode = p.modes[kvh / 4u][kvh % 4u];
  let qo = (t * p.qRowHeads + h) * HW;
  loadQuery(qo, p.scale);
  if (mode == 1u) {
    let lb = (qb * p.nHeads + h) * p.listStride;
    let n = blockList[lb];
    for (var e = 1u; e <= n; e++) {
      let lo = blockList[lb + e] * p.blockSize;
      attendRange(seq, kvh, lo, min(lo + p.blockSize, pos + 1u), lid);
    }
  } else if (mode == 2u) {
    let sinkEnd = min(p.sink, pos + 1u);
    attendRange(seq, kvh, 0u, sinkEnd, lid);
    let win = select(0u, pos + 1u - p.local, pos + 1u > p.local);
    attendRange(seq, kvh, max(sinkEnd, win), pos + 1u, lid);
  } else {
    attendRange(seq, kvh, 0u, pos + 1u, lid);
  }
  let g = mergeLanesAcc(lid);
  let norm = softmaxInv(g.l);
  for (var w = lid; w < HW; w += LANES) { out[qo + w] = mergedAcc(g, w) * norm; }
}
