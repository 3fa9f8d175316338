// Shared by attention.wgsl and attention_lanes.wgsl: parameters, bindings and the query of paged causal attention.
// Query token t (sequence tokenSeq[t], position positions[t]) attends to keys 0..pos of its sequence, read through
// the block table; query head h uses KV head h / group (GQA). A sliding window w > 0 (the layer's) keeps keys
// pos - w < j <= pos only (w keys counting its own); scores are soft-capped when softcap > 0 (Gemma 2).
// Head range: the kernel processes query heads [qHeadOffset, qHeadOffset + nHeads) of q/out rows that hold qRowHeads
// heads each (retrieval heads come first after the head permutation, model/head-permutation.ts); local head h reads
// KV head h / group of a cache that holds nKvHeads heads. Defaults: offset 0, qRowHeads = nHeads.
// The caches hold f16 packed in pairs into u32 words (element 2i in the low half, 2i+1 in the high half; see
// shaders/kv_write.ts): kernels read them with unpack2x16float and do all math in f32. q and out are f32, bound as
// vec2 pairs (HD is even).
//#include lib/token_head
//#include lib/block_table

struct Params {
  tokens: u32,          // query tokens processed: [firstToken, firstToken + tokens)
  nHeads: u32,          // query heads
  nKvHeads: u32,        // KV heads
  group: u32,           // nHeads / nKvHeads
  pageSize: u32,        // tokens per page
  maxPagesPerSeq: u32,  // block table row length
  scale: f32,           // softmax scale, usually 1 / sqrt(headDim)
  qHeadOffset: u32,     // first query head of q/out rows processed
  qRowHeads: u32,       // query heads per q/out row (row stride in heads)
  firstToken: u32,      // first query token processed (tokens before it are left alone: e.g. sparse decode rows)
  window: u32,          // sliding window in keys (0: full causal)
  softcap: f32,         // attention logit soft-cap (0: none)
}

@group(0) @binding(0) var<storage, read> q: array<vec2<f32>>;      // (T, qRowHeads, HW) f32 pairs
@group(0) @binding(1) var<storage, read> kCache: array<u32>;       // (numPages, pageSize, nKvHeads, HW) f16 pairs
//#slabs kCache
@group(0) @binding(2) var<storage, read> vCache: array<u32>;       // (numPages, pageSize, nKvHeads, HW) f16 pairs
//#slabs vCache
@group(0) @binding(3) var<storage, read> blockTable: array<u32>;   // (numSeqs, maxPagesPerSeq) physical pages
@group(0) @binding(4) var<storage, read> tokenSeq: array<u32>;     // (T) block-table row of each query token
@group(0) @binding(5) var<storage, read> positions: array<u32>;    // (T) absolute position of each query token
@group(0) @binding(6) var<storage, read_write> out: array<vec2<f32>>; // (T, qRowHeads, HW) f32 pairs
@group(0) @binding(7) var<uniform> p: Params;

const HD: u32 = $HD;          // head dim (pipelines are specialised per head dim), even
const HW: u32 = HD / 2u;      // words (f16 pairs) per cached head vector

// The query of one workgroup's (token, head) (lib/token_head.wgsl), from token firstToken on.
struct Query {
  valid: bool,  // false past the last (token, head): the workgroup returns
  seq: u32,     // block-table row
  kvh: u32,     // KV head
  qo: u32,      // first pair of (t, h) in q and out
  firstKey: u32, // first key attended: 0, or position + 1 - window
  endKey: u32,  // position + 1: keys [firstKey, endKey) are attended
}

fn queryOf(grid: Grid) -> Query {
  let th = tokenHeadOf(grid, p.firstToken);
  if (!th.valid) { return Query(false, 0u, 0u, 0u, 0u, 0u); }
  let qo = (th.t * p.qRowHeads + p.qHeadOffset + th.h) * HW;
  let end = positions[th.t] + 1u;
  let first = select(0u, end - p.window, p.window > 0u && end > p.window);
  return Query(true, tokenSeq[th.t], th.kvh, qo, first, end);
}
