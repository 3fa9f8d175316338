// Page digests (Quest / LServe): for each entry e = (physical page, logical index l, valid count n) of the list the
// host builds from the batch, each KV head h and channel pair w (channels 2w, 2w+1):
//   digests[page, l, h, 0, c] = min over t < n of k[page, l * L + t, h, c]     (L = logical page size)
//   digests[page, l, h, 1, c] = max over t < n of k[page, l * L + t, h, c]
// recomputed from the f16 keys already in the cache (kv_write runs first), so the result does not depend on how
// many of the page's tokens arrived in this batch. n == 0 writes zeros (such a logical page is never scored).
// Digests are f16, packed in pairs like the cache. The keys are f16 already, so the min / max is one of them: the
// kernel compares the raw f16 bit patterns through an order-preserving map and copies the winner's bits, with no
// float conversion and so no rounding (and no flush of subnormals): the digest bounds every key exactly, and the
// Quest score computed from it is an upper bound of q . k for every key of the page as the attention kernel reads it.
// One thread per (entry, head, pair) on a 2-D grid of workgroups; entries on pages past numPages are skipped.
//#include lib/grid
//#include lib/paged

override WG: u32 = 64;
const HW: u32 = $HW; // headDim / 2: packed f16 pairs per key

struct Params {
  numEntries: u32,      // E
  nKvHeads: u32,        // KV heads
  pageSize: u32,        // tokens per physical page
  logicalPageSize: u32, // tokens per logical page (L)
  lpp: u32,             // logical pages per physical page: pageSize / L
  numPages: u32,        // pages in the cache
  _p0: u32,
  _p1: u32,
}

@group(0) @binding(0) var<storage, read> kCache: array<u32>;        // (numPages, pageSize, nKvHeads, HW) f16 pairs
//#slabs kCache
@group(0) @binding(1) var<storage, read> entries: array<u32>;       // (E, 3) (physical page, logical index, valid tokens)
@group(0) @binding(2) var<storage, read_write> digests: array<u32>; // (numPages, lpp, nKvHeads, 2, HW) f16 pairs
//#slabs digests
@group(0) @binding(3) var<uniform> p: Params;

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

@compute @workgroup_size(WG)
fn main(grid: Grid, @builtin(local_invocation_index) lid: u32) {
  let idx = threadIndex(grid, lid, WG);
  if (idx >= p.numEntries * p.nKvHeads * HW) { return; }
  let e = idx / (p.nKvHeads * HW);
  let hw = idx - e * p.nKvHeads * HW; // h * HW + w
  let h = hw / HW;
  let w = hw - h * HW;
  let page = entries[e * 3u];
  let l = entries[e * 3u + 1u];
  let n = min(entries[e * 3u + 2u], p.logicalPageSize);
  if (page >= p.numPages || l >= p.lpp) { return; }
  var mn = 0u;
  var mx = 0u;
  if (n > 0u) {
    let first = l * p.logicalPageSize; // first slot of the logical page in its physical page
    var kmn = orderKeys(kCacheLoad(slotWord(page, first, h) + w));
    var kmx = kmn;
    for (var t = 1u; t < n; t++) {
      let k = orderKeys(kCacheLoad(slotWord(page, first + t, h) + w));
      kmn = min(kmn, k);
      kmx = max(kmx, k);
    }
    mn = fromKeys(kmn);
    mx = fromKeys(kmx);
  }
  let dst = ((page * p.lpp + l) * p.nKvHeads + h) * 2u * HW + w;
  digestsStore(dst, mn);
  digestsStore(dst + HW, mx);
}
