// Digest hierarchy update: coarse digests recomputed from the logical-page digests (read through the block table)
// for the blocks a step touched. A level-1 block b covers the fan1 pages [b * fan1, b * fan1 + fan1) of a sequence,
// a level-2 block the fan1 * fan2 pages [b * fan1 * fan2, ...); both levels read the page digests, so one dispatch
// updates both (no level-2 entry waits on a level-1 one). Only logical pages holding tokens < len count:
//   levels[slot, row(level, b), h, 0, c] = min over the block's logical pages of their min[c]   (1 = max, likewise)
// Entry e = (blockRow, slot, block | level 2 flag 0x80000000, len) from the header-prefixed list (word 0 = count,
// entries from word 4).
// Min / max on order-preserving f16 keys (lib/f16_keys), bits copied: each coarse digest bounds its children's
// keys exactly, so Quest's bound on it is an upper bound for every key below it. One thread per (entry, head, pair).
//#include lib/f16_keys

override WG: u32 = 64;
const HW: u32 = $HW; // headDim / 2

struct Params {
  nKvHeads: u32,        // KV heads of the layer's digests
  pageSize: u32,        // tokens per physical page
  logicalPageSize: u32, // tokens per logical page
  lpp: u32,             // logical pages per physical page
  maxPagesPerSeq: u32,  // block table row length
  fan1: u32,            // pages per level-1 block
  fan2: u32,            // level-1 blocks per level-2 block
  n1: u32,              // level-1 rows per slot (level-2 rows follow)
  blocksPerSlot: u32,   // level-1 + level-2 rows per slot
  _p0: u32,
  _p1: u32,
  _p2: u32,
}

@group(0) @binding(0) var<storage, read> digests: array<u32>;       // (numPages, lpp, nKvHeads, 2, HW) f16 pairs
//#slabs digests
@group(0) @binding(1) var<storage, read> blockTable: array<u32>;    // (numSeqs, maxPagesPerSeq) physical pages
@group(0) @binding(2) var<storage, read> entries: array<u32>;       // 4 + (E, 4): count, then (blockRow, slot, block, len)
@group(0) @binding(3) var<storage, read_write> levels: array<u32>;  // (numSlots, blocksPerSlot, nKvHeads, 2, HW)
//#slabs levels
@group(0) @binding(4) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let idx = (wid.y * nwg.x + wid.x) * WG + lid;
  if (idx >= entries[0] * p.nKvHeads * HW) { return; }
  let e = idx / (p.nKvHeads * HW);
  let hw = idx - e * p.nKvHeads * HW;
  let h = hw / HW;
  let w = hw - h * HW;
  let eb = 4u + 4u * e;
  let blockRow = entries[eb];
  let slot = entries[eb + 1u];
  let tagged = entries[eb + 2u];
  let level2 = (tagged & 0x80000000u) != 0u;
  let b = tagged & 0x7fffffffu;
  let len = entries[eb + 3u];
  var kmn = vec2<u32>(0xffffu);
  var kmx = vec2<u32>(0u);
  var any = false;
  let P = (len + p.pageSize - 1u) / p.pageSize;
  var span = p.fan1;
  if (level2) { span = p.fan1 * p.fan2; }
  let end = min(b * span + span, P);
  for (var i = b * span; i < end; i++) {
    let phys = blockTable[blockRow * p.maxPagesPerSeq + i];
    let nLog = min(p.lpp, (len - i * p.pageSize + p.logicalPageSize - 1u) / p.logicalPageSize);
    for (var l = 0u; l < nLog; l++) {
      let db = ((phys * p.lpp + l) * p.nKvHeads + h) * 2u * HW + w;
      kmn = min(kmn, orderKeys(digestsLoad(db)));
      kmx = max(kmx, orderKeys(digestsLoad(db + HW)));
      any = true;
    }
  }
  var row = b;
  if (level2) { row = p.n1 + b; }
  let dst = ((slot * p.blocksPerSlot + row) * p.nKvHeads + h) * 2u * HW + w;
  var mn = 0u;
  var mx = 0u;
  if (any) {
    mn = fromKeys(kmn);
    mx = fromKeys(kmx);
  }
  levelsStore(dst, mn);
  levelsStore(dst + HW, mx);
}
