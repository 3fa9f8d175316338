// Paged KV write, f16 cache: for each new token t (flattened over the batch), word w of its (nKvHeads, headDim/2)
// cache row of packed f16 pairs (headDim is even, so a pair never straddles heads):
//   page = blockTable[tokenSeq[t] * maxPagesPerSeq + positions[t] / pageSize], slot = positions[t] % pageSize
//   kCache[page, slot, w] = pack2x16float(k pair srcWordOffset + w of row t);  the same for v
// The k/v activation rows hold srcRowWords pairs (kvRowHeads heads); the cache holds heads
// [kvHeadOffset, kvHeadOffset + nKvHeads) of them (srcWordOffset = kvHeadOffset * headDim/2). Default: all heads.
// pack2x16float rounds each f32 to f16 (element 2w in the low half). One thread per (t, w) on a 2-D grid of
// workgroups (shaders/lib/grid.ts). Pages past numPages are skipped. The caches may span slabs (lib/slabs.ts).
//#include lib/grid

override WG: u32 = 256;

struct Params {
  tokens: u32,          // T
  rowWords: u32,        // nKvHeads * headDim / 2: u32 words per token row
  pageSize: u32,        // tokens per page
  maxPagesPerSeq: u32,  // block table row length
  numPages: u32,        // pages in the cache
  srcRowWords: u32,     // kvRowHeads * headDim / 2: f32 pairs per k/v activation row
  srcWordOffset: u32,   // kvHeadOffset * headDim / 2: first pair of the row written
  _p2: u32,
}

@group(0) @binding(0) var<storage, read> k: array<vec2<f32>>;        // (T, kvRowHeads, headDim/2) f32 pairs
@group(0) @binding(1) var<storage, read> v: array<vec2<f32>>;        // (T, kvRowHeads, headDim/2) f32 pairs
@group(0) @binding(2) var<storage, read_write> kCache: array<u32>;   // (numPages, pageSize, nKvHeads, headDim/2) f16 pairs
//#slabs kCache
@group(0) @binding(3) var<storage, read_write> vCache: array<u32>;   // (numPages, pageSize, nKvHeads, headDim/2) f16 pairs
//#slabs vCache
@group(0) @binding(4) var<storage, read> blockTable: array<u32>;     // (numSeqs, maxPagesPerSeq) physical pages
@group(0) @binding(5) var<storage, read> tokenSeq: array<u32>;       // (T) block-table row of each token
@group(0) @binding(6) var<storage, read> positions: array<u32>;      // (T) absolute position of each token
@group(0) @binding(7) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(grid: Grid, @builtin(local_invocation_index) lid: u32) {
  let idx = threadIndex(grid, lid, WG);
  if (idx >= p.tokens * p.rowWords) { return; }
  let t = idx / p.rowWords;
  let w = idx - t * p.rowWords;
  let pos = positions[t];
  let page = blockTable[tokenSeq[t] * p.maxPagesPerSeq + pos / p.pageSize];
  if (page >= p.numPages) { return; }
  let dst = (page * p.pageSize + pos % p.pageSize) * p.rowWords + w;
  let src = t * p.srcRowWords + p.srcWordOffset + w;
  kCacheStore(dst, pack2x16float(k[src]));
  vCacheStore(dst, pack2x16float(v[src]));
}
