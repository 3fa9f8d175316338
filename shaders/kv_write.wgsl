// Paged KV write: for each new token t (flattened over the batch), element e of its (nKvHeads, headDim) row:
//   page = blockTable[tokenSeq[t] * maxPagesPerSeq + positions[t] / pageSize], slot = positions[t] % pageSize
//   kCache[page, slot, e] = k[t, e];  vCache[page, slot, e] = v[t, e]
// One thread per (t, e) on a 2-D grid of workgroups (shaders/grid.ts). Pages past numPages are skipped.

override WG: u32 = 256;

struct Params {
  tokens: u32,          // T
  rowLen: u32,          // nKvHeads * headDim
  pageSize: u32,        // tokens per page
  maxPagesPerSeq: u32,  // block table row length
  numPages: u32,        // pages in the cache
  _p0: u32,
  _p1: u32,
  _p2: u32,
}

@group(0) @binding(0) var<storage, read> k: array<f32>;              // (T, nKvHeads, headDim)
@group(0) @binding(1) var<storage, read> v: array<f32>;              // (T, nKvHeads, headDim)
@group(0) @binding(2) var<storage, read_write> kCache: array<f32>;   // (numPages, pageSize, nKvHeads, headDim)
@group(0) @binding(3) var<storage, read_write> vCache: array<f32>;   // (numPages, pageSize, nKvHeads, headDim)
@group(0) @binding(4) var<storage, read> blockTable: array<u32>;     // (numSeqs, maxPagesPerSeq) physical pages
@group(0) @binding(5) var<storage, read> tokenSeq: array<u32>;       // (T) block-table row of each token
@group(0) @binding(6) var<storage, read> positions: array<u32>;      // (T) absolute position of each token
@group(0) @binding(7) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let idx = (wid.y * nwg.x + wid.x) * WG + lid;
  if (idx >= p.tokens * p.rowLen) { return; }
  let t = idx / p.rowLen;
  let e = idx - t * p.rowLen;
  let pos = positions[t];
  let page = blockTable[tokenSeq[t] * p.maxPagesPerSeq + pos / p.pageSize];
  if (page >= p.numPages) { return; }
  let dst = (page * p.pageSize + pos % p.pageSize) * p.rowLen + e;
  kCache[dst] = k[idx];
  vCache[dst] = v[idx];
}
