// RoPE + paged KV write in one dispatch, from the fused q/k/v projection's output qkv (T, H + 2 KV, headDim) f32
// (row t = [q heads | k heads | v heads]), HF Llama rotate_half convention (dim i pairs with i + half):
//   q (T, H, headDim) = RoPE(q part of qkv)                                   (the attention kernels read it)
//   kCache/vCache[page, slot, h] = f16(RoPE(k_h)), f16(v_h) for KV heads h < nCache (the main pool's heads:
//     page = blockTable[tokenSeq[t] * maxPagesPerSeq + pos / pageSize], slot = pos % pageSize, pos = positions[t];
//     pages past numPages are skipped)
//   FRESH: k, v (T, KV, headDim) f32 = RoPE(k), v of every head (streaming heads read the step's keys from there)
// The caches and digests may span slabs (lib/slabs.ts). When their slabs leave too few bindings for one pass, the
// wrapper runs two: SPLIT_K (q, k, the K cache, DIGEST, FRESH) then SPLIT_V (the V cache only).
//   DIGEST: for decode tokens t < numDecode, the digest of the logical page it lands in (per-channel f16 min and
//     max of the keys of its valid slots, as page_digest.wgsl computes it): the earlier slots of that logical page
//     are read from the cache, the token's own key comes from registers. A decode token is its sequence's only
//     token in the step, so no other thread writes that logical page; prefill tokens get page_digest afterwards.
// Work items: T * H * HW for q (one per rotation pair (i, i + half), HW = half = headDim / 2) then T * KV * HW for
// k/v (one per packed f16 word w: elements 2w and 2w + 1, each rotated with its own partner), on a 2-D grid of
// workgroups (shaders/grid.ts).
//#include lib/rope_angle

override WG: u32 = 64;

struct Params {
  tokens: u32,          // T
  nHeads: u32,          // H query heads
  nKvHeads: u32,        // KV heads per row of qkv
  half: u32,            // headDim / 2 = HW
  nCache: u32,          // KV heads [0, nCache) go to the caches (the layer's retrieval heads)
  pageSize: u32,        // tokens per page
  maxPagesPerSeq: u32,  // block table row length
  numPages: u32,        // pages in the caches
  numDecode: u32,       // DIGEST: tokens [0, numDecode) are decode tokens
  logicalPageSize: u32, // DIGEST: tokens per logical page
  lpp: u32,             // DIGEST: logical pages per physical page
  _p0: u32,
}

@group(0) @binding(0) var<storage, read> qkv: array<f32>;            // (T, H + 2 KV, headDim)
@group(0) @binding(1) var<storage, read_write> q: array<f32>;        // (T, H, headDim)
//#if !SPLIT_V
@group(0) @binding(2) var<storage, read_write> kCache: array<u32>;   // (numPages, pageSize, nCache, HW) f16 pairs
//#slabs kCache
//#endif
//#if !SPLIT_K
@group(0) @binding(3) var<storage, read_write> vCache: array<u32>;   // (numPages, pageSize, nCache, HW) f16 pairs
//#slabs vCache
//#endif
@group(0) @binding(4) var<storage, read> blockTable: array<u32>;     // (numSeqs, maxPagesPerSeq) physical pages
@group(0) @binding(5) var<storage, read> tokenSeq: array<u32>;       // (T) block-table row of each token
@group(0) @binding(6) var<storage, read> positions: array<u32>;      // (T) absolute position of each token
@group(0) @binding(7) var<storage, read> invFreq: array<f32>;        // (half) rad per position
@group(0) @binding(8) var<uniform> p: Params;
//#if DIGEST
@group(0) @binding(9) var<storage, read_write> digests: array<u32>;  // (numPages, lpp, nCache, 2, HW) f16 pairs
//#slabs digests
//#endif
//#if FRESH
@group(0) @binding(10) var<storage, read_write> kOut: array<f32>;    // (T, KV, headDim) RoPE(k)
@group(0) @binding(11) var<storage, read_write> vOut: array<f32>;    // (T, KV, headDim) v
//#endif

// Element d of head `head` (counted over q, k, v heads) of token t's qkv row, rotated at position pos.
fn rotated(t: u32, head: u32, d: u32, pos: u32) -> f32 {
  let hd = 2u * p.half;
  let base = (t * (p.nHeads + 2u * p.nKvHeads) + head) * hd;
  let i = d % p.half;
  let a = angle(pos, invFreq[i]);
  let x = qkv[base + d];
  if (d < p.half) { return x * cos(a) - qkv[base + d + p.half] * sin(a); }
  return x * cos(a) + qkv[base + d - p.half] * sin(a);
}

