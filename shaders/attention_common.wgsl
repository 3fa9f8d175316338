// Shared by attention.wgsl and attention_lanes.wgsl: parameters, bindings and block-table addressing of
// paged causal attention. Query token t (sequence tokenSeq[t], position positions[t]) attends to keys 0..pos of
// its sequence, read through the block table; query head h uses KV head h / group (GQA).

struct Params {
  tokens: u32,          // T
  nHeads: u32,          // query heads
  nKvHeads: u32,        // KV heads
  group: u32,           // nHeads / nKvHeads
  pageSize: u32,        // tokens per page
  maxPagesPerSeq: u32,  // block table row length
  scale: f32,           // softmax scale, usually 1 / sqrt(headDim)
  _p0: u32,
}

@group(0) @binding(0) var<storage, read> q: array<f32>;            // (T, nHeads, HD)
@group(0) @binding(1) var<storage, read> kCache: array<f32>;       // (numPages, pageSize, nKvHeads, HD)
@group(0) @binding(2) var<storage, read> vCache: array<f32>;       // (numPages, pageSize, nKvHeads, HD)
@group(0) @binding(3) var<storage, read> blockTable: array<u32>;   // (numSeqs, maxPagesPerSeq) physical pages
@group(0) @binding(4) var<storage, read> tokenSeq: array<u32>;     // (T) block-table row of each query token
@group(0) @binding(5) var<storage, read> positions: array<u32>;    // (T) absolute position of each query token
@group(0) @binding(6) var<storage, read_write> out: array<f32>;    // (T, nHeads, HD)
@group(0) @binding(7) var<uniform> p: Params;

const HD: u32 = $HD;          // head dim (pipelines are specialised per head dim)
const NEG_BIG: f32 = -3.0e38; // "minus infinity" that keeps exp() and max() finite

// Offset of key/value j of sequence row `seq`, KV head kvh, in the caches.
fn kvOffset(seq: u32, j: u32, kvh: u32) -> u32 {
  let page = blockTable[seq * p.maxPagesPerSeq + j / p.pageSize];
  return ((page * p.pageSize + j % p.pageSize) * p.nKvHeads + kvh) * HD;
}
