// Key-block digests for block-sparse prefill (MInference's pooled keys, kept instead of recomputed): for each entry
// e = (block-table row, key block c, valid count n) the host lists for the blocks a step wrote, each KV head h and
// channel pair w:
//   digests[slot(row, c), 0, h, 2w..2w+1] = mean over t < n of k[position c * BS + t of row, h, 2w..2w+1]
// (part 1 of a slot, the coarse digest of a group of blocks, is block_group.wgsl's)
// recomputed from the f16 keys already in the cache (kv_write runs first), so a block that fills over several steps
// ends with the mean of all its keys whatever the chunking. The digest slot of a block lives with the physical page
// of its first token: slot = page * bpp + (c * BS mod pageSize) / BS, bpp = max(1, pageSize / BS).
// One thread per (entry, head, pair) on a 2-D grid of workgroups; a thread reads n keys (one pair each), consecutive
// threads consecutive words.
//#include lib/grid
//#include lib/block_entries

override WG: u32 = 64;
const HW: u32 = $HW; // headDim / 2: packed f16 pairs per key


@group(0) @binding(0) var<storage, read> kCache: array<u32>;            // (numPages, pageSize, nKvHeads, HW) f16 pairs
//#slabs kCache
@group(0) @binding(1) var<storage, read> blockTable: array<u32>;        // (numSeqs, maxPagesPerSeq) physical pages
@group(0) @binding(2) var<storage, read> entries: array<u32>;           // (E, 3) (row, key block, valid tokens)
@group(0) @binding(3) var<storage, read_write> digests: array<vec2<f32>>; // (numPages * bpp, 2, nKvHeads, HW) f32 pairs
//#slabs digests
@group(0) @binding(4) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(grid: Grid, @builtin(local_invocation_index) lid: u32) {
  let idx = threadIndex(grid, lid, WG);
  if (idx >= entryThreads()) { return; }
  let a = entryThread(idx);
  let j0 = a.c * p.blockSize;
  var s = vec2<f32>(0.0);
  for (var t = 0u; t < a.n; t++) { s += unpack2x16float(kCacheLoad(kvWord(a.row, j0 + t, a.h) + a.w)); }
  digestsStore((blockSlot(a.row, a.c) * 2u * p.nKvHeads + a.h) * HW + a.w, s / f32(max(a.n, 1u)));
}