//#if DIGEST
// Both halves of a word of f16 pairs -> order-preserving 16-bit keys (unsigned order = float order, -0 < +0).
fn orderKeys(w: u32) -> vec2<u32> {
  let b = vec2<u32>(w & 0xffffu, w >> 16u);
  return select(b | vec2<u32>(0x8000u), (~b) & vec2<u32>(0xffffu), (b & vec2<u32>(0x8000u)) != vec2<u32>(0u));
}

// Inverse of orderKeys for a pair of keys -> the word of f16 pairs.
fn fromKeys(k: vec2<u32>) -> u32 {
  let b = select((~k) & vec2<u32>(0xffffu), k & vec2<u32>(0x7fffu), (k & vec2<u32>(0x8000u)) != vec2<u32>(0u));
  return b.x | (b.y << 16u);
}
//#endif

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let idx = (wid.y * nwg.x + wid.x) * WG + lid;
  let HW = p.half;
  let hd = 2u * HW;
//#if !SPLIT_V
  let qItems = p.tokens * p.nHeads * HW;
  if (idx < qItems) {
    // q: rotate the pair (i, i + half) of head h of token t
    let i = idx % HW;
    let th = idx / HW;
    let h = th % p.nHeads;
    let t = th / p.nHeads;
    let a = angle(positions[t], invFreq[i]);
    let c = cos(a);
    let s = sin(a);
    let src = (t * (p.nHeads + 2u * p.nKvHeads) + h) * hd + i;
    let x0 = qkv[src];
    let x1 = qkv[src + HW];
    let dst = (t * p.nHeads + h) * hd + i;
    q[dst] = x0 * c - x1 * s;
    q[dst + HW] = x1 * c + x0 * s;
    return;
  }
//#else
  let qItems = 0u;
//#endif
  let j = idx - qItems;
  if (j >= p.tokens * p.nKvHeads * HW) { return; }
  // k/v: packed word w (elements 2w, 2w + 1) of KV head kvh of token t
  let w = j % HW;
  let tk = j / HW;
  let kvh = tk % p.nKvHeads;
  let t = tk / p.nKvHeads;
  let pos = positions[t];
  let vBase = (t * (p.nHeads + 2u * p.nKvHeads) + p.nHeads + p.nKvHeads + kvh) * hd + 2u * w;
  let v2 = vec2<f32>(qkv[vBase], qkv[vBase + 1u]);
//#if !SPLIT_V
  let kHead = p.nHeads + kvh;
  let k2 = vec2<f32>(rotated(t, kHead, 2u * w, pos), rotated(t, kHead, 2u * w + 1u, pos));
//#if FRESH
  let fo = (t * p.nKvHeads + kvh) * hd + 2u * w;
  kOut[fo] = k2.x;
  kOut[fo + 1u] = k2.y;
  vOut[fo] = v2.x;
  vOut[fo + 1u] = v2.y;
//#endif
//#endif
  if (kvh >= p.nCache) { return; }
  let page = blockTable[tokenSeq[t] * p.maxPagesPerSeq + pos / p.pageSize];
  if (page >= p.numPages) { return; }
  let slot = pos % p.pageSize;
  let dst = ((page * p.pageSize + slot) * p.nCache + kvh) * HW + w;
//#if !SPLIT_K
  vCacheStore(dst, pack2x16float(v2));
//#endif
//#if !SPLIT_V
  let kw = pack2x16float(k2);
  kCacheStore(dst, kw);
//#if DIGEST
  if (t >= p.numDecode) { return; }
  let l = slot / p.logicalPageSize;
  let first = page * p.pageSize + l * p.logicalPageSize; // first token slot of the logical page
  var kmn = orderKeys(kw);
  var kmx = kmn;
  for (var s = first; s < page * p.pageSize + slot; s++) {
    let key = orderKeys(kCacheLoad((s * p.nCache + kvh) * HW + w));
    kmn = min(kmn, key);
    kmx = max(kmx, key);
  }
  let db = ((page * p.lpp + l) * p.nCache + kvh) * 2u * HW + w;
  digestsStore(db, fromKeys(kmn));
  digestsStore(db + HW, fromKeys(kmx));
//#endif
//#endif
}
