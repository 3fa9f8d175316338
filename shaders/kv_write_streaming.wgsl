// Streaming-pool KV write, f16 cache: for each new token t (flattened over the batch) with a resident slot
// slots[t] = page * pageSize + offset (kvcache StreamingPool.slotFor after reserving the chunk), word w of its
// (nKvHeads, headDim/2) cache row of packed f16 pairs:
//   kCache[slots[t], w] = pack2x16float(k pair srcWordOffset + w of row t);  the same for v
// slots[t] = 0xFFFFFFFF (or any slot past the cache) skips the token: the ring already recycled its position
// (a prefill chunk longer than the ring). The k/v rows hold srcRowWords pairs; the cache holds heads
// [kvHeadOffset, kvHeadOffset + nKvHeads) of them. One thread per (t, w) on a 2-D grid of workgroups.
//#include lib/grid

override WG: u32 = 256;

struct Params {
  tokens: u32,          // T
  rowWords: u32,        // nKvHeads * headDim / 2: u32 words per cache token row
  numSlots: u32,        // numPages * pageSize: token slots in the cache
  srcRowWords: u32,     // kvRowHeads * headDim / 2: f32 pairs per k/v activation row
  srcWordOffset: u32,   // kvHeadOffset * headDim / 2
  _p0: u32,
  _p1: u32,
  _p2: u32,
}

@group(0) @binding(0) var<storage, read> k: array<vec2<f32>>;        // (T, kvRowHeads, headDim/2) f32 pairs
@group(0) @binding(1) var<storage, read> v: array<vec2<f32>>;        // (T, kvRowHeads, headDim/2) f32 pairs
@group(0) @binding(2) var<storage, read_write> kCache: array<u32>;   // (numPages, pageSize, nKvHeads, headDim/2) f16 pairs
//#slabs kCache
@group(0) @binding(3) var<storage, read_write> vCache: array<u32>;   // (numPages, pageSize, nKvHeads, headDim/2) f16 pairs
//#slabs vCache
@group(0) @binding(4) var<storage, read> slots: array<u32>;          // (T) flat cache slot of each token, or 0xFFFFFFFF
@group(0) @binding(5) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(grid: Grid, @builtin(local_invocation_index) lid: u32) {
  let idx = threadIndex(grid, lid, WG);
  if (idx >= p.tokens * p.rowWords) { return; }
  let t = idx / p.rowWords;
  let w = idx - t * p.rowWords;
  let slot = slots[t];
  if (slot >= p.numSlots) { return; }
  let dst = slot * p.rowWords + w;
  let src = t * p.srcRowWords + p.srcWordOffset + w;
  kCacheStore(dst, pack2x16float(k[src]));
  vCacheStore(dst, pack2x16float(v[src]));
}
