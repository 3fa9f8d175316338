// Block-sparse prefill attention over the packed-f16 paged KV cache, lanes layout (as attention_lanes.wgsl):
// one workgroup of LANES invocations per (query token, head); each lane takes every LANES-th key of each key range
// and keeps a private online softmax (f32) over full head dims; the lanes merge once at the end.
// Query tokens come in query blocks (qBlocks: tokens firstToken.. of one sequence at consecutive positions
// firstPos.., all inside block firstPos / BS); the token at position pos attends, by its KV head's mode, to:
//   0 dense:        keys [0, pos]
//   1 block-sparse: keys of the listed key blocks c (blockList of its query block and head), [c*BS, c*BS + BS)
//                   clipped to <= pos (token-exact causal mask inside the diagonal block)
//   2 Lambda:       keys [0, min(sink, pos + 1)) and (pos - local, pos] (sink tokens + local window)
// so one dispatch serves a layer whose heads mix retrieval (dense / sparse) and streaming (Lambda) kinds.

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

@group(0) @binding(0) var<storage, read> q: array<f32>;            // (T, qRowHeads, HD) after RoPE; heads [0, nHeads) used
@group(0) @binding(1) var<storage, read> kCache: array<u32>;       // (numPages, pageSize, nKvHeads, HD/2) f16 pairs
@group(0) @binding(2) var<storage, read> vCache: array<u32>;       // (numPages, pageSize, nKvHeads, HD/2) f16 pairs
@group(0) @binding(3) var<storage, read> blockTable: array<u32>;   // (numSeqs, maxPagesPerSeq) physical pages
@group(0) @binding(4) var<storage, read> qBlocks: array<u32>;      // (numQBlocks, 5): [row, firstToken, firstPos, count, kPoolBase]
@group(0) @binding(5) var<storage, read> blockList: array<u32>;    // (numQBlocks, nHeads, listStride): count, blocks
@group(0) @binding(6) var<storage, read_write> out: array<f32>;    // (T, qRowHeads, HD); heads [0, nHeads) written
@group(0) @binding(7) var<uniform> p: Params;

const HD: u32 = $HD;          // head dim (pipelines are specialised per head dim)
const HW: u32 = HD / 2u;      // u32 words per cached row
const LANES: u32 = $LANES;
const NEG_BIG: f32 = -3.0e38; // "minus infinity" that keeps exp() and max() finite

var<workgroup> laneMax: array<f32, LANES>;
var<workgroup> laneSum: array<f32, LANES>;
var<workgroup> laneAcc: array<f32, LANES * HD>; // (LANES, HD)

var<private> qv: array<f32, HD>;   // this token's query head, pre-scaled
var<private> acc: array<f32, HD>;  // this lane's sum of p_j * v_j
var<private> m: f32;               // this lane's running max score
var<private> l: f32;               // this lane's running sum of exp(score - m)
var<private> seqRow: u32;
var<private> kvHead: u32;

// Folds keys [lo, hi) of this lane's share (lo + lane, lo + lane + LANES, ...) into the running softmax.
fn attendRange(lo: u32, hi: u32, lane: u32) {
  for (var j = lo + lane; j < hi; j += LANES) {
    let page = blockTable[seqRow * p.maxPagesPerSeq + j / p.pageSize];
    let b = ((page * p.pageSize + j % p.pageSize) * p.nKvHeads + kvHead) * HW;
    var s = 0.0;
    for (var w = 0u; w < HW; w++) {
      let k = unpack2x16float(kCache[b + w]);
      s += qv[2u * w] * k.x + qv[2u * w + 1u] * k.y;
    }
    let mNew = max(m, s);
    let alpha = exp(m - mNew);
    let pr = exp(s - mNew);
    l = l * alpha + pr;
    for (var w = 0u; w < HW; w++) {
      let v = unpack2x16float(vCache[b + w]);
      acc[2u * w] = acc[2u * w] * alpha + pr * v.x;
      acc[2u * w + 1u] = acc[2u * w + 1u] * alpha + pr * v.y;
    }
    m = mNew;
  }
}

@compute @workgroup_size(LANES)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let idx = wid.y * nwg.x + wid.x; // (qb * BS + i) * nHeads + h
  if (idx >= p.numQBlocks * p.blockSize * p.nHeads) { return; }
  let qi = idx / p.nHeads; // qb * BS + i
  let h = idx - qi * p.nHeads;
  let qb = qi / p.blockSize;
  let i = qi - qb * p.blockSize;
  if (i >= qBlocks[qb * 5u + 3u]) { return; } // past the block's last token in this chunk
  seqRow = qBlocks[qb * 5u];
  let t = qBlocks[qb * 5u + 1u] + i;
  let pos = qBlocks[qb * 5u + 2u] + i;
  kvHead = h / p.group;
  let mode = p.modes[kvHead / 4u][kvHead % 4u];

  let th = t * p.qRowHeads + h;
  for (var d = 0u; d < HD; d++) { qv[d] = q[th * HD + d] * p.scale; }
  for (var d = 0u; d < HD; d++) { acc[d] = 0.0; }
  m = NEG_BIG;
  l = 0.0;
  if (mode == 1u) {
    let lb = (qb * p.nHeads + h) * p.listStride;
    let n = blockList[lb];
    for (var e = 1u; e <= n; e++) {
      let lo = blockList[lb + e] * p.blockSize;
      attendRange(lo, min(lo + p.blockSize, pos + 1u), lid);
    }
  } else if (mode == 2u) {
    let sinkEnd = min(p.sink, pos + 1u);
    attendRange(0u, sinkEnd, lid);
    let win = select(0u, pos + 1u - p.local, pos + 1u > p.local);
    attendRange(max(sinkEnd, win), pos + 1u, lid);
  } else {
    attendRange(0u, pos + 1u, lid);
  }
  laneMax[lid] = m;
  laneSum[lid] = l;
  for (var d = 0u; d < HD; d++) { laneAcc[lid * HD + d] = acc[d]; }
  workgroupBarrier();

  var gm = NEG_BIG;
  for (var k = 0u; k < LANES; k++) { gm = max(gm, laneMax[k]); }
  var gl = 0.0;
  for (var k = 0u; k < LANES; k++) { gl += laneSum[k] * exp(laneMax[k] - gm); }
  let inv = 1.0 / gl;
  for (var d = lid; d < HD; d += LANES) {
    var o = 0.0;
    for (var k = 0u; k < LANES; k++) { o += laneAcc[k * HD + d] * exp(laneMax[k] - gm); }
    out[th * HD + d] = o * inv;
  }
}
