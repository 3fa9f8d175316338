// Coarse digests of groups of key blocks for hierarchical block selection (block_select.wgsl with GROUP > 0): for
// each entry e = (block-table row, key block c, valid tokens n) of the blocks a step wrote (block_digest's list)
// whose block closes a group (c % G == G - 1) and is full (n == BS), each KV head h and channel pair w:
//   min / max over the group's blocks c - G + 1 .. c of their mean keys (part 0 of their slots, f32), widened by
//   2^-10 of their magnitude so that the f16 pair stays a bound, packed as f16 pairs into part 1 of block c's slot:
//   word w = min(2w, 2w+1), word HW + w = max(2w, 2w+1): the (min, max) layout lib/quest_bound.wgsl reads.
// Run after block_digest.wgsl in the same step (it reads the means that step wrote). A group's coarse digest is
// written once, when it fills; its slot is its last block's, which moves and is shared with that block's page.
// One thread per (entry, head, pair) on a 2-D grid; entries that close no group return at once.
//#include lib/grid
//#include lib/block_entries

override WG: u32 = 64;
const HW: u32 = $HW; // headDim / 2
const HD: u32 = 2u * HW;
const G: u32 = $GROUP; // key blocks per group


@group(0) @binding(0) var<storage, read> blockTable: array<u32>;         // (numSeqs, maxPagesPerSeq) physical pages
@group(0) @binding(1) var<storage, read> entries: array<u32>;            // (E, 3) (row, key block, valid tokens)
@group(0) @binding(2) var<storage, read_write> digests: array<u32>;      // (numPages * bpp, 2, nKvHeads, HD) words
//#slabs digests
@group(0) @binding(3) var<uniform> p: Params;


@compute @workgroup_size(WG)
fn main(grid: Grid, @builtin(local_invocation_index) lid: u32) {
  let idx = threadIndex(grid, lid, WG);
  if (idx >= entryThreads()) { return; }
  let a = entryThread(idx);
  let row = a.row;
  let c = a.c;
  let h = a.h;
  let w = a.w;
  if (c % G != G - 1u || a.n != p.blockSize) { return; }
  var mn = vec2<f32>(3.0e38);
  var mx = vec2<f32>(-3.0e38);
  for (var i = 0u; i < G; i++) {
    let m = (blockSlot(row, c + 1u - G + i) * 2u * p.nKvHeads + h) * HD + 2u * w;
    let v = vec2<f32>(bitcast<f32>(digestsLoad(m)), bitcast<f32>(digestsLoad(m + 1u)));
    mn = min(mn, v);
    mx = max(mx, v);
  }
  mn -= abs(mn) * (1.0 / 1024.0);
  mx += abs(mx) * (1.0 / 1024.0);
  let o = ((blockSlot(row, c) * 2u + 1u) * p.nKvHeads + h) * HD;
  digestsStore(o + w, pack2x16float(mn));
  digestsStore(o + HW + w, pack2x16float(mx));
}
